/// Every bound the system enforces, in one place.
public enum Limits {
    /// Longest request or reply header line, terminator included.
    public static let headerLineBytes = 8 * 1024
    /// Longest name of one path component (as on Linux).
    public static let nameComponentBytes = 255
    /// Longest whole path.
    public static let pathBytes = 4096
    /// Default largest file a node accepts (`--max-file-size`).
    public static let defaultMaxFileSizeBytes: UInt64 = 1 << 40
    /// Largest JSON payload of a metadata call or a catalog batch.
    public static let jsonPayloadBytes = 64 * 1024 * 1024
    /// Largest extended attribute value.
    public static let xattrValueBytes = 64 * 1024
    /// Size of the one buffer each streaming connection uses.
    public static let streamBufferBytes = 1 << 20
    /// Send buffer of a Unix-socket connection that streams a file or chunk (a push and each hop of its relay). The
    /// default (~200 KiB) stalls every hop upstream as soon as one hop waits a moment for its disk; a few MiB lets the
    /// hops write at their own pace (a 1 GiB push on three local nodes: ~1.5 s → ~1.2 s). The kernel caps the request
    /// at `net.core.wmem_max` (then doubles it): on a stock kernel that is ~416 KiB, here 8 MiB. TCP connections keep
    /// the kernel's autotuning, which can grow further.
    public static let streamSocketSendBufferBytes: Int32 = 4 << 20
    /// A connection with no complete request for this long is closed.
    public static let idleTimeoutSeconds = 120
    /// Idle timeout of a connection that has not sent the cluster secret yet (on a node that has one).
    public static let unauthenticatedIdleSeconds = 5
    /// Pings answered on such a connection before it must send the secret or go.
    public static let unauthenticatedPings = 16
    /// A transfer that makes no progress for this long fails.
    public static let ioTimeoutSeconds = 30
    /// Connecting to a peer gives up after this long.
    public static let connectTimeoutMilliseconds = 2000
    /// Connections served at once by one node; more are refused with `ERR UNAVAILABLE`.
    public static let maxConnections = 1024
    /// Of those, connections that have not proved the cluster secret yet (on a node that has one), in all and from
    /// one peer address (`ConnectionBudget`); more are refused at once.
    public static let maxUnauthenticatedConnections = 256
    public static let maxUnauthenticatedPerPeer = 64
    /// A connection must have proved the cluster secret this long after it was accepted, whatever it sends.
    public static let authenticateWithinSeconds = 5.0
    /// Largest file written through the mount that is kept inline in the catalog rather than in chunks. Small
    /// enough that a `CATALOG SYNC` batch of such records stays far below `jsonPayloadBytes`.
    public static let inlineContentBytes = 8 * 1024
    /// Slices an inode's own content may hold (the slices of writes in place live in region records).
    public static let maxSlices = 4096
    /// A file's bytes are grouped in regions of this size for writes in place: each region's slices are one record.
    public static let regionBytes: UInt64 = 1 << 20
    /// Slices one region may hold; an update that would pass it is refused (the mount compacts first).
    public static let maxRegionSlices = 256
    /// A region with more slices than this is compacted in the background by the mount that wrote it.
    public static let compactRegionSlices = 16
    /// Largest piece (one write's bytes, stored as a one-chunk content on `copies` nodes).
    public static let maxPieceBytes: UInt64 = 64 << 20
    /// Largest size of a sparse file (holes cost nothing): what `truncate -s` may ask for.
    public static let maxSparseFileBytes: UInt64 = 1 << 62
    /// Catalog records per `CATALOG SYNC` reply.
    public static let syncBatchRecords = 2000
    /// Entries in one page of `READDIR` (the mount lists a directory of any size a page at a time).
    public static let readdirPageEntries = 4096
    /// Encoded bytes per `CATALOG SYNC` reply (records with inline bytes or many segments are large), well under
    /// `jsonPayloadBytes`, which every reply must fit.
    public static let syncBatchBytes = 16 << 20
}
