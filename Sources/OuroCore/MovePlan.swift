/// What a membership change moves, decided from the catalog's placements and the netmap alone (pure), so that
/// `ouro plan leave` shows exactly what `NODE LEAVE` then does.
///
/// A node that leaves gives up every copy it holds. A chunk keeps its other holders; it gets a new copy on a live
/// node that has none when its remaining live holders are fewer than it should have (`min(copies, live nodes
/// left)`), else the leaving holder is only dropped. The new holder is the candidate given the fewest bytes so far
/// in this plan (ties: ring order from the leaving node's successor), so a leave spreads its bytes over the ring
/// instead of piling them on one neighbour. A join moves nothing: chunks stay where they are and new writes use the
/// new node (rebalancing would be a plan of its own).
public struct MovePlan: Codable, Sendable, Equatable {
    public struct Move: Codable, Sendable, Equatable {
        public var contentID: ContentID
        public var index: Int
        public var parts: Int
        public var lengthBytes: UInt64
        public var from: NodeAddress
        /// The node that gets a new copy; nil: the chunk has copies enough without this one, it is only dropped.
        public var to: NodeAddress?

        public var chunk: ChunkID { try! ChunkID(contentID: contentID, index: index, parts: parts) }  // from a valid placement
    }

    public enum Change: String, Codable, Sendable { case leave, join }

    public var change: Change
    public var node: NodeAddress
    /// In content-id then chunk order: the order the move happens in.
    public var moves: [Move]
    /// Chunks whose only live copy is on the leaving node and that no other live node could take: would be lost
    /// (the leave refuses to start while there are any).
    public var stranded: Int

    public var copies: [Move] { moves.filter { $0.to != nil } }
    public var bytesCopied: UInt64 { copies.reduce(0) { $0 + $1.lengthBytes } }

    /// Bytes and pieces by (from, to), for the report.
    public var routes: [(from: NodeAddress, to: NodeAddress, pieces: Int, bytes: UInt64)] {
        var order: [NodeAddress] = []
        var totals: [NodeAddress: (Int, UInt64)] = [:]
        for move in copies {
            guard let to = move.to else { continue }
            if totals[to] == nil { order.append(to) }
            let (pieces, bytes) = totals[to] ?? (0, 0)
            totals[to] = (pieces + 1, bytes + move.lengthBytes)
        }
        return order.map { (node, $0, totals[$0]!.0, totals[$0]!.1) }
    }

    public static func join(_ node: NodeAddress) -> MovePlan {
        MovePlan(change: .join, node: node, moves: [], stranded: 0)
    }

    /// The plan for `leaving` to leave a ring whose netmap is `netmap`, holding `contents` (duplicates ignored).
    public static func leave(_ leaving: NodeAddress, contents: [FileContent], netmap: Netmap) -> MovePlan {
        let live = netmap.liveAddresses
        // Ring order from the leaving node's successor: the tie-break, so that equal loads go to neighbours first.
        let members = netmap.members.map(\.address)
        let start = (members.firstIndex(of: leaving) ?? -1) + 1
        let ring = (members[min(start, members.count)...] + members[..<min(start, members.count)]).filter { $0 != leaving && live.contains($0) }
        var given: [NodeAddress: UInt64] = [:]
        var moves: [Move] = []
        var stranded = 0
        var seen = Set<ContentID>()
        for content in contents.sorted(by: { $0.id.hex < $1.id.hex }) where seen.insert(content.id).inserted {
            for (index, placement) in content.chunks.enumerated() where placement.holders.contains(leaving) {
                let others = placement.holders.filter { $0 != leaving }
                let liveOthers = others.filter { live.contains($0) }
                let wanted = min(content.copies, ring.count)
                var move = Move(contentID: content.id, index: index, parts: content.parts, lengthBytes: placement.lengthBytes,
                                from: leaving, to: nil)
                if liveOthers.count < wanted {
                    let candidates = ring.filter { !others.contains($0) }
                    // Fewest bytes given so far; `min` keeps the first of equals, which is ring order.
                    if let target = candidates.min(by: { given[$0, default: 0] < given[$1, default: 0] }) {
                        move.to = target
                        given[target, default: 0] += placement.lengthBytes
                    }
                }
                if move.to == nil && liveOthers.isEmpty { stranded += 1 }
                moves.append(move)
            }
        }
        return MovePlan(change: .leave, node: leaving, moves: moves, stranded: stranded)
    }
}
