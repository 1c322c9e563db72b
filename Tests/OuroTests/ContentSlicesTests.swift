import Foundation
import OuroCore
import Testing

/// Layered contents against a model: any sequence of writes, truncations and compactions (also compactions that
/// read an older state while writes went on) reads back like a local file. Sources are inline, so the bytes can be
/// checked without a ring.
@Suite struct ContentSlicesTests {
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let here = NodeAddress(host: "127.0.0.1", port: 7000)

    static func inline(_ bytes: [UInt8]) -> FileContent { FileContent(id: .random(), inline: bytes, start: here) }

    /// The file's bytes as the content says, read through `extents`.
    static func materialize(_ content: FileContent) throws -> [UInt8] {
        var result: [UInt8] = []
        for extent in content.extents(offset: 0, length: content.sizeBytes) {
            #expect(extent.fileOffset == UInt64(result.count), "extents are contiguous and in order")
            guard let source = extent.source else {
                result += [UInt8](repeating: 0, count: Int(extent.lengthBytes))
                continue
            }
            let bytes = try #require(try source.checkedInlineBytes())
            result += bytes[Int(extent.sourceOffset)..<Int(extent.sourceOffset + extent.lengthBytes)]
        }
        #expect(result.count == Int(content.sizeBytes))
        return result
    }

    static func bytes(_ count: Int, _ rng: inout SeededGenerator) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 1...255, using: &rng) }
    }

    @Test func randomHistoriesReadBackLikeALocalFile() throws {
        let seed = TestSeed.derived("content-slices")
        for round in 0..<200 {
            var rng = SeededGenerator(state: seed &+ UInt64(round))
            var model: [UInt8] = []
            var content: FileContent? = nil
            var pendingTruncation: UInt64? = nil
            var pendingSlices: [ContentSlice] = []
            // A compaction that read an earlier state, committed later.
            var staleCompaction: (seen: [ContentSlice], region: (UInt64, UInt64), merged: FileContent)? = nil
            func commit() {
                content = ContentSlices.writing(pendingSlices, onto: content, truncatedTo: pendingTruncation,
                                                sizeBytes: UInt64(model.count), id: .random(), start: Self.here)
                pendingSlices = []
                pendingTruncation = nil
            }
            for _ in 0..<Int.random(in: 1...40, using: &rng) {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0...4:  // a write, maybe past the end (a hole in between)
                    let offset = Int.random(in: 0...(model.count + 64), using: &rng)
                    let data = Self.bytes(Int.random(in: 1...96, using: &rng), &rng)
                    if model.count < offset + data.count { model += [UInt8](repeating: 0, count: offset + data.count - model.count) }
                    model.replaceSubrange(offset..<(offset + data.count), with: data)
                    pendingSlices.append(ContentSlice(fileOffset: UInt64(offset), lengthBytes: UInt64(data.count), source: Self.inline(data)))
                case 5:  // a truncation, down or up
                    let size = Int.random(in: 0...(model.count + 64), using: &rng)
                    if size < model.count {
                        model.removeSubrange(size...)
                        // Pieces written before it are cut too: they are applied after the truncation point on commit.
                        pendingSlices = pendingSlices.compactMap { $0.clipped(from: 0, to: UInt64(size)) }
                        pendingTruncation = min(pendingTruncation ?? .max, UInt64(size))
                    } else {
                        model += [UInt8](repeating: 0, count: size - model.count)
                    }
                case 6...7:
                    commit()
                case 8:  // a compaction of a region as committed now; applied at once or later
                    commit()
                    guard let current = content, current.sizeBytes > 0 else { break }
                    let from = UInt64.random(in: 0..<current.sizeBytes, using: &rng)
                    let to = UInt64.random(in: (from + 1)...current.sizeBytes, using: &rng)
                    let merged = Self.inline(Array(try Self.materialize(current)[Int(from)..<Int(to)]))
                    if Bool.random(using: &rng) {
                        content = try #require(ContentSlices.compacting(current, seen: current.asSlices, region: (from, to), into: merged, id: .random()))
                    } else {
                        staleCompaction = (current.asSlices, (from, to), merged)
                    }
                default:  // the stale compaction lands, or is refused if its slices are no longer the first ones
                    commit()
                    guard let stale = staleCompaction, let current = content else { break }
                    staleCompaction = nil
                    if let compacted = ContentSlices.compacting(current, seen: stale.seen, region: stale.region, into: stale.merged, id: .random()) {
                        content = compacted
                    } else {
                        let prefix = current.asSlices.prefix(stale.seen.count)
                        #expect(stale.seen.isEmpty || prefix.count < stale.seen.count || !zip(prefix, stale.seen).allSatisfy { $0.isSame(as: $1) })
                    }
                }
                if let content {
                    let allInside = content.asSlices.allSatisfy { $0.fileEnd <= content.sizeBytes && $0.isWellFormed }
                    #expect(allInside, "round \(round): slices stay inside the file and their sources")
                }
            }
            commit()
            #expect(try Self.materialize(content!) == model, "round \(round) (seed \(seed))")
            // What `du` shows: the bytes some slice covers, as the extents count them.
            let covered = content!.extents(offset: 0, length: content!.sizeBytes).reduce(0) { $0 + ($1.source == nil ? 0 : $1.lengthBytes) }
            #expect(content!.storedBytes == covered, "round \(round) (seed \(seed))")
        }
    }

    @Test func hiddenSlicesAreDroppedAndAWholeSliceIsPlain() throws {
        let a = Self.inline([1, 1, 1, 1])
        let b = Self.inline([2, 2])
        let base = ContentSlices.writing([ContentSlice(fileOffset: 0, lengthBytes: 4, source: a)], onto: nil, truncatedTo: nil,
                                         sizeBytes: 4, id: .random(), start: Self.here)
        #expect(base == a, "one slice over the whole file is the plain content")
        let layered = ContentSlices.writing([ContentSlice(fileOffset: 1, lengthBytes: 2, source: b)], onto: base, truncatedTo: nil,
                                            sizeBytes: 4, id: .random(), start: Self.here)
        #expect(layered.slices?.count == 2)
        #expect(try Self.materialize(layered) == [1, 2, 2, 1])
        let covered = ContentSlices.writing([ContentSlice(fileOffset: 0, lengthBytes: 4, source: Self.inline([3, 3, 3, 3]))],
                                            onto: layered, truncatedTo: nil, sizeBytes: 4, id: .random(), start: Self.here)
        #expect(covered.slices == nil, "both older slices are hidden")
        #expect(layered.pieces.map(\.id) == [a.id, b.id])
    }

    @Test func holesAndSeeking() throws {
        let data = Self.inline([9, 9, 9])
        let sparse = ContentSlices.writing([ContentSlice(fileOffset: 1 << 40, lengthBytes: 3, source: data)], onto: nil,
                                           truncatedTo: nil, sizeBytes: 1 << 50, id: .random(), start: Self.here)
        #expect(sparse.storedBytes == 3)
        #expect(sparse.nextData(from: 0) == 1 << 40)
        #expect(sparse.nextHole(from: 0) == 0)
        #expect(sparse.nextHole(from: 1 << 40) == (1 << 40) + 3)
        #expect(sparse.nextData(from: (1 << 40) + 3) == nil)
        let extents = sparse.extents(offset: (1 << 40) - 2, length: 6)
        #expect(extents.map(\.lengthBytes) == [2, 3, 1] && extents.map { $0.source == nil } == [true, false, true])
    }

    @Test func binaryCodingKeepsSlicesAndReadsOldRecords() throws {
        let layered = ContentSlices.writing([ContentSlice(fileOffset: 5, lengthBytes: 2, source: Self.inline([7, 7, 7]), sourceOffset: 1)],
                                            onto: Self.inline([1, 2, 3]), truncatedTo: 2, sizeBytes: 9, id: .random(), start: Self.here)
        var writer = BinaryWriter()
        writer.value(layered)
        var reader = BinaryReader(writer.bytes)
        #expect(try reader.value(FileContent.self) == layered)
        // A source that is itself layered is refused, not decoded to any depth.
        var nested = layered
        nested.slices![0].source = layered
        var nestedWriter = BinaryWriter()
        nestedWriter.value(nested)
        var nestedReader = BinaryReader(nestedWriter.bytes)
        #expect(throws: OuroError.self) { try nestedReader.value(FileContent.self) }
    }

    @Test func intervalSetsMatchAModel() {
        var rng = SeededGenerator(state: TestSeed.derived("interval-set"))
        for _ in 0..<300 {
            var set = IntervalSet()
            var model = [Bool](repeating: false, count: 200)
            for _ in 0..<12 {
                let from = Int.random(in: 0..<200, using: &rng)
                let to = Int.random(in: from...200, using: &rng)
                let add = Bool.random(using: &rng)
                if add { set.insert(UInt64(from), UInt64(to)) } else { set.remove(UInt64(from), UInt64(to)) }
                for index in from..<to { model[index] = add }
            }
            #expect(set.totalBytes == UInt64(model.filter { $0 }.count))
            let from = Int.random(in: 0..<200, using: &rng)
            let to = Int.random(in: (from + 1)...200, using: &rng)
            #expect(set.contains(UInt64(from), UInt64(to)) == model[from..<to].allSatisfy { $0 })
            var position = from
            for run in set.partition(UInt64(from), UInt64(to)) {
                #expect(Int(run.from) == position && run.to > run.from)
                #expect(model[Int(run.from)..<Int(run.to)].allSatisfy { $0 == run.inside })
                position = Int(run.to)
            }
            #expect(position == to)
        }
    }

    /// The catalog's rules (the inode's content cut and resized, slices in region records, region compactions that
    /// may be stale, a whole rewrite, records merged in another order on a second node) against a local-file model.
    @Test func catalogWritesInPlaceReadBackLikeALocalFile() throws {
        let seed = TestSeed.derived("catalog-regions")
        let region = Int(Limits.regionBytes)
        for round in 0..<10 {
            var rng = SeededGenerator(state: seed &+ UInt64(round))
            var catalog = Catalog()
            var clock: UInt64 = 0
            var log: [CatalogRecord] = []
            func run(_ plan: (Catalog, Version, Int64) throws -> Catalog.Change) throws {
                clock += 1
                let change = try plan(catalog, Version(clock: clock, origin: "a"), Int64(clock))
                for record in change.records { catalog.apply(record) }
                log += change.records
            }
            let initial = Self.bytes(Int.random(in: 1...(2 * region + region / 2), using: &rng), &rng)
            var model = initial
            try run { catalog, version, now in
                try catalog.planCreateFile(parent: Inode.rootID, name: "f", id: 7, permissions: 0o644, uid: 0, gid: 0,
                                           content: Self.inline(initial), version: version, nowNs: now)
            }
            var stale: (offset: UInt64, seen: [ContentSlice], cuts: UInt64, merged: FileContent)?
            for _ in 0..<Int.random(in: 1...30, using: &rng) {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0...5:  // writes near region boundaries, maybe with a truncation before them
                    var truncatedTo: UInt64?
                    if Int.random(in: 0..<5, using: &rng) == 0 {
                        let size = Int.random(in: 0...model.count, using: &rng)
                        model.removeSubrange(size...)
                        truncatedTo = UInt64(size)
                    }
                    var slices: [ContentSlice] = []
                    for _ in 0..<Int.random(in: 1...3, using: &rng) {
                        let boundary = region * Int.random(in: 0...2, using: &rng)
                        let offset = max(0, boundary + Int.random(in: -200...200, using: &rng))
                        let data = Self.bytes(Int.random(in: 1...400, using: &rng), &rng)
                        if model.count < offset + data.count { model += [UInt8](repeating: 0, count: offset + data.count - model.count) }
                        model.replaceSubrange(offset..<(offset + data.count), with: data)
                        slices.append(ContentSlice(fileOffset: UInt64(offset), lengthBytes: UInt64(data.count), source: Self.inline(data)))
                    }
                    try run { catalog, version, now in
                        try catalog.planWriteSlices(inode: 7, slices: slices, truncatedTo: truncatedTo, sizeBytes: UInt64(model.count),
                                                    contentID: .random(), start: Self.here, version: version, nowNs: now)
                    }
                case 6...7:  // a compaction of a region with slices, committed now or later
                    guard let record = catalog.liveRegions(of: 7).randomElement(using: &rng) else { break }
                    let from = Int(record.region) * region
                    let content = try #require(catalog.inode(7)?.content)
                    let bytes = try Self.materialize(content)
                    guard from < bytes.count else { break }
                    let merged = Self.inline(Array(bytes[from..<min(bytes.count, from + region)]))
                    if Bool.random(using: &rng) {
                        try run { catalog, version, _ in
                            try catalog.planCompactRegion(inode: 7, offset: UInt64(from), seen: record.slices, cuts: record.cuts, merged: merged, version: version)
                        }
                        #expect(catalog.regions[7]?[record.region]?.slices.first?.source.id == merged.id)
                    } else {
                        stale = (UInt64(from), record.slices, record.cuts, merged)
                    }
                case 8:
                    guard let pending = stale else { break }
                    stale = nil
                    do {
                        try run { catalog, version, _ in
                            try catalog.planCompactRegion(inode: 7, offset: pending.offset, seen: pending.seen, cuts: pending.cuts, merged: pending.merged, version: version)
                        }
                    } catch let error as OuroError where error.code == .exists {
                        // Refused: the region changed under it. Nothing else may have changed.
                    }
                default:  // a whole rewrite drops every region
                    model = Self.bytes(Int.random(in: 1...(2 * region), using: &rng), &rng)
                    let bytes = model
                    try run { catalog, version, now in
                        try catalog.planWriteContent(inode: 7, content: Self.inline(bytes), version: version, nowNs: now)
                    }
                    #expect(catalog.liveRegions(of: 7).isEmpty)
                }
                let content = try #require(catalog.inode(7)?.content)
                #expect(try Self.materialize(content) == model, "round \(round) (seed \(seed))")
                #expect(catalog.liveRegions(of: 7).allSatisfy { record in
                    record.slices.allSatisfy { $0.fileOffset / Limits.regionBytes == record.region && ($0.fileEnd - 1) / Limits.regionBytes == record.region }
                }, "slices stay inside their region")
            }
            // Every live piece is known as live (the janitor keeps it), and another node merging the same records in
            // reverse order ends with the same bytes.
            let content = try #require(catalog.inode(7)?.content)
            let live = catalog.liveContentIDs()
            #expect(Catalog.tracked(content.pieces).allSatisfy { live.contains($0.id) })
            var other = Catalog()
            for record in log.reversed() { other.apply(record) }
            #expect(try Self.materialize(try #require(other.inode(7)?.content)) == model)
            #expect(other.liveContentIDs() == live)
        }
    }
}
