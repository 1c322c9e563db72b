import Foundation
import Glibc
import OuroCore
import Testing

/// The ring changing under its files: a successor that dies just before a push, and a node that leaves.
@Suite struct MembershipTests {
    /// A push whose relay cannot reach a just-killed node fails cleanly (nothing listed, nothing left on disk), the
    /// node that could not reach it routes around it at once, and the next push succeeds on the survivors.
    @Test func pushRightAfterASuccessorDies() throws {
        let ring = try Ring(nodes: 3, label: "succdeath")
        defer { ring.shutdown() }
        let filesBefore = (0..<3).map { ring.chunkFiles($0) }
        ring.kill(2)
        let bytes = Array("written while node 2 is down".utf8)
        let first = try ring.push(1, name: "first.txt", bytes: bytes)
        if first.last == "OK" {
            // Acceptable only if the ring already routed around node 2.
            #expect(first.first == "FILE \(bytes.count) bytes split into 2 chunks and distributed")
        } else {
            #expect(first.count == 1 && first[0].hasPrefix("ERR UNAVAILABLE "), "\(first)")
            for node in 0..<2 { #expect(try ring.list(node).isEmpty, "a failed push is not listed on node \(node)") }
            for node in 0..<3 { #expect(ring.chunkFiles(node) == filesBefore[node], "nothing left on node \(node)") }
        }
        // Routed around without waiting for missed pings (1 s is less than 3 gossip rounds plus their timeouts).
        try ring.waitForNetmap(ring.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 5)
        let second = try ring.push(1, name: "second.txt", bytes: bytes)
        #expect(second == ["FILE \(bytes.count) bytes split into 2 chunks and distributed", "OK"])
        try ring.expectPlacement(of: "second.txt", start: 1, dead: [2], sizeBytes: UInt64(bytes.count), original: bytes)
        #expect(try ring.pull(0, name: "second.txt") == bytes)
    }

    /// `NODE LEAVE`: the node hands its chunks over, drops out of the netmap, and exits; every file keeps its copies
    /// on the remaining nodes and reads back identical.
    @Test func nodeLeaves() throws {
        let ring = try Ring(nodes: 3, label: "leave")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("nodeLeaves"))
        let files = (0..<4).map { ("file-\($0).bin", $0 % 3, generator.bytes(10_000 * $0 + 3)) }
        for (name, start, bytes) in files {
            #expect(try ring.push(start, name: name, bytes: bytes).last == "OK")
        }
        let lines = try ring.request(1, "NODE LEAVE")
        #expect(lines.last == "OK left the ring" && lines.dropLast().allSatisfy { $0.hasPrefix("MOVED ") }, "\(lines)")
        let ended = ring.members[1].process?.wait(seconds: 10)
        #expect(ended == .exited(0), "the node that left: \(ended.map { "\($0)" } ?? "still running")")
        let remaining = [ring.address(0), ring.address(2)].map { "\($0)=Alive" }
        try ring.waitForNetmap(remaining, on: [0, 2], timeoutSeconds: 10)
        #expect(try ring.request(0, "TOPOLOGY WALK") == ["\(ring.address(0))->\(ring.address(2))", "\(ring.address(2))->\(ring.address(0))", "OK"])
        for (name, _, bytes) in files {
            for node in [0, 2] {
                #expect(try ring.pull(node, name: name) == bytes, "\(name) from node \(node) after node 1 left")
                try ring.expectRecordedPlacementHolds(of: name, via: node, copies: 2)
            }
            let holders = try ring.stat(0, name: name).inode.content?.chunks.flatMap(\.holders) ?? []
            #expect(!holders.contains(ring.address(1)), "\(name) still points at the node that left")
        }
        // New files go to the two that remain.
        #expect(try ring.push(2, name: "after.bin", bytes: [1, 2, 3]) == ["FILE 3 bytes split into 2 chunks and distributed", "OK"])
    }
}
