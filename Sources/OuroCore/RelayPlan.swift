/// Who stores what in one push, and which bytes each hop of the relay stream carries.
///
/// The chain is the live ring from the start node: chunk `i`'s primary holder is `chain[i]`, and its further copies
/// sit on the primary's predecessors (`chain[i-1]`, `chain[i-2]`, … around the ring) — the original "every node backs
/// up its successor" model. So the node at position `p` stores chunks `p, p+1, …, p+copies-1` (mod n). The stream
/// passes the file's bytes hop to hop; each hop forwards only the chunks some later hop still needs, in file order.
public struct RelayPlan: Sendable, Equatable {
    public let layout: ChunkLayout
    public let copies: Int

    /// `copies` is clamped to the chain length.
    public init(sizeBytes: UInt64, chainLength: Int, copies: Int) {
        precondition(chainLength >= 1)
        layout = ChunkLayout(sizeBytes: sizeBytes, parts: chainLength)
        self.copies = max(1, min(copies, chainLength))
    }

    public var parts: Int { layout.parts }

    /// Chunks the node at `position` stores, ascending.
    public func storedChunks(at position: Int) -> [Int] {
        (0..<copies).map { (position + $0) % parts }.sorted()
    }

    /// Positions holding chunk `index`: its primary first, then the copies on its predecessors.
    public func holderPositions(ofChunk index: Int) -> [Int] {
        (0..<copies).map { (index - $0 + parts) % parts }
    }

    /// Chunks the node at `position` receives in its incoming stream (position 0 receives the whole file).
    public func receivedChunks(at position: Int) -> [Int] {
        if position == 0 { return Array(0..<parts) }
        var needed = Set<Int>()
        for later in position..<parts { needed.formUnion(storedChunks(at: later)) }
        return needed.sorted()
    }

    /// Chunks the node at `position` forwards to the next position.
    public func forwardedChunks(at position: Int) -> [Int] {
        position + 1 < parts ? receivedChunks(at: position + 1) : []
    }

    /// Bytes in the stream arriving at `position`.
    public func streamBytes(at position: Int) -> UInt64 {
        receivedChunks(at: position).reduce(0) { $0 + layout.lengthBytes(ofChunk: $1) }
    }
}
