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

/// Where a piece's copies go: the `count` live nodes with the highest hash of (piece id, node) — rendezvous
/// hashing, so an update touches `copies` nodes whatever the ring's size, and pieces spread evenly over the ring.
public enum Rendezvous {
    public static func holders(of id: ContentID, among nodes: [NodeAddress], count: Int) -> [NodeAddress] {
        Array(ranked(id, nodes).prefix(max(0, count)))
    }

    /// Every node, best first.
    public static func ranked(_ id: ContentID, _ nodes: [NodeAddress]) -> [NodeAddress] {
        nodes.map { ($0, score(id, $0)) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0.description < $1.0.description }.map(\.0)
    }

    static func score(_ id: ContentID, _ node: NodeAddress) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a, then a SplitMix64 finish to spread the bits
        for byte in id.hex.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash = (hash ^ 0x7c) &* 0x100_0000_01b3
        for byte in node.description.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        hash = (hash ^ (hash >> 30)) &* 0xBF58_476D_1CE4_E5B9
        hash = (hash ^ (hash >> 27)) &* 0x94D0_49BB_1331_11EB
        return hash ^ (hash >> 31)
    }
}
