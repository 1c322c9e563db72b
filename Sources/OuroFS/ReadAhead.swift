import Glibc
import OuroClient
import OuroCore

/// The read-ahead buffers of the whole mount: at most `pieces` of `pieceBytes` each, the bound on its memory.
/// Buffers are reused rather than freed, so a piece costs no fresh pages (and no page faults) once warm.
final class PieceBudget: @unchecked Sendable {
    private let lock = Lock()
    private var unallocated: Int
    private var free: [UnsafeMutableRawBufferPointer] = []
    let pieceBytes: Int

    init(pieces: Int, pieceBytes: Int) {
        unallocated = pieces
        self.pieceBytes = pieceBytes
    }

    deinit { free.forEach { $0.deallocate() } }

    /// A buffer of `pieceBytes`, or nil when all are in use.
    func take() -> UnsafeMutableRawBufferPointer? {
        lock.withLock {
            if let buffer = free.popLast() { return buffer }
            guard unallocated > 0 else { return nil }
            unallocated -= 1
            return UnsafeMutableRawBufferPointer.allocate(byteCount: pieceBytes, alignment: 4096)
        }
    }

    func give(_ buffer: UnsafeMutableRawBufferPointer) { lock.withLock { free.append(buffer) } }
}

/// Sequential read-ahead for one open file: when reads follow each other, the next pieces of the file are fetched
/// in the background (each from its chunk holders) so they are ready when the reader gets there. Random reads go
/// straight to the holders. Pieces behind the reader are dropped.
final class ReadAhead: @unchecked Sendable {
    /// One piece of the file being fetched or fetched; its buffer goes back to the pool when the piece is dropped.
    final class Piece: @unchecked Sendable {
        let ready = Latch()
        /// The piece's bytes: the start of a pooled buffer.
        let bytes: UnsafeMutableRawBufferPointer
        var error: Error?
        private let buffer: UnsafeMutableRawBufferPointer
        private let budget: PieceBudget

        init(lengthBytes: Int, buffer: UnsafeMutableRawBufferPointer, budget: PieceBudget) {
            self.buffer = buffer
            bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[..<lengthBytes])
            self.budget = budget
        }

        deinit { budget.give(buffer) }
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
                target.baseAddress!.copyMemory(from: piece.bytes.baseAddress! + Int(position - pieceStart), byteCount: take)
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
                guard pieces[index] == nil, let buffer = budget.take() else { return nil }
                let start = UInt64(index) * pieceBytes
                let piece = Piece(lengthBytes: Int(min(pieceBytes, sizeBytes - start)), buffer: buffer, budget: budget)
                pieces[index] = piece
                return piece
            }
            guard let piece else { continue }
            let start = UInt64(index) * pieceBytes
            startThread(name: "readahead") { [reader] in
                do {
                    _ = try reader.read(offset: start, into: piece.bytes)
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
