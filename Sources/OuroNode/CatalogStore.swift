import Dispatch
import Glibc
import Logging
import OuroClient
import OuroCore
import SystemPackage

/// The node's durable catalog: the merged `Catalog` in memory, and an append-only log of the records that built it
/// (`<data>/catalog.log`, checksummed binary frames, fsynced per batch). Every applied record gets a local sequence
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
        case region(RegionKey)
    }

    private let lock = Lock()
    private var catalog = Catalog()
    private var latest: [RecordKey: LogEntry] = [:]
    /// Keys in the order of their sequence numbers (superseded entries are skipped, and dropped now and then),
    /// so `changes(after:)` finds what is new without sorting the whole catalog.
    private var order: [(seq: UInt64, key: RecordKey)] = []
    private var sequence: UInt64 = 0
    /// The last sequence number known to be on disk: `CATALOG SYNC` serves nothing newer, so no peer's cursor can
    /// pass a record a crash might still take back (and whose number a later record would then reuse).
    private var durableSequence: UInt64 = 0
    /// The last record appended that is durable only once this log is fsynced (not one from the piece journal).
    private var unjournalledSequence: UInt64 = 0
    private var clock: UInt64 = 0
    private var log: FileDescriptor
    /// Where the next frame goes, and how far the file is written with zeros: appends overwrite zeros written ahead
    /// (`reserveLogSpace`), so their fdatasync need not also write the file's size and block map (half the time of
    /// an append that grows the file, on ext4 here).
    /// A write or fsync of the log failed: see `syncLog`.
    private var logFailed = false
    private let syncLock = Lock()
    private var logEnd: Int64 = 0
    private var logReserved: Int64 = 0
    static let logReserveBytes: Int64 = 4 << 20
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
        var legacy = false
        var damaged = false
        if let bytes = FileManagerLite.read(path) {
            legacy = bytes.first == UInt8(ascii: "{")
            var end = bytes.count
            let entries = legacy ? try Self.readJSONLines(bytes, path: path, logger: logger)
                                 : try Self.readFrames(bytes, path: path, logger: logger, damaged: &damaged, end: &end)
            logEnd = Int64(end)
            let size = FileManagerLite.size(path) ?? 0  // after a torn tail was cut off
            logReserved = Int64(max(end, size))
            if !legacy, end < min(size, bytes.count), bytes[end..<min(size, bytes.count)].contains(where: { $0 != 0 }) {
                // Bytes after the end that are not the zeros written ahead (a crash mid-write of a later page, or
                // rot in a length): gone, so that no later append lands in front of them; and a new incarnation,
                // since records may have been cut that peers already hold under their numbers.
                try Self.cut(path, at: end)
                logger.warning("cut unexpected bytes after the end of the catalog log", metadata: ["offset": "\(end)"])
                logReserved = logEnd
                damaged = true
            }
            for entry in entries {
                switch entry {
                case .header(let value):
                    if incarnation.isEmpty { incarnation = value }
                case .record(let record):
                    if let content = record.inode?.content, content.isInline, (try? content.checkedInlineBytes()) == nil {
                        // Rot in the log: leave the record out; a peer hands the intact one back at the next sync.
                        logger.error("dropping a catalog record whose inline bytes are damaged", metadata: ["inode": "\(record.inode!.id)"])
                        damaged = true
                        continue
                    }
                    lines += 1
                    replay(record)
                }
            }
        }
        if legacy { incarnation = "" }  // rewritten in the binary format below
        // A record left out renumbers the ones after it: peers must not go on from their old cursors.
        if incarnation.isEmpty || damaged || lines > 2 * latest.count + 1000 {
            try rewrite()
        } else {
            log = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec])
        }
        durableSequence = sequence
        logger.info("catalog loaded", metadata: ["records": "\(latest.count)", "files": "\(catalog.fileCount)"])
    }

    deinit { try? log.close() }

    private enum LoadedEntry {
        case header(String)
        case record(CatalogRecord)
    }

    private static let magic = Array("OUROCAT2".utf8)

    /// The log: `OUROCAT2`, then frames of `u32 length, u32 CRC-32C, payload`; the first payload is the header
    /// (tag 0, incarnation), every other one a record (tag 1, sequence, `CatalogRecord`). A zero length ends the log
    /// (the zeros written ahead for appends). A last frame that runs past the end of the file, or fails its checksum
    /// with nothing after it, is a torn append (a crash mid-write, never acknowledged): it is cut off, or the next
    /// append would be glued to it. A frame whose checksum fails with frames after it is rot: skipped (the peers hold
    /// the record too). `end` is where the next frame goes.
    private static func readFrames(_ bytes: [UInt8], path: FilePath, logger: Logger, damaged: inout Bool,
                                   end: inout Int) throws -> [LoadedEntry] {
        guard bytes.count >= magic.count, Array(bytes[..<magic.count]) == magic else {
            logger.error("the catalog log has no known header; starting from the peers' copies", metadata: ["path": "\(path)"])
            end = bytes.count
            return []
        }
        func frameHeader(at offset: Int) -> (length: Int, crc: UInt32)? {
            guard bytes.count - offset >= 8 else { return nil }
            var header = BinaryReader(Array(bytes[offset..<offset + 8]))
            guard let length = try? header.u32(), let crc = try? header.u32() else { return nil }
            return (Int(length), crc)
        }
        func cutTornTail(at offset: Int) throws {
            logger.warning("dropping a torn record at the end of the catalog log", metadata: ["bytes": "\(bytes.count - offset)"])
            try cut(path, at: offset)
        }
        var entries: [LoadedEntry] = []
        var offset = magic.count
        end = bytes.count
        while offset < bytes.count {
            let header = frameHeader(at: offset)
            if let header, header.length == 0 {
                end = offset  // the zeros written ahead
                break
            }
            guard let header, header.length <= bytes.count - offset - 8 else {
                try cutTornTail(at: offset)
                end = offset
                break
            }
            let payload = Array(bytes[(offset + 8)..<(offset + 8 + header.length)])
            let next = offset + 8 + header.length
            guard CRC32C.checksum(payload) == header.crc else {
                if next >= bytes.count || frameHeader(at: next).map({ $0.length == 0 }) ?? true {
                    try cutTornTail(at: offset)
                    end = offset
                    break
                }
                logger.error("skipping a damaged record in the catalog log", metadata: ["offset": "\(offset)"])
                damaged = true
                offset = next
                continue
            }
            offset = next
            var reader = BinaryReader(payload)
            switch try? reader.u8() {
            case 0: if let incarnation = try? reader.string() { entries.append(.header(incarnation)) }
            case 1:
                if (try? reader.u64()) != nil, let record = try? reader.value(CatalogRecord.self) { entries.append(.record(record)) }
            default: continue
            }
        }
        return entries
    }

    private static func cut(_ path: FilePath, at offset: Int) throws {
        guard truncate(path.string, off_t(offset)) == 0 else {
            throw OuroError(.internal, "cannot repair \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The first format (one JSON record a line), read once and then rewritten as frames.
    private static func readJSONLines(_ bytes: [UInt8], path: FilePath, logger: Logger) throws -> [LoadedEntry] {
        let complete = bytes.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        var entries: [LoadedEntry] = []
        for line in bytes[..<complete].split(separator: 0x0A) {
            if let header = try? WireJSON.decode(LogHeader.self, from: Array(line)) {
                entries.append(.header(header.incarnation))
            } else if let entry = try? WireJSON.decode(LogEntry.self, from: Array(line)) {
                entries.append(.record(entry.record))
            }
        }
        return entries
    }

    private static func frame(_ write: (inout BinaryWriter) -> Void) -> [UInt8] {
        var payload = BinaryWriter()
        write(&payload)
        var frame = BinaryWriter(capacity: payload.bytes.count + 8)
        frame.u32(UInt32(payload.bytes.count))
        frame.u32(CRC32C.checksum(payload.bytes))
        return frame.bytes + payload.bytes
    }

    /// A log entry (`LogEntry`'s encoding) from a record's bytes.
    private static func frame(seq: UInt64, encoded: [UInt8]) -> [UInt8] {
        frame { writer in
            writer.u8(1)
            writer.u64(seq)
            writer.raw(encoded)
        }
    }

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
        if let region = record.region { return .region(region.key) }
        return .dirent(record.dirent!.key)
    }

    /// Writes a compact log (the latest record of each key) under a new incarnation.
    private func rewrite() throws {
        incarnation = ContentID.random().hex
        var bytes = Self.magic + Self.frame { writer in
            writer.u8(0)
            writer.string(incarnation)
        }
        for entry in latest.values.sorted(by: { $0.seq < $1.seq }) {
            bytes += Self.frame(seq: entry.seq, encoded: WireBinary.encode(entry.record))
        }
        try FileManagerLite.writeAtomically(path, bytes)
        if log.rawValue >= 0 { try? log.close() }
        log = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec])
        logEnd = Int64(bytes.count)
        logReserved = logEnd
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

    /// Merges records from elsewhere; stores and returns the ones that changed something. They are on disk when
    /// this returns, or with `deferSync` within `deferredSyncMilliseconds` (many such merges share one fsync).
    /// The fsync runs outside the lock: reads and other merges go on meanwhile.
    @discardableResult
    public func merge(_ records: [CatalogRecord], deferSync: Bool = false) throws -> [CatalogRecord] {
        try merge(EncodedRecords(records), deferSync: deferSync)
    }

    /// `merge` of records as they arrived (their bytes go to the log as they are).
    @discardableResult
    public func merge(_ records: EncodedRecords, deferSync: Bool = false) throws -> [CatalogRecord] {
        let applied = try lock.withLock { try applyLocked(records).records }
        if !deferSync {
            try syncLog()  // also when nothing was new: the same records may have come before with DEFER
        } else if !applied.isEmpty {
            scheduleSync()
        }
        return applied
    }

    /// How soon a deferred fsync runs; `OURO_CATALOG_SYNC_DELAY_MS` changes it (tests stretch it to see what is
    /// durable before it).
    public static let deferredSyncMilliseconds = getenv("OURO_CATALOG_SYNC_DELAY_MS")
        .flatMap { Int(String(cString: $0)) }.map { max(0, $0) } ?? 10
    private var syncScheduled = false

    /// How many of the records appended to the log are on no disk of this node yet (at most: records durable
    /// through the piece journal, interleaved, are counted too): namespace changes, and peers' changes that came
    /// with `DEFER`.
    public var unsyncedRecords: Int {
        lock.withLock { Int(unjournalledSequence - min(unjournalledSequence, durableSequence)) }
    }

    /// Bytes of the log up to its last frame.
    public var logBytes: Int { lock.withLock { Int(logEnd) } }

    /// Makes what was appended so far durable within `deferredSyncMilliseconds`, sharing the fsync with whatever
    /// else comes meanwhile (a namespace change; see `commitAndBroadcast`).
    public func syncSoon() {
        if unsyncedRecords > 0 { scheduleSync() }
    }

    private func scheduleSync() {
        let first = lock.withLock {
            defer { syncScheduled = true }
            return !syncScheduled
        }
        guard first else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Self.deferredSyncMilliseconds)) { [self] in
            lock.withLock { syncScheduled = false }
            try? syncLog()  // a failure is logged there
        }
    }

    /// Plans a change against the current catalog with a fresh version, applies it and appends it to the log.
    /// It is durable only after `syncLog()`: the caller overlaps that fsync with sending the change to its peers.
    /// `withRegions: false`: the answer's inode without the slices of its regions (cheap for a file written in
    /// place many times; the writer knows them).
    /// Returns the change's records encoded (for the peers), and the resulting inode's attributes.
    public func mutate(withRegions: Bool = true, _ plan: (Catalog, Version, Int64) throws -> Catalog.Change) throws -> (EncodedRecords, InodeStat?) {
        try lock.withLock {
            let change = try plan(catalog, nextVersion(), wallClockNanoseconds())
            let records = EncodedRecords(change.records)
            _ = try applyLocked(records)
            let stat = change.resultInode.flatMap { withRegions ? catalog.inode($0) : catalog.baseInode($0) }.map { catalog.stat($0) }
            return (records, stat)
        }
    }

    /// A change made durable first by another journal (the piece journal: the pieces' bytes and these records in
    /// one fdatasync). Planned and applied in memory under the lock; `journal` writes the records there under the
    /// lock too, so that whatever is planned on top of them is journalled after them (one fdatasync of a later
    /// record covers the earlier ones). They reach this log only through `appendJournalled`, once the journal is
    /// synced: the log can never hold a record whose pieces might not survive a crash.
    /// Returns the records that changed something, encoded (for the log and the peers).
    public func mutateJournalled(withRegions: Bool, _ plan: (Catalog, Version, Int64) throws -> Catalog.Change,
                                 journal: (EncodedRecords) throws -> Void) throws -> (EncodedRecords, InodeStat?) {
        try lock.withLock {
            if logFailed { throw OuroError(.internal, "the catalog log could not be written to disk earlier; restart the node") }
            let change = try plan(catalog, nextVersion(), wallClockNanoseconds())
            let planned = EncodedRecords(change.records)
            try journal(planned)
            let applied = planned.filter { catalog.apply($0) }
            for record in applied.records { clock = max(clock, record.version.clock) }
            let stat = change.resultInode.flatMap { withRegions ? catalog.inode($0) : catalog.baseInode($0) }.map { catalog.stat($0) }
            return (applied, stat)
        }
    }

    /// Writes journalled records to the log (those not replaced meanwhile); synced within a few milliseconds.
    public func appendJournalled(_ records: EncodedRecords) throws {
        let appended: Bool = try lock.withLock {
            var bytes: [UInt8] = []
            for (record, encoded) in zip(records.records, records.encoded) where catalog.holds(record) {
                sequence += 1
                remember(LogEntry(seq: sequence, record: record))
                bytes += Self.frame(seq: sequence, encoded: encoded)
            }
            guard !bytes.isEmpty else { return false }
            do {
                try reserveLogSpace(Int64(bytes.count))
                _ = try bytes.withUnsafeBytes { try log.writeAll(toAbsoluteOffset: logEnd, $0) }
                logEnd += Int64(bytes.count)
            } catch let error as Errno {
                logFailed = true
                logger.critical("catalog log write failed; the node must be restarted to store catalog changes again",
                                metadata: ["error": "\(error)"])
                throw ChunkStore.wireError(error, "writing the catalog log")
            }
            return true
        }
        if appended { scheduleSync() }
    }

    /// Makes every record appended so far durable (outside the lock: other appends go on meanwhile).
    public func syncLog() throws {
        // One fsync at a time: of two at once, one could see the error and the other a success for the same pages.
        try syncLock.withLock {
            let (log, upTo, durable, failed) = lock.withLock { (self.log, sequence, durableSequence, logFailed) }
            // After a failed write or fsync the kernel may report the next fsync as a success without the lost
            // pages on disk: nothing is acknowledged as durable from this log again (a restart reloads it; the
            // peers hand back the rest).
            if failed { throw OuroError(.internal, "the catalog log could not be written to disk earlier; restart the node") }
            guard durable < upTo else { return }
            do {
                try log.syncData()
                lock.withLock { durableSequence = max(durableSequence, upTo) }
            } catch let error as Errno {
                lock.withLock { logFailed = true }
                logger.critical("catalog log sync failed", metadata: ["error": "\(error)"])
                throw ChunkStore.wireError(error, "writing the catalog log")
            }
        }
    }

    /// Makes sure `count` bytes after `logEnd` are zeros on disk already, writing the next few MiB if not (under the
    /// lock: once every few thousand records).
    private func reserveLogSpace(_ count: Int64) throws {
        guard logEnd + count > logReserved else { return }
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        let target = logEnd + count + Self.logReserveBytes
        while logReserved < target {
            let step = Int(min(Int64(zeros.count), target - logReserved))
            do {
                _ = try zeros[..<step].withUnsafeBytes { try log.writeAll(toAbsoluteOffset: logReserved, $0) }
            } catch let error as Errno where error == .noSpace {
                break  // a nearly full disk: whatever room is left is used, and a full one fails the append itself
            }
            logReserved += Int64(step)
        }
        try log.syncData()
    }

    /// Applies and appends to the log (not fsynced: see `syncLog()`).
    private func applyLocked(_ records: EncodedRecords) throws -> EncodedRecords {
        var bytes: [UInt8] = []
        let applied = records.filter { catalog.apply($0) }
        for (record, encoded) in zip(applied.records, applied.encoded) {
            sequence += 1
            clock = max(clock, record.version.clock)
            remember(LogEntry(seq: sequence, record: record))
            bytes += Self.frame(seq: sequence, encoded: encoded)
        }
        guard !bytes.isEmpty else { return applied }
        do {
            try reserveLogSpace(Int64(bytes.count))
            _ = try bytes.withUnsafeBytes { try log.writeAll(toAbsoluteOffset: logEnd, $0) }
            logEnd += Int64(bytes.count)
            unjournalledSequence = sequence
        } catch let error as Errno {
            // The in-memory catalog is ahead of the log now; fail loudly rather than acknowledge, now or later.
            logFailed = true
            logger.critical("catalog log write failed; the node must be restarted to store catalog changes again",
                            metadata: ["error": "\(error)"])
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
            var batchBytes = 0
            var last = afterSequence
            var index = low
            while index < order.count {
                let (seq, key) = order[index]
                guard seq <= durableSequence else { break }
                index += 1
                guard let entry = latest[key], entry.seq == seq else { continue }
                if batch.count == limit { return (batch, last, true) }
                let size = Self.roughSize(entry.record)
                if !batch.isEmpty && batchBytes + size > Limits.syncBatchBytes { return (batch, last, true) }
                batchBytes += size
                batch.append(entry.record)
                last = seq
            }
            return (batch, last, false)
        }
    }

    /// About what a record takes encoded, without encoding it (the batch is encoded once, when it is sent): small,
    /// but for inline bytes, chunk placements and extended attributes, counted generously.
    private static func roughSize(_ record: CatalogRecord) -> Int {
        if let region = record.region { return 128 + region.slices.count * 256 }
        guard let inode = record.inode else { return 256 }
        var bytes = 256 + (inode.content?.inlineData?.count ?? 0)
        for piece in inode.content?.pieces ?? [] {
            bytes += 128
            for chunk in piece.chunks { bytes += 16 + chunk.holders.reduce(0) { $0 + $1.host.utf8.count + 8 } }
        }
        return bytes + inode.xattrs.reduce(0) { $0 + $1.key.utf8.count + $1.value.count + 8 }
    }

    public var recordCount: Int { lock.withLock { latest.count } }
}

func wallClockNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

private func max(_ a: UInt64, _ b: Int64) -> UInt64 { Swift.max(a, UInt64(Swift.max(b, 0))) }
