import Foundation

/// The metadata operations of `FS <OP>`, spelt on the wire as their raw values. Clients name them by case and the
/// node's switch over them is exhaustive, so a misspelt or forgotten operation is a compile error, not a runtime one.
public enum FSOperation: String, CaseIterable, Sendable {
    case lookup = "LOOKUP"
    case getattr = "GETATTR"
    case resolve = "RESOLVE"
    case readdir = "READDIR"
    case mkdir = "MKDIR"
    case mknod = "MKNOD"
    case symlink = "SYMLINK"
    case link = "LINK"
    case unlink = "UNLINK"
    case rmdir = "RMDIR"
    case rename = "RENAME"
    case setattr = "SETATTR"
    case setxattr = "SETXATTR"
    case removexattr = "REMOVEXATTR"
    case getxattr = "GETXATTR"
    case listxattr = "LISTXATTR"
    case create = "CREATE"
    case setcontent = "SETCONTENT"
    case writeslices = "WRITESLICES"
    case compact = "COMPACT"
    case statfs = "STATFS"
    /// Makes every change the node has applied durable (`fsync` of a directory).
    case sync = "SYNC"

    /// Operations that add or remove a name: the answer carries the changed directories' new attributes (their
    /// mtime moved, and the kernel asks for them right after).
    public var changesNames: Bool {
        switch self {
        case .mkdir, .mknod, .create, .symlink, .link, .unlink, .rmdir, .rename: true
        default: false
        }
    }
}

/// Arguments of an `FS <OP>` metadata call (JSON payload); each operation reads the fields it needs.
public struct FSRequest: Codable, Sendable, Equatable {
    public var parent: UInt64?
    public var name: String?
    public var newParent: UInt64?
    public var newName: String?
    public var inode: UInt64?
    public var path: String?
    public var kind: InodeKind?
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var rdev: UInt32?
    public var target: String?
    public var sizeBytes: UInt64?
    public var mtimeNs: Int64?
    public var atimeNs: Int64?
    public var flags: UInt32?
    public var xattrName: String?
    public var xattrValue: Data?
    /// `CREATE`: a small file's bytes, committed with its name.
    public var data: Data?
    /// `SETCONTENT`: the file's new content, made of segments already pushed with `CONTENT PUSH`.
    public var content: FileContent?
    /// `WRITESLICES`: the lowest size the file was truncated to since its last commit, if it was.
    public var truncatedTo: UInt64?
    /// `COMPACT`: where the merged region starts.
    public var offset: UInt64?
    /// `WRITESLICES`: the new slices (pieces already stored); `COMPACT`: the slices the compaction merged.
    public var slices: [ContentSlice]?
    /// `COMPACT`: the region's `cuts` when the compaction read it.
    public var cuts: UInt64?
    /// `READDIR`: list the names after this one (in the byte order of their UTF-8), at most `limit` of them.
    public var after: String?
    public var limit: UInt32?
    /// `READDIR`: names, inode numbers and kinds only (`names` in the answer), for a plain `readdir` that takes
    /// no attributes: no inode is decoded, no link is counted.
    public var namesOnly: Bool?
    public init() {}
}

/// The answer to an `FS <OP>` call.
public struct FSReply: Codable, Sendable, Equatable {
    public var stat: InodeStat?
    public var entries: [Entry]?
    public var xattrValue: Data?
    public var xattrNames: [String]?
    public var usage: RingUsage?
    /// After a change of names: the attributes of the directories it changed.
    public var directories: [InodeStat]?
    /// `WRITESLICES`: the regions it wrote that hold enough slices to be compacted; `COMPACT`: the region as it is now.
    public var regions: [RegionRecord]?
    /// `WRITESLICES` that carried its bytes: the slices as committed, with the pieces that now hold them.
    public var slices: [ContentSlice]?
    /// `READDIR` with a `limit`: whether names follow the last one listed.
    public var more: Bool?
    /// `READDIR` with `namesOnly`: the entries without their attributes.
    public var names: [NameEntry]?
    public init() {}

    public struct Entry: Codable, Sendable, Equatable {
        public var name: String
        public var stat: InodeStat
        public init(name: String, stat: InodeStat) {
            self.name = name
            self.stat = stat
        }
    }

    /// What a plain `readdir` reports of an entry (`d_ino`, `d_type`).
    public struct NameEntry: Codable, Sendable, Equatable {
        public var name: String
        public var inode: UInt64
        public var kind: InodeKind
        public init(name: String, inode: UInt64, kind: InodeKind) {
            self.name = name
            self.inode = inode
            self.kind = kind
        }
    }
}

/// Capacity and use of the ring's disks (for `df`) and of one node (`NODE INFO`).
public struct RingUsage: Codable, Sendable, Equatable {
    public var totalBytes: UInt64
    public var freeBytes: UInt64
    public var availableBytes: UInt64
    public var files: UInt64
    /// Which disk this is (machine id and device): nodes that share one are counted once.
    public var disk: String?
    public init(totalBytes: UInt64, freeBytes: UInt64, availableBytes: UInt64, files: UInt64, disk: String? = nil) {
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
        self.availableBytes = availableBytes
        self.files = files
        self.disk = disk
    }
}

/// What `NODE INFO` reports about one node.
/// A scrub pass over a node's stored copies: every copy read back and compared with its catalog checksum.
public struct ScrubReport: Codable, Sendable, Equatable {
    public var running = false
    public var checked = 0
    public var total = 0
    public var corrupt = 0
    /// Seconds since 1970 when the current or last pass started, and when the last pass finished (nil: none yet).
    public var startedAt: Double?
    public var finishedAt: Double?
    public init() {}
}

public struct NodeInfo: Codable, Sendable, Equatable {
    public var address: NodeAddress
    public var next: NodeAddress?
    public var usage: RingUsage
    public var chunkFiles: Int
    public var chunkBytes: UInt64
    public var catalogRecords: Int
    /// Catalog changes written to this node's log but not fsynced yet (namespace changes, for a few milliseconds).
    public var catalogUnsyncedRecords: Int?
    /// Bytes of small piece copies in the piece journal not yet written out as chunk files (a checkpoint, about
    /// every second, writes them and fsyncs the catalog log).
    public var pieceJournalBytes: Int?
    /// Bytes of the catalog on disk: the store with its write-ahead log, and the log's frames (not the zeros
    /// written ahead of them).
    public var catalogBytes: Int?
    /// Catalog records the node replayed from its log when it started (those after the store's last checkpoint):
    /// a restart costs these, not the catalog's size.
    public var catalogReplayedRecords: Int?
    /// Catalog records received from peers by sync since the node started, new or not: a restart pulls what
    /// changed while the node was away, not the catalog (the sync cursors are kept in the store).
    public var catalogPulledRecords: Int?
    /// Namespace changes this node sent its peers since it started, and the `CATALOG APPLY` messages that carried
    /// them (to every live peer each): fewer messages than changes when changes came faster than a round trip.
    public var catalogBroadcastChanges: Int?
    public var catalogBroadcastMessages: Int?
    /// The catalog store's size in pages as SQLite counts them (wherever they are, the store file or its
    /// write-ahead log), and how much of it is free pages: what the catalog itself takes.
    public var catalogStoreBytes: Int?
    public var catalogStoreFreeBytes: Int?
    /// Catalog records dropped by garbage collection since the node started (tombstones every member had).
    public var catalogCollectedRecords: Int?
    /// Live rows a returning node replaced by tombstones since it started: the ring had removed them and dropped
    /// the tombstones while it was away.
    public var catalogSweptRecords: Int?
    public var underReplicatedChunks: Int
    public var repair: String
    /// The scrubber's pass: running or last finished.
    public var scrub: ScrubReport?
    /// Bytes this node's sockets received and sent since it started (all connections: clients and peers).
    public var bytesReceived: UInt64?
    public var bytesSent: UInt64?
    public var netmap: Netmap
    public init(address: NodeAddress, next: NodeAddress?, usage: RingUsage, chunkFiles: Int, chunkBytes: UInt64,
                catalogRecords: Int, underReplicatedChunks: Int, repair: String, netmap: Netmap) {
        self.address = address
        self.next = next
        self.usage = usage
        self.chunkFiles = chunkFiles
        self.chunkBytes = chunkBytes
        self.catalogRecords = catalogRecords
        self.underReplicatedChunks = underReplicatedChunks
        self.repair = repair
        self.netmap = netmap
    }
}

/// JSON with one configuration everywhere (sorted keys keep logs and tests stable).
public enum WireJSON {
    public static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Our own types always encode.
        return Array(try! encoder.encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(OuroError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw .badRequest("malformed JSON payload: \(error)")
        }
    }
}
