import Glibc
import OuroCore

/// Typed calls to one node, over pooled connections.
public struct NodeClient: Sendable {
    public let address: NodeAddress
    public let pool: ConnectionPool

    public init(_ address: NodeAddress, pool: ConnectionPool = ConnectionPool()) {
        self.address = address
        self.pool = pool
    }

    public func ping() throws {
        try pool.with(address, retry: true) { connection in
            try connection.send("NODE PING")
            let line = try connection.readReply()
            guard line == "PONG" else { throw OuroError(.internal, "unexpected reply to ping: \(line)") }
        }
    }

    /// `NODE STATUS`: the node's own address and its successor (nil when unset).
    public func status() throws -> (address: String, next: NodeAddress?) {
        try pool.with(address, retry: true) { connection in
            try connection.send("NODE STATUS")
            let port = try connection.readReply()
            let next = try connection.readReply()
            try connection.expectOK()
            guard port.hasPrefix("PORT "), next.hasPrefix("NEXT ") else { throw OuroError(.internal, "bad status reply") }
            return (String(port.dropFirst(5)), NodeAddress(next.dropFirst(5)))
        }
    }

    public func setNext(_ next: NodeAddress) throws {
        try simple("NODE NEXT \(next)")
    }

    public func heal() throws -> String {
        try pool.with(address) { connection in
            try connection.send("NODE HEAL")
            return try connection.readReply()
        }
    }

    public func discover() throws { try simple("NETMAP DISCOVER") }

    public func join(_ ring: NodeAddress) throws { try simple("NODE JOIN \(ring)") }

    public func setNetmap(_ netmap: Netmap) throws {
        try simple("NETMAP SET \(netmap.epoch) \(netmap.wire)", idempotent: true)
    }

    public func netmap() throws -> Netmap {
        try pool.with(address, retry: true) { connection in
            try connection.send("NETMAP GET")
            var members: [Netmap.Member] = []
            while true {
                let line = try connection.readReply()
                if line == "OK" { break }
                if line == "(empty)" { continue }
                let pair = line.split(separator: "=")
                guard pair.count == 2, let member = NodeAddress(pair[0]) else { throw OuroError(.internal, "bad netmap line: \(line)") }
                members.append(.init(address: member, alive: pair[1] == "Alive"))
            }
            return Netmap(members: members)
        }
    }

    public func topology() throws -> [String] {
        try pool.with(address, retry: true) { connection in
            try connection.send("TOPOLOGY WALK")
            var edges: [String] = []
            while true {
                let line = try connection.readReply()
                if line == "OK" { return edges }
                edges.append(line)
            }
        }
    }

    public func info() throws -> NodeInfo {
        try pool.with(address, retry: true) { connection in
            try connection.send("NODE INFO")
            return try connection.readJSON(NodeInfo.self)
        }
    }

    /// `NODE USAGE`: the node's own disk (for `df` on a mount).
    public func usage() throws -> RingUsage {
        try pool.with(address, retry: true) { connection in
            try connection.send("NODE USAGE")
            return try connection.readJSON(RingUsage.self)
        }
    }

    /// One metadata call (`FS <OP>`). Reads retry once on a stale pooled connection; mutations never do.
    public func fs(_ operation: FSOperation, _ request: FSRequest, idempotent: Bool = false) throws -> FSReply {
        try pool.with(address, retry: idempotent) { connection in
            try connection.sendBinary("FS \(operation.rawValue)", request)
            return try connection.readBinary(FSReply.self)
        }
    }

    public func stat(_ name: String) throws -> InodeStat {
        try pool.with(address, retry: true) { connection in
            try connection.send("FILE STAT \(name)")
            return try connection.readJSON(InodeStat.self)
        }
    }

    public func delete(_ name: String) throws { try simple("FILE DELETE \(name)") }

    /// `FILE LIST` as rows of (name, start, size). The node closes the connection after the listing.
    public func list() throws -> [(name: String, start: String, sizeBytes: UInt64)] {
        var rows: [(name: String, start: String, sizeBytes: UInt64)] = []
        try list { rows.append($0) }
        return rows
    }

    /// `FILE LIST`, each row handed to `row` as it arrives (a listing of millions of files is never held whole).
    public func list(_ row: ((name: String, start: String, sizeBytes: UInt64)) throws -> Void) throws {
        let connection = try Connection(to: address)
        try connection.send("FILE LIST")
        let header = try connection.readReply()  // an ERR line (e.g. DENIED) is thrown as itself
        guard header == "name,start,size" else { throw OuroError(.internal, "bad FILE LIST header: \(header.prefix(80))") }
        var pending = ""
        while let line = try connection.reader.readLine() {
            pending = pending.isEmpty ? line : pending + "\n" + line
            guard let fields = CSV.parseRow(pending) else { continue }  // a quoted name spans lines
            pending = ""
            guard fields.count == 3, let size = UInt64(fields[2]) else { throw OuroError(.internal, "bad FILE LIST row") }
            try row((fields[0], fields[1], size))
        }
    }

    /// `FILE SHORT`: the files with a chunk on fewer live nodes than it should be, each handed to `row` as it arrives.
    public func shortOfCopies(_ row: ((name: String, health: ContentHealth)) throws -> Void) throws {
        let connection = try Connection(to: address)
        try connection.send("FILE SHORT")
        let header = try connection.readReply()
        guard header == "name,copies,wanted" else { throw OuroError(.internal, "bad FILE SHORT header: \(header.prefix(80))") }
        var pending = ""
        while let line = try connection.reader.readLine() {
            if pending.isEmpty && line == "OK" {
                pool.give(connection)
                return
            }
            pending = pending.isEmpty ? line : pending + "\n" + line
            guard let fields = CSV.parseRow(pending) else { continue }  // a quoted name spans lines
            pending = ""
            guard fields.count == 3, let copies = Int(fields[1]), let wanted = Int(fields[2]) else {
                throw OuroError(.internal, "bad FILE SHORT row")
            }
            try row((fields[0], ContentHealth(liveCopies: copies, wantedCopies: wanted)))
        }
        throw OuroError(.unavailable, "FILE SHORT ended early")
    }

    /// Sends `header`, then `sizeBytes` of the regular file `file` from its start (with sendfile where the
    /// connection is plain: no copy through this process), then lets `reply` read the answer.
    public func upload<T>(header: String, file: Int32, offset: UInt64 = 0, sizeBytes: UInt64, progress: ((UInt64) -> Void)? = nil,
                          reply: (Connection) throws -> T) throws -> T {
        let connection = try Connection(to: address)
        connection.socket.setTimeouts(seconds: 600)  // the node fsyncs every copy before it answers
        connection.socket.enlargeSendBufferForStreaming()
        try connection.send(header)
        var position = off_t(offset)
        let end = offset + sizeBytes
        // Ask the disk for what comes next well ahead of `sendfile`, which reads on demand: reading then overlaps
        // with the ring storing what was sent (a cold 1 GiB push here: 1.8 s → see docs/benchmarks.md).
        let readAhead = UInt64(64 << 20)
        var requestedUpTo = UInt64(offset)
        while UInt64(position) < end {
            if requestedUpTo < end, requestedUpTo < UInt64(position) + readAhead / 2 {
                let length = min(readAhead, end - requestedUpTo)
                _ = posix_fadvise(file, off_t(requestedUpTo), off_t(length), POSIX_FADV_WILLNEED)
                requestedUpTo += length
            }
            let want = Int(min(UInt64(4 * Limits.streamBufferBytes), end - UInt64(position)))
            let count: Int
            do {
                count = try connection.socket.sendFile(file, from: &position, count: want)
            } catch {
                // The node may have refused the upload early: its ERR line says why.
                if let line = try? connection.reader.readLine(), let refusal = OuroError(errorLine: line) { throw refusal }
                throw error
            }
            guard count > 0 else { throw OuroError(.badRequest, "the file ended \(end - UInt64(position)) bytes early") }
            progress?(UInt64(position) - offset)
        }
        return try reply(connection)
    }

    /// `FILE PUSH` of a local file: returns the reply lines up to `OK`.
    public func push(name: String, file: Int32, sizeBytes: UInt64, progress: ((UInt64) -> Void)? = nil) throws -> [String] {
        try upload(header: "FILE PUSH \(sizeBytes) \(name)", file: file, sizeBytes: sizeBytes, progress: progress) { connection in
            var lines: [String] = []
            while true {
                let line = try connection.readReply()
                lines.append(line)
                if line == "OK" { return lines }
            }
        }
    }

    /// `INODE WRITE`: replaces a file's content with the bytes of `file`; returns its new attributes.
    public func writeInode(_ inode: UInt64, file: Int32, sizeBytes: UInt64) throws -> InodeStat {
        if sizeBytes <= UInt64(Limits.inlineContentBytes) {
            // A small file (kept inline by the node): one write on a pooled connection.
            var bytes = [UInt8](repeating: 0, count: Int(sizeBytes))
            let count = bytes.withUnsafeMutableBytes { pread(file, $0.baseAddress, $0.count, 0) }
            guard count == Int(sizeBytes) else { throw OuroError(.internal, "cannot read the \(sizeBytes) bytes to write") }
            return try pool.with(address, retry: true) { connection in
                try connection.socket.write(line: "INODE WRITE \(inode) \(sizeBytes) BIN", then: bytes)
                return try connection.readBinary(InodeStat.self)
            }
        }
        return try upload(header: "INODE WRITE \(inode) \(sizeBytes) BIN", file: file, sizeBytes: sizeBytes) { connection in
            try connection.readBinary(InodeStat.self)
        }
    }

    /// `CONTENT PUSH`: stores `sizeBytes` of `file` from `offset` as a content of its own (chunks and copies
    /// durable, not named in the catalog yet); returns its placement.
    public func pushContent(file: Int32, offset: UInt64, sizeBytes: UInt64) throws -> FileContent {
        try upload(header: "CONTENT PUSH \(sizeBytes)", file: file, offset: offset, sizeBytes: sizeBytes) { connection in
            try connection.readBinary(FileContent.self)
        }
    }

    /// `PIECE PUT` of bytes in memory (at most `Limits.streamBufferBytes`), on a pooled connection.
    public func putPiece(_ bytes: [UInt8]) throws -> FileContent {
        try pool.with(address, retry: true) { connection in
            try connection.socket.write(line: "PIECE PUT \(bytes.count) \(CRC32C.checksum(bytes))", then: bytes)
            return try connection.readBinary(FileContent.self)
        }
    }

    /// `PIECE PUT`: stores `sizeBytes` of `file` from `offset` as a piece (one chunk on `copies` nodes the node picks,
    /// every copy durable, not named in the catalog yet); returns its placement. Small pieces go on a pooled
    /// connection, large ones are streamed with `sendfile`.
    public func putPiece(file: Int32, offset: UInt64, sizeBytes: UInt64) throws -> FileContent {
        if sizeBytes <= UInt64(Limits.streamBufferBytes) {
            var bytes = [UInt8](repeating: 0, count: Int(sizeBytes))
            let count = bytes.withUnsafeMutableBytes { pread(file, $0.baseAddress, $0.count, off_t(offset)) }
            guard count == Int(sizeBytes) else { throw OuroError(.internal, "cannot read the \(sizeBytes) bytes of a piece") }
            return try putPiece(bytes)
        }
        var crc = CRC32C()
        var buffer = [UInt8](repeating: 0, count: Limits.streamBufferBytes)
        var position = offset
        while position < offset + sizeBytes {
            let want = Int(min(UInt64(buffer.count), offset + sizeBytes - position))
            let count = buffer.withUnsafeMutableBytes { pread(file, $0.baseAddress, want, off_t(position)) }
            guard count > 0 else { throw OuroError(.internal, "cannot read the \(sizeBytes) bytes of a piece") }
            buffer.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            position += UInt64(count)
        }
        return try upload(header: "PIECE PUT \(sizeBytes) \(crc.value)", file: file, offset: offset, sizeBytes: sizeBytes) { connection in
            try connection.readBinary(FileContent.self)
        }
    }

    /// `CHUNK GET`: streams `[offset, offset+length)` of a chunk into `sink` in pieces. Returns the bytes delivered.
    public func readChunk(_ chunk: ChunkID, offset: UInt64, lengthBytes: UInt64,
                          sink: (UnsafeRawBufferPointer) throws -> Void) throws -> UInt64 {
        try pool.with(address, retry: true) { connection in
            try connection.send("CHUNK GET \(chunk.contentID) \(chunk.index) \(chunk.parts) \(offset) \(lengthBytes)")
            let line = try connection.readReply()
            guard line.hasPrefix("DATA "), let length = UInt64(line.dropFirst(5)), length <= lengthBytes else {
                throw OuroError(.internal, "unexpected reply to CHUNK GET: \(line.prefix(80))")
            }
            var remaining = length
            var buffer = [UInt8](repeating: 0, count: Int(min(length, UInt64(Limits.streamBufferBytes))))
            try buffer.withUnsafeMutableBytes { raw in
                while remaining > 0 {
                    let want = Int(min(UInt64(raw.count), remaining))
                    let piece = UnsafeMutableRawBufferPointer(rebasing: raw[..<want])
                    try connection.reader.readExactly(into: piece)
                    try sink(UnsafeRawBufferPointer(piece))
                    remaining -= UInt64(want)
                }
            }
            return length
        }
    }

    /// `CHUNK GET` straight into `target` (no intermediate buffer): `[offset, offset+target.count)` of a chunk.
    /// Returns the bytes delivered (fewer only if the chunk is shorter).
    public func readChunk(_ chunk: ChunkID, offset: UInt64, into target: UnsafeMutableRawBufferPointer) throws -> Int {
        try pool.with(address, retry: true) { connection in
            try connection.send("CHUNK GET \(chunk.contentID) \(chunk.index) \(chunk.parts) \(offset) \(target.count)")
            let line = try connection.readReply()
            guard line.hasPrefix("DATA "), let length = Int(line.dropFirst(5)), length <= target.count else {
                throw OuroError(.internal, "unexpected reply to CHUNK GET: \(line.prefix(80))")
            }
            try connection.reader.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: target[..<length]))
            return length
        }
    }

    /// `CHUNK CHECK`: the length and CRC-32C of the node's stored copy.
    public func checkChunk(_ chunk: ChunkID) throws -> (lengthBytes: UInt64, crc32c: UInt32) {
        try pool.with(address, retry: true) { connection in
            try connection.send("CHUNK CHECK \(chunk.contentID) \(chunk.index) \(chunk.parts)")
            let fields = try connection.readReply().split(separator: " ")
            guard fields.count == 3, fields[0] == "OK", let length = UInt64(fields[1]), let crc = UInt32(fields[2]) else {
                throw OuroError(.internal, "bad CHUNK CHECK reply")
            }
            return (length, crc)
        }
    }

    /// What a holder found when it read its copy of a chunk afresh and compared it with the catalog.
    public enum CopyCheck: Equatable, Sendable {
        case good
        /// It did not match: moved aside, and the holder's repair loop fetches a good copy.
        case corrupt
        /// Not on its disk: the repair loop restores it.
        case missing
        /// The holder's catalog places no copy there (ours was stale).
        case notPlaced
        case unreachable(String)
    }

    /// `CHUNK VERIFY`.
    public func verifyChunk(_ chunk: ChunkID) -> CopyCheck {
        do {
            try simple("CHUNK VERIFY \(chunk.contentID) \(chunk.index) \(chunk.parts)", idempotent: true)
            return .good
        } catch let error as OuroError {
            switch error.code {
            case .corrupt: return .corrupt
            case .notFound: return .missing
            case .badRequest: return .notPlaced
            default: return .unreachable("\(error)")
            }
        } catch {
            return .unreachable("\(error)")
        }
    }

    /// `CHUNK VERIFIED`: when the holder last read its copy back and found it good (nil: not since it started).
    public func lastVerified(_ chunk: ChunkID) throws -> Double? {
        try pool.with(address, retry: true) { connection in
            try connection.send("CHUNK VERIFIED \(chunk.contentID) \(chunk.index) \(chunk.parts)")
            let fields = try connection.readReply().split(separator: " ")
            guard fields.count == 2, fields[0] == "OK", let seconds = Double(fields[1]) else {
                throw OuroError(.internal, "bad CHUNK VERIFIED reply")
            }
            return seconds > 0 ? seconds : nil
        }
    }

    /// `NODE PLAN LEAVE|JOIN <node>`: what that change would move, as this node's catalog has it now.
    public func plan(_ change: MovePlan.Change, _ node: NodeAddress) throws -> MovePlan {
        try pool.with(address, retry: true) { connection in
            try connection.send("NODE PLAN \(change.rawValue.uppercased()) \(node)")
            return try connection.readJSON(MovePlan.self)
        }
    }

    /// `NODE SCRUB`: starts a pass over every stored copy now.
    public func scrub() throws { try simple("NODE SCRUB") }

    private func simple(_ line: String, idempotent: Bool = false) throws {
        try pool.with(address, retry: idempotent) { connection in
            try connection.send(line)
            try connection.expectOK()
        }
    }
}

/// The CSV of `FILE LIST`: a field with `,` `"` CR or LF is quoted, `"` doubled.
public enum CSV {
    public static func field(_ text: String) -> String {
        // By scalar: "\r\n" is one Character and would match neither.
        guard text.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Splits one row; nil if a quoted field is still open (the row continues on the next line).
    public static func parseRow(_ row: String) -> [String]? {
        var fields: [String] = []
        var current = ""
        var quoted = false
        var iterator = Array(row).makeIterator()
        var atFieldStart = true
        while let character = iterator.next() {
            if quoted {
                if character == "\"" {
                    if let next = iterator.next() {
                        if next == "\"" { current.append("\"") } else {
                            quoted = false
                            if next == "," { fields.append(current); current = ""; atFieldStart = true } else { current.append(next) }
                        }
                    } else {
                        quoted = false
                    }
                } else {
                    current.append(character)
                }
            } else if character == "\"" && atFieldStart {
                quoted = true
                atFieldStart = false
            } else if character == "," {
                fields.append(current)
                current = ""
                atFieldStart = true
            } else {
                current.append(character)
                atFieldStart = false
            }
        }
        if quoted { return nil }
        fields.append(current)
        return fields
    }
}

extension String {
    func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
