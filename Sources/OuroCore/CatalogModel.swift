import Foundation

/// Orders catalog updates: a hybrid logical clock value, ties broken by the origin node.
public struct Version: Codable, Comparable, Hashable, Sendable {
    public var clock: UInt64
    public var origin: String

    public init(clock: UInt64, origin: String) {
        self.clock = clock
        self.origin = origin
    }

    public static let zero = Version(clock: 0, origin: "")

    public static func < (a: Version, b: Version) -> Bool {
        a.clock != b.clock ? a.clock < b.clock : a.origin < b.origin
    }
}

public enum InodeKind: String, Codable, Sendable {
    case file, directory, symlink, fifo, socket, characterDevice, blockDevice
}

/// Where one chunk lives: its length, checksum, and every node holding a copy (primary first).
public struct ChunkPlacement: Codable, Equatable, Sendable {
    public var lengthBytes: UInt64
    public var crc32c: UInt32
    public var holders: [NodeAddress]

    public init(lengthBytes: UInt64, crc32c: UInt32, holders: [NodeAddress]) {
        self.lengthBytes = lengthBytes
        self.crc32c = crc32c
        self.holders = holders
    }
}

/// One immutable version of a file's bytes: the FileTag's placement part.
public struct FileContent: Codable, Equatable, Sendable {
    public var id: ContentID
    public var sizeBytes: UInt64
    /// The node that holds chunk 1.
    public var start: NodeAddress
    public var copies: Int
    public var chunks: [ChunkPlacement]
    /// A small file's bytes kept in the catalog itself, on every node, instead of in chunks (`chunks` is empty):
    /// writing one is a single catalog commit. Only writes through the mount of at most
    /// `Limits.inlineContentBytes` are stored so; `FILE PUSH` always lays chunks out as the protocol says.
    public var inlineData: Data?
    /// CRC-32C of `inlineData`, checked when a node loads its log and when a reader gets the bytes.
    public var inlineCRC32C: UInt32?
    /// A large file written through the mount: consecutive pieces, each a chunked content of its own (own id,
    /// layout and placement), pushed while the application was still writing (`chunks` is empty).
    public var segments: [FileContent]?
    /// A file changed in place: its bytes are zeros overlaid with these slices of plain stored contents, in order
    /// (`ContentSlices.swift`; `chunks` is empty, `sizeBytes` is the file's size).
    public var slices: [ContentSlice]?
    /// SHA-256 of the whole content (64 lowercase hex digits, as `sha256sum` prints), when the node that stored it
    /// saw every byte in order: a push through one node (`FILE PUSH`, `INODE WRITE`) or inline bytes. Not for
    /// segments and slices, which arrive in pieces. It belongs to this content: replacing the content drops it.
    public var sha256: String?

    public init(id: ContentID, sizeBytes: UInt64, start: NodeAddress, copies: Int, chunks: [ChunkPlacement]) {
        self.id = id
        self.sizeBytes = sizeBytes
        self.start = start
        self.copies = copies
        self.chunks = chunks
    }

    /// A content stored inline in the catalog.
    public init(id: ContentID, inline bytes: [UInt8], start: NodeAddress) {
        self.init(id: id, sizeBytes: UInt64(bytes.count), start: start, copies: 0, chunks: [])
        inlineData = Data(bytes)
        inlineCRC32C = CRC32C.checksum(bytes)
    }

    public var isInline: Bool { inlineData != nil }

    /// A content made of `segments` (sizes add up; placement and copies are the segments').
    public init(id: ContentID, segments: [FileContent]) {
        self.init(id: id, sizeBytes: segments.reduce(0) { $0 + $1.sizeBytes }, start: segments.first?.start ?? NodeAddress(host: "127.0.0.1", port: 1),
                  copies: segments.map(\.copies).min() ?? 0, chunks: [])
        self.segments = segments
    }

    /// The stored contents that hold this one's bytes: its segments, its slices' sources (each once), or itself.
    public var pieces: [FileContent] {
        if let slices {
            var seen = Set<ContentID>()
            return slices.compactMap { seen.insert($0.source.id).inserted ? $0.source : nil }
        }
        return segments ?? [self]
    }

    /// The inline bytes if they are intact.
    public func checkedInlineBytes() throws(OuroError) -> [UInt8]? {
        guard let inlineData else { return nil }
        let bytes = [UInt8](inlineData)
        guard UInt64(bytes.count) == sizeBytes, CRC32C.checksum(bytes) == inlineCRC32C else {
            throw OuroError(.corrupt, "the inline bytes of content \(id) do not match their checksum")
        }
        return bytes
    }

    public var parts: Int { chunks.count }
    public var layout: ChunkLayout { ChunkLayout(sizeBytes: sizeBytes, parts: chunks.count) }

    public func chunkID(_ index: Int) -> ChunkID {
        // A stored content always has a valid index range.
        try! ChunkID(contentID: id, index: index, parts: chunks.count)
    }
}

/// A file, directory, symlink or special file. Names live in `Dirent`s, so several names can share one inode.
public struct Inode: Codable, Equatable, Sendable {
    public static let rootID: UInt64 = 1

    public var id: UInt64
    public var version: Version
    public var kind: InodeKind
    /// Permission bits (07777).
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt32
    public var mtimeNs: Int64
    public var ctimeNs: Int64
    public var atimeNs: Int64
    public var content: FileContent?
    public var symlinkTarget: String?
    public var xattrs: [String: Data]
    /// A tombstone: the inode is gone, kept so that merges do not resurrect it.
    public var deleted: Bool

    public init(id: UInt64, version: Version, kind: InodeKind, permissions: UInt32, uid: UInt32, gid: UInt32,
                rdev: UInt32 = 0, timeNs: Int64, content: FileContent? = nil, symlinkTarget: String? = nil) {
        self.id = id
        self.version = version
        self.kind = kind
        self.permissions = permissions & 0o7777
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        mtimeNs = timeNs
        ctimeNs = timeNs
        atimeNs = timeNs
        self.content = content
        self.symlinkTarget = symlinkTarget
        xattrs = [:]
        deleted = false
    }

    public var sizeBytes: UInt64 {
        switch kind {
        case .file: content?.sizeBytes ?? 0
        case .symlink: UInt64(symlinkTarget?.utf8.count ?? 0)
        case .directory: 4096
        default: 0
        }
    }

    /// The root directory every node starts with; any real change outranks it.
    public static var root: Inode {
        Inode(id: rootID, version: .zero, kind: .directory, permissions: 0o755, uid: 0, gid: 0, timeNs: 0)
    }
}

/// One name in a directory. `inode == nil` is a removed name (a tombstone kept for merging).
public struct Dirent: Codable, Equatable, Sendable {
    public var parent: UInt64
    public var name: String
    public var version: Version
    public var inode: UInt64?

    public init(parent: UInt64, name: String, version: Version, inode: UInt64?) {
        self.parent = parent
        self.name = name
        self.version = version
        self.inode = inode
    }

    public var key: DirentKey { DirentKey(parent: parent, name: name) }
}

public struct DirentKey: Hashable, Sendable {
    public var parent: UInt64
    public var name: String

    public init(parent: UInt64, name: String) {
        self.parent = parent
        self.name = name
    }
}

/// Where one chunk's copies live now, when that changed after the push (re-replication, a node leaving).
/// Kept apart from the inode so that repair never races with a write of the file itself.
public struct PlacementRecord: Codable, Equatable, Sendable {
    public var content: ContentID
    public var chunk: Int
    public var holders: [NodeAddress]
    public var version: Version

    public init(content: ContentID, chunk: Int, holders: [NodeAddress], version: Version) {
        self.content = content
        self.chunk = chunk
        self.holders = holders
        self.version = version
    }

    public var key: PlacementKey { PlacementKey(content: content, chunk: chunk) }
}

public struct PlacementKey: Hashable, Sendable {
    public var content: ContentID
    public var chunk: Int
}

/// The slices written in place over one `Limits.regionBytes` region of a file, on top of its inode's content
/// (see docs/design.md, "Files that change in place"). A record of its own, so that an update rewrites the slices of
/// the regions it touched, not those of the whole file. No slices: a removed record (a tombstone).
public struct RegionRecord: Codable, Equatable, Sendable {
    public var inode: UInt64
    public var region: UInt64
    /// Inside the region, in order (later ones win).
    public var slices: [ContentSlice]
    public var version: Version
    /// How many times the bytes under the slices changed (a truncation reached into the region, or a rewrite dropped
    /// it): a compaction that read the region before such a change would bring back bytes cut off, so it is refused.
    public var cuts: UInt64

    public init(inode: UInt64, region: UInt64, slices: [ContentSlice], version: Version, cuts: UInt64 = 0) {
        self.inode = inode
        self.region = region
        self.slices = slices
        self.version = version
        self.cuts = cuts
    }

    public var key: RegionKey { RegionKey(inode: inode, region: region) }
}

public struct RegionKey: Hashable, Sendable {
    public var inode: UInt64
    public var region: UInt64
}

/// One catalog change as stored and exchanged: exactly one of the four is set.
public struct CatalogRecord: Codable, Equatable, Sendable {
    public var inode: Inode?
    public var dirent: Dirent?
    public var placement: PlacementRecord?
    public var region: RegionRecord?

    public init(_ inode: Inode) { self.inode = inode }
    public init(_ dirent: Dirent) { self.dirent = dirent }
    public init(_ placement: PlacementRecord) { self.placement = placement }
    public init(_ region: RegionRecord) { self.region = region }

    public var version: Version { inode?.version ?? dirent?.version ?? placement?.version ?? region!.version }
}

/// An inode with the figures derived from the whole catalog, as returned to clients.
public struct InodeStat: Codable, Equatable, Sendable {
    public var inode: Inode
    public var linkCount: Int
    /// Bytes the file's content stores (holes do not count), when an answer leaves its slices out.
    public var storedBytes: UInt64?
    public init(inode: Inode, linkCount: Int, storedBytes: UInt64? = nil) {
        self.inode = inode
        self.linkCount = linkCount
        self.storedBytes = storedBytes
    }

    /// Attributes only: the content's bytes, segments and slices left out (placement stays unless `chunks`), with
    /// what it stores kept for `st_blocks`.
    public func withoutContentDetail(chunks: Bool = true) -> InodeStat {
        var stat = self
        if let content = inode.content, content.slices != nil { stat.storedBytes = content.storedBytes }
        stat.inode.content?.inlineData = nil
        stat.inode.content?.segments = nil
        stat.inode.content?.slices = nil
        if !chunks { stat.inode.content?.chunks = [] }
        return stat
    }
}
