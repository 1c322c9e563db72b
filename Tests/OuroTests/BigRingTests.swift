import Foundation
import Glibc
import OuroCore
import Testing

/// A ring of 16 nodes on this machine: the protocol through `nc`, a read with one node killed, and a whole-ring
/// restart from disk.
@Suite struct BigRingTests {
    @Test func sixteenNodes() throws {
        let clock = PhaseClock(label: "16 nodes")
        let ring = try Ring(nodes: 16, label: "ring16")
        defer { ring.shutdown() }
        let count = 16
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 30)
        clock.mark("ring up")
        let directory = ring.directory
        func nc(_ node: Int) -> String { "nc -N 127.0.0.1 \(ring.address(node).port)" }

        // The protocol as typed: the topology walk goes all the way round, a push through nc is cut into one chunk
        // per node, and a pull from the far side of the ring gives it back.
        let walk = NetcatTests.text(try NetcatTests.sh("printf 'TOPOLOGY WALK\\n' | \(nc(5))", in: directory))
        #expect(walk == (0..<count).map { "\(ring.address(($0 + 5) % count))->\(ring.address(($0 + 6) % count))\n" }.joined() + "OK\n")
        var generator = PseudoRandomBytes(seed: TestSeed.derived("sixteenNodes"))
        let photo = generator.bytes(1_000_003)
        try Data(photo).write(to: URL(fileURLWithPath: directory + "/photo.jpg"))
        let pushed = try NetcatTests.sh("( printf 'FILE PUSH %s %s\\n' \"$(wc -c < photo.jpg)\" photo.jpg; cat photo.jpg ) | \(nc(3))",
                                        in: directory)
        #expect(NetcatTests.text(pushed) == "FILE 1000003 bytes split into 16 chunks and distributed\nOK\n")
        _ = try NetcatTests.sh("printf 'FILE PULL photo.jpg\\n' | \(nc(11)) > copy.jpg", in: directory)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: directory + "/copy.jpg"))) == photo)
        try ring.expectPlacement(of: "photo.jpg", start: 3, sizeBytes: 1_000_003, original: photo)

        let files = (0..<6).map { (name: "dir/file-\($0).bin", start: $0 * 3 % count, bytes: generator.bytes(17 + $0 * 300_001)) }
        for file in files {
            #expect(try ring.push(file.start, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        clock.mark("pushed")

        // One node killed: every file still reads back, from any other node (copies 2).
        ring.kill(7)
        try ring.waitForNetmap(ring.expectedNetmap(dead: [7]), on: [0, 8, 15], timeoutSeconds: 30)
        for (index, file) in files.enumerated() {
            let node = [0, 8, 15][index % 3]
            expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node) with node 7 dead")
        }
        expectBytes(try ring.pull(9, name: "photo.jpg"), photo, "photo.jpg with node 7 dead")
        clock.mark("read with a node dead")
        try ring.start(7)
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 30)

        // The whole ring stopped and started again from disk.
        for node in 0..<count { ring.members[node].process?.send(SIGTERM) }
        for node in 0..<count {
            _ = ring.members[node].process?.wait(seconds: 10)
            ring.stop(node)
        }
        for node in 0..<count { try ring.start(node) }
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 60)
        clock.mark("restarted")
        for (index, file) in files.enumerated() {
            let node = (index * 5 + 2) % count
            expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node) after the restart")
        }
        let listed = try ring.list(12).map(\.name).sorted()
        #expect(listed == (files.map(\.name) + ["photo.jpg"]).sorted())
    }
}
