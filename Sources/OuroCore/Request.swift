/// Identifies one chunk file: `<contentID>.part-<index+1>-of-<parts>`.
public struct ChunkID: Hashable, Sendable, CustomStringConvertible {
    public let contentID: ContentID
    public let index: Int
    public let parts: Int

    public init(contentID: ContentID, index: Int, parts: Int) throws(OuroError) {
        guard parts >= 1, parts <= 999, index >= 0, index < parts else {
            throw .badRequest("chunk index \(index) of \(parts) is out of range")
        }
        self.contentID = contentID
        self.index = index
        self.parts = parts
    }

    /// The on-disk file name (1-based, zero-padded to 3 digits).
    public var fileName: String {
        func pad(_ n: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, 3 - s.count)) + s }
        return "\(contentID).part-\(pad(index + 1))-of-\(pad(parts))"
    }

    public var description: String { fileName }

    /// Parses a chunk file name back; nil for anything else.
    public init?(fileName: String) {
        let pieces = fileName.split(separator: ".", maxSplits: 1)
        guard pieces.count == 2, let content = ContentID(pieces[0]) else { return nil }
        let rest = pieces[1].split(separator: "-")
        guard rest.count == 4, rest[0] == "part", rest[2] == "of", let number = Int(rest[1]), let parts = Int(rest[3]),
              let id = try? ChunkID(contentID: content, index: number - 1, parts: parts), id.fileName == fileName
        else { return nil }
        self = id
    }
}

/// The immutable identity of one version of a file's bytes: 32 lowercase hex digits.
public struct ContentID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let hex: String

    public init?(_ text: some StringProtocol) {
        guard text.utf8.count == 32, text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else { return nil }
        hex = String(text)
    }

    public static func random() -> ContentID {
        var generator = SystemRandomNumberGenerator()
        let digits = (0..<2).map { _ in
            let s = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return ContentID(digits.joined())!
    }

    public var description: String { hex }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = ContentID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad content id"))
        }
        self = id
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}

/// The header of a relay stream: which content, how it is laid out, and the chain of nodes that store it.
public struct RelayHeader: Sendable, Equatable {
    public var contentID: ContentID
    public var sizeBytes: UInt64
    public var copies: Int
    /// This receiver's position in `chain` (1 for the start node's successor).
    public var position: Int
    /// The nodes in ring order from the start node; chunk `i`'s primary holder is `chain[i]`.
    public var chain: [NodeAddress]

    public init(contentID: ContentID, sizeBytes: UInt64, copies: Int, position: Int, chain: [NodeAddress]) {
        self.contentID = contentID
        self.sizeBytes = sizeBytes
        self.copies = copies
        self.position = position
        self.chain = chain
    }

    public var line: String {
        "CHUNK RELAY \(contentID) \(sizeBytes) \(copies) \(position) \(chain.map(\.description).joined(separator: ","))"
    }
}

/// One request, parsed from its header line. Payload-carrying requests say how many bytes follow.
public enum Request: Sendable, Equatable {
    case nodePing
    /// Proves the client knows the cluster secret (required first when the node has one).
    case nodeAuth(secret: String)
    /// Starts the challenge: the client's nonce (64 hex digits); the node answers `CHALLENGE <its nonce> <its proof>`.
    case nodeHello(nonce: String)
    /// The client's proof of the secret, over both nonces (`ChallengeAuth`).
    case nodeProve(proof: String)
    case nodeStatus
    case nodeNext(NodeAddress)
    case nodeHeal
    /// Starts a scrub pass now (every local copy read back against its checksum) unless one is running.
    case nodeScrub
    case nodeJoin(NodeAddress)
    case nodeInfo
    case nodeUsage
    /// The path of the node's Unix socket for clients on the same machine (`LocalChunkFiles`).
    case nodeLocal
    case nodeLeave
    /// What a node's leaving (or joining) would move, as JSON (`MovePlan`).
    case nodePlan(MovePlan.Change, NodeAddress)
    case netmapDiscover
    case netmapGet
    case netmapSet(Netmap)
    case topologyWalk
    case filePush(sizeBytes: UInt64, name: PathName)
    case filePull(name: PathName)
    case fileList
    /// The files with a chunk on fewer live nodes than it should be (`ContentHealth`).
    case fileShort
    case fileStat(name: PathName)
    case fileDelete(name: PathName)
    /// `binary`: the reply is `BinaryCodable` rather than JSON (the mount's own calls; see `WireBinary`).
    case inodeWrite(inode: UInt64, sizeBytes: UInt64, binary: Bool = false)
    case chunkRelay(RelayHeader)
    case chunkGet(ChunkID, offset: UInt64, lengthBytes: UInt64)
    /// `deferSync`: the copy may be fsynced shortly after the answer (another holder on the same disk has fsynced it).
    case chunkPut(ChunkID, lengthBytes: UInt64, crc32c: UInt32, deferSync: Bool = false)
    case chunkCheck(ChunkID)
    /// Reads the stored copy afresh and compares it with the catalog: a corrupt copy is moved aside and a missing one
    /// noted, and the repair loop fetches a good copy in its place (`ouro verify`).
    case chunkVerify(ChunkID)
    /// When the node last read its copy back from disk and found it good (seconds since 1970; 0: not since it started).
    case chunkVerified(ChunkID)
    /// Stores a content's chunks without naming it in the catalog (a segment of a file the mount is writing).
    case contentPush(sizeBytes: UInt64)
    /// Stores one piece (the bytes of an update in place) as a one-chunk content on `copies` nodes chosen by
    /// rendezvous hashing, without naming it in the catalog; the CRC-32C of the bytes comes first.
    case piecePut(sizeBytes: UInt64, crc32c: UInt32)
    /// Confirms a chunk is stored here and keeps the janitor off it for another grace period.
    case chunkKeep(ChunkID)
    case catalogSync(incarnation: String, afterSequence: UInt64)
    /// Merges catalog records; `deferSync`: answer once applied and written, and fsync within a few milliseconds
    /// (the peers beyond the change's copies: they need it at once to serve it, not durable at once).
    case catalogApply(lengthBytes: Int, deferSync: Bool = false)
    /// Garbage collection: what this node holds of the rows listed (binary `[CatalogRowVersion]`; answered with
    /// `[RowAnswer]`).
    case catalogHave(lengthBytes: Int)
    /// Garbage collection: drops the rows listed, every member having confirmed them.
    case catalogCollect(lengthBytes: Int)
    /// Garbage collection: the ring dropped tombstones while this node was away; it checks its rows older than
    /// `cutClock` against those of `peer` (the sender) and removes those the peer no longer has.
    case catalogResync(cutClock: UInt64, peer: NodeAddress)
    case fs(operation: FSOperation, lengthBytes: Int, binary: Bool = false)

    /// Bytes that follow the header line, if the request carries a payload that is known from the header alone.
    /// (`CHUNK RELAY`'s payload length depends on the layout; see `RelayPlan`.)
    public var payloadBytes: UInt64 {
        switch self {
        case .filePush(let size, _): size
        case .inodeWrite(_, let size, _): size
        case .contentPush(let size): size
        case .piecePut(let size, _): size
        case .chunkPut(_, let length, _, _): length
        case .catalogApply(let length, _): UInt64(length)
        case .catalogHave(let length), .catalogCollect(let length): UInt64(length)
        case .fs(_, let length, _): UInt64(length)
        default: 0
        }
    }

    /// Parses one header line (without its line break).
    public init(line: String, maxFileSizeBytes: UInt64 = Limits.defaultMaxFileSizeBytes) throws(OuroError) {
        guard line.utf8.count <= Limits.headerLineBytes else { throw OuroError(.tooLarge, "header line too long") }
        guard !line.utf8.contains(0) else { throw .badRequest("NUL in header line") }
        var fields = Fields(line)
        let noun = fields.next()
        let verb = fields.next()
        switch (noun, verb) {
        case ("NODE", "PING"): try fields.end(); self = .nodePing
        case ("NODE", "AUTH"):
            let secret = String(try fields.rest())
            guard ClusterSecret.isValid(secret) else { throw .badRequest("bad secret") }
            self = .nodeAuth(secret: secret)
        case ("NODE", "HELLO"):
            let nonce = String(try fields.rest())
            guard Hex.is32Bytes(nonce) else {
                throw .badRequest("NODE HELLO wants a nonce of 64 lowercase hex digits")
            }
            self = .nodeHello(nonce: nonce)
        case ("NODE", "PROVE"):
            let proof = String(try fields.rest())
            guard Hex.is32Bytes(proof) else {
                throw .badRequest("NODE PROVE wants a proof of 64 lowercase hex digits")
            }
            self = .nodeProve(proof: proof)
        case ("NODE", "STATUS"): try fields.end(); self = .nodeStatus
        case ("NODE", "NEXT"): self = .nodeNext(try fields.address(last: true))
        case ("NODE", "HEAL"): try fields.end(); self = .nodeHeal
        case ("NODE", "SCRUB"): try fields.end(); self = .nodeScrub
        case ("NODE", "JOIN"): self = .nodeJoin(try fields.address(last: true))
        case ("NODE", "INFO"): try fields.end(); self = .nodeInfo
        case ("NODE", "USAGE"): try fields.end(); self = .nodeUsage
        case ("NODE", "LOCAL"): try fields.end(); self = .nodeLocal
        case ("NODE", "LEAVE"): try fields.end(); self = .nodeLeave
        case ("NODE", "PLAN"):
            let word = fields.next() ?? ""
            guard word == "LEAVE" || word == "JOIN", let change = MovePlan.Change(rawValue: word.lowercased()) else {
                throw .badRequest("want NODE PLAN LEAVE <host:port> or NODE PLAN JOIN <host:port>")
            }
            self = .nodePlan(change, try fields.address(last: true))
        case ("NETMAP", "DISCOVER"): try fields.end(); self = .netmapDiscover
        case ("NETMAP", "GET"): try fields.end(); self = .netmapGet
        case ("NETMAP", "SET"):
            let epoch = try fields.number(UInt64.self, "epoch")
            self = .netmapSet(try Netmap(epoch: epoch, wire: fields.rest()))
        case ("TOPOLOGY", "WALK"): try fields.end(); self = .topologyWalk
        case ("FILE", "PUSH"):
            let size = try fields.number(UInt64.self, "size")
            let name = try PathName(fields.rest())
            guard size <= maxFileSizeBytes else {
                throw OuroError(.tooLarge, "file of \(size) bytes exceeds the limit of \(maxFileSizeBytes) bytes")
            }
            self = .filePush(sizeBytes: size, name: name)
        case ("FILE", "PULL"): self = .filePull(name: try PathName(fields.rest()))
        case ("FILE", "LIST"): try fields.end(); self = .fileList
        case ("FILE", "SHORT"): try fields.end(); self = .fileShort
        case ("FILE", "STAT"): self = .fileStat(name: try PathName(fields.rest()))
        case ("FILE", "DELETE"): self = .fileDelete(name: try PathName(fields.rest()))
        case ("INODE", "WRITE"):
            let inode = try fields.number(UInt64.self, "inode")
            let size = try fields.number(UInt64.self, "size")
            let binary = try fields.binaryFlag()
            guard size <= maxFileSizeBytes else {
                throw OuroError(.tooLarge, "file of \(size) bytes exceeds the limit of \(maxFileSizeBytes) bytes")
            }
            self = .inodeWrite(inode: inode, sizeBytes: size, binary: binary)
        case ("CHUNK", "RELAY"):
            let content = try fields.contentID()
            let size = try fields.number(UInt64.self, "size")
            let copies = try fields.number(Int.self, "copies")
            let position = try fields.number(Int.self, "position")
            let chain = try fields.rest().split(separator: ",").map { (text) throws(OuroError) -> NodeAddress in
                guard let address = NodeAddress(text) else { throw .badRequest("bad address in chain: \(text)") }
                return address
            }
            guard chain.count >= 1, chain.count <= 999, position >= 1, position < chain.count, copies >= 1 else {
                throw .badRequest("bad relay chain")
            }
            guard size <= maxFileSizeBytes else { throw OuroError(.tooLarge, "content of \(size) bytes exceeds the limit") }
            self = .chunkRelay(RelayHeader(contentID: content, sizeBytes: size, copies: copies, position: position, chain: chain))
        case ("CHUNK", "GET"):
            let id = try fields.chunkID()
            let offset = try fields.number(UInt64.self, "offset")
            let length = try fields.number(UInt64.self, "length", last: true)
            self = .chunkGet(id, offset: offset, lengthBytes: length)
        case ("CHUNK", "PUT"):
            let id = try fields.chunkID()
            let length = try fields.number(UInt64.self, "length")
            let crc = try fields.number(UInt32.self, "crc")
            let deferSync = try fields.flag("DEFER")
            guard length <= maxFileSizeBytes else { throw OuroError(.tooLarge, "chunk of \(length) bytes exceeds the limit") }
            self = .chunkPut(id, lengthBytes: length, crc32c: crc, deferSync: deferSync)
        case ("CHUNK", "CHECK"): self = .chunkCheck(try fields.chunkID(last: true))
        case ("CHUNK", "VERIFY"): self = .chunkVerify(try fields.chunkID(last: true))
        case ("CHUNK", "VERIFIED"): self = .chunkVerified(try fields.chunkID(last: true))
        case ("CHUNK", "KEEP"): self = .chunkKeep(try fields.chunkID(last: true))
        case ("CONTENT", "PUSH"):
            let size = try fields.number(UInt64.self, "size", last: true)
            guard size <= maxFileSizeBytes else {
                throw OuroError(.tooLarge, "content of \(size) bytes exceeds the limit of \(maxFileSizeBytes) bytes")
            }
            self = .contentPush(sizeBytes: size)
        case ("PIECE", "PUT"):
            let size = try fields.number(UInt64.self, "size")
            let crc = try fields.number(UInt32.self, "crc", last: true)
            guard size > 0, size <= Limits.maxPieceBytes, size <= maxFileSizeBytes else {
                throw OuroError(.tooLarge, "a piece holds 1 to \(min(Limits.maxPieceBytes, maxFileSizeBytes)) bytes")
            }
            self = .piecePut(sizeBytes: size, crc32c: crc)
        case ("CATALOG", "SYNC"):
            let incarnation = fields.next() ?? ""
            guard !incarnation.isEmpty, incarnation.count <= 64 else { throw .badRequest("bad incarnation") }
            self = .catalogSync(incarnation: String(incarnation), afterSequence: try fields.number(UInt64.self, "sequence", last: true))
        case ("CATALOG", "APPLY"):
            let length = try fields.jsonLength(last: false)
            self = .catalogApply(lengthBytes: length, deferSync: try fields.flag("DEFER"))
        case ("CATALOG", "HAVE"): self = .catalogHave(lengthBytes: try fields.jsonLength())
        case ("CATALOG", "COLLECT"): self = .catalogCollect(lengthBytes: try fields.jsonLength())
        case ("CATALOG", "RESYNC"): self = .catalogResync(cutClock: try fields.number(UInt64.self, "clock", last: false), peer: try fields.address(last: true))
        case ("FS", let op?) where op.allSatisfy({ $0.isLetter }) && noun != nil:
            guard let operation = FSOperation(rawValue: String(op)) else { throw .badRequest("unknown FS operation \(op.prefix(32))") }
            let length = try fields.jsonLength(last: false)
            self = .fs(operation: operation, lengthBytes: length, binary: try fields.binaryFlag())
        case (nil, _):
            throw .badRequest("empty request")
        default:
            throw .badRequest("unknown command: \(String(line.prefix(64)))")
        }
    }
}

/// Splits a header line on single spaces; the last field takes the rest of the line.
struct Fields {
    private var remaining: Substring

    init(_ line: String) { remaining = Substring(line) }

    mutating func next() -> Substring? {
        guard !remaining.isEmpty else { return nil }
        if let space = remaining.firstIndex(of: " ") {
            let field = remaining[..<space]
            remaining = remaining[remaining.index(after: space)...]
            return field
        }
        defer { remaining = "" }
        return remaining
    }

    mutating func rest() throws(OuroError) -> Substring {
        guard !remaining.isEmpty else { throw .badRequest("missing argument") }
        defer { remaining = "" }
        return remaining
    }

    /// An optional last word `BIN`: payload and reply in `WireBinary` instead of JSON.
    mutating func binaryFlag() throws(OuroError) -> Bool { try flag("BIN") }

    /// An optional last word: true if it is `word`.
    mutating func flag(_ word: String) throws(OuroError) -> Bool {
        guard let field = next() else { return false }
        guard field == word else { throw .badRequest("unexpected arguments: \(field.prefix(64))") }
        try end()
        return true
    }

    func end() throws(OuroError) {
        guard remaining.isEmpty else { throw .badRequest("unexpected arguments: \(remaining.prefix(64))") }
    }

    mutating func number<T: FixedWidthInteger>(_ type: T.Type, _ what: String, last: Bool = false) throws(OuroError) -> T {
        guard let field = next() else { throw .badRequest("missing \(what)") }
        guard field.allSatisfy({ $0.isASCII && $0.isNumber }), let value = T(field) else {
            throw .badRequest("bad \(what): \(field.prefix(32))")
        }
        if last { try end() }
        return value
    }

    mutating func address(last: Bool) throws(OuroError) -> NodeAddress {
        guard let field = next(), let address = NodeAddress(field) else { throw .badRequest("bad address, want host:port") }
        if last { try end() }
        return address
    }

    mutating func contentID() throws(OuroError) -> ContentID {
        guard let field = next(), let id = ContentID(field) else { throw .badRequest("bad content id") }
        return id
    }

    mutating func chunkID(last: Bool = false) throws(OuroError) -> ChunkID {
        let content = try contentID()
        let index = try number(Int.self, "chunk index")
        let parts = try number(Int.self, "parts", last: last)
        return try ChunkID(contentID: content, index: index, parts: parts)
    }

    mutating func jsonLength(last: Bool = true) throws(OuroError) -> Int {
        let length = try number(Int.self, "length", last: last)
        guard length <= Limits.jsonPayloadBytes else { throw OuroError(.tooLarge, "payload of \(length) bytes exceeds \(Limits.jsonPayloadBytes)") }
        return length
    }
}
