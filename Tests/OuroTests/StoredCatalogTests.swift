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
            #expect(memory.names(of: id, after: nil, limit: .max) == stored.names(of: id, after: nil, limit: .max), "names of \(id) \(label)")
            // Paged (READDIR with a limit): the pages, each after the last name of the one before, add up to the whole.
            for limit in [1, 2] {
                var pages: [String] = []
                var namePages: [FSReply.NameEntry] = []
                var after: String?
                repeat {
                    let page = stored.listing(of: id, after: after, limit: limit)
                    pages += page.map { "\($0.name)=\($0.stat)" }
                    namePages += stored.names(of: id, after: after, limit: limit)
                    after = page.count == limit ? page.last?.name : nil
                } while after != nil
                #expect(pages == memory.listing(of: id).map { "\($0.name)=\($0.stat)" }, "listing of \(id) in pages of \(limit) \(label)")
                #expect(namePages == memory.names(of: id, after: nil, limit: .max), "names of \(id) in pages of \(limit) \(label)")
            }
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

    /// Reads a user can see (live inodes, names, listings, link counts, contents in use), which collecting
    /// tombstones must never change.
    static func expectSameVisible(_ memory: Catalog, _ stored: StoredCatalog, _ history: History, _ label: String) {
        for id in history.inodes {
            #expect(memory.inode(id).flatMap { $0.deleted ? nil : $0 } == stored.inode(id).flatMap { $0.deleted ? nil : $0 }, "inode \(id) \(label)")
            #expect(memory.nameCount(of: id) == stored.nameCount(of: id), "names of \(id) \(label)")
            #expect(memory.subdirectoryCount(of: id) == stored.subdirectoryCount(of: id), "subdirectories of \(id) \(label)")
            #expect(memory.childIDs(of: id).map { "\($0.name)=\($0.inode)" }.sorted()
                    == stored.childIDs(of: id).map { "\($0.name)=\($0.inode)" }.sorted(), "children of \(id) \(label)")
            #expect(memory.listing(of: id).map { "\($0.name)=\($0.stat)" } == stored.listing(of: id).map { "\($0.name)=\($0.stat)" },
                    "listing of \(id) \(label)")
        }
        for content in history.contents {
            #expect(memory.contentOwner(content) == stored.contentOwner(content), "owner of \(content) \(label)")
        }
        #expect(memory.fileCount == stored.fileCount, "file count \(label)")
        let chunked = Set(memory.liveContents().filter { !$0.chunks.isEmpty }.map(\.id.hex))
        #expect(chunked == Set(stored.liveContents().map(\.id.hex)), "live contents \(label)")
    }

    /// Garbage collection over generated histories: dropping every candidate (tombstones, placements of unused
    /// contents) changes no read a user sees, drops only tombstones, and the store then merges later changes
    /// (versions after the collected ones, as the GC rule guarantees) to the same answers as a catalog that kept
    /// everything.
    @Test func collectingTombstonesChangesNoVisibleRead() throws {
        let directory = try TestEnvironment.makeScratchDirectory("stored-catalog-gc")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seed = TestSeed.derived("storedCatalogCollect")
        for round in 0..<12 {
            var history = History(generator: PseudoRandomBytes(seed: seed &+ UInt64(round)))
            var memory = Catalog()
            let stored = try StoredCatalog(path: directory + "/catalog-\(round).sqlite")
            var seq: UInt64 = 0
            func apply(_ record: CatalogRecord) throws {
                seq += 1
                let applied = try stored.apply(record, encoded: WireBinary.encode(record), seq: seq)
                #expect(memory.apply(record) == applied, "round \(round): \(record)")
            }
            for _ in 0..<150 { try apply(history.record()) }
            let before = stored.recordCount
            let candidates = stored.collectionCandidates(olderThan: .max, limit: 10_000)
            for candidate in candidates {
                switch candidate.key {
                case .inode(let id): #expect(stored.storedInode(id)?.deleted == true, "round \(round): \(candidate)")
                case .dirent(let parent, let name): #expect(stored.storedDirent(DirentKey(parent: parent, name: name))?.inode == nil)
                case .placement(let content, _): #expect(stored.contentOwner(content) == nil)
                }
            }
            let dropped = try stored.batch { try stored.collect(candidates) }
            #expect(stored.recordCount == before - dropped && dropped >= candidates.count, "round \(round)")
            #expect(stored.collectionCandidates(olderThan: .max, limit: 10_000).isEmpty, "round \(round): all collected")
            Self.expectSameVisible(memory, stored, history, "round \(round) after collecting \(dropped)")
            for _ in 0..<100 {
                var record = history.record()
                let later = Version(clock: record.version.clock + 100, origin: record.version.origin)
                if record.inode != nil { record.inode!.version = later }
                if record.dirent != nil { record.dirent!.version = later }
                if record.region != nil { record.region!.version = later }
                if record.placement != nil { record.placement!.version = later }
                try apply(record)
            }
            Self.expectSameVisible(memory, stored, history, "round \(round) after later changes")
        }
    }

    /// Who confirms a collection: live members are asked; a member dead for less than the horizon stops the round;
    /// one dead for longer is left out (and sweeps when it returns).
    @Test func collectionWaitsForMembersAwayLessThanTheHorizon() {
        let me = NodeAddress(host: "127.0.0.1", port: 1)
        let other = NodeAddress(host: "127.0.0.1", port: 2)
        let away = NodeAddress(host: "127.0.0.1", port: 3)
        let members = [Netmap.Member(address: me, alive: true), Netmap.Member(address: other, alive: true),
                       Netmap.Member(address: away, alive: false)]
        #expect(CatalogGC.confirmers(members: members, me: me, deadSince: [away: 100], now: 150, awayNanoseconds: 100) == nil)
        #expect(CatalogGC.confirmers(members: members, me: me, deadSince: [:], now: 150, awayNanoseconds: 100) == nil)
        let past = CatalogGC.confirmers(members: members, me: me, deadSince: [away: 100], now: 250, awayNanoseconds: 100)
        #expect(past?.ask == [other] && past?.excluded == [away])
        #expect(CatalogGC.collectible([.absent, .sameOrNewer]) && !CatalogGC.collectible([.sameOrNewer, .older]))
        #expect(!CatalogGC.collectible([.inUse]))
        #expect(CatalogGC.answer(holding: nil, asked: Version(clock: 5, origin: "a")) == .absent)
        #expect(CatalogGC.answer(holding: Version(clock: 4, origin: "b"), asked: Version(clock: 5, origin: "a")) == .older)
        #expect(CatalogGC.answer(holding: Version(clock: 5, origin: "a"), asked: Version(clock: 5, origin: "a")) == .sameOrNewer)
    }

}
