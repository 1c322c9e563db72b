import OuroCore
import Testing

/// `MovePlan.leave` on generated rings and catalogs (seeded): what it must always decide.
@Suite struct MovePlanTests {
    struct Case {
        var netmap: Netmap
        var contents: [FileContent]
        var leaving: NodeAddress
    }

    static func generate(_ generator: inout PseudoRandomBytes) -> Case {
        func below(_ n: Int) -> Int { Int(generator.bytes(1)[0]) % n }
        let count = 2 + below(7)
        let nodes = (0..<count).map { NodeAddress(host: "10.0.0.\($0 + 1)", port: 7000) }
        var members = nodes.map { Netmap.Member(address: $0, alive: true) }
        for index in 0..<count where below(5) == 0 { members[index].alive = false }
        let leaving = nodes[below(count)]
        members[nodes.firstIndex(of: leaving)!].alive = true
        var contents: [FileContent] = []
        for _ in 0..<(1 + below(12)) {
            let copies = 1 + below(3)
            let parts = 1 + below(4)
            let chunks = (0..<parts).map { _ -> ChunkPlacement in
                var holders: [NodeAddress] = []
                for _ in 0..<(1 + below(min(count, copies + 1))) {
                    let node = nodes[below(count)]
                    if !holders.contains(node) { holders.append(node) }
                }
                if below(2) == 0, !holders.contains(leaving) { holders.append(leaving) }
                return ChunkPlacement(lengthBytes: UInt64(1 + below(200)) * 1000, crc32c: 0, holders: holders)
            }
            contents.append(FileContent(id: .random(), sizeBytes: chunks.reduce(0) { $0 + $1.lengthBytes }, start: chunks[0].holders[0],
                                        copies: copies, chunks: chunks))
        }
        return Case(netmap: Netmap(epoch: 1, members: members), contents: contents, leaving: leaving)
    }

    @Test(arguments: 0..<200)
    func leavePlansAreCompleteSafeAndDeterministic(round: Int) {
        var generator = PseudoRandomBytes(seed: TestSeed.derived("move-plan-\(round)"))
        let test = Self.generate(&generator)
        let plan = MovePlan.leave(test.leaving, contents: test.contents, netmap: test.netmap)
        let live = Set(test.netmap.liveAddresses).subtracting([test.leaving])

        // Every copy on the leaving node, once, in content-id then chunk order.
        let held = test.contents.sorted { $0.id.hex < $1.id.hex }.flatMap { content in
            content.chunks.indices.filter { content.chunks[$0].holders.contains(test.leaving) }.map { "\(content.id) \($0)" }
        }
        #expect(plan.moves.map { "\($0.contentID) \($0.index)" } == held)
        for move in plan.moves {
            let content = test.contents.first { $0.id == move.contentID }!
            let placement = content.chunks[move.index]
            let others = placement.holders.filter { $0 != test.leaving }
            let wanted = min(content.copies, live.count)
            #expect(move.from == test.leaving && move.lengthBytes == placement.lengthBytes)
            if let to = move.to {
                // A new copy only where one is needed, on a live node that has none.
                #expect(live.contains(to) && !placement.holders.contains(to))
                #expect(others.filter { live.contains($0) }.count < wanted)
            } else {
                // No copy: it has enough live copies left, or no live node without one is left to take it.
                #expect(others.filter { live.contains($0) }.count >= wanted || live.isSubset(of: Set(others)))
            }
        }
        #expect(plan.stranded == (live.isEmpty ? plan.moves.filter { move in
            !test.contents.first { $0.id == move.contentID }!.chunks[move.index].holders.contains { $0 != test.leaving && live.contains($0) }
        }.count : 0))
        // The same catalog in another order plans the same.
        #expect(MovePlan.leave(test.leaving, contents: test.contents.reversed() + test.contents, netmap: test.netmap) == plan)
    }

    @Test func aLeaveSpreadsItsBytesOverTheRing() {
        let nodes = (0..<4).map { NodeAddress(host: "10.0.0.\($0 + 1)", port: 7000) }
        let netmap = Netmap(epoch: 1, members: nodes.map { .init(address: $0, alive: true) })
        // 30 single-copy chunks of 1 MB, all on node 3: each must go somewhere; no node takes more than its share.
        let contents = (0..<30).map { _ in
            FileContent(id: .random(), sizeBytes: 1_000_000, start: nodes[3], copies: 1,
                        chunks: [ChunkPlacement(lengthBytes: 1_000_000, crc32c: 0, holders: [nodes[3]])])
        }
        let plan = MovePlan.leave(nodes[3], contents: contents, netmap: netmap)
        #expect(plan.copies.count == 30 && plan.bytesCopied == 30_000_000)
        #expect(plan.routes.map(\.to) == [nodes[0], nodes[1], nodes[2]] && plan.routes.allSatisfy { $0.pieces == 10 })
        // A chunk with copies enough elsewhere is only dropped.
        let spare = FileContent(id: .random(), sizeBytes: 5, start: nodes[0], copies: 2,
                                chunks: [ChunkPlacement(lengthBytes: 5, crc32c: 0, holders: [nodes[0], nodes[1], nodes[3]])])
        #expect(MovePlan.leave(nodes[3], contents: [spare], netmap: netmap).moves.map(\.to) == [nil])
        // The last live node: nowhere to go.
        let alone = Netmap(epoch: 1, members: [.init(address: nodes[0], alive: true), .init(address: nodes[1], alive: false)])
        let only = FileContent(id: .random(), sizeBytes: 5, start: nodes[0], copies: 2,
                               chunks: [ChunkPlacement(lengthBytes: 5, crc32c: 0, holders: [nodes[0]])])
        #expect(MovePlan.leave(nodes[0], contents: [only], netmap: alone).stranded == 1)
    }
}
