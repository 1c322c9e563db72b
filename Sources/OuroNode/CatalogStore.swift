import Dispatch
import Glibc
import Logging
import OuroClient
import OuroCore
import SystemPackage

/// The node's durable catalog: the merged catalog in a store on disk (`StoredCatalog`, `<data>/catalog.sqlite`),
/// and an append-only log of the records applied since the store's last checkpoint (`<data>/catalog.log`,
/// checksummed binary frames, fsynced per batch). A change is durable once its frame is fsynced (the commit path
/// stays one append); every few seconds the store commits what was applied (one transaction, fsynced), so a restart
/// opens the store and replays only the frames after its checkpoint. Every applied record gets a sequence number,
/// kept with it in the store, so a peer can ask for "everything after N" (`CATALOG SYNC`) through an index.
public final class CatalogStore: @unchecked Sendable {
    private struct LogEntry: Codable {
        var seq: UInt64
        var record: CatalogRecord
    }

    private struct LogHeader: Codable {
        var incarnation: String
    }

    private let lock = Lock()
    private let store: StoredCatalog
    private var sequence: UInt64 = 0
    /// The last sequence number known to be on disk: `CATALOG SYNC` serves nothing newer, so no peer's cursor can
    /// pass a record a crash might still take back (and whose number a later record would then reuse).
    private var durableSequence: UInt64 = 0
    /// The last record appended that is durable only once this log is fsynced (not one from the piece journal).
    private var unjournalledSequence: UInt64 = 0
    /// Everything up to this number is committed in the store: the log's frames up to it are not replayed.
    private var checkpointedSequence: UInt64 = 0
    /// Records applied by `mutateJournalled` not yet in the log (`appendJournalled`): no checkpoint may commit them
    /// to the store before the piece journal holds their bytes on disk, so checkpoints wait for none to be pending.
    private var pendingJournalled = 0
    private var clock: UInt64 = 0
    private var log: FileDescriptor
    /// A write or fsync of the log failed: see `syncLog`.
    private var logFailed = false
    private let syncLock = Lock()
    /// One checkpoint at a time.
    private let checkpointLock = Lock()
    /// Where the next frame goes, and how far the file is written with zeros: appends overwrite zeros written ahead
    /// (`reserveLogSpace`), so their fdatasync need not also write the file's size and block map (half the time of
    /// an append that grows the file, on ext4 here).
    private var logEnd: Int64 = 0
    private var logReserved: Int64 = 0
    static let logReserveBytes: Int64 = 4 << 20
    /// A log longer than this starts over at the next checkpoint (its frames are all in the store then);
    /// `OURO_CATALOG_LOG_RESTART_KB` changes it (tests make it start over all the time).
    static let logRestartBytes: Int64 = getenv("OURO_CATALOG_LOG_RESTART_KB")
        .flatMap { Int64(String(cString: $0)) }.map { max(0, $0) << 10 } ?? 8 << 20
    private let path: FilePath
    private let origin: String
    private let logger: Logger
    /// Changes when the store is created or found damaged, so that peers restart their sync cursor.
    public private(set) var incarnation: String
    /// Records replayed from the log at start (those after the store's last checkpoint).
    public private(set) var replayedRecords = 0
    private var checkpointTimer: DispatchSourceTimer?

    public init(directory: FilePath, origin: String, logger: Logger) throws {
        path = directory.appending("catalog.log")
        self.origin = origin
        self.logger = logger
        log = FileDescriptor(rawValue: -1)
        store = try Self.openStore(directory.appending("catalog.sqlite"), logger: logger)
        incarnation = store.meta("incarnation") ?? ""
        checkpointedSequence = store.meta("sequence").flatMap { UInt64($0) } ?? 0
        clock = store.meta("clock").flatMap { UInt64($0) } ?? 0
        sequence = checkpointedSequence
        var damaged = false
        var restartLog = incarnation.isEmpty
        if let bytes = FileManagerLite.read(path) {
            let legacy = bytes.first == UInt8(ascii: "{")
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
            // The log's frames carry the numbers they were given, if it belongs to this store; any other log (the
            // first format, a log from before the store, one whose header is lost) is merged as new records.
            var logIncarnation: String?
            if case .header(let value) = entries.first { logIncarnation = value }
            let ours = !legacy && !incarnation.isEmpty && logIncarnation == incarnation
            if !ours { restartLog = true }
            try store.batch {
                for entry in entries {
                    guard case .record(let seq, let record, let encoded) = entry else { continue }
                    if let content = record.inode?.content, content.isInline, (try? content.checkedInlineBytes()) == nil {
                        // Rot in the log: leave the record out; a peer hands the intact one back at the next sync.
                        logger.error("dropping a catalog record whose inline bytes are damaged", metadata: ["inode": "\(record.inode!.id)"])
                        damaged = true
                        continue
                    }
                    if ours {
                        guard seq > checkpointedSequence else { continue }
                        if try store.apply(record, encoded: encoded, seq: seq) { replayedRecords += 1 }
                        sequence = max(sequence, seq)
                    } else if try store.apply(record, encoded: encoded, seq: sequence + 1) {
                        sequence += 1
                        replayedRecords += 1
                    }
                    clock = max(clock, record.version.clock)
                }
            }
        } else {
            restartLog = true
        }
        // A record left out or cut may have had a number a peer's cursor passed: peers start over from zero.
        if incarnation.isEmpty || damaged { incarnation = ContentID.random().hex }
        durableSequence = sequence
        if restartLog || damaged || replayedRecords > 0 {
            try checkpointLocked(restartLog: restartLog || damaged)
        }
        if log.rawValue < 0 { log = try FileDescriptor.open(path, .writeOnly, options: [.closeOnExec]) }
        logger.info("catalog opened", metadata: ["records": "\(store.recordCount)", "files": "\(store.fileCount)",
                                                 "replayed": "\(replayedRecords)"])
        startCheckpoints()
    }

    private static func openStore(_ path: FilePath, logger: Logger) throws -> StoredCatalog {
        do {
            return try StoredCatalog(path: path.string)
        } catch {
            // A store that cannot be opened (damaged) is set aside; the peers hand back what it held.
            logger.error("the catalog store cannot be opened; setting it aside and starting from the peers' copies",
                         metadata: ["path": "\(path)", "error": "\(error)"])
            for suffix in ["", "-wal", "-shm"] {
                _ = Glibc.rename(path.string + suffix, path.string + suffix + ".damaged")
            }
            return try StoredCatalog(path: path.string)
        }
    }

    deinit {
        checkpointTimer?.cancel()
        try? log.close()
    }

    private enum LoadedEntry {
        case header(String)
        /// A record with its number in the log (0 in the first format) and its encoding.
        case record(UInt64, CatalogRecord, [UInt8])
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
                let start = reader.position + 8
                if let seq = try? reader.u64(), let record = try? reader.value(CatalogRecord.self) {
                    entries.append(.record(seq, record, Array(payload[start..<reader.position])))
                }
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
                entries.append(.record(0, entry.record, WireBinary.encode(entry.record)))
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

    // MARK: Checkpoints

    /// How often the store commits what was applied; `OURO_CATALOG_CHECKPOINT_MS` changes it.
    public static let checkpointMilliseconds = getenv("OURO_CATALOG_CHECKPOINT_MS")
        .flatMap { Int(String(cString: $0)) }.map { max(10, $0) } ?? 5000

    private func startCheckpoints() {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "catalog.checkpoint"))
        let interval = DispatchTimeInterval.milliseconds(Self.checkpointMilliseconds)
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(50))
        timer.setEventHandler { [weak self] in
            do { try self?.checkpoint() } catch { self?.logger.error("catalog checkpoint failed", metadata: ["error": "\(error)"]) }
        }
        timer.resume()
        checkpointTimer = timer
    }

    /// Commits everything applied so far to the store, so that a restart replays nothing before it, and makes it
    /// durable; the log starts over once it is long. The catalog lock is held only for the commit (SQLite writes its
    /// pages to the WAL, no fsync): the WAL's fsync runs outside it, so reads and changes go on meanwhile (a peer's
    /// change waiting behind a checkpoint's fsync could reach a reader after the writer's answer). Skipped while a
    /// journalled change is between its journal and the log (the next tick takes it).
    public func checkpoint() throws {
        try checkpointLock.withLock {
            let committed: (sequence: UInt64, logEnd: Int64)? = try lock.withLock {
                guard !logFailed, pendingJournalled == 0, sequence > checkpointedSequence || logEnd > Self.logRestartBytes else { return nil }
                let started = wallClockNanoseconds()
                try commitLocked()
                let milliseconds = (wallClockNanoseconds() - started) / 1_000_000
                if milliseconds >= 50 {
                    logger.notice("slow catalog commit", metadata: ["ms": "\(milliseconds)", "records": "\(sequence - checkpointedSequence)"])
                }
                return (sequence, logEnd)
            }
            guard let committed else { return }
            do { try store.syncWAL() } catch let error as Errno { throw ChunkStore.wireError(error, "writing the catalog store") }
            let restart = lock.withLock {
                checkpointedSequence = max(checkpointedSequence, committed.sequence)
                durableSequence = max(durableSequence, committed.sequence)
                return logEnd > Self.logRestartBytes
            }
            guard restart else { return }
            try syncLock.withLock {  // no fsync of a log that is being replaced
                try lock.withLock { try startNewLog(keepingFrom: committed.logEnd) }
            }
        }
    }

    /// Commits the store's transaction with the meta values that go with it. A commit SQLite rolled back loses the
    /// transaction: the store is rebuilt from the log, which holds every frame since the last checkpoint.
    private func commitLocked() throws {
        do {
            try store.commit(meta: ["incarnation": incarnation, "sequence": String(sequence), "clock": String(clock)])
        } catch let error as SQLiteError {
            if store.isRolledBack {
                logger.error("catalog checkpoint rolled back; replaying the log into the store", metadata: ["error": "\(error)"])
                do {
                    try store.begin()
                    try replayLog(after: checkpointedSequence)
                } catch {
                    logFailed = true
                    logger.critical("cannot rebuild the catalog store from its log; restart the node", metadata: ["error": "\(error)"])
                }
            }
            throw error.wireError
        }
    }

    /// The checkpoint at start, all under the lock (nothing else runs yet).
    private func checkpointLocked(restartLog: Bool) throws {
        try commitLocked()
        do { try store.syncWAL() } catch let error as Errno { throw ChunkStore.wireError(error, "writing the catalog store") }
        checkpointedSequence = sequence
        durableSequence = sequence
        if restartLog { try startNewLog(keepingFrom: logEnd) }
    }

    /// Applies the log's frames after `after` to the store again (after it rolled back a checkpoint).
    private func replayLog(after: UInt64) throws {
        guard let bytes = FileManagerLite.read(path) else { return }
        var damaged = false
        var end = 0
        let entries = try Self.readFrames(Array(bytes[..<min(bytes.count, Int(logEnd))]), path: path, logger: logger,
                                          damaged: &damaged, end: &end)
        try store.batch {
            for case .record(let seq, let record, let encoded) in entries where seq > after {
                _ = try store.apply(record, encoded: encoded, seq: seq)
            }
        }
    }

    /// Replaces the log with one holding only the frames from `offset` on (those appended after the checkpoint's
    /// commit; everything before is in the store): temp file, fsync, rename, directory fsync.
    private func startNewLog(keepingFrom offset: Int64) throws {
        var bytes = Self.magic + Self.frame { writer in
            writer.u8(0)
            writer.string(incarnation)
        }
        if offset < logEnd, log.rawValue >= 0 {
            var tail = [UInt8](repeating: 0, count: Int(logEnd - offset))
            let read = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec])
            let count = try read.closeAfter { try tail.withUnsafeMutableBytes { try read.read(fromAbsoluteOffset: offset, into: $0) } }
            guard count == tail.count else { throw OuroError(.internal, "the catalog log is shorter than its frames") }
            bytes += tail
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
    func read<T>(_ body: (StoredCatalog) throws -> T) rethrows -> T {
        try lock.withLock { try body(store) }
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

    /// The store's pages as SQLite counts them (with those still in its write-ahead log), and its free pages.
    public var storeBytes: (total: Int, free: Int) { lock.withLock { store.logicalBytes } }

    /// Bytes of the catalog on disk: the store (with its write-ahead log) and the log.
    public var diskBytes: Int {
        lock.withLock { Int(logEnd) + store.fileBytes }
    }

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
    func mutate(withRegions: Bool = true, _ plan: (StoredCatalog, Version, Int64) throws -> Catalog.Change) throws -> (EncodedRecords, InodeStat?) {
        try lock.withLock {
            _ = store.takeFailure()  // an earlier read's, not this plan's
            let change = try plan(store, nextVersion(), wallClockNanoseconds())
            if let failure = store.takeFailure() { throw failure.wireError }
            let records = EncodedRecords(change.records)
            _ = try applyLocked(records)
            let stat = change.resultInode.flatMap { withRegions ? store.inode($0) : store.baseInode($0) }.map { store.stat($0) }
            return (records, stat)
        }
    }

    /// A change made durable first by another journal (the piece journal: the pieces' bytes and these records in
    /// one fdatasync). Planned and applied under the lock; `journal` writes the records there under the lock too,
    /// so that whatever is planned on top of them is journalled after them (one fdatasync of a later record covers
    /// the earlier ones). They reach this log only through `appendJournalled`, once the journal is synced: the log
    /// can never hold a record whose pieces might not survive a crash, and no checkpoint commits them to the store
    /// before (`pendingJournalled`). The caller calls `appendJournalled` or `abandonJournalled` with what this returns.
    /// Returns the records that changed something, encoded (for the log and the peers).
    func mutateJournalled(withRegions: Bool, _ plan: (StoredCatalog, Version, Int64) throws -> Catalog.Change,
                          journal: (EncodedRecords) throws -> Void) throws -> (EncodedRecords, InodeStat?) {
        try lock.withLock {
            if logFailed { throw OuroError(.internal, "the catalog log could not be written to disk earlier; restart the node") }
            _ = store.takeFailure()
            let change = try plan(store, nextVersion(), wallClockNanoseconds())
            if let failure = store.takeFailure() { throw failure.wireError }
            let planned = EncodedRecords(change.records)
            let applied: EncodedRecords
            do {
                applied = try store.batch {
                    try journal(planned)
                    var index = 0
                    return try planned.filter { record in
                        defer { index += 1 }
                        return try store.apply(record, encoded: planned.encoded[index], seq: nil)
                    }
                }
            } catch let error as SQLiteError {
                throw error.wireError
            }
            pendingJournalled += applied.records.count
            for record in applied.records { clock = max(clock, record.version.clock) }
            let stat = change.resultInode.flatMap { withRegions ? store.inode($0) : store.baseInode($0) }.map { store.stat($0) }
            return (applied, stat)
        }
    }

    /// Writes journalled records to the log (those not replaced meanwhile); synced within a few milliseconds.
    func appendJournalled(_ records: EncodedRecords) throws {
        let appended: Bool = try lock.withLock {
            pendingJournalled -= records.records.count
            var bytes: [UInt8] = []
            for (record, encoded) in zip(records.records, records.encoded) where store.holds(record) {
                sequence += 1
                do { try store.assignSequence(sequence, to: record) } catch let error as SQLiteError { throw error.wireError }
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

    /// Journalled records that will never reach the log (their journal failed): checkpoints go on without them.
    func abandonJournalled(_ records: EncodedRecords) {
        lock.withLock { pendingJournalled -= records.records.count }
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

    /// Applies to the store and appends to the log (not fsynced: see `syncLog()`), as one batch: a failure of
    /// either leaves neither changed.
    private func applyLocked(_ records: EncodedRecords) throws -> EncodedRecords {
        if logFailed { throw OuroError(.internal, "the catalog log could not be written to disk earlier; restart the node") }
        let first = sequence
        do {
            return try store.batch {
                var bytes: [UInt8] = []
                var next = sequence
                var index = 0
                let applied = try records.filter { record in
                    defer { index += 1 }
                    guard try store.apply(record, encoded: records.encoded[index], seq: next + 1) else { return false }
                    next += 1
                    return true
                }
                for (offset, encoded) in applied.encoded.enumerated() {
                    bytes += Self.frame(seq: first + UInt64(offset) + 1, encoded: encoded)
                }
                guard !bytes.isEmpty else { return applied }
                do {
                    try reserveLogSpace(Int64(bytes.count))
                    _ = try bytes.withUnsafeBytes { try log.writeAll(toAbsoluteOffset: logEnd, $0) }
                } catch let error as Errno {
                    // A write that failed may have left part of its pages; the next append goes over them, but a
                    // kernel that lost pages may report a later fsync as done: nothing more from this log.
                    logFailed = true
                    logger.critical("catalog log write failed; the node must be restarted to store catalog changes again",
                                    metadata: ["error": "\(error)"])
                    throw ChunkStore.wireError(error, "writing the catalog log")
                }
                logEnd += Int64(bytes.count)
                sequence = next
                unjournalledSequence = sequence
                for record in applied.records { clock = max(clock, record.version.clock) }
                return applied
            }
        } catch let error as SQLiteError {
            throw error.wireError
        }
    }

    /// Records applied here after `afterSequence` (at most `limit`, and about `Limits.syncBatchBytes`), as stored,
    /// and the sequence to ask from next time.
    public func changes(after afterSequence: UInt64, limit: Int) -> (records: EncodedRecords, last: UInt64, more: Bool) {
        lock.withLock {
            let found = store.records(after: afterSequence, upTo: durableSequence, limit: limit)
            var records: [CatalogRecord] = []
            var encoded: [[UInt8]] = []
            var batchBytes = 0
            var last = afterSequence
            for (seq, record, bytes) in found {
                if !records.isEmpty && batchBytes + bytes.count > Limits.syncBatchBytes {
                    return (EncodedRecords(records: records, encoded: encoded), last, true)
                }
                batchBytes += bytes.count
                records.append(record)
                encoded.append(bytes)
                last = seq
            }
            return (EncodedRecords(records: records, encoded: encoded), last, found.count == limit)
        }
    }

    /// Where this node's sync from `peer` stands (the peer's incarnation, the last of its sequence numbers merged),
    /// kept in the store with the records it covers (one transaction): after a restart the sync goes on from there
    /// instead of pulling the peer's whole catalog again.
    public func syncCursor(for peer: NodeAddress) -> (incarnation: String, last: UInt64)? {
        lock.withLock {
            guard let value = store.meta("cursor " + peer.description), let space = value.firstIndex(of: " "),
                  let last = UInt64(value[value.index(after: space)...]) else { return nil }
            return (String(value[..<space]), last)
        }
    }

    public func setSyncCursor(_ cursor: (incarnation: String, last: UInt64), for peer: NodeAddress) {
        lock.withLock {
            do { try store.setMeta("cursor " + peer.description, "\(cursor.incarnation) \(cursor.last)") } catch {
                logger.warning("cannot store a sync cursor", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }

    public var recordCount: Int { lock.withLock { store.recordCount } }

    // MARK: Garbage collection (see `CatalogGC`)

    /// Tombstones (and placements of unused contents) this node may try to collect now, at most `limit` of each kind.
    func collectionCandidates(minimumAge: Int64, limit: Int) -> [CatalogRowVersion] {
        let now = wallClockNanoseconds()
        let rows = lock.withLock {
            store.collectionCandidates(olderThan: UInt64(clamping: max(0, now - minimumAge)), limit: limit)
        }
        return rows.filter { CatalogGC.isCandidate($0.version, me: origin, now: now, minimumAge: minimumAge) }
    }

    /// What this node holds of rows a peer asks about, once everything it has applied is on its disk (an answer
    /// must not rest on a change a crash could take back).
    func answers(_ rows: [CatalogRowVersion]) throws -> [RowAnswer] {
        try syncLog()
        return try lock.withLock {
            _ = store.takeFailure()
            let answers = rows.map { store.answer($0) }
            if let failure = store.takeFailure() { throw failure.wireError }
            return answers
        }
    }

    /// Drops rows every member has confirmed (see `StoredCatalog.collect`); returns how many records went. Not
    /// logged: a crash before the next checkpoint brings them back, to be collected again.
    @discardableResult
    func collect(_ rows: [CatalogRowVersion]) throws -> Int {
        guard !rows.isEmpty else { return 0 }
        return try lock.withLock {
            do {
                let dropped = try store.batch { try store.collect(rows) }
                collected += dropped
                // About as many pages as the rows took (a few rows a page), given back to the file system.
                if dropped > 0 { try store.reclaimFreePages(max(16, dropped / 4)) }
                return dropped
            } catch let error as SQLiteError {
                throw error.wireError
            }
        }
    }

    /// Records dropped by garbage collection since start.
    public var collectedRecords: Int { lock.withLock { collected } }
    private var collected = 0

    /// A page of live rows older than `clock` (what a returning member checks; see `StoredCatalog.liveRows`).
    func liveRows(olderThan clock: UInt64, after cursor: CatalogKey?, limit: Int) -> (rows: [CatalogRowVersion], next: CatalogKey?) {
        lock.withLock { store.liveRows(olderThan: clock, after: cursor, limit: limit) }
    }

    /// The tombstones that replace stale rows (those still holding the versions found).
    func sweepTombstones(for rows: [CatalogRowVersion]) -> [CatalogRecord] {
        lock.withLock { rows.compactMap { store.sweepTombstone(for: $0) } }
    }

    func metaEntries(prefix: String) -> [(name: String, value: String)] {
        lock.withLock { store.metaEntries(prefix: prefix) }
    }

    func meta(_ name: String) -> String? {
        lock.withLock { store.meta(name) }
    }

    /// Sets (or with nil removes) a meta value, committed with the next checkpoint.
    func setMeta(_ name: String, _ value: String?) throws {
        try lock.withLock {
            do {
                if let value { try store.setMeta(name, value) } else { try store.removeMeta(name) }
            } catch let error as SQLiteError {
                throw error.wireError
            }
        }
    }

    /// Live inodes (the root included).
    public var fileCount: Int { lock.withLock { store.fileCount } }
}

func wallClockNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

private func max(_ a: UInt64, _ b: Int64) -> UInt64 { Swift.max(a, UInt64(Swift.max(b, 0))) }
