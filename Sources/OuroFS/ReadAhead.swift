import Glibc
import OuroClient
import OuroCore

/// A count of read-ahead buffers that may exist at once across the whole mount: the bound on its memory.
final class PieceBudget: @unchecked Sendable {
    private let lock = Lock()
    private var available: Int

    init(pieces: Int) { available = pieces }

    func tryAcquire() -> Bool {
        lock.withLock {
            guard available > 0 else { return false }
            available -= 1
            return true
        }
    }

    func release() { lock.withLock { available += 1 } }
}

/// Sequential read-ahead for one open file: when reads follow each other, the next pieces of the file are fetched
/// in the background (each from its chunk holders) so they are ready when the reader gets there. Random reads go
/// straight to the holders. Pieces behind the reader are dropped.
final class ReadAhead: @unchecked Sendable {
    /// One piece of the file being fetched or fetched; its buffer counts against the budget until it is freed.
    final class Piece: @unchecked Sendable {
        let ready = Latch()
        var bytes: [UInt8]
        var error: Error?
        private let budget: PieceBudget

        init(lengthBytes: Int, budget: PieceBudget) {
            bytes = [UInt8](repeating: 0, count: lengthBytes)
            self.budget = budget
        }

        deinit { budget.release() }
    }

    private let reader: ContentReader
    private let sizeBytes: UInt64
    private let pieceBytes: UInt64
    private let window: Int
    private let budget: PieceBudget
    private let lock = Lock()
    private var pieces: [Int: Piece] = [:]
    private var expectedOffset: UInt64 = 0

    init(reader: ContentReader, pieceBytes: Int, window: Int, budget: PieceBudget) {
        self.reader = reader
        sizeBytes = reader.content.sizeBytes
        self.pieceBytes = UInt64(pieceBytes)
        self.window = window
        self.budget = budget
    }

    func read(offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard offset < sizeBytes else { return 0 }
        let end = min(sizeBytes, offset + UInt64(buffer.count))
        let first = Int(offset / pieceBytes)
        let sequential: Bool = lock.withLock {
            let isSequential = offset == expectedOffset || pieces[first] != nil
            expectedOffset = end
            // Pieces wholly behind the reader will not be needed again.
            pieces = pieces.filter { $0.key >= first }
            return isSequential
        }
        if sequential { prefetch(from: first, through: Int((end - 1) / pieceBytes) + window) }
        var position = offset
        while position < end {
            let index = Int(position / pieceBytes)
            let pieceStart = UInt64(index) * pieceBytes
            let take = Int(min(end, pieceStart + pieceBytes) - position)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(position - offset)..<(Int(position - offset) + take)])
            if let piece = lock.withLock({ pieces[index] }) {
                piece.ready.wait()
                if let error = piece.error {
                    lock.withLock { if pieces[index] === piece { pieces[index] = nil } }
                    throw error
                }
                piece.bytes.withUnsafeBytes { raw in
                    target.baseAddress!.copyMemory(from: raw.baseAddress! + Int(position - pieceStart), byteCount: take)
                }
            } else {
                guard try reader.read(offset: position, into: target) == take else {
                    throw OuroError(.corrupt, "short read")
                }
            }
            position += UInt64(take)
        }
        return Int(end - offset)
    }

    /// Starts fetching pieces `first...last` that are not cached yet, as far as the budget allows.
    private func prefetch(from first: Int, through last: Int) {
        let lastPiece = Int((sizeBytes - 1) / pieceBytes)
        for index in first...min(last, lastPiece) {
            let piece: Piece? = lock.withLock {
                guard pieces[index] == nil, budget.tryAcquire() else { return nil }
                let start = UInt64(index) * pieceBytes
                let piece = Piece(lengthBytes: Int(min(pieceBytes, sizeBytes - start)), budget: budget)
                pieces[index] = piece
                return piece
            }
            guard let piece else { continue }
            let start = UInt64(index) * pieceBytes
            startThread(name: "readahead") { [reader] in
                do {
                    _ = try piece.bytes.withUnsafeMutableBytes { try reader.read(offset: start, into: $0) }
                } catch {
                    piece.error = error
                }
                piece.ready.open()
            }
        }
    }

    /// Drops every cached piece (the file is being closed).
    func clear() {
        lock.withLock { pieces.removeAll() }
    }
}
