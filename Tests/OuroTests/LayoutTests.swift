import OuroCore
import Testing

/// `fair_chunk_len`, chunk offsets and read ranges (`ChunkLayout`), and who stores and relays what (`RelayPlan`).
@Suite struct LayoutTests {
    struct LengthCase: CustomTestStringConvertible, Sendable {
        var sizeBytes: UInt64
        var parts: Int
        var lengths: [UInt64]
        var testDescription: String { "\(sizeBytes) B / \(parts) parts" }
    }

    @Test(arguments: [
        LengthCase(sizeBytes: 10, parts: 3, lengths: [4, 3, 3]),
        LengthCase(sizeBytes: 0, parts: 3, lengths: [0, 0, 0]),
        LengthCase(sizeBytes: 0, parts: 1, lengths: [0]),
        LengthCase(sizeBytes: 2, parts: 5, lengths: [1, 1, 0, 0, 0]),
        LengthCase(sizeBytes: 1, parts: 2, lengths: [1, 0]),
        LengthCase(sizeBytes: 7, parts: 1, lengths: [7]),
        LengthCase(sizeBytes: 9, parts: 3, lengths: [3, 3, 3]),
        LengthCase(sizeBytes: 11, parts: 3, lengths: [4, 4, 3]),
        LengthCase(sizeBytes: 5, parts: 5, lengths: [1, 1, 1, 1, 1]),
        LengthCase(sizeBytes: (1 << 20) + 7, parts: 5, lengths: [209_717, 209_717, 209_717, 209_716, 209_716]),
        LengthCase(sizeBytes: 256 << 20, parts: 3, lengths: [89_478_486, 89_478_485, 89_478_485]),
    ])
    func fairChunkLengths(_ row: LengthCase) {
        let layout = ChunkLayout(sizeBytes: row.sizeBytes, parts: row.parts)
        #expect((0..<row.parts).map(layout.lengthBytes(ofChunk:)) == row.lengths)
        #expect(row.lengths.reduce(0, +) == row.sizeBytes)
        var offset: UInt64 = 0
        for index in 0..<row.parts {
            #expect(layout.offset(ofChunk: index) == offset, "offset of chunk \(index)")
            offset += row.lengths[index]
        }
        #expect(layout.offset(ofChunk: row.parts) == row.sizeBytes, "the end offset is the size")
    }

    /// Every size up to 40 on every part count up to 12: lengths differ by at most one, longer chunks first,
    /// they sum to the size, offsets are the running sum, and every byte maps back to its chunk.
    @Test func fairChunkLengthInvariants() {
        for parts in 1...12 {
            for size in UInt64(0)...40 {
                let layout = ChunkLayout(sizeBytes: size, parts: parts)
                let lengths = (0..<parts).map(layout.lengthBytes(ofChunk:))
                #expect(lengths.reduce(0, +) == size, "\(size) B / \(parts)")
                #expect(lengths.max()! - lengths.min()! <= 1, "\(size) B / \(parts)")
                #expect(lengths == lengths.sorted(by: >), "longer chunks come first: \(size) B / \(parts)")
                var offset: UInt64 = 0
                for index in 0..<parts {
                    #expect(layout.offset(ofChunk: index) == offset)
                    for byte in offset..<(offset + lengths[index]) {
                        #expect(layout.chunkIndex(containing: byte) == index, "byte \(byte) of \(size) B / \(parts)")
                    }
                    offset += lengths[index]
                }
            }
        }
    }

    struct SliceCase: CustomTestStringConvertible, Sendable {
        var sizeBytes: UInt64
        var parts: Int
        var offset: UInt64
        var length: UInt64
        /// (chunk, offset in chunk, length, offset in file)
        var slices: [[UInt64]]
        var testDescription: String { "\(sizeBytes) B / \(parts): [\(offset), +\(length))" }
    }

    @Test(arguments: [
        // 10 bytes on 3 chunks: [0,4) [4,7) [7,10)
        SliceCase(sizeBytes: 10, parts: 3, offset: 0, length: 10, slices: [[0, 0, 4, 0], [1, 0, 3, 4], [2, 0, 3, 7]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 3, length: 2, slices: [[0, 3, 1, 3], [1, 0, 1, 4]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 4, length: 3, slices: [[1, 0, 3, 4]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 5, length: 1, slices: [[1, 1, 1, 5]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 6, length: 100, slices: [[1, 2, 1, 6], [2, 0, 3, 7]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 9, length: 1, slices: [[2, 2, 1, 9]]),
        SliceCase(sizeBytes: 10, parts: 3, offset: 10, length: 5, slices: []),
        SliceCase(sizeBytes: 10, parts: 3, offset: 11, length: 5, slices: []),
        SliceCase(sizeBytes: 10, parts: 3, offset: 2, length: 0, slices: []),
        SliceCase(sizeBytes: 0, parts: 3, offset: 0, length: 10, slices: []),
        // 2 bytes on 5 chunks: [0,1) [1,2) then three empty chunks that no slice mentions.
        SliceCase(sizeBytes: 2, parts: 5, offset: 0, length: 10, slices: [[0, 0, 1, 0], [1, 0, 1, 1]]),
        SliceCase(sizeBytes: 2, parts: 5, offset: 1, length: 1, slices: [[1, 0, 1, 1]]),
        SliceCase(sizeBytes: 7, parts: 1, offset: 2, length: 3, slices: [[0, 2, 3, 2]]),
    ])
    func slices(_ row: SliceCase) {
        let layout = ChunkLayout(sizeBytes: row.sizeBytes, parts: row.parts)
        let slices = layout.slices(offset: row.offset, length: row.length)
        #expect(slices.map { [UInt64($0.chunk), $0.offsetInChunk, $0.lengthBytes, $0.offsetInFile] } == row.slices)
    }

    /// Every range of every small layout: slices are contiguous, inside their chunk, and cover exactly the part
    /// of the range inside the file.
    @Test func slicesCoverRanges() {
        for parts in 1...6 {
            for size in UInt64(0)...17 {
                let layout = ChunkLayout(sizeBytes: size, parts: parts)
                for offset in UInt64(0)...(size + 1) {
                    for length in UInt64(0)...(size + 2) {
                        let slices = layout.slices(offset: offset, length: length)
                        let wanted = offset >= size ? 0 : min(length, size - offset)
                        #expect(slices.reduce(0) { $0 + $1.lengthBytes } == wanted)
                        var position = offset
                        for slice in slices {
                            #expect(slice.lengthBytes > 0)
                            #expect(slice.offsetInFile == position)
                            #expect(slice.offsetInFile == layout.offset(ofChunk: slice.chunk) + slice.offsetInChunk)
                            #expect(slice.offsetInChunk + slice.lengthBytes <= layout.lengthBytes(ofChunk: slice.chunk))
                            position += slice.lengthBytes
                        }
                    }
                }
            }
        }
    }

    /// "Clipped to the file's end": a caller asking for "everything from here" must not crash the process.
    @Test func sliceWithHugeLengthIsClipped() async {
        await #expect(processExitsWith: .success) {
            let layout = ChunkLayout(sizeBytes: 10, parts: 3)
            let slices = layout.slices(offset: 5, length: .max)
            precondition(slices.reduce(0) { $0 + $1.lengthBytes } == 5)
        }
    }

    // MARK: RelayPlan

    struct PlanCase: CustomTestStringConvertible, Sendable {
        var sizeBytes: UInt64
        var chain: Int
        var copies: Int
        var testDescription: String { "\(sizeBytes) B, chain \(chain), copies \(copies)" }
    }

    static let planCases: [PlanCase] = [0, 1, 2, 10, 1_048_583].flatMap { size in
        [1, 2, 3, 4, 5, 7].flatMap { chain in [1, 2, 3, 9].map { PlanCase(sizeBytes: size, chain: chain, copies: $0) } }
    }

    @Test(arguments: planCases)
    func relayPlanStoresEachChunkOnDistinctHolders(_ row: PlanCase) {
        let plan = RelayPlan(sizeBytes: row.sizeBytes, chainLength: row.chain, copies: row.copies)
        let copies = min(row.copies, row.chain)
        #expect(plan.copies == copies)
        #expect(plan.parts == row.chain)
        for chunk in 0..<row.chain {
            let storing = (0..<row.chain).filter { plan.storedChunks(at: $0).contains(chunk) }
            #expect(storing.count == copies, "chunk \(chunk) is stored \(storing.count) times")
            // Primary at its own position, copies on the predecessors, around the ring.
            let expected = (0..<copies).map { (chunk - $0 + row.chain) % row.chain }
            #expect(plan.holderPositions(ofChunk: chunk) == expected)
            #expect(Set(storing) == Set(expected))
        }
        for position in 0..<row.chain {
            #expect(plan.storedChunks(at: position).count == copies)
        }
    }

    @Test(arguments: planCases)
    func relayPlanStreams(_ row: PlanCase) {
        let plan = RelayPlan(sizeBytes: row.sizeBytes, chainLength: row.chain, copies: row.copies)
        let layout = ChunkLayout(sizeBytes: row.sizeBytes, parts: row.chain)
        #expect(plan.receivedChunks(at: 0) == Array(0..<row.chain), "the start node receives the whole file")
        #expect(plan.streamBytes(at: 0) == row.sizeBytes)
        #expect(plan.forwardedChunks(at: row.chain - 1) == [], "the last hop forwards nothing")
        for position in 0..<row.chain {
            let received = Set(plan.receivedChunks(at: position))
            let stored = Set(plan.storedChunks(at: position))
            let forwarded = Set(plan.forwardedChunks(at: position))
            #expect(stored.isSubset(of: received), "position \(position) stores only what it receives")
            #expect(forwarded.isSubset(of: received), "position \(position) forwards only what it receives")
            #expect(received == stored.union(forwarded), "position \(position) receives nothing it neither stores nor forwards")
            if position + 1 < row.chain {
                #expect(plan.forwardedChunks(at: position) == plan.receivedChunks(at: position + 1))
            }
            // Exactly the chunks stored from here on travel here.
            let later = (position..<row.chain).reduce(into: Set<Int>()) { $0.formUnion(plan.storedChunks(at: $1)) }
            if position > 0 { #expect(received == later) }
            #expect(plan.receivedChunks(at: position) == plan.receivedChunks(at: position).sorted(), "file order")
            #expect(plan.streamBytes(at: position) == received.reduce(0) { $0 + layout.lengthBytes(ofChunk: $1) })
        }
    }

    /// The stream sizes of a few rings, worked out by hand.
    @Test func relayPlanStreamBytesByHand() {
        // 10 B over 3 nodes (4/3/3). Copies 2: position 1 stores 1,2 and position 2 stores 2,0 — so position 1
        // receives everything, position 2 chunks 0 and 2.
        let two = RelayPlan(sizeBytes: 10, chainLength: 3, copies: 2)
        #expect((0..<3).map(two.storedChunks(at:)) == [[0, 1], [1, 2], [0, 2]])
        #expect((0..<3).map(two.streamBytes(at:)) == [10, 10, 7])
        let one = RelayPlan(sizeBytes: 10, chainLength: 3, copies: 1)
        #expect((0..<3).map(one.storedChunks(at:)) == [[0], [1], [2]])
        #expect((0..<3).map(one.streamBytes(at:)) == [10, 6, 3])
        let single = RelayPlan(sizeBytes: 10, chainLength: 1, copies: 2)
        #expect(single.copies == 1)
        #expect(single.storedChunks(at: 0) == [0])
        #expect(single.forwardedChunks(at: 0) == [])
    }

    @Test func chunkFileNames() throws {
        let content = try #require(ContentID("0123456789abcdef0123456789abcdef"))
        let id = try ChunkID(contentID: content, index: 0, parts: 3)
        #expect(id.fileName == "0123456789abcdef0123456789abcdef.part-001-of-003")
        #expect(ChunkID(fileName: id.fileName) == id)
        let last = try ChunkID(contentID: content, index: 998, parts: 999)
        #expect(last.fileName.hasSuffix(".part-999-of-999"))
        #expect(ChunkID(fileName: "0123456789abcdef0123456789abcdef.part-001-of-003.tmp-5") == nil)
        #expect(ChunkID(fileName: "0123456789abcdef0123456789abcdef.part-1-of-3") == nil, "not zero-padded")
        #expect(ChunkID(fileName: "0123456789abcdef0123456789abcdef.part-004-of-003") == nil)
        #expect(ChunkID(fileName: "0123456789ABCDEF0123456789abcdef.part-001-of-003") == nil, "upper-case hex")
        #expect(throws: OuroError.self) { try ChunkID(contentID: content, index: 3, parts: 3) }
        #expect(throws: OuroError.self) { try ChunkID(contentID: content, index: 0, parts: 1000) }
        #expect(ContentID("0123") == nil)
    }
}
