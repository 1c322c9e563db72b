import Foundation
import Glibc
import OuroCore
import Testing

/// Nodes that stop and start again: the whole ring after SIGTERM, and one node after SIGKILL while the others
/// go on without it.
@Suite struct RestartTests {
    @Test func wholeRingRestart() throws {
        let ring = try Ring(nodes: 3, label: "restart")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("wholeRingRestart"))
        let files: [(name: String, start: Int, bytes: [UInt8])] = [
            ("empty", 0, []),
            ("report, final.txt", 1, generator.bytes(10)),
            ("photos/2024/beach.jpg", 2, generator.bytes(300_001)),
            ("big.bin", 0, generator.bytes(3 << 20)),
        ]
        for file in files {
            #expect(try ring.push(file.start, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        let listed = try ring.list(0)
        #expect(listed.count == files.count)

        for node in 0..<3 { ring.members[node].process?.send(SIGTERM) }
        for node in 0..<3 {
            let ended = ring.members[node].process?.wait(seconds: 10)
            #expect(ended == .exited(0), "node \(node) after SIGTERM: \(ended.map { "\($0)" } ?? "still running")")
            ring.stop(node)
        }
        for node in 0..<3 { try ring.start(node) }
        // The ring comes back from disk alone: no NODE NEXT, no NETMAP DISCOVER.
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        for node in 0..<3 {
            #expect(try ring.list(node) == listed, "FILE LIST on node \(node) after the restart")
            let status = try ring.request(node, "NODE STATUS")
            #expect(status == ["PORT \(ring.address(node))", "NEXT \(ring.address((node + 1) % 3))", "OK"])
            for file in files {
                let pulled = try ring.pull(node, name: file.name)
                #expect(pulled == file.bytes, "\(file.name) from node \(node) after the restart")
            }
        }
        for file in files {
            try ring.expectPlacement(of: file.name, start: file.start, sizeBytes: UInt64(file.bytes.count), original: file.bytes)
        }
    }

    @Test func killedNodeCatchesUp() throws {
        let ring = try Ring(nodes: 3, label: "catchup")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("killedNodeCatchesUp"))
        let before = generator.bytes(50_000)
        #expect(try ring.push(0, name: "before.bin", bytes: before).last == "OK")

        ring.kill(2)
        // With copies 2 a push needs every live node, so wait until the others have declared node 2 dead.
        try ring.waitForNetmap(ring.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 15)

        let during: [(name: String, start: Int, bytes: [UInt8])] = [
            ("during/one.bin", 0, generator.bytes(100_003)),
            ("during/two.bin", 1, generator.bytes(7)),
            ("during/empty", 1, []),
        ]
        for file in during {
            let reply = try ring.push(file.start, name: file.name, bytes: file.bytes)
            #expect(reply == ["FILE \(file.bytes.count) bytes split into 2 chunks and distributed", "OK"], "push \(file.name)")
            try ring.expectPlacement(of: file.name, start: file.start, dead: [2], sizeBytes: UInt64(file.bytes.count),
                                     original: file.bytes)
        }
        // A file of the old ring is still readable from the survivors (one copy of each chunk is gone).
        #expect(try ring.pull(1, name: "before.bin") == before)

        try ring.start(2)
        let names = Set((["before.bin"] + during.map(\.name)))
        var seen: [String] = []
        try waitUntil("the restarted node to list every file", timeoutSeconds: 20, describe: { "\(seen)" }) {
            seen = try ring.list(2).map(\.name)
            return Set(seen) == names
        }
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        for file in during {
            #expect(try ring.pull(2, name: file.name) == file.bytes, "\(file.name) from the restarted node")
        }
        #expect(try ring.pull(2, name: "before.bin") == before)
        #expect(try ring.list(2) == ring.list(0))
        // Every chunk still has its copies, byte-identical, where the catalog says.
        try ring.expectRecordedPlacementHolds(of: "before.bin", via: 2, copies: 2)
        for file in during { try ring.expectRecordedPlacementHolds(of: file.name, via: 2, copies: 2) }
    }
}
