import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// Garbage collection of the catalog on real rings: tombstones go once every member has them, a member down holds
/// collection back, and one away past the horizon sweeps out on its return what the ring dropped meanwhile.
@Suite struct GarbageCollectionTests {
    static func settings(awayMilliseconds: Int) -> Ring.Settings {
        Ring.Settings(environment: ["OURO_GC_INTERVAL_MS": "200", "OURO_GC_MIN_AGE_MS": "300",
                                    "OURO_GC_AWAY_MS": "\(awayMilliseconds)", "OURO_GC_SWEEP_MARGIN_MS": "300"])
    }

    static func request(_ name: String, data: [UInt8]? = nil) -> FSRequest {
        var request = FSRequest()
        request.parent = Inode.rootID
        request.name = name
        request.mode = 0o644
        request.uid = 0
        request.gid = 0
        request.data = data.map { Data($0) }
        return request
    }

    static func create(_ ring: Ring, _ names: [String], seed: String, on nodes: [Int] = [0, 1, 2]) throws -> [String: [UInt8]] {
        var generator = PseudoRandomBytes(seed: TestSeed.derived(seed))
        var made: [String: [UInt8]] = [:]
        for (index, name) in names.enumerated() {
            let bytes = generator.bytes(1 + index % 200)
            var create = request(name, data: bytes)
            create.inode = UInt64(seed.utf8.count) << 32 + UInt64(index) + 1000  // distinct for each call's seed
            _ = try NodeClient(ring.address(nodes[index % nodes.count])).fs(.create, create)
            made[name] = bytes
        }
        return made
    }

    static func remove(_ ring: Ring, _ names: [String], on nodes: [Int]) throws {
        for (index, name) in names.enumerated() {
            _ = try NodeClient(ring.address(nodes[index % nodes.count])).fs(.unlink, request(name))
        }
    }

    static func records(_ ring: Ring, _ nodes: [Int]) -> String {
        nodes.map { node in (try? ring.info(node)).map { "node \(node): \($0.catalogRecords)" } ?? "node \(node): ?" }.joined(separator: ", ")
    }

    static func expectFiles(_ ring: Ring, _ node: Int, _ files: [String: [UInt8]]) throws {
        let listed = Set(try ring.list(node).map(\.name))
        #expect(listed == Set(files.keys), "node \(node) lists \(listed.count) files, \(listed.subtracting(files.keys).count) of them removed")
        for (name, bytes) in files.sorted(by: { $0.key < $1.key }).prefix(10) {
            expectBytes(try ring.pull(node, name: name), bytes, "\(name) from node \(node)")
        }
    }

    /// A 3-node ring holding `count` files named `prefix0…` (on every node), and its catalog's record count then.
    static func ringWithFiles(_ count: Int, prefix: String, awayMilliseconds: Int, label: String) throws
        -> (ring: Ring, names: [String], files: [String: [UInt8]], records: Int) {
        let ring = try Ring(nodes: 3, settings: settings(awayMilliseconds: awayMilliseconds), label: label)
        let names = (0..<count).map { "\(prefix)\($0)" }
        let files = try create(ring, names, seed: label)
        try waitUntil("every node holds the \(count) files", timeoutSeconds: 20) { try (0..<3).allSatisfy { try ring.list($0).count == count } }
        return (ring, names, files, try ring.info(0).catalogRecords)
    }

    /// Files made and removed: once every node has the tombstones they go from every catalog, which holds the
    /// records of the files kept and no more; nothing removed comes back.
    @Test func tombstonesGoOnceEveryMemberHasThem() throws {
        let (ring, names, made, full) = try Self.ringWithFiles(300, prefix: "f", awayMilliseconds: 60_000, label: "gc-collect")
        var files = made
        defer { ring.shutdown() }
        let removed = Array(names.prefix(250))
        try Self.remove(ring, removed, on: [0, 1, 2])
        for name in removed { files[name] = nil }
        // Each removed file leaves a removed name and a removed inode (in place of its live rows) until collected.
        try waitUntil("the tombstones collected on every node", timeoutSeconds: 30, describe: { Self.records(ring, [0, 1, 2]) }) {
            try (0..<3).allSatisfy { try ring.info($0).catalogRecords == full - 2 * removed.count }
        }
        for node in 0..<3 {
            #expect(try ring.info(node).catalogCollectedRecords == 2 * removed.count, "node \(node)")
            try Self.expectFiles(ring, node, files)
        }
    }

    /// A member down for less than the horizon holds collection back (it could still hold the removed files);
    /// once it is back and has the tombstones, they go everywhere, and it lists none of the removed files.
    @Test func aMemberDownHoldsCollectionBack() throws {
        let (ring, names, made, full) = try Self.ringWithFiles(100, prefix: "h", awayMilliseconds: 60_000, label: "gc-held")
        var files = made
        defer { ring.shutdown() }
        ring.kill(2)
        try ring.waitForNetmap(ring.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 20)
        let removed = Array(names.prefix(60))
        try Self.remove(ring, removed, on: [0, 1])
        for name in removed { files[name] = nil }
        usleep(3_000_000)  // ten rounds and more, the tombstones past their minimum age
        for node in 0..<2 {
            let info = try ring.info(node)
            #expect(info.catalogRecords == full, "node \(node) collected with a member down: \(info.catalogRecords) records of \(full)")
        }
        try ring.start(2)
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        try waitUntil("the tombstones collected on every node", timeoutSeconds: 30, describe: { Self.records(ring, [0, 1, 2]) }) {
            try (0..<3).allSatisfy { try ring.info($0).catalogRecords == full - 2 * removed.count }
        }
        for node in 0..<3 { try Self.expectFiles(ring, node, files) }
    }

    /// A member away past the horizon no longer holds collection back: the ring drops the tombstones of files
    /// removed meanwhile. When it returns it still lists those files (nothing tells it they went), until it sweeps:
    /// its rows from before it left that a peer no longer has are removed, and the ring converges, files made while
    /// it was away included.
    @Test func aMemberAwayPastTheHorizonSweepsWhenBack() throws {
        let (ring, names, made, full) = try Self.ringWithFiles(100, prefix: "s", awayMilliseconds: 1500, label: "gc-sweep")
        var files = made
        defer { ring.shutdown() }
        usleep(1_500_000)  // node 2's last contact with the ring well after the files were made
        ring.kill(2)
        try ring.waitForNetmap(ring.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 20)
        let removed = Array(names.prefix(60))
        try Self.remove(ring, removed, on: [0, 1])
        for name in removed { files[name] = nil }
        let added = try Self.create(ring, (0..<5).map { "new\($0)" }, seed: "gc-sweep-new", on: [0, 1])
        files.merge(added) { $1 }
        // Node 2 is excluded once away for 1.5 s: the two others collect without it.
        try waitUntil("the tombstones collected on nodes 0 and 1", timeoutSeconds: 30, describe: { Self.records(ring, [0, 1]) }) {
            try (0..<2).allSatisfy { try ring.info($0).catalogRecords == full - 2 * removed.count + 2 * added.count }
        }
        try ring.start(2)
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        try waitUntil("node 2 swept out the removed files", timeoutSeconds: 30, describe: { (try? ring.info(2)).map { "swept \($0.catalogSweptRecords ?? -1)" } ?? "?" }) {
            try (ring.info(2).catalogSweptRecords ?? 0) >= 2 * removed.count
        }
        for node in 0..<3 { try Self.expectFiles(ring, node, files) }
        // The sweep's tombstones are collected in turn: every catalog ends with the kept files' records only.
        try waitUntil("every catalog back to the kept files", timeoutSeconds: 30, describe: { Self.records(ring, [0, 1, 2]) }) {
            try (0..<3).allSatisfy { try ring.info($0).catalogRecords == full - 2 * removed.count + 2 * added.count }
        }
    }
}
