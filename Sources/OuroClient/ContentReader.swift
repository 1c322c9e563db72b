import Glibc
import OuroCore

/// Reads chunks that a node holds on its own disk without going through a socket.
public protocol LocalChunkSource: AnyObject, Sendable {
    /// Copies `[offset, offset+length)` of a verified chunk stored on this machine by one of `holders` into
    /// `buffer`; false if no such copy can be read here.
    func readLocal(_ chunk: ChunkID, holders: [NodeAddress], offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool
}

/// Reads a file's bytes from the nodes that hold its chunks: byte ranges map to chunk slices, each fetched from a
/// holder (the primary first, then the copies: failover). Whole-file streaming fetches several pieces at once and
/// writes them in order, with memory bounded by `parallelism × pieceBytes`.
public final class ContentReader: @unchecked Sendable {
    public let content: FileContent
    private let pool: ConnectionPool
    private let local: LocalChunkSource?
    private let lock = Lock()
    /// Holders that failed during this read: tried last from then on.
    private var failed: Set<NodeAddress> = []
    private var sourceReaders: [ContentID: ContentReader] = [:]

    /// Readers of a segmented content's pieces, with the offset where each starts.
    private let segments: [(start: UInt64, reader: ContentReader)]

    public init(content: FileContent, pool: ConnectionPool, local: LocalChunkSource? = nil) {
        self.content = content
        self.pool = pool
        self.local = local
        var start: UInt64 = 0
        segments = (content.segments ?? []).map { segment in
            defer { start += segment.sizeBytes }
            return (start, ContentReader(content: segment, pool: pool, local: local))
        }
    }

    /// Fills `buffer` with the file's bytes from `offset`; returns the count (short only at end of file).
    public func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let inline = try content.checkedInlineBytes() {
            guard offset < UInt64(inline.count), buffer.count > 0 else { return 0 }
            let count = min(buffer.count, inline.count - Int(offset))
            inline.withUnsafeBytes { bytes in
                buffer.baseAddress!.copyMemory(from: bytes.baseAddress! + Int(offset), byteCount: count)
            }
            return count
        }
        if content.slices != nil { return try readLayered(offset: offset, into: buffer) }
        if !segments.isEmpty { return try readSegments(offset: offset, into: buffer) }
        let slices = content.layout.slices(offset: offset, length: UInt64(buffer.count))
        if slices.count > 1 {
            // A range across chunks: fetch the pieces from their holders at the same time.
            let errors = parallelMap(slices, width: slices.count) { slice -> OuroError? in
                let start = Int(slice.offsetInFile - offset)
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(slice.lengthBytes))])
                do { try self.fetch(slice, into: target); return nil } catch { return error as? OuroError ?? OuroError(.internal, "\(error)") }
            }
            if let error = errors.compactMap({ $0 }).first { throw error }
        } else if let slice = slices.first {
            try fetch(slice, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<Int(slice.lengthBytes)]))
        }
        return slices.reduce(0) { $0 + Int($1.lengthBytes) }
    }

    /// A range of a layered content: each extent from its source (by that source's reader), holes as zeros.
    private func readLayered(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let extents = content.extents(offset: offset, length: UInt64(buffer.count))
        for extent in extents {
            let start = Int(extent.fileOffset - offset)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(extent.lengthBytes))])
            guard let source = extent.source else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
                continue
            }
            guard try reader(of: source).read(offset: extent.sourceOffset, into: target) == target.count else {
                throw OuroError(.corrupt, "content \(source.id) is shorter than its slice")
            }
        }
        return extents.last.map { Int($0.fileEnd - offset) } ?? 0
    }

    /// One reader per source of a layered content, kept for the whole read (it remembers failed holders).
    private func reader(of source: FileContent) -> ContentReader {
        lock.withLock {
            if let reader = sourceReaders[source.id] { return reader }
            let reader = ContentReader(content: source, pool: pool, local: local)
            sourceReaders[source.id] = reader
            return reader
        }
    }

    /// A range of a segmented content: each segment's part read by that segment's reader.
    private func readSegments(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let end = min(content.sizeBytes, offset + UInt64(buffer.count))
        guard offset < end else { return 0 }
        var filled = 0
        for (start, reader) in segments {
            let segmentEnd = start + reader.content.sizeBytes
            let from = max(offset, start)
            let to = min(end, segmentEnd)
            guard from < to else { continue }
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
            guard try reader.read(offset: from - start, into: target) == target.count else {
                throw OuroError(.corrupt, "segment at \(start) is shorter than recorded")
            }
            filled += target.count
        }
        return filled
    }

    /// Streams the whole file to `sink` in order, fetching up to `parallelism` pieces at once.
    public func stream(parallelism: Int = 4, pieceBytes: Int = 4 << 20, sink: @escaping (UnsafeRawBufferPointer) throws -> Void) throws {
        if let inline = try content.checkedInlineBytes() {
            try inline.withUnsafeBytes { try sink($0) }
            return
        }
        let size = content.sizeBytes
        let pieces = Int((size + UInt64(pieceBytes) - 1) / UInt64(pieceBytes))
        guard pieces > 0 else { return }
        let workers = max(1, min(parallelism, pieces))
        let lock = Lock()
        var nextPiece = 0
        var nextToWrite = 0
        var failure: Error?
        let turns = (0..<workers).map { _ in Semaphore() }
        var waiting: [Int: Int] = [:]  // piece → worker waiting to write it
        let finished = Semaphore()
        for worker in 0..<workers {
            startThread { [self] in
                var buffer = [UInt8](repeating: 0, count: pieceBytes)
                while true {
                    let piece: Int? = lock.withLock {
                        guard failure == nil, nextPiece < pieces else { return nil }
                        defer { nextPiece += 1 }
                        return nextPiece
                    }
                    guard let piece else { break }
                    let offset = UInt64(piece) * UInt64(pieceBytes)
                    let length = Int(min(UInt64(pieceBytes), size - offset))
                    var error: Error?
                    do {
                        _ = try buffer.withUnsafeMutableBytes { raw in
                            try read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: raw[..<length]))
                        }
                    } catch let caught {
                        error = caught
                    }
                    // Wait for this piece's turn to write, so output stays in file order.
                    let mustWait: Bool = lock.withLock {
                        if let error, failure == nil { failure = error }
                        if nextToWrite == piece || failure != nil { return false }
                        waiting[piece] = worker
                        return true
                    }
                    if mustWait { turns[worker].wait() }
                    let proceed = lock.withLock { failure == nil }
                    if proceed {
                        do {
                            try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[..<length])) }
                        } catch let caught {
                            lock.withLock { if failure == nil { failure = caught } }
                        }
                    }
                    lock.withLock {
                        nextToWrite = piece + 1
                        if failure != nil {
                            // Wake everyone: they will see the failure and stop.
                            for (_, waiter) in waiting { turns[waiter].signal() }
                            waiting.removeAll()
                        } else if let waiter = waiting.removeValue(forKey: nextToWrite) {
                            turns[waiter].signal()
                        }
                    }
                }
                finished.signal()
            }
        }
        for _ in 0..<workers { finished.wait() }
        if let failure { throw failure }
    }

    /// Fetches one slice into `target`, trying each holder of its chunk until one delivers all of it.
    private func fetch(_ slice: ChunkLayout.Slice, into target: UnsafeMutableRawBufferPointer) throws {
        let chunk = content.chunkID(slice.chunk)
        let holders = content.chunks[slice.chunk].holders
        if let local, (try? local.readLocal(chunk, holders: holders, offset: slice.offsetInChunk, into: target)) == true { return }
        let failedNow = lock.withLock { failed }
        let ordered = holders.filter { !failedNow.contains($0) } + holders.filter { failedNow.contains($0) }
        var lastError: Error = OuroError.unavailable("chunk \(chunk) has no holder")
        for holder in ordered {
            do {
                let delivered = try NodeClient(holder, pool: pool).readChunk(chunk, offset: slice.offsetInChunk, into: target)
                guard delivered == slice.lengthBytes else {
                    throw OuroError(.corrupt, "\(holder) has only part of \(chunk)")
                }
                return
            } catch {
                lastError = error
                lock.withLock { _ = failed.insert(holder) }
                pool.forget(holder)
            }
        }
        throw OuroError.unavailable("no reachable good copy of chunk \(slice.chunk + 1) of \(content.parts): \(lastError)")
    }
}
