import Foundation
import Glibc
import OuroCore
import Testing

/// A network partition between "hosts": nodes in network namespaces, one cut off by taking its link down.
extension FailureTests {
    @Test("8. three nodes in their own network namespaces: one cut off is declared dead, the others serve; back, it catches up",
          .enabled(if: NetnsLab.isAvailable, "needs permission to create network namespaces"))
    func partitionedNodeCatchesUp() throws {
        let clock = PhaseClock(label: "partition")
        let lab = try NetnsLab(nodes: 3, label: "fault-netns")
        defer { lab.shutdown() }
        for node in 0..<3 { try lab.start(node) }
        for node in 0..<3 {
            let next = lab.address((node + 1) % 3)
            #expect(try lab.request(node, "NODE NEXT \(next)", oneLine: true) == ["OK next=\(next)"])
        }
        #expect(try lab.request(0, "NETMAP DISCOVER") == ["OK"])
        try lab.waitForNetmap(lab.expectedNetmap(dead: []), on: [0, 1, 2], timeoutSeconds: 15)
        clock.mark("ring up")

        var generator = PseudoRandomBytes(seed: TestSeed.derived("partition"))
        var files: [(name: String, bytes: [UInt8])] = []
        @discardableResult
        func push(_ name: String, _ bytes: [UInt8], via node: Int) throws -> String {
            let local = "src-\(files.count)"
            try writeLocalFile("\(lab.directory)/\(local)", bytes)
            let result = try lab.ouro(["push", "--node", lab.address(node).description, local, name])
            #expect(result.status == .exited(0) && result.output.contains("OK"), "push \(name) via node \(node): \(result)")
            files.append((name, bytes))
            return result.output
        }
        func expectReadable(via node: Int, _ when: String) throws {
            for (index, file) in files.enumerated() {
                let target = "out-\(node)-\(index)"
                unlink("\(lab.directory)/\(target)")
                let result = try lab.ouro(["pull", "--node", lab.address(node).description, file.name, target])
                #expect(result.status == .exited(0), "\(when): pull \(file.name) via node \(node): \(result)")
                expectBytes(readLocalFile("\(lab.directory)/\(target)"), file.bytes, "\(when): \(file.name) via node \(node)")
            }
        }
        try push("before/a.bin", generator.bytes((3 << 20) + 1), via: 0)
        try push("before/b.bin", generator.bytes(10_000), via: 1)
        try expectReadable(via: 2, "before the cut")

        // Node 2's link goes down: the others time out on it (no refusals), declare it dead, and keep serving.
        try lab.setLink(2, up: false)
        clock.mark("node 2 cut off")
        // Its predecessor pings it every 200 ms (1 s connect timeout, 2 s answer timeout) and gives up after 3
        // misses: 15 s is ample. Should detection be slower, note it and wait on, to test the rest.
        let cutAt = Deadline.now
        do {
            try lab.waitForNetmap(lab.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 15)
        } catch {
            Issue.record("a node cut off by the network is not declared dead within 15 s: \(error)")
            try lab.waitForNetmap(lab.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 90)
        }
        clock.mark("node 2 declared dead, \(String(format: "%.1f", Deadline.now - cutAt)) s after the cut")
        try push("during/c.bin", generator.bytes((2 << 20) + 3), via: 0)
        try push("during/d.bin", generator.bytes(7), via: 1)
        try expectReadable(via: 0, "during the cut")
        try expectReadable(via: 1, "during the cut")
        clock.mark("served during the cut")

        // Back: everyone sees everyone alive again, and node 2 knows and serves the files it missed.
        try lab.setLink(2, up: true)
        do {
            try lab.waitForNetmap(lab.expectedNetmap(dead: []), on: [0, 1, 2], timeoutSeconds: 30)
        } catch {
            Issue.record("\(error)\n\(lab.logs())")
            return
        }
        clock.mark("healed")
        var listed = ""
        try waitUntil("node 2 to list the files pushed while it was cut off", timeoutSeconds: 20, intervalSeconds: 0.2,
                      describe: { listed }) {
            listed = try lab.ouro(["ls", "--node", lab.address(2).description]).output
            return files.allSatisfy { listed.contains($0.name) }
        }
        try expectReadable(via: 2, "after the cut")
        // And it takes part in new files again.
        let pushed = try push("after/e.bin", generator.bytes((3 << 20) + 2), via: 2)
        #expect(pushed.contains("split into 3 chunks"), "\(pushed)")
        try expectReadable(via: 0, "after the cut")
        clock.mark("checked")
    }
}
