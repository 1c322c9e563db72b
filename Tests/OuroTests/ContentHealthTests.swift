import OuroCore
import Testing

/// The rules of `ContentHealth`: the least-kept chunk counts, dead and departed holders do not, a ring never wants
/// more copies than it has members, and bytes in the catalog are never short.
@Suite struct ContentHealthTests {
    static let nodes = (0..<4).map { NodeAddress(host: "10.0.0.\($0 + 1)", port: 7000) }

    static func netmap(dead: Set<Int>, members: Int = 4) -> Netmap {
        Netmap(epoch: 1, members: (0..<members).map { Netmap.Member(address: nodes[$0], alive: !dead.contains($0)) })
    }

    static func content(copies: Int, holders: [[Int]]) -> FileContent {
        FileContent(id: .random(), sizeBytes: UInt64(holders.count * 10), start: nodes[0], copies: copies,
                    chunks: holders.map { ChunkPlacement(lengthBytes: 10, crc32c: 0, holders: $0.map { nodes[$0] }) })
    }

    @Test func theLeastKeptChunkCounts() {
        let file = Self.content(copies: 2, holders: [[0, 1], [1, 2], [2, 3], [3, 0]])
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [])).text == "2/2")
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [2])).text == "1/2")
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [2])).isShort)
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [1, 2])).text == "0/2")
        // A holder that left the ring (not in the netmap) holds nothing any more.
        let moved = Self.content(copies: 2, holders: [[0, 1], [1, 3]])
        #expect(ContentHealth(content: moved, netmap: Self.netmap(dead: [], members: 3)).text == "1/2")
        #expect(ContentHealth.placement(of: moved, netmap: Self.netmap(dead: [1], members: 3))
                == "piece 1 chunk 1/2 10 bytes: 10.0.0.1:7000 alive, 10.0.0.2:7000 dead\n"
                 + "piece 1 chunk 2/2 10 bytes: 10.0.0.2:7000 dead, 10.0.0.4:7000 gone\n")
    }

    @Test func aRingWantsNoMoreCopiesThanMembers() {
        // copies 3 on a ring of two: two is whole.
        let file = Self.content(copies: 3, holders: [[0, 1], [1, 0]])
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [], members: 2)) == ContentHealth(liveCopies: 2, wantedCopies: 2))
        #expect(!ContentHealth(content: file, netmap: Self.netmap(dead: [], members: 2)).isShort)
    }

    @Test func segmentsAndSlicesCountEveryPiece() {
        let first = Self.content(copies: 2, holders: [[0, 1], [1, 2]])
        let second = Self.content(copies: 2, holders: [[2, 3], [3, 0]])
        let file = FileContent(id: .random(), segments: [first, second])
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [0])).text == "1/2")
        #expect(ContentHealth(content: file, netmap: Self.netmap(dead: [])).text == "2/2")
        #expect(ContentHealth.placement(of: file, netmap: Self.netmap(dead: [])).split(separator: "\n").map { $0.prefix(20) }
                == ["piece 1 chunk 1/2 10", "piece 1 chunk 2/2 10", "piece 2 chunk 1/2 10", "piece 2 chunk 2/2 10"])
    }

    @Test func bytesInTheCatalogAreOnEveryLiveMember() {
        let inline = FileContent(id: .random(), inline: [1, 2, 3], start: Self.nodes[0])
        for (dead, text) in [(Set<Int>(), "4/4"), ([3], "3/3"), ([1, 2, 3], "1/1")] {
            #expect(ContentHealth(content: inline, netmap: Self.netmap(dead: dead)).text == text)
            #expect(!ContentHealth(content: inline, netmap: Self.netmap(dead: dead)).isShort)
            #expect(!ContentHealth(content: nil, netmap: Self.netmap(dead: dead)).isShort)
        }
        #expect(ContentHealth.placement(of: inline, netmap: Self.netmap(dead: [])) == "inline: 3 bytes in the catalog of every node\n")
        #expect(ContentHealth.placement(of: nil, netmap: Self.netmap(dead: [])) == "empty: no bytes to keep\n")
    }
}
