import Foundation
import COuroSupport
import Glibc
import Logging
import OuroClient
import OuroCore

/// One regular file open through the mount, shared by all its handles. Until the first write it reads from the
/// ring; from then on its bytes live in a spool (an unlinked local file) until `flush` pushes them as new content.
final class OpenFile: @unchecked Sendable {
    let inode: UInt64
    unowned let fileSystem: RingFileSystem
    /// Handles open on this file, and how many of them were opened for writing (guarded by the file system's lock).
    var references = 0
    var writers = 0
    /// Two locks, so that a push never holds up the file's readers: `pushLock` is held by every change of the
    /// file's state (writes, truncations, a push with its network calls from start to end), `lock` briefly by
    /// every access. A push, holding `pushLock`, reads the state without `lock` (nothing else can change it) and
    /// takes `lock` for each change it makes; `stat`, reads and seeks meanwhile answer from the state as it was
    /// (the committed content and the spool), and writers wait for the push to end. Order: `pushLock`, then `lock`.
    private let pushLock = Lock()
    private let lock = Lock()
    private var stat: InodeStat
    private var spool: Int32 = -1
    private var reservedBytes: UInt64 = 0
    /// What the spool holds: bytes written here (or loaded from the ring), and zeros from `zerosFrom` on (after a
    /// truncation). Every other byte below `sizeBytes` is the committed content's (or a hole past its end).
    private var written = IntervalSet()
    private var zerosFrom: UInt64?
    /// Written since the last commit, and the lowest truncation since then: what an update in place sends.
    private var dirtyRanges = IntervalSet()
    private var truncatedTo: UInt64?
    private var sizeBytes: UInt64
    private var dirty = false
    private var lastWriteNs: Int64?
    private var pendingMtime: Int64?
    private var readAhead: ReadAhead?
    /// Segments of the spool pushed while the application writes in order: `[0, streamedBytes)` is claimed by
    /// finished or running pushes. A write or truncate below that ends streaming for this open file (the segments
    /// become garbage, and close pushes the whole spool as before).
    private let segments = SegmentPushes()
    private var streamedBytes: UInt64 = 0
    private var streamBroken = false

    init(stat: InodeStat, fileSystem: RingFileSystem) {
        inode = stat.inode.id
        self.stat = stat
        self.fileSystem = fileSystem
        sizeBytes = stat.inode.sizeBytes
    }

    /// The attributes this file was opened with, or got from its last push.
    var currentStat: InodeStat { lock.withLock { stat } }

    /// Its mode bits (07777), and setting them after a change made while it is open (setuid cleared by a write).
    var permissions: UInt32 {
        get { lock.withLock { stat.inode.permissions } }
        set { pushLock.withLock { lock.withLock { stat.inode.permissions = newValue } } }
    }

    /// Size and mtime as the writer sees them, while there are unpushed writes.
    func localAttributes() -> (sizeBytes: UInt64, mtimeNs: Int64?, ctimeNs: Int64?)? {
        // A write or truncation changes ctime with mtime (an mtime the application set changes ctime to now too).
        lock.withLock { dirty ? (sizeBytes, pendingMtime ?? lastWriteNs, lastWriteNs) : nil }
    }

    /// A new open saw these attributes: if the content changed elsewhere and we hold no writes, read the new one.
    /// Attributes older than ours (asked for before our last push landed) change nothing; equal ones may name new
    /// holders of the same chunks (re-replication leaves the version as it is).
    func refresh(_ fresh: InodeStat) {
        lock.withLock {
            guard fresh.inode.version >= stat.inode.version, !dirty else { return }
            guard fresh.inode.content?.id != stat.inode.content?.id else {
                if fresh.inode.content != stat.inode.content { readAhead = nil }  // read from the new holders
                stat = fresh
                return
            }
            stat = fresh
            sizeBytes = fresh.inode.sizeBytes
            readAhead = nil
            dropSpool()
        }
    }

    func setPendingMtime(_ mtime: Int64) {
        lock.withLock { if dirty { pendingMtime = mtime } }
    }

    // MARK: Reading

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let source: ReadAhead? = lock.withLock {
            if spool >= 0 {
                return nil
            }
            if let content = stat.inode.content, content.isInline {
                return nil  // a small file: its bytes came with its attributes
            }
            if readAhead == nil, let content = stat.inode.content {
                readAhead = ReadAhead(reader: ContentReader(content: content, pool: fileSystem.ring.pool, local: fileSystem.localChunks),
                                      pieceBytes: fileSystem.options.pieceBytes, window: fileSystem.options.readAheadPieces,
                                      budget: fileSystem.budget)
            }
            if readAhead == nil { return nil }  // empty file
            return readAhead
        }
        if let source {
            do { return try source.read(offset: offset, into: buffer) } catch { throw FileSystemError(error) }
        }
        let (count, fromRing, committed): (Int, [(from: UInt64, to: UInt64)], FileContent?) = try lock.withLock {
            if spool < 0, let content = stat.inode.content, content.isInline {
                do {
                    let count = try ContentReader(content: content, pool: fileSystem.ring.pool, local: fileSystem.localChunks).read(offset: offset, into: buffer)
                    return (count, [], nil)
                } catch {
                    throw FileSystemError(error)
                }
            }
            guard spool >= 0, offset < sizeBytes else { return (0, [], nil) }
            let end = offset + min(UInt64(buffer.count), sizeBytes - offset)
            var fromRing: [(from: UInt64, to: UInt64)] = []
            for run in sources(offset, end) {
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(run.from - offset)..<Int(run.to - offset)])
                switch run.source {
                case .spool: _ = try preadFully(spool, target, run.from)
                case .zeros: target.initializeMemory(as: UInt8.self, repeating: 0)
                case .ring: fromRing.append((run.from, run.to))
                }
            }
            return (Int(end - offset), fromRing, stat.inode.content)
        }
        // Bytes this mount did not write come from the committed content, outside the lock.
        if let committed, !fromRing.isEmpty {
            let reader = ContentReader(content: committed, pool: fileSystem.ring.pool, local: fileSystem.localChunks)
            for run in fromRing {
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(run.from - offset)..<Int(run.to - offset)])
                do {
                    guard try reader.read(offset: run.from, into: target) == target.count else {
                        throw OuroError(.corrupt, "the committed content is shorter than recorded")
                    }
                } catch {
                    throw FileSystemError(error)
                }
            }
        }
        return count
    }

    private enum ByteSource { case spool, zeros, ring }

    /// Where each byte of `[from, to)` (below `sizeBytes`) is now: in the spool, zeros, or the committed content.
    private func sources(_ from: UInt64, _ to: UInt64) -> [(from: UInt64, to: UInt64, source: ByteSource)] {
        let committedSize = stat.inode.content?.sizeBytes ?? 0
        var result: [(UInt64, UInt64, ByteSource)] = []
        for run in written.partition(from, to) {
            if run.inside {
                result.append((run.from, run.to, .spool))
                continue
            }
            // Outside the written bytes: the committed content below its size (and below a truncation), else zeros.
            let ringEnd = min(committedSize, zerosFrom ?? .max)
            if run.from < ringEnd { result.append((run.from, min(run.to, ringEnd), .ring)) }
            if run.to > max(run.from, ringEnd) { result.append((max(run.from, ringEnd), run.to, .zeros)) }
        }
        return result
    }


    /// `SEEK_DATA` (`data`) or `SEEK_HOLE` from `offset`: bytes held here are data, zeros after a truncation are a
    /// hole, and the rest is as the committed content has it. ENXIO at or past the end (and for data past the last).
    func seek(from offset: UInt64, data: Bool) throws -> UInt64 {
        try lock.withLock {
            guard offset < sizeBytes else { throw FileSystemError(ENXIO) }
            let committed = stat.inode.content
            for run in sources(offset, sizeBytes) {
                switch run.source {
                case .spool where data: return run.from
                case .zeros where !data: return run.from
                case .ring:
                    guard let committed, !committed.isInline else { if data { return run.from }; continue }
                    if data, let found = committed.nextData(from: run.from), found < run.to { return found }
                    if !data, case let found = committed.nextHole(from: run.from), found < run.to { return found }
                default: continue
                }
            }
            if data { throw FileSystemError(ENXIO) }
            return sizeBytes
        }
    }

    /// Bytes the file stores (for `st_blocks`, so `du` shows holes as free), while writes here are unpushed: the
    /// committed content's stored bytes and what the spool holds, at most the size.
    func localStoredBytes(committed: UInt64?) -> UInt64? {
        lock.withLock { dirty ? min(sizeBytes, (committed ?? stat.inode.sizeBytes) + written.totalBytes) : nil }
    }

    // MARK: Writing

    /// `fallocate(2)`: allocation only changes the size (nothing is reserved: the ring's space is shared); a
    /// punched hole or zeroed range reads as zeros from now on (written as zeros: holes inside a file are stored).
    func allocate(offset: UInt64, length: UInt64, mode: Int32) throws {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= Limits.maxSparseFileBytes else { throw FileSystemError(EFBIG) }
        let (keepSizeFlag, punchHole, zeroRange): (Int32, Int32, Int32) = (0x01, 0x02, 0x10)  // linux/falloc.h
        let keepSize = mode & keepSizeFlag != 0
        switch mode & ~keepSizeFlag {
        case 0:
            if !keepSize, end > lock.withLock({ sizeBytes }) { try truncate(to: end) }
        case punchHole where keepSize, zeroRange:
            let size = lock.withLock { sizeBytes }
            let zeroEnd = keepSize ? min(end, size) : end
            if offset < zeroEnd { try writeZeros(from: offset, to: zeroEnd) }
            if !keepSize, end > size { try truncate(to: end) }
        default:
            throw FileSystemError(EOPNOTSUPP)
        }
    }

    private func writeZeros(from: UInt64, to: UInt64) throws {
        let zeros = [UInt8](repeating: 0, count: Int(min(to - from, 1 << 20)))
        var offset = from
        while offset < to {
            let count = Int(min(UInt64(zeros.count), to - offset))
            _ = try zeros.withUnsafeBytes { try write(offset: offset, data: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            offset += UInt64(count)
        }
    }

    func write(offset: UInt64, data: UnsafeRawBufferPointer) throws -> Int {
        try pushLock.withLock { try lock.withLock {
            try ensureSpool()
            let end = offset + UInt64(data.count)
            guard end <= Limits.maxSparseFileBytes else { throw FileSystemError(EFBIG) }
            try reserve(upTo: written.totalBytes + UInt64(data.count))
            if offset < streamedBytes { streamBroken = true }
            try pwriteFully(spool, data, offset)
            written.insert(offset, end)
            dirtyRanges.insert(offset, end)
            sizeBytes = max(sizeBytes, end)
            dirty = true
            lastWriteNs = nowNanoseconds()
            startSegmentPushes()
            return data.count
        } }
    }

    /// Pushes each whole segment the writer has moved past, in the background (at most `segmentPushes` at once
    /// across the mount; a writer never waits for a slot: what is not pushed now is pushed on close).
    private func startSegmentPushes() {
        let segmentBytes = fileSystem.options.segmentBytes
        while !streamBroken, sizeBytes >= streamedBytes + segmentBytes {
            // Only bytes the spool holds can be pushed; a file written in place elsewhere is committed at close.
            guard written.contains(streamedBytes, streamedBytes + segmentBytes) else {
                streamBroken = true
                break
            }
            guard fileSystem.segmentSlots.tryWait() else { break }
            let start = streamedBytes
            streamedBytes += segmentBytes
            segments.begin()
            let (spool, ring, slots) = (spool, fileSystem.ring, fileSystem.segmentSlots)
            startThread(name: "segment") { [segments] in
                defer { slots.signal() }
                segments.finish(start: start, content: try? Self.pushSegment(ring, spool: spool, offset: start, sizeBytes: segmentBytes))
            }
        }
    }

    private static func pushSegment(_ ring: RingClient, spool: Int32, offset: UInt64, sizeBytes: UInt64) throws -> FileContent {
        try ring.retrying { ring in
            try ring.call(idempotent: true) { node in try node.pushContent(file: spool, offset: offset, sizeBytes: sizeBytes) }
        }
    }

    func truncate(to size: UInt64) throws {
        guard size <= Limits.maxSparseFileBytes else { throw FileSystemError(EFBIG) }
        try pushLock.withLock { try lock.withLock {
            try ensureSpool()
            if size < streamedBytes { streamBroken = true }
            // Cut what the spool holds past the new end (only ever shortened: growth is a hole until written).
            if try spoolLength() > size, ftruncate(spool, off_t(size)) != 0 { throw FileSystemError(errno) }
            // Bytes past the new end are zeros from now on, also when the file grows again.
            let cut = min(size, sizeBytes)
            zerosFrom = min(zerosFrom ?? .max, cut)
            written.remove(cut, .max)
            dirtyRanges.remove(cut, .max)
            if size < sizeBytes { truncatedTo = min(truncatedTo ?? .max, size) }
            sizeBytes = size
            dirty = true
            lastWriteNs = nowNanoseconds()
        } }
    }

    /// Pushes the spool as the file's new content (close, fsync); the error goes back to the application.
    /// Holds `pushLock` throughout, `lock` only to change the state (see `pushLock`).
    /// Pushes what was written; returns whether a commit of bytes was made (durable before the answer, with every
    /// namespace change before it).
    @discardableResult
    func flush() throws -> Bool {
        try pushLock.withLock {
            // A modification time set by the application goes after the bytes, as a namespace change.
            let (wasDirty, mtimeAfter) = lock.withLock { (dirty, pendingMtime != nil) }
            if fileSystem.isPending(inode), try nameCreatedFile() { return wasDirty && !mtimeAfter }
            guard dirty else { return false }
            let size = sizeBytes
            let spool = spool
            do {
                if let updated = try writeInPlace() {
                    try pushed(updated)
                    return !mtimeAfter
                }
                try fillSpool(holdingLock: false)
                try extendSpool()
                let updated = try pushSegmented() ?? fileSystem.ring.retrying { ring in
                    try ring.call(idempotent: true) { node in try node.writeInode(inode, file: spool, sizeBytes: size) }
                }
                try pushed(updated)
                return !mtimeAfter
            } catch where (error as? OuroError)?.code == .gone {
                // Deleted while open (here or through another mount): as with an unlinked local file, the bytes
                // written stay readable through the handles and go with the last one; close succeeds. (Only on
                // GONE: a node that merely does not know the inode yet answers NOT_FOUND, and that is an error.)
                lock.withLock { dirty = false }
                fileSystem.logger.debug("writes to a deleted file dropped", metadata: ["inode": "\(inode)"])
                return false
            } catch {
                fileSystem.logger.error("push failed", metadata: ["inode": "\(inode)", "bytes": "\(size)", "error": "\(error)"])
                throw FileSystemError(error)
            }
        }
    }

    /// The spool is the ring's content now (`updated`): the mtime the application set goes after it; clean again.
    private func pushed(_ updated: InodeStat) throws {
        var updated = updated
        if let mtime = lock.withLock({ pendingMtime }) {
            var request = FSRequest()
            request.inode = inode
            request.mtimeNs = mtime
            updated = try fileSystem.ring.fs(.setattr, request, idempotent: true).stat ?? updated
        }
        lock.withLock {
            stat = updated
            dirty = false
            dirtyRanges = IntervalSet()
            truncatedTo = nil
            pendingMtime = nil
            readAhead = nil
        }
        fileSystem.notePushed(updated)
    }

    /// The first close of a file created here: names it in the catalog, with its bytes if they are few (one commit
    /// for create, write and close). Returns true when nothing is left to push.
    private func nameCreatedFile() throws -> Bool {
        do {
            let size = sizeBytes
            if dirty, size <= UInt64(Limits.inlineContentBytes) {
                var bytes = [UInt8](repeating: 0, count: Int(size))
                if size > 0 {
                    _ = try bytes.withUnsafeMutableBytes { try preadFully(spool, $0, 0) }
                }
                guard let named = try fileSystem.nameCreated(inode, data: bytes) else { return false }
                try pushed(named)
                return true
            }
            if let named = try fileSystem.nameCreated(inode, data: nil), !dirty { lock.withLock { stat = named } }
            return !dirty
        } catch let error as FileSystemError {
            throw error
        } catch {
            throw FileSystemError(error)
        }
    }

    /// The spool committed as the segments pushed while it was written plus the rest, pushed now (a few segments
    /// at once); nil when the file is small or was not written in order, or when any step fails: then the whole
    /// spool is pushed as one content, as for any file. Streaming starts over after a whole push.
    private func pushSegmented() throws -> InodeStat? {
        segments.waitUntilIdle()
        let segmentBytes = fileSystem.options.segmentBytes
        defer {
            if streamBroken || sizeBytes < segmentBytes {
                segments.reset()
                streamedBytes = 0
                streamBroken = sizeBytes >= segmentBytes  // a large file rewritten in place: whole pushes from now on
            }
        }
        guard !streamBroken, sizeBytes >= segmentBytes else { return nil }
        // The rest, in segments pushed side by side.
        var starts: [UInt64] = []
        var next = streamedBytes
        while next < sizeBytes {
            starts.append(next)
            next += segmentBytes
        }
        let (spool, ring, size) = (spool, fileSystem.ring, sizeBytes)
        let tail = parallelMap(starts, width: fileSystem.options.segmentPushes) { start in
            try? Self.pushSegment(ring, spool: spool, offset: start, sizeBytes: min(segmentBytes, size - start))
        }
        for (start, content) in zip(starts, tail) { segments.record(start: start, content: content) }
        streamedBytes = sizeBytes
        guard let all = segments.contiguous(upTo: sizeBytes) else {
            streamBroken = true
            return nil
        }
        var request = FSRequest()
        request.inode = inode
        request.content = FileContent(id: .random(), segments: all)
        do {
            return try fileSystem.ring.retrying { ring in try ring.fs(.setcontent, request, idempotent: true).stat }
        } catch {
            fileSystem.logger.warning("segments not committed; pushing the whole file", metadata: ["inode": "\(inode)", "error": "\(error)"])
            streamBroken = true
            return nil
        }
    }

    /// Frees the spool and cached pieces (the last handle closed).
    func discard() {
        pushLock.withLock { lock.withLock {
            segments.waitUntilIdle()  // their threads read the spool
            dropSpool()
            readAhead?.clear()
            readAhead = nil
        } }
    }

    // MARK: Spool

    /// A file without a name (a crashed driver leaves nothing behind): O_TMPFILE in one call, else made and unlinked.
    private static func makeSpoolFile(in directory: String) throws -> Int32 {
        let unnamed = ouro_open_unnamed(directory)
        if unnamed >= 0 { return unnamed }
        guard errno == EOPNOTSUPP || errno == EISDIR else { throw FileSystemError(errno) }
        var template = Array("\(directory)/spool-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw FileSystemError(errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        unlink(String(cString: template))
        return fd
    }

    /// Creates the spool if there is none: sparse, holding nothing yet (a write in a large file does not fetch it).
    /// A file with no stored bytes, or with inline ones, is held whole from the start.
    private func ensureSpool() throws {
        guard spool < 0 else { return }
        let fd = try Self.makeSpoolFile(in: fileSystem.options.cacheDirectory)
        spool = fd
        written = IntervalSet()
        zerosFrom = nil
        dirtyRanges = IntervalSet()
        truncatedTo = nil
        guard let content = stat.inode.content, content.sizeBytes > 0 else {
            zerosFrom = 0
            return
        }
        do {
            // Not extended to the file's size: the spool stays as short as what it holds (a 1 PiB sparse file
            // is past what a local file system takes; reads of the rest come from the ring or are zeros).
            if content.isInline { try fillSpool(holdingLock: true) }
        } catch {
            dropSpool()
            throw error
        }
    }

    /// Fetches every byte the spool does not hold from the committed content (before a whole push).
    /// `holdingLock`: called with `lock` held (a new spool of an inline file, whose bytes are here), else by a push.
    private func fillSpool(holdingLock: Bool) throws {
        guard let content = stat.inode.content else { return }
        let missing = sources(0, sizeBytes).filter { $0.source == .ring }
        guard !missing.isEmpty else { return }
        try reserve(upTo: written.totalBytes + missing.reduce(0) { $0 + ($1.to - $1.from) })
        let reader = ContentReader(content: content, pool: fileSystem.ring.pool, local: fileSystem.localChunks)
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        do {
            try buffer.withUnsafeMutableBytes { raw in
                for run in missing {
                    var offset = run.from
                    while offset < run.to {
                        let target = UnsafeMutableRawBufferPointer(rebasing: raw[..<Int(min(UInt64(raw.count), run.to - offset))])
                        guard try reader.read(offset: offset, into: target) == target.count else {
                            throw OuroError(.corrupt, "the committed content is shorter than recorded")
                        }
                        try pwriteFully(spool, UnsafeRawBufferPointer(target), offset)
                        offset += UInt64(target.count)
                    }
                    if holdingLock { written.insert(run.from, run.to) } else { lock.withLock { written.insert(run.from, run.to) } }
                }
            }
        } catch let error as FileSystemError {
            throw error
        } catch {
            throw FileSystemError(error)
        }
    }

    /// A whole push reads the spool up to the file's size: a hole at its end must be there as zeros.
    private func extendSpool() throws {
        if try spoolLength() < sizeBytes, ftruncate(spool, off_t(sizeBytes)) != 0 { throw FileSystemError(errno) }
    }

    private func spoolLength() throws -> UInt64 {
        var held = Glibc.stat()
        guard fstat(spool, &held) == 0 else { throw FileSystemError(errno) }
        return UInt64(held.st_size)
    }

    /// Whether the file is mostly holes: its bytes then go as slices over nothing, never as a whole push of zeros.
    private var isMostlyHoles: Bool {
        guard sizeBytes > Limits.regionBytes, dirtyRanges.totalBytes < sizeBytes / 2 else { return false }
        let content = stat.inode.content
        // Asked on every fsync: a slice that alone covers half the file (a plain base under updates) settles it
        // without sorting every slice.
        if content?.asSlices.contains(where: { $0.lengthBytes >= sizeBytes / 2 }) == true { return false }
        return dirtyRanges.totalBytes + (content?.storedBytes ?? 0) < sizeBytes / 2
    }

    /// An update in place: the bytes written since the last commit go to the ring as pieces (`PIECE PUT`, each on
    /// `copies` nodes), named by one `FS WRITESLICES` with the truncation and the new size. Nil when the file is
    /// better pushed whole: it has no stored content yet, is small enough to be inline, or was mostly rewritten
    /// (unless it is at most 1 MiB, or mostly holes: a sparse file is never pushed whole).
    private func writeInPlace() throws -> InodeStat? {
        let base = stat.inode.content.flatMap { $0.sizeBytes > 0 ? $0 : nil }
        // A small file (a database's journal, a file being built) goes as pieces carried by the commit, however
        // much of it changed: one write to `copies` nodes and one commit, where a whole push relays through all.
        let isSmall = sizeBytes > UInt64(Limits.inlineContentBytes) && sizeBytes <= UInt64(Limits.streamBufferBytes)
        if !isSmall && !isMostlyHoles {
            guard let base, !base.isInline, sizeBytes > UInt64(Limits.inlineContentBytes),
                  dirtyRanges.totalBytes < sizeBytes / 2 else { return nil }
            // Segments pushed while the application wrote (a large file growing in order) are committed as they
            // are, and a large tail written here is pushed as segments too (the protocol's layout suits big
            // sequential data).
            guard streamBroken || streamedBytes <= base.sizeBytes else { return nil }
            let appended = sizeBytes > base.sizeBytes ? dirtyRanges.totalBytes - min(dirtyRanges.totalBytes, overlap(dirtyRanges, below: base.sizeBytes)) : 0
            if appended >= Self.appendAsSegmentsBytes, !sources(0, sizeBytes).contains(where: { $0.source == .ring }) { return nil }
        } else if streamedBytes > 0 && !streamBroken {
            streamBroken = true  // the segments streamed so far become garbage: the bytes go as pieces
        }
        let start = base?.start ?? fileSystem.ring.currentNode
        var ranges: [(from: UInt64, to: UInt64)] = []
        for range in dirtyRanges.ranges {
            var from = range.from
            while from < range.to {
                let to = min(range.to, from + Limits.maxPieceBytes)
                ranges.append((from, to))
                from = to
            }
        }
        guard ranges.count <= Limits.maxSlices else { return nil }
        let (spool, ring) = (spool, fileSystem.ring)
        var request = FSRequest()
        request.inode = inode
        request.sizeBytes = sizeBytes
        request.truncatedTo = truncatedTo
        let carried = dirtyRanges.totalBytes <= UInt64(Limits.streamBufferBytes)
        if carried {
            // A small update: its bytes go with the commit, and the node stores the pieces while it commits.
            var data = [UInt8](repeating: 0, count: Int(dirtyRanges.totalBytes))
            var at = 0
            try data.withUnsafeMutableBytes { raw in
                for range in ranges {
                    let length = Int(range.to - range.from)
                    guard try preadFully(spool, UnsafeMutableRawBufferPointer(rebasing: raw[at..<(at + length)]), range.from) == length else {
                        throw OuroError(.internal, "the spool is shorter than what was written")
                    }
                    at += length
                }
            }
            request.data = Data(data)
            request.slices = ranges.map { range in
                ContentSlice(fileOffset: range.from, lengthBytes: range.to - range.from,
                             source: FileContent(id: .random(), sizeBytes: range.to - range.from, start: start, copies: 0, chunks: []))
            }
        } else {
            let pieces = try parallelMap(ranges, width: min(4, ranges.count)) { range -> Result<FileContent, Error> in
                Result { try Self.pushPiece(ring, spool: spool, offset: range.from, sizeBytes: range.to - range.from) }
            }.map { try $0.get() }
            request.slices = zip(ranges, pieces).map { range, piece in
                ContentSlice(fileOffset: range.from, lengthBytes: range.to - range.from, source: piece)
            }
        }
        let reply: FSReply
        do {
            reply = try ring.retrying { ring in try ring.fs(.writeslices, request, idempotent: true) }
        } catch let error as OuroError where error.code == .tooLarge {
            // A region is full (its compaction fell behind the writes): compact the regions written here now, once.
            let touched = Set(ranges.flatMap { ($0.from / Limits.regionBytes)...(($0.to - 1) / Limits.regionBytes) })
            let records = lock.withLock { touched.compactMap { knownRegions[$0] } }
            guard !records.isEmpty else { throw error }
            for record in records {
                do {
                    _ = try Self.compact(record, inode: inode, ring: ring, local: fileSystem.localChunks) { self.noteRegions($0) }
                } catch {
                    fileSystem.logger.debug("compaction dropped", metadata: ["inode": "\(inode)", "region": "\(record.region)", "error": "\(error)"])
                }
            }
            reply = try ring.retrying { ring in try ring.fs(.writeslices, request, idempotent: true) }
        }
        noteRegions(reply.regions ?? [])
        guard var updated = reply.stat, let written = carried ? reply.slices : request.slices else {
            throw OuroError(.internal, "WRITESLICES answered without attributes or slices")
        }
        // The node answers without the content (it may have thousands of slices): the same rule gives it here.
        updated.inode.content = ContentSlices.writing(written, onto: base, truncatedTo: truncatedTo, sizeBytes: sizeBytes,
                                                      id: .random(), start: start)
        for region in reply.regions ?? [] { startCompaction(region) }
        return updated
    }

    // MARK: Compaction

    /// Regions being compacted now (one compaction per region at a time).
    private var compacting: Set<UInt64> = []
    /// The latest record the ring gave of each region with many slices (for a compaction that cannot wait).
    private var knownRegions: [UInt64: RegionRecord] = [:]

    private func noteRegions(_ records: [RegionRecord]) {
        guard !records.isEmpty else { return }
        lock.withLock {
            for record in records where knownRegions[record.region].map({ $0.version < record.version }) ?? true {
                knownRegions[record.region] = record
            }
        }
    }

    /// Compacts one region in the background: its bytes as the ring has them now become one piece, named by
    /// `FS COMPACT` in place of the slices `region` had. The ring's content is read after `region` was (so it holds
    /// at least those slices); a region changed meanwhile otherwise than by new writes on top is left for next time.
    private func startCompaction(_ region: RegionRecord) {
        let claimed = lock.withLock { compacting.insert(region.region).inserted }
        guard claimed else { return }
        guard fileSystem.compactionSlots.tryWait() else {
            lock.withLock { _ = compacting.remove(region.region) }
            return
        }
        let (ring, local, inode, logger, slots) = (fileSystem.ring, fileSystem.localChunks, inode, fileSystem.logger, fileSystem.compactionSlots)
        startThread(name: "compact") { [weak self] in
            defer {
                slots.signal()
                if let self { self.lock.withLock { _ = self.compacting.remove(region.region) } }
            }
            do {
                let fresh = try Self.compact(region, inode: inode, ring: ring, local: local) { self?.noteRegions($0) }
                if let fresh { self?.adoptContent(fresh) }
                logger.debug("region compacted", metadata: ["inode": "\(inode)", "region": "\(region.region)", "slices": "\(region.slices.count)"])
            } catch {
                logger.debug("compaction dropped", metadata: ["inode": "\(inode)", "region": "\(region.region)", "error": "\(error)"])
            }
        }
    }

    /// One compaction: the region's bytes as the ring has them now (read after `region` was given, and refused if
    /// the answer predates it: a node that missed the commit) become one piece, named by `FS COMPACT` in place of
    /// `region`'s slices. Returns the file's attributes after it (its pieces merged), for the caller to adopt.
    private static func compact(_ region: RegionRecord, inode: UInt64, ring: RingClient, local: LocalChunkFiles,
                                noteRegions: ([RegionRecord]) -> Void) throws -> InodeStat? {
        let from = region.region * Limits.regionBytes
        var getattr = FSRequest()
        getattr.inode = inode
        guard let stat = try ring.fs(.getattr, getattr, idempotent: true).stat, let content = stat.inode.content else { return nil }
        guard stat.inode.version >= region.version else {
            throw OuroError(.unavailable, "the node answered attributes older than the region")
        }
        let to = min(content.sizeBytes, from + Limits.regionBytes)
        guard from < to else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(to - from))
        let reader = ContentReader(content: content, pool: ring.pool, local: local)
        guard try bytes.withUnsafeMutableBytes({ try reader.read(offset: from, into: $0) }) == bytes.count else {
            throw OuroError(.corrupt, "the region is shorter than recorded")
        }
        let merged = try ring.retrying { ring in try ring.call(idempotent: true) { node in try node.putPiece(bytes) } }
        var request = FSRequest()
        request.inode = inode
        request.offset = from
        request.slices = region.slices
        request.cuts = region.cuts
        request.content = merged
        noteRegions(try ring.fs(.compact, request, idempotent: true).regions ?? [])
        // The merged slices' pieces become garbage: read the file's content as the ring has it now.
        return try ring.fs(.getattr, getattr, idempotent: true).stat
    }

    /// The ring's content of this file after a compaction, if it includes every commit made here.
    private func adoptContent(_ fresh: InodeStat) {
        pushLock.withLock { lock.withLock {
            guard fresh.inode.version >= stat.inode.version, fresh.inode.sizeBytes == stat.inode.sizeBytes else { return }
            stat.inode.content = fresh.inode.content
            stat.inode.version = fresh.inode.version
            readAhead = nil
        } }
    }

    /// A tail at least this long, written here in full, is pushed with the file as segments rather than as pieces.
    static let appendAsSegmentsBytes: UInt64 = 8 << 20

    /// Bytes of `ranges` below `offset`.
    private func overlap(_ ranges: IntervalSet, below offset: UInt64) -> UInt64 {
        ranges.ranges.reduce(0) { $0 + ($1.from < offset ? min($1.to, offset) - $1.from : 0) }
    }

    private static func pushPiece(_ ring: RingClient, spool: Int32, offset: UInt64, sizeBytes: UInt64) throws -> FileContent {
        try ring.retrying { ring in
            try ring.call(idempotent: true) { node in try node.putPiece(file: spool, offset: offset, sizeBytes: sizeBytes) }
        }
    }

    /// Accounts spool growth to `size` against the mount's spool limit.
    private func reserve(upTo size: UInt64) throws {
        guard size > reservedBytes else { return }
        try fileSystem.reserveSpool(size - reservedBytes)
        reservedBytes = size
    }

    private func dropSpool() {
        segments.waitUntilIdle()
        segments.reset()
        streamedBytes = 0
        streamBroken = false
        if spool >= 0 { Glibc.close(spool) }
        spool = -1
        written = IntervalSet()
        zerosFrom = nil
        dirtyRanges = IntervalSet()
        truncatedTo = nil
        fileSystem.releaseSpool(reservedBytes)
        reservedBytes = 0
    }
}

/// Writes all of `bytes` at `offset`.
func pwriteFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ offset: UInt64) throws {
    var written = 0
    while written < bytes.count {
        let count = pwrite(fd, bytes.baseAddress! + written, bytes.count - written, off_t(offset) + off_t(written))
        if count < 0 {
            if errno == EINTR { continue }
            throw FileSystemError(errno)
        }
        written += count
    }
}

/// Reads until `buffer` is full or the file ends; returns the count.
func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ offset: UInt64) throws -> Int {
    var filled = 0
    while filled < buffer.count {
        let count = pread(fd, buffer.baseAddress! + filled, buffer.count - filled, off_t(offset) + off_t(filled))
        if count < 0 {
            if errno == EINTR { continue }
            throw FileSystemError(errno)
        }
        if count == 0 { break }
        filled += count
    }
    return filled
}

/// The segment pushes of one open file: running count, and the content each finished one stored, by offset.
final class SegmentPushes: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var idle = pthread_cond_t()
    private var running = 0
    private var pushed: [UInt64: FileContent] = [:]
    private var failed = false

    init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&idle, nil)
    }

    deinit {
        pthread_cond_destroy(&idle)
        pthread_mutex_destroy(&mutex)
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }

    func begin() { locked { running += 1 } }

    func finish(start: UInt64, content: FileContent?) {
        locked {
            store(content, at: start)
            running -= 1
            pthread_cond_broadcast(&idle)
        }
    }

    func record(start: UInt64, content: FileContent?) { locked { store(content, at: start) } }

    /// A failed push (nil) spoils the whole set: `contiguous` then answers nil.
    private func store(_ content: FileContent?, at start: UInt64) {
        if let content { pushed[start] = content } else { failed = true }
    }

    /// Waits for every running push (their threads read the spool).
    func waitUntilIdle() {
        locked { while running > 0 { pthread_cond_wait(&idle, &mutex) } }
    }

    /// The segments covering exactly `[0, size)`, in order, if every push succeeded.
    func contiguous(upTo size: UInt64) -> [FileContent]? {
        locked {
            guard !failed else { return nil }
            var result: [FileContent] = []
            var offset: UInt64 = 0
            while offset < size, let next = pushed[offset], next.sizeBytes > 0 {
                result.append(next)
                offset += next.sizeBytes
            }
            return offset == size ? result : nil
        }
    }

    func reset() {
        locked {
            pushed = [:]
            failed = false
        }
    }
}
