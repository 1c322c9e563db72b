import Glibc
import OuroCore

/// The ring as the dashboard shows it (JSON for the page): its members with their state and load, one directory of
/// the file tree with each file's health, one file's placement with when each copy was last read back. Built from
/// plain client calls, so anything that can reach a node can show the same.
public struct RingPicture: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var address: String
        /// `alive`, `dead` (the netmap says so) or `noreply` (alive in the netmap, but did not answer just now).
        public var state: String
        public var next: String?
        public var chunks: Int?
        public var storedBytes: UInt64?
        public var diskTotalBytes: UInt64?
        public var diskAvailableBytes: UInt64?
        /// Chunks this member judges short of copies.
        public var shortChunks: Int?
        public var repair: String?
        public var scrub: ScrubReport?
        public var bytesReceived: UInt64?
        public var bytesSent: UInt64?
    }

    public var epoch: UInt64
    public var files: UInt64?
    public var members: [Member]
    /// Wall-clock seconds when it was sampled (the page turns byte counts into rates between two samples).
    public var sampledAt: Double

    /// `infos[i]` is member i's `NODE INFO` (nil: no answer).
    public init(netmap: Netmap, infos: [NodeInfo?], sampledAt: Double) {
        // NETMAP GET's lines carry no epoch; every member's NODE INFO does.
        epoch = infos.compactMap { $0?.netmap.epoch }.max() ?? netmap.epoch
        files = infos.compactMap { $0 }.first?.usage.files
        self.sampledAt = sampledAt
        members = zip(netmap.members, infos).map { member, info in
            guard let info else {
                return Member(address: member.address.description, state: member.alive ? "noreply" : "dead")
            }
            return Member(address: member.address.description, state: member.alive ? "alive" : "dead",
                          next: info.next?.description, chunks: info.chunkFiles, storedBytes: info.chunkBytes,
                          diskTotalBytes: info.usage.totalBytes, diskAvailableBytes: info.usage.availableBytes,
                          shortChunks: info.underReplicatedChunks, repair: info.repair, scrub: info.scrub,
                          bytesReceived: info.bytesReceived, bytesSent: info.bytesSent)
        }
    }

    /// Asks `node` for the netmap and every member for its `NODE INFO`.
    public static func fetch(from node: NodeAddress, pool: ConnectionPool) throws -> RingPicture {
        let (netmap, infos) = try RingReport.fetch(from: node, pool: pool)
        return RingPicture(netmap: netmap, infos: infos, sampledAt: wallClockSeconds())
    }
}

/// One page of a directory: its entries with each file's size and health (`ContentHealth`).
public struct DirectoryView: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        public var name: String
        /// `file`, `directory`, `symlink` or `special`.
        public var kind: String
        public var sizeBytes: UInt64
        /// Seconds since 1970.
        public var modifiedAt: Double
        /// Files: live copies of the least-kept chunk, and the copies wanted.
        public var copies: Int?
        public var wanted: Int?
        /// Files: the nodes that hold any of its chunks, in ring order of first appearance.
        public var holders: [String]?
    }

    public var path: String
    public var entries: [Entry]
    /// Names follow the last entry (ask again with `after` = its name).
    public var more: Bool

    public static let pageEntries = 100

    /// `stats` are the entries with their full attributes (placement included).
    public init(path: String, entries: [(name: String, stat: InodeStat)], more: Bool, netmap: Netmap) {
        self.path = path
        self.more = more
        self.entries = entries.map { name, stat in
            let inode = stat.inode
            var entry = Entry(name: name, kind: DirectoryView.kindName(inode.kind), sizeBytes: inode.content?.sizeBytes ?? 0,
                              modifiedAt: Double(inode.mtimeNs) / 1e9)
            if inode.kind == .file {
                let health = ContentHealth(content: inode.content, netmap: netmap)
                entry.copies = health.liveCopies
                entry.wanted = health.wantedCopies
                var holders: [String] = []
                for piece in inode.content?.pieces ?? [] {
                    for chunk in piece.chunks {
                        for holder in chunk.holders where !holders.contains(holder.description) { holders.append(holder.description) }
                    }
                }
                entry.holders = holders
            }
            return entry
        }
    }

    static func kindName(_ kind: InodeKind) -> String {
        switch kind {
        case .file: "file"
        case .directory: "directory"
        case .symlink: "symlink"
        default: "special"
        }
    }

    /// A page of the directory at `path` (`/` is the root) after the name `after`.
    public static func fetch(path: String, after: String?, from node: NodeAddress, pool: ConnectionPool) throws -> DirectoryView {
        let client = NodeClient(node, pool: pool)
        let directory = try FileView.resolve(path, client)
        guard directory.inode.kind == .directory else { throw OuroError(.notDir, "\(path) is not a directory") }
        var request = FSRequest()
        request.inode = directory.inode.id
        request.after = after
        request.limit = UInt32(pageEntries)
        let page = try client.fs(.readdir, request, idempotent: true)
        let listed = (page.entries ?? []).filter { $0.name != "." && $0.name != ".." }
        // A listing leaves placement out; each file's attributes are asked for (a page is small).
        let stats = parallelMap(listed, width: 8) { entry -> InodeStat in
            guard entry.stat.inode.kind == .file else { return entry.stat }
            var one = FSRequest()
            one.inode = entry.stat.inode.id
            return (try? client.fs(.getattr, one, idempotent: true).stat) ?? entry.stat
        }
        return DirectoryView(path: path, entries: zip(listed, stats).map { ($0.name, $1) }, more: page.more ?? false,
                             netmap: try client.netmap())
    }
}

/// One file: its size, hash, health, and each chunk's holders with when each copy was last read back from disk and
/// found good.
public struct FileView: Codable, Sendable, Equatable {
    public struct Holder: Codable, Sendable, Equatable {
        public var address: String
        /// `alive`, `dead` or `gone` (no longer a member).
        public var state: String
        /// Seconds since 1970; nil: not read back since its node started (or the node did not answer).
        public var verifiedAt: Double?
    }

    public struct Chunk: Codable, Sendable, Equatable {
        public var piece: Int
        public var index: Int
        public var parts: Int
        public var lengthBytes: UInt64
        public var holders: [Holder]
    }

    public var path: String
    public var sizeBytes: UInt64
    public var modifiedAt: Double
    public var sha256: String?
    public var copies: Int
    public var wanted: Int
    /// Bytes kept in the catalog itself (no chunks).
    public var inline: Bool
    public var chunks: [Chunk]
    public var verification: CopyVerification

    public init(path: String, inode: Inode, netmap: Netmap, verifiedAt: (ChunkID, NodeAddress) -> Double?) {
        self.path = path
        sizeBytes = inode.content?.sizeBytes ?? 0
        modifiedAt = Double(inode.mtimeNs) / 1e9
        sha256 = inode.content?.sha256
        let health = ContentHealth(content: inode.content, netmap: netmap)
        copies = health.liveCopies
        wanted = health.wantedCopies
        inline = inode.content.map { content in content.pieces.allSatisfy { $0.isInline } } ?? true
        var chunks: [Chunk] = []
        for (number, piece) in (inode.content?.pieces ?? []).enumerated() where !piece.isInline {
            for (index, placement) in piece.chunks.enumerated() {
                let id = piece.chunkID(index)
                let holders = placement.holders.map { holder in
                    Holder(address: holder.description,
                           state: netmap.members.isEmpty || netmap.isAlive(holder) ? "alive" : netmap.contains(holder) ? "dead" : "gone",
                           verifiedAt: verifiedAt(id, holder))
                }
                chunks.append(Chunk(piece: number + 1, index: index + 1, parts: piece.parts, lengthBytes: placement.lengthBytes,
                                    holders: holders))
            }
        }
        self.chunks = chunks
        verification = CopyVerification(times: chunks.flatMap { $0.holders.map(\.verifiedAt) })
    }

    public static func fetch(path: String, from node: NodeAddress, pool: ConnectionPool) throws -> FileView {
        let client = NodeClient(node, pool: pool)
        let stat = try resolve(path, client)
        guard stat.inode.kind == .file else { throw OuroError(.badRequest, "\(path) is not a regular file") }
        let times = CopyVerification.lastVerified(of: stat.inode.content, pool: pool)
        return FileView(path: path, inode: stat.inode, netmap: try client.netmap()) { times[CopyVerification.Key($0, $1)] ?? nil }
    }

    static func resolve(_ path: String, _ client: NodeClient) throws -> InodeStat {
        var request = FSRequest()
        request.path = path.hasPrefix("/") ? String(path.dropFirst()) : path
        guard let stat = try client.fs(.resolve, request, idempotent: true).stat else {
            throw OuroError.notFound("\(path) not found")
        }
        return stat
    }
}

/// When a file's copies were last read back from disk by their holders and found good: the oldest of them, and how
/// many copies have no such time (not read back since their node started, or the node did not answer).
public struct CopyVerification: Codable, Sendable, Equatable {
    public var copies: Int
    public var unverified: Int
    /// The least recent verification among the copies that have one.
    public var oldest: Double?

    public init(times: [Double?]) {
        copies = times.count
        unverified = times.filter { $0 == nil }.count
        oldest = times.compactMap { $0 }.min()
    }

    /// `user.ouro.verified`: `2026-12-07T23:40:12Z` when every copy was read back (the oldest time); otherwise how
    /// many were, with the oldest.
    public var text: String {
        if copies == 0 { return "inline: checked against its checksum at every read" }
        guard let oldest else { return "never: no copy read back from disk yet (since its node started)" }
        let time = Self.iso8601(oldest)
        return unverified == 0 ? time : "partly: \(copies - unverified) of \(copies) copies, oldest \(time)"
    }

    public static func iso8601(_ seconds: Double) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    public struct Key: Hashable, Sendable {
        var chunk: ChunkID
        var holder: NodeAddress
        public init(_ chunk: ChunkID, _ holder: NodeAddress) {
            self.chunk = chunk
            self.holder = holder
        }
    }

    /// Asks every holder of every chunk of `content` (`CHUNK VERIFIED`, in parallel).
    public static func lastVerified(of content: FileContent?, pool: ConnectionPool) -> [Key: Double?] {
        var keys: [Key] = []
        for piece in content?.pieces ?? [] where !piece.isInline {
            for (index, placement) in piece.chunks.enumerated() {
                for holder in placement.holders { keys.append(Key(piece.chunkID(index), holder)) }
            }
        }
        let times = parallelMap(keys, width: 8) { key in try? NodeClient(key.holder, pool: pool).lastVerified(key.chunk) }
        var result: [Key: Double?] = [:]
        for (key, time) in zip(keys, times) { result[key] = time ?? nil }
        return result
    }

    /// The summary for `content` (every copy asked).
    public static func of(_ content: FileContent?, pool: ConnectionPool) -> CopyVerification {
        CopyVerification(times: Array(lastVerified(of: content, pool: pool).values))
    }
}
