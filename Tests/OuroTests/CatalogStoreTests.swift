import Foundation
import Glibc
import Logging
import OuroCore
import OuroNode
import SystemPackage
import Testing

/// The catalog log on disk: zeros written ahead of its end, torn appends cut off, deferred fsyncs; and which peers
/// must fsync a change before it is answered.
@Suite struct CatalogStoreTests {
    static let logger = Logger(label: "test.catalog")

    static func records(_ range: Range<Int>) -> [CatalogRecord] {
        range.map { CatalogRecord(Dirent(parent: Inode.rootID, name: "n\($0)", version: Version(clock: UInt64($0 + 1), origin: "t"), inode: nil)) }
    }

    static func names(_ store: CatalogStore) -> Set<String> {
        Set(store.changes(after: 0, limit: 10_000).records.records.compactMap { $0.dirent?.name })
    }

    @Test func zerosAheadTornTailsAndGarbage() throws {
        let directory = try TestEnvironment.makeScratchDirectory("catalog-store")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/catalog.log"
        var store: CatalogStore? = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        try store!.merge(Self.records(0..<50))
        let incarnation = store!.incarnation
        store = nil
        var log = try #require(FileManager.default.contents(atPath: path).map { [UInt8]($0) })
        let (lastFrame, end) = try #require(FailureTests.lastCatalogFrame(log))
        #expect(log.count >= end + 4 << 20 && log[end...].allSatisfy { $0 == 0 }, "zeros are written ahead of the end")

        // A torn append (the header and half a record where the next one goes): cut off, not taken for rot.
        let torn = Array(lastFrame.prefix(8 + (lastFrame.count - 8) / 2))
        try Self.write(torn, at: end, to: path)
        store = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        #expect(store!.incarnation == incarnation, "a torn tail is not damage: peers keep their sync cursors")
        #expect(Self.names(store!) == Set((0..<50).map { "n\($0)" }))
        try store!.merge(Self.records(50..<60))
        store = nil
        store = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        #expect(Self.names(store!) == Set((0..<60).map { "n\($0)" }), "appends after the cut are read back")
        store = nil

        // Bytes past the zeros (a later page of an interrupted write): dropped, so that appends never land before
        // them, under a new incarnation (what was cut may have been records the peers hold by their numbers).
        log = try #require(FileManager.default.contents(atPath: path).map { [UInt8]($0) })
        let (_, end2) = try #require(FailureTests.lastCatalogFrame(log))
        try Self.write(Array(repeating: 0xAB, count: 100), at: end2 + 4096, to: path)
        store = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        let rewritten = try #require(FileManager.default.contents(atPath: path).map { [UInt8]($0) })
        #expect(rewritten.firstRange(of: [UInt8](repeating: 0xAB, count: 100)) == nil, "the stray bytes are gone")
        #expect(store!.incarnation != incarnation)
        try store!.merge(Self.records(60..<61))
        store = nil
        store = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        #expect(Self.names(store!) == Set((0..<61).map { "n\($0)" }))
    }

    /// A merge with `deferSync` answers before its fsync; `CATALOG SYNC` (here `changes(after:)`) hands the records
    /// out only once they are on disk, which happens by itself within milliseconds.
    @Test func deferredFsyncHappensByItself() throws {
        let directory = try TestEnvironment.makeScratchDirectory("catalog-defer")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try CatalogStore(directory: FilePath(directory), origin: "t", logger: Self.logger)
        try store.merge(Self.records(0..<3), deferSync: true)
        let deadline = Deadline(seconds: 2)
        while Self.names(store).count < 3 && !deadline.passed { usleep(5_000) }
        #expect(Self.names(store).count == 3, "the deferred fsync never ran")
        try store.merge(Self.records(3..<4))
        #expect(Self.names(store).count == 4, "a plain merge is on disk when it returns")
    }

    @Test func peersThatFsyncBeforeTheAnswer() {
        let peers = (1...4).map { NodeAddress(host: "10.0.0.\($0)", port: 7000) }
        func chosen(_ disks: [String?], own: String?, copies: Int) -> [Int] {
            let set = Set(Node.syncPeers(peers, covered: Set([own].compactMap { $0 }), wanted: copies - 1) { peer in
                disks[peers.firstIndex(of: peer)!]
            })
            return peers.indices.filter { set.contains(peers[$0]) }
        }
        #expect(chosen(["a", "a", "a", "a"], own: "a", copies: 2) == [], "one disk: ours is the only copy there is")
        #expect(chosen(["b", "c", "d", "e"], own: "a", copies: 2) == [0])
        #expect(chosen(["b", "c", "d", "e"], own: "a", copies: 3) == [0, 1])
        #expect(chosen(["a", "b", "b", "c"], own: "a", copies: 3) == [1, 3], "one per disk not holding it yet")
        #expect(chosen([nil, nil, "a", "a"], own: "a", copies: 2) == [0], "an unknown disk counts as one of its own")
        #expect(chosen(["b", "c", "d", "e"], own: "a", copies: 1) == [])
    }

    static func write(_ bytes: [UInt8], at offset: Int, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    }
}
