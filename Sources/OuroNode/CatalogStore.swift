import Glibc
import Logging
import OuroClient
import OuroCore
import SystemPackage

/// The node's durable catalog: the merged `Catalog` in memory, and an append-only log of the records that built it
/// (`<data>/catalog.log`, one JSON record a line, fsynced per batch). Every applied record gets a local sequence
/// number, so a peer can ask for "everything after N" (`CATALOG SYNC`).
public final class CatalogStore: @unchecked Sendable {
    private struct LogEntry: Codable {
        var seq: UInt64
        var record: CatalogRecord
    }

    private struct LogHeader: Codable {
        var incarnation: String
    }

    private enum RecordKey: Hashable {
        case inode(UInt64)
        case dirent(DirentKey)
        case placement(PlacementKey)
    }

    private let lock = Lock()
    private var catalog = Catalog()
    private var latest: [RecordKey: LogEntry] = [:]
    /// Keys in the order of their sequence numbers (superseded entries are skipped, and dropped now and then),
    /// so `changes(after:)` finds what is new without sorting the whole catalog.
    private var order: [(seq: UInt64, key: RecordKey)] = []
    private var sequence: UInt64 = 0
    private var clock: UInt64 = 0
    private var log: FileDescriptor
    private let path: FilePath
    private let origin: String
    private let logger: Logger
    /// Changes when the log is rewritten, so that peers restart their sync cursor.
    public private(set) var incarnation: String

    public init(directory: FilePath, origin: String, logger: Logger) throws {
        path = directory.appending("catalog.log")
        self.origin = origin
        self.logger = logger
        incarnation = ""
        log = FileDescriptor(rawValue: -1)
        var lines = 0
        if let bytes = FileManagerLite.read(path) {
            // Every record ends with a line break; bytes after the last one are a torn append (a crash mid-write,
            // never acknowledged). Cut them off, or the next record would be glued to them and lost too.
            let complete = bytes.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
            if complete < bytes.count {
                logger.warning("dropping a torn record at the end of the catalog log", metadata: ["bytes": "\(bytes.count - complete)"])
                guard truncate(path.string, off_t(complete)) == 0 else {
                    throw OuroError(.internal, "cannot repair \(path): \(String(cString: strerror(errno)))")
                }
            }
            for line in bytes[..<complete].split(separator: 0x0A) {
                if incarnation.isEmpty, let header = try? WireJSON.decode(LogHeader.self, from: Array(line)) {
                    incarnation = header.incarnation
                    continue
                }
                guard let entry = try? WireJSON.decode(LogEntry.self, from: Array(line)) else { continue }
                lines += 1
                replay(entry.record)
            }
        }
        if incarnation.isEmpty || lines > 2 * latest.count + 1000 {
            try rewrite()
        } else {
            log = try FileDescriptor.open(path, .writeOnly, options: [.append, .closeOnExec])
        }
        logger.info("catalog loaded", metadata: ["records": "\(latest.count)", "files": "\(catalog.fileCount)"])
    }

    deinit { try? log.close() }

    private func replay(_ record: CatalogRecord) {
        guard catalog.apply(record) else { return }
        sequence += 1
        remember(LogEntry(seq: sequence, record: record))
        clock = max(clock, record.version.clock)
    }

    private func remember(_ entry: LogEntry) {
        let key = key(of: entry.record)
        latest[key] = entry
        order.append((entry.seq, key))
        if order.count > 2 * latest.count + 1024 {
            order.removeAll { latest[$0.key]?.seq != $0.seq }
        }
    }

    private func key(of record: CatalogRecord) -> RecordKey {
        if let inode = record.inode { return .inode(inode.id) }
        if let placement = record.placement { return .placement(placement.key) }
        return .dirent(record.dirent!.key)
    }

    /// Writes a compact log (the latest record of each key) under a new incarnation.
    private func rewrite() throws {
        incarnation = ContentID.random().hex
        var bytes = WireJSON.encode(LogHeader(incarnation: incarnation)) + [0x0A]
        for entry in latest.values.sorted(by: { $0.seq < $1.seq }) {
            bytes += WireJSON.encode(entry) + [0x0A]
        }
        try FileManagerLite.writeAtomically(path, bytes)
        if log.rawValue >= 0 { try? log.close() }
        log = try FileDescriptor.open(path, .writeOnly, options: [.append, .closeOnExec])
    }

    /// The next version: after everything this node has seen, and close to wall-clock nanoseconds.
    private func nextVersion() -> Version {
        clock = max(clock + 1, wallClockNanoseconds())
        return Version(clock: UInt64(clock), origin: origin)
    }

    /// Reads the catalog under the lock.
    public func read<T>(_ body: (Catalog) throws -> T) rethrows -> T {
        try lock.withLock { try body(catalog) }
    }

    /// Merges records from elsewhere; stores and returns the ones that changed something.
    @discardableResult
    public func merge(_ records: [CatalogRecord]) throws -> [CatalogRecord] {
        try lock.withLock { try applyLocked(records) }
    }

    /// Plans a change against the current catalog with a fresh version, applies it and makes it durable.
    public func mutate(_ plan: (Catalog, Version, Int64) throws -> Catalog.Change) throws -> (Catalog.Change, InodeStat?) {
        try lock.withLock {
            let change = try plan(catalog, nextVersion(), wallClockNanoseconds())
            _ = try applyLocked(change.records)
            let stat = change.resultInode.flatMap { catalog.inode($0) }.map { catalog.stat($0) }
            return (change, stat)
        }
    }

    private func applyLocked(_ records: [CatalogRecord]) throws -> [CatalogRecord] {
        var applied: [CatalogRecord] = []
        var bytes: [UInt8] = []
        for record in records where catalog.apply(record) {
            sequence += 1
            clock = max(clock, record.version.clock)
            let entry = LogEntry(seq: sequence, record: record)
            remember(entry)
            bytes += WireJSON.encode(entry) + [0x0A]
            applied.append(record)
        }
        guard !bytes.isEmpty else { return [] }
        do {
            _ = try bytes.withUnsafeBytes { try log.writeAll($0) }
            try log.sync()
        } catch let error as Errno {
            // The in-memory catalog is ahead of the log now; fail loudly rather than acknowledge.
            logger.critical("catalog log write failed", metadata: ["error": "\(error)"])
            throw ChunkStore.wireError(error, "writing the catalog log")
        }
        return applied
    }

    /// Records applied here after `afterSequence` (at most `limit`), and the sequence to ask from next time.
    public func changes(after afterSequence: UInt64, limit: Int) -> (records: [CatalogRecord], last: UInt64, more: Bool) {
        lock.withLock {
            // Binary search for the first entry after the cursor, then walk forward over live entries.
            var low = 0
            var high = order.count
            while low < high {
                let middle = (low + high) / 2
                if order[middle].seq <= afterSequence { low = middle + 1 } else { high = middle }
            }
            var batch: [CatalogRecord] = []
            var last = afterSequence
            var index = low
            while index < order.count {
                let (seq, key) = order[index]
                index += 1
                guard let entry = latest[key], entry.seq == seq else { continue }
                if batch.count == limit { return (batch, last, true) }
                batch.append(entry.record)
                last = seq
            }
            return (batch, last, false)
        }
    }

    public var recordCount: Int { lock.withLock { latest.count } }
}

func wallClockNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

private func max(_ a: UInt64, _ b: Int64) -> UInt64 { Swift.max(a, UInt64(Swift.max(b, 0))) }
