import Foundation
import OuroCore
@testable import OuroNode
import Testing

/// The store on disk merges by the rules of the in-memory catalog: generated histories of records (inodes that
/// become directories and tombstones, names that move, regions and placements, out of order and repeated) applied
/// to both give the same answer to every read, and survive a checkpoint and a reopen.
@Suite struct StoredCatalogTests {
    struct History {
        var generator: PseudoRandomBytes
        let inodes: [UInt64] = Array(1...7)
        let names = ["a", "b", "c"]
        /// A content id names one content of one file, as on a real ring: inode `i` stores its bytes in chunks
        /// under id `i`, inline under `i + 8`, and changed in place under `i + 16` (slices of its chunked one).
        func id(_ inode: UInt64, _ shape: UInt64) -> ContentID {
            let hex = String(inode + shape * 8, radix: 16)
            return ContentID(String(repeating: "0", count: 32 - hex.count) + hex)!
        }
        var contents: [ContentID] { inodes.flatMap { inode in (0..<3).map { id(inode, $0) } } }
        let holders = (1...3).map { NodeAddress(host: "127.0.0.1", port: 7000 + $0) }

        mutating func below(_ bound: Int) -> Int {
            Int(generator.bytes(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) } % UInt32(bound))
        }

        mutating func pick<T>(_ values: [T]) -> T { values[below(values.count)] }

        mutating func version() -> Version { Version(clock: UInt64(1 + below(40)), origin: pick(["a", "b"])) }

        mutating func content(of inode: UInt64) -> FileContent? {
            switch below(4) {
            case 0: return nil
            case 1: return FileContent(id: id(inode, 1), inline: generator.bytes(below(20)), start: holders[0])
            case 2:
                return FileContent(id: id(inode, 0), sizeBytes: 100, start: holders[0], copies: 2,
                                   chunks: [ChunkPlacement(lengthBytes: 100, crc32c: 7, holders: [pick(holders), pick(holders)])])
            default:
                var content = FileContent(id: id(inode, 2), sizeBytes: 200, start: holders[0], copies: 2, chunks: [])
                content.slices = [slice(of: inode), slice(of: inode)]
                return content
            }
        }

        mutating func slice(of inode: UInt64) -> ContentSlice {
            let source = FileContent(id: id(inode, 0), sizeBytes: 100, start: holders[0], copies: 2,
                                     chunks: [ChunkPlacement(lengthBytes: 100, crc32c: 7, holders: [pick(holders)])])
            return ContentSlice(fileOffset: UInt64(below(2) * 100), lengthBytes: 100, source: source)
        }

        mutating func record() -> CatalogRecord {
            switch below(10) {
            case 0...3:
                var inode = Inode(id: pick(inodes), version: version(), kind: below(2) == 0 ? .directory : .file,
                                  permissions: 0o644, uid: 0, gid: 0, timeNs: 5)
                if inode.kind == .file { inode.content = content(of: inode.id) }
                inode.deleted = below(5) == 0
                return CatalogRecord(inode)
            case 4...7:
                return CatalogRecord(Dirent(parent: pick(inodes), name: pick(names), version: version(),
                                            inode: below(4) == 0 ? nil : pick(inodes)))
            case 8:
                let inode = pick(inodes)
                let slices = below(3) == 0 ? [] : [slice(of: inode)]
                return CatalogRecord(RegionRecord(inode: inode, region: UInt64(below(2)), slices: slices, version: version()))
            default:
                return CatalogRecord(PlacementRecord(content: id(pick(inodes), 0), chunk: 0, holders: [pick(holders)], version: version()))
            }
        }
    }

    /// Every primitive read of both, over every key the history can touch.
    static func expectSame(_ memory: Catalog, _ stored: StoredCatalog, _ history: History, _ label: String) {
        for id in history.inodes {
            #expect(memory.storedInode(id) == stored.storedInode(id), "inode \(id) \(label)")
            #expect(memory.inode(id) == stored.inode(id), "assembled inode \(id) \(label)")
            #expect(memory.nameCount(of: id) == stored.nameCount(of: id), "names of \(id) \(label)")
            #expect(memory.parentIDs(of: id).sorted() == stored.parentIDs(of: id).sorted(), "parents of \(id) \(label)")
            #expect(memory.subdirectoryCount(of: id) == stored.subdirectoryCount(of: id), "subdirectories of \(id) \(label)")
            #expect(memory.childIDs(of: id).map { "\($0.name)=\($0.inode)" }.sorted()
                    == stored.childIDs(of: id).map { "\($0.name)=\($0.inode)" }.sorted(), "children of \(id) \(label)")
            #expect(memory.regionRecords(of: id) == stored.regionRecords(of: id), "regions of \(id) \(label)")
            #expect(memory.entries(of: id).map { "\($0.name)=\($0.inode)" } == stored.entries(of: id).map { "\($0.name)=\($0.inode)" },
                    "entries of \(id) \(label)")
            #expect(memory.listing(of: id).map { "\($0.name)=\($0.stat)" } == stored.listing(of: id).map { "\($0.name)=\($0.stat)" },
                    "listing of \(id) \(label)")
            for name in history.names {
                let key = Dirent(parent: id, name: name, version: .zero, inode: nil).key
                #expect(memory.storedDirent(key) == stored.storedDirent(key), "dirent \(id)/\(name) \(label)")
                #expect(memory.childID(of: id, named: name) == stored.childID(of: id, named: name), "child \(id)/\(name) \(label)")
            }
        }
        for content in history.contents {
            #expect(memory.contentOwner(content) == stored.contentOwner(content), "owner of \(content) \(label)")
            #expect(memory.placementRecords(of: content) == stored.placementRecords(of: content), "placements of \(content) \(label)")
        }
        #expect(memory.fileCount == stored.fileCount, "file count \(label)")
        let chunked = Set(memory.liveContents().filter { !$0.chunks.isEmpty }.map(\.id.hex))
        #expect(chunked == Set(stored.liveContents().map(\.id.hex)), "live contents \(label)")
    }

    @Test func mergesAsTheInMemoryCatalog() throws {
        let directory = try TestEnvironment.makeScratchDirectory("stored-catalog")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seed = TestSeed.derived("storedCatalogMerge")
        for round in 0..<12 {
            var history = History(generator: PseudoRandomBytes(seed: seed &+ UInt64(round)))
            var memory = Catalog()
            let path = directory + "/catalog-\(round).sqlite"
            var stored: StoredCatalog? = try StoredCatalog(path: path)
            var seq: UInt64 = 0
            for step in 0..<150 {
                let record = history.record()
                seq += 1
                let applied = try stored!.apply(record, encoded: WireBinary.encode(record), seq: seq)
                #expect(memory.apply(record) == applied, "round \(round) step \(step): \(record)")
                if step % 50 == 49 {
                    Self.expectSame(memory, stored!, history, "round \(round) step \(step)")
                }
            }
            try stored!.checkpoint(meta: ["sequence": String(seq)])
            stored = nil
            stored = try StoredCatalog(path: path)
            Self.expectSame(memory, stored!, history, "round \(round) reopened")
            #expect(stored!.meta("sequence") == String(seq))
            #expect(stored!.records(after: 0, upTo: seq, limit: 10_000).count == stored!.recordCount)
        }
    }

    /// What a transaction held but did not commit is gone after a reopen (the log replays it), and a batch that
    /// fails part-way leaves nothing of itself.
    @Test func uncommittedChangesAndFailedBatches() throws {
        let directory = try TestEnvironment.makeScratchDirectory("stored-catalog-tx")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/catalog.sqlite"
        let kept = CatalogRecord(Dirent(parent: 1, name: "kept", version: Version(clock: 5, origin: "a"), inode: 2))
        let lost = CatalogRecord(Dirent(parent: 1, name: "lost", version: Version(clock: 6, origin: "a"), inode: 3))
        var stored: StoredCatalog? = try StoredCatalog(path: path)
        #expect(try stored!.apply(kept, encoded: WireBinary.encode(kept), seq: 1))
        try stored!.checkpoint(meta: [:])
        #expect(try stored!.apply(lost, encoded: WireBinary.encode(lost), seq: 2))
        struct Boom: Error {}
        let third = CatalogRecord(Dirent(parent: 1, name: "third", version: Version(clock: 7, origin: "a"), inode: 4))
        #expect(throws: Boom.self) {
            try stored!.batch {
                _ = try stored!.apply(third, encoded: WireBinary.encode(third), seq: 3)
                throw Boom()
            }
        }
        #expect(stored!.childID(of: 1, named: "third") == nil, "a failed batch is rolled back")
        #expect(stored!.childID(of: 1, named: "lost") == 3, "reads see what is not committed yet")
        stored = nil
        stored = try StoredCatalog(path: path)
        #expect(stored!.childID(of: 1, named: "kept") == 2)
        #expect(stored!.childID(of: 1, named: "lost") == nil, "not committed: not in the store")
        #expect(stored!.nameCount(of: 2) == 1 && stored!.recordCount == 1)
    }
}
