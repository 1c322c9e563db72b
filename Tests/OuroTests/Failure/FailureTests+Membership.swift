import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// The whole ring crashing, a node joining, a node leaving.
extension FailureTests {
    /// Files a background pusher acknowledged or was still sending when the ring died.
    final class PushLog: @unchecked Sendable {
        private let lock = NSLock()
        private var acknowledgedFiles: [(name: String, bytes: [UInt8])] = []
        private var attemptedFiles: [(name: String, bytes: [UInt8])] = []
        private var stopping = false

        var acknowledged: [(name: String, bytes: [UInt8])] { lock.withLock { acknowledgedFiles } }
        var attempted: [(name: String, bytes: [UInt8])] { lock.withLock { attemptedFiles } }
        var shouldStop: Bool { lock.withLock { stopping } }
        func stop() { lock.withLock { stopping = true } }
        func attempt(_ name: String, _ bytes: [UInt8]) { lock.withLock { attemptedFiles.append((name, bytes)) } }
        func acknowledge(_ name: String, _ bytes: [UInt8]) { lock.withLock { acknowledgedFiles.append((name, bytes)) } }
    }

    @Test("4. the whole ring killed with SIGKILL and restarted: every acknowledged file is back, byte for byte")
    func wholeRingKilledAndRestarted() throws {
        let clock = PhaseClock(label: "whole ring")
        let ring = try Ring(nodes: 3, label: "fault-crash")
        defer { ring.shutdown() }
        let before = Self.assortedFiles("wholeRingKilled")
        for (index, file) in before.enumerated() {
            #expect(try ring.push(index % 3, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }

        // Pushes keep coming while the ring dies: some acknowledged, one cut off mid-way.
        let log = PushLog()
        let finished = DispatchSemaphore(value: 0)
        let addresses = (0..<3).map(ring.address)
        let seed = TestSeed.derived("wholeRingKilled-during")
        Thread.detachNewThread {
            var generator = PseudoRandomBytes(seed: seed)
            var number = 0
            while !log.shouldStop {
                let name = "during/\(number)"
                let bytes = generator.bytes(number % 3 == 0 ? (4 << 20) + number : 100_000 + number)
                log.attempt(name, bytes)
                if let reply = try? Wire.push(addresses[number % 3], name: name, bytes: bytes), reply.last == "OK" {
                    log.acknowledge(name, bytes)
                } else {
                    break
                }
                number += 1
            }
            finished.signal()
        }
        var pusherJoined = false
        defer {
            log.stop()
            if !pusherJoined { _ = finished.wait(timeout: .now() + 30) }
        }
        try waitUntil("the background pusher to have 4 files acknowledged", timeoutSeconds: 60, intervalSeconds: 0.005) {
            log.acknowledged.count >= 4
        }
        clock.mark("pushed; killing the ring")
        for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
        for node in 0..<3 { ring.kill(node) }
        log.stop()
        pusherJoined = finished.wait(timeout: .now() + 30) == .success
        #expect(pusherJoined, "the background pusher did not stop")
        let acknowledged = before + log.acknowledged
        let unacknowledged = log.attempted.filter { attempt in !acknowledged.contains { $0.name == attempt.name } }
        print("FailureTests: killed the ring with \(log.acknowledged.count) background pushes acknowledged, "
              + "\(unacknowledged.count) not")

        clock.mark("killed")
        for node in 0..<3 { try ring.start(node) }
        clock.mark("restarted")
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        clock.mark("netmap all alive")
        for node in 0..<3 {
            let listed = try Wire.list(ring.address(node))
            for file in acknowledged {
                #expect(listed[file.name] == UInt64(file.bytes.count), "node \(node) lists \(file.name) with \(listed[file.name].map(String.init) ?? "nothing")")
                let pulled = try ring.pull(node, name: file.name)
                expectBytes(pulled, file.bytes, "\(file.name) from node \(node) after the restart")
            }
            // A push the crash cut off is absent, or whole if it was committed just before the end.
            for file in unacknowledged {
                if let size = listed[file.name] {
                    #expect(size == UInt64(file.bytes.count), "unacknowledged \(file.name) listed with \(size) bytes")
                    expectBytes(try ring.pull(node, name: file.name), file.bytes, "unacknowledged \(file.name) listed but not whole")
                }
            }
        }
        let problems = ReplicaChecker.problems(files: acknowledged.map(\.name), copies: 2, stores: ring.liveStores)
        #expect(problems.isEmpty, "\(problems)")
        #expect(ring.tempChunkFiles().isEmpty, "temp files after the restart: \(ring.tempChunkFiles())")
        clock.mark("checked")
    }

    @Test("4b. a catalog log with a torn last line (power cut mid-append): files acknowledged after the restart survive the next crash")
    func tornCatalogTail() throws {
        let clock = PhaseClock(label: "torn tail")
        let ring = try Ring(nodes: 3, label: "fault-torn")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("tornCatalogTail"))
        let before = generator.bytes(70_001)
        #expect(try ring.push(0, name: "before.bin", bytes: before).last == "OK")

        // The machine loses power while each node appends to its catalog log: every log ends in half a record,
        // written where the next record goes (over the zeros the log keeps ahead of its end).
        for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
        for node in 0..<3 { ring.kill(node) }
        for node in 0..<3 {
            let path = ring.members[node].dataDirectory + "/catalog.log"
            let log = try #require(readLocalFile(path))
            let (lastFrame, end) = try #require(Self.lastCatalogFrame(log), "no record in \(path)")
            #expect(log.count > end, "the log keeps zeros ahead of its end")
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            try #require(fd >= 0)
            let torn = Array(lastFrame.prefix(8 + (lastFrame.count - 8) / 2))  // its header, half its record
            _ = torn.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(end)) }
            fsync(fd)
            close(fd)
        }
        clock.mark("logs torn")
        for node in 0..<3 { try ring.start(node) }
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        clock.mark("restarted")
        for node in 0..<3 { expectBytes(try ring.pull(node, name: "before.bin"), before, "before.bin from node \(node)") }

        // Acknowledged after the restart: durable, whatever the log looked like before.
        let after: [(name: String, bytes: [UInt8])] = [("after-1.bin", generator.bytes(50_003)), ("after-2.bin", generator.bytes(9))]
        for (index, file) in after.enumerated() {
            #expect(try ring.push(index, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        clock.mark("pushed after the restart")
        for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
        for node in 0..<3 { ring.kill(node) }
        for node in 0..<3 { try ring.start(node) }
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        clock.mark("restarted again")
        for node in 0..<3 {
            let listed = try Wire.list(ring.address(node))
            for file in [("before.bin", before)] + after {
                #expect(listed[file.0] == UInt64(file.1.count), "node \(node) lists \(file.0) with \(listed[file.0].map(String.init) ?? "nothing"): \(listed)")
                let pulled = try ring.pull(node, name: file.0)
                expectBytes(pulled, file.1, "\(file.0) from node \(node) after the second crash")
            }
        }
    }

    /// The last frame of a catalog log (`OUROCAT2`, then `u32 length, u32 CRC, payload` frames up to a zero length)
    /// and where the next one goes.
    static func lastCatalogFrame(_ log: [UInt8]) -> ([UInt8], Int)? {
        func u32(_ at: Int) -> Int { log[at..<at + 4].reversed().reduce(0) { $0 << 8 | Int($1) } }
        var offset = 8
        var last: Range<Int>?
        while offset + 8 <= log.count, u32(offset) > 0, offset + 8 + u32(offset) <= log.count {
            last = offset..<offset + 8 + u32(offset)
            offset = last!.upperBound
        }
        return last.map { (Array(log[$0]), offset) }
    }

    @Test("4d. small files written through a mount (kept inline in the catalog) survive every node killed with SIGKILL")
    func inlineFilesSurviveWholeRingKill() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-inline") { mounted in
            let ring = mounted.ring
            let sizes = [0, 1, 100, 4095, 4096, 8191, 8192, 8193, 70_000]
            let writes = sizes.map { #"head -c \#($0) /dev/urandom > "$W/f-\#($0)" && cp "$W/f-\#($0)" "$M/small/f-\#($0)""# }
            try mounted.ok(#"mkdir "$M/small" && "# + writes.joined(separator: " && "))
            // Also one rewritten in place: the later, shorter content wins.
            try mounted.ok(#"head -c 5000 /dev/urandom > "$W/f-re" && cp "$W/f-re" "$M/small/f-re" && head -c 77 "$W/f-re" > "$W/f-re2" && cp "$W/f-re2" "$M/small/f-re" && cp "$W/f-re2" "$W/f-re""#)
            for size in sizes {
                let stat = try Wire.stat(ring.address(1), name: "small/f-\(size)")
                #expect(stat.inode.sizeBytes == UInt64(size))
                if size > 0 {
                    #expect(stat.inode.content?.isInline == (size <= Limits.inlineContentBytes), "f-\(size): \(String(describing: stat.inode.content))")
                }
            }
            for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
            for node in 0..<3 { ring.kill(node) }
            for node in 0..<3 { try ring.start(node) }
            try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
            let names = sizes.map { "f-\($0)" } + ["f-re"]
            let compare = names.map { #"cmp "$W/\#($0)" "$M/small/\#($0)""# }.joined(separator: " && ")
            var last: ShellResult?
            do {
                try waitUntil("the mount to read every small file again", timeoutSeconds: 30, intervalSeconds: 0.5,
                              describe: { "\(last.map { "\($0)" } ?? "")" }) {
                    last = try mounted.sh(compare, timeoutSeconds: 60)
                    return last?.status == .exited(0)
                }
            } catch {
                Issue.record("\(error)\n\(mounted.diagnostics())")
            }
            // Every node has the bytes (the catalog is on all of them): FILE PULL from each.
            for node in 0..<3 {
                for name in names {
                    let expected = try #require(readLocalFile(mounted.workDirectory + "/" + name))
                    expectBytes(try Wire.pull(ring.address(node), name: "small/" + name), expected, "\(name) from node \(node)")
                }
            }
        }
    }

    @Test("4c. every node killed under a mount: operations fail within a bounded time; the ring restarted, the mount works again")
    func allNodesGoneUnderMount() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-allgone") { mounted in
            let ring = mounted.ring
            try mounted.ok(#"head -c 3000000 /dev/urandom > "$W/src" && cp "$W/src" "$M/kept.bin" && cmp "$W/src" "$M/kept.bin""#)
            for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
            for node in 0..<3 { ring.kill(node) }
            // Each on its own, so one hang cannot hide another; the kernel's attribute cache is 1 s, so wait it out.
            usleep(1_500_000)
            for script in [#"cat "$M/kept.bin" > /dev/null"#, #"ls "$M" > /dev/null"#, #"stat "$M/nothing-here""#,
                           #"cp "$W/src" "$M/new.bin""#, #"mkdir "$M/newdir""#] {
                let result = try mounted.sh(script, timeoutSeconds: 90)
                #expect(result.status != .exited(0), "succeeded with no node alive: \(result)")
                #expect(result.seconds < 60, "took \(String(format: "%.1f", result.seconds)) s to fail: \(result)")
            }
            for node in 0..<3 { try ring.start(node) }
            try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
            var last: ShellResult?
            do {
                try waitUntil("the mount to work again", timeoutSeconds: 30, intervalSeconds: 0.5, describe: { "\(last.map { "\($0)" } ?? "")" }) {
                    last = try mounted.sh(#"cmp "$W/src" "$M/kept.bin" && cp "$W/src" "$M/again.bin" && cmp "$W/src" "$M/again.bin""#,
                                          timeoutSeconds: 60)
                    return last?.status == .exited(0)
                }
            } catch {
                Issue.record("\(error)\n\(mounted.diagnostics())")
            }
        }
    }

    @Test("6b. ouro heal routes around a killed node at once (slow gossip), and takes it back when it returns")
    func healRoutesAroundTheDead() throws {
        var settings = FaultRing.Settings()
        settings.gossipIntervalMilliseconds = 10_000  // the pinger stays out of the way: heal alone notices
        let ring = try FaultRing(nodes: 4, settings: settings, label: "fault-heal")
        defer { ring.shutdown() }
        let order = [0, 1, 2, 3]
        ring.kill(2)
        let healed = try OuroTool.run(["heal", "--node", ring.address(0).description], in: ring.directory, timeoutSeconds: 30)
        #expect(healed.status == .exited(0) && healed.output.contains("OK network healed"), "ouro heal: \(healed)")
        for node in [0, 1, 3] {
            #expect(try Wire.netmap(ring.address(node)) == ring.expectedNetmap(order: order, dead: [2]), "node \(node) right after heal")
        }
        #expect(try Wire.request(ring.address(1), "NODE STATUS") == ["PORT \(ring.address(1))", "NEXT \(ring.address(3))", "OK"])
        let walk = try Wire.request(ring.address(0), "TOPOLOGY WALK")
        #expect(walk == ["\(ring.address(0))->\(ring.address(1))", "\(ring.address(1))->\(ring.address(3))",
                         "\(ring.address(3))->\(ring.address(0))", "OK"])
        var generator = PseudoRandomBytes(seed: TestSeed.derived("heal"))
        let during = generator.bytes(300_000)
        #expect(try ring.push(3, name: "during-heal", bytes: during) == ["FILE 300000 bytes split into 3 chunks and distributed", "OK"])

        try ring.start(2)
        let back = try OuroTool.run(["heal", "--node", ring.address(3).description], in: ring.directory, timeoutSeconds: 30)
        #expect(back.status == .exited(0), "ouro heal: \(back)")
        for node in order {
            var last: [String] = []
            // The returning node learns the netmap from the heal's broadcast. (A heal from node 3 lists the ring
            // from node 3: the same ring, rotated.)
            let expected = ring.expectedNetmap(order: order, dead: [])
            try waitUntil("node \(node) to see everyone alive", timeoutSeconds: 5, describe: { "\(last), want \(expected)" }) {
                last = try Wire.netmap(ring.address(node))
                return expected.indices.contains { Array(expected[$0...] + expected[..<$0]) == last }
            }
        }
        // A push acknowledged now reached every member's catalog before the OK (close-to-open), the returned one
        // included: it gets it by broadcast, not at its next sync (10 s away here).
        let after = generator.bytes(400_000)
        #expect(try ring.push(0, name: "after-heal", bytes: after) == ["FILE 400000 bytes split into 4 chunks and distributed", "OK"])
        for node in order {
            expectBytes(try ring.pull(node, name: "after-heal"), after, "after-heal from node \(node), right after its push")
        }
        // What it missed while dead, it learns at its next catalog sync.
        for node in [0, 1, 3] { expectBytes(try ring.pull(node, name: "during-heal"), during, "during-heal from node \(node)") }
    }

    @Test("6c. four nodes join through the same member at once: every one is in the ring, and the ring is one cycle")
    func nodesJoinAtOnce() throws {
        let ring = try FaultRing(nodes: 1, label: "fault-join-many")
        defer { ring.shutdown() }
        // Node 0 is stopped while they start, so their NODE JOINs wait in its backlog and are served together.
        ring.signal(0, SIGSTOP)
        let joiners: [Int]
        do {
            joiners = try ring.addNodes(4, joining: 0)
        } catch {
            ring.signal(0, SIGCONT)
            throw error
        }
        usleep(300_000)
        ring.signal(0, SIGCONT)
        let everyone = [0] + joiners
        // Each join puts its node right after node 0, in the order node 0 admits them: some order of the four.
        var last: [String] = []
        try waitUntil("every node's netmap to hold all five, alive", timeoutSeconds: 30, describe: { "\(last)" }) {
            let maps = try everyone.map { try Wire.netmap(ring.address($0)) }
            last = maps.first ?? []
            return maps.allSatisfy { $0 == maps[0] } && Set(maps[0]) == Set(ring.expectedNetmap(order: everyone, dead: []))
        }
        var walk: [String] = []
        try waitUntil("the ring to be one cycle through all five", timeoutSeconds: 20, describe: { "\(walk)" }) {
            walk = try Wire.request(ring.address(0), "TOPOLOGY WALK")
            let edges = walk.dropLast().map { $0.components(separatedBy: "->") }
            return walk.last == "OK" && edges.count == 5 && Set(edges.map { $0[0] }).count == 5
                && zip(edges, edges.dropFirst() + edges.prefix(1)).allSatisfy { $0[1] == $1[0] }
        }
    }

    @Test("6. a node joins a ring that holds files: old files readable, it is Alive everywhere, new files use it")
    func nodeJoinsRunningRing() throws {
        let ring = try FaultRing(nodes: 3, label: "fault-join")
        defer { ring.shutdown() }
        let files = Self.assortedFiles("nodeJoins")
        for (index, file) in files.enumerated() {
            #expect(try ring.push(index % 3, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        let joiner = try ring.addNode(joining: 1)
        // NODE JOIN puts the newcomer right after the member it asked.
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, joiner, 2], dead: []), on: [0, 1, 2, joiner], timeoutSeconds: 20)
        let names = Set(files.map(\.name))
        var seen: [String] = []
        try waitUntil("the new node to list every file", timeoutSeconds: 20, describe: { "\(seen)" }) {
            seen = try Wire.list(ring.address(joiner)).keys.sorted()
            return Set(seen) == names
        }
        for node in [joiner, 0, 1, 2] {
            for file in files {
                let pulled = try ring.pull(node, name: file.name)
                expectBytes(pulled, file.bytes, "old \(file.name) from node \(node)")
            }
        }
        let status = try Wire.request(ring.address(1), "NODE STATUS")
        #expect(status == ["PORT \(ring.address(1))", "NEXT \(ring.address(joiner))", "OK"])
        let topology = try Wire.request(ring.address(0), "TOPOLOGY WALK")
        #expect(topology == [0, 1, joiner, 2].enumerated().map { index, node in
            "\(ring.address(node))->\(ring.address([0, 1, joiner, 2][(index + 1) % 4]))"
        } + ["OK"])

        // A new file is split over four nodes, one chunk on the newcomer (and its copy on its predecessor).
        var generator = PseudoRandomBytes(seed: TestSeed.derived("nodeJoins-new"))
        let fresh = generator.bytes((4 << 20) + 3)
        let reply = try ring.push(0, name: "after-join.bin", bytes: fresh)
        #expect(reply == ["FILE \(fresh.count) bytes split into 4 chunks and distributed", "OK"])
        let content = try #require(try Wire.stat(ring.address(0), name: "after-join.bin").inode.content)
        let onJoiner = content.chunks.indices.filter { content.chunks[$0].holders.contains(ring.address(joiner)) }
        #expect(!onJoiner.isEmpty, "no chunk of the new file is placed on the new node: \(content.chunks.map(\.holders))")
        for chunk in onJoiner {
            let path = "\(ring.members[joiner].chunksDirectory)/\(Ring.chunkFileName(content.id.hex, index: chunk, parts: content.parts))"
            #expect(try crc32cOfFile(path) == content.chunks[chunk].crc32c, "chunk \(chunk + 1) on the new node")
        }
        for node in 0..<ring.count { expectBytes(try ring.pull(node, name: "after-join.bin"), fresh, "new file from node \(node)") }
        let problems = ReplicaChecker.problems(files: files.map(\.name) + ["after-join.bin"], copies: 2, stores: ring.liveStores)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test("7. ouro leave on one node of 4 (--copies 2), right after updates in place: it hands its chunks and pieces over; every one keeps 2 live holders")
    func nodeLeaves() throws {
        let ring = try Ring(nodes: 4, label: "fault-leave")
        defer { ring.shutdown() }
        let pushed = Self.assortedFiles("nodeLeaves")
        for (index, file) in pushed.enumerated() {
            #expect(try ring.push(index % 4, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        // Some of them updated in place just before: their pieces' copies may still be in the piece journal.
        let updated = try updatedInPlace(pushed, through: ring.address(2), stat: ring.address(0), seed: TestSeed.derived("nodeLeaves-update"))
        try #require(updated.count >= 2)
        let files = pushed.map { file in updated.first { $0.name == file.name } ?? file }
        let leaving = 2
        let held = ring.chunkFiles(leaving).count
        #expect(held > 0)
        let result = try OuroTool.run(["leave", "--node", ring.address(leaving).description], in: ring.directory, timeoutSeconds: 60)
        #expect(result.status == .exited(0), "ouro leave: \(result)")
        #expect(result.output.contains("OK"), "ouro leave: \(result)")
        let ended = ring.members[leaving].process?.wait(seconds: 15)
        #expect(ended == .exited(0), "the node that left \(ended.map { "\($0)" } ?? "still runs")")

        let remaining = [0, 1, 3]
        let expected = remaining.map { "\(ring.address($0))=Alive" }
        try ring.waitForNetmap(expected, on: remaining, timeoutSeconds: 10)
        // Right away, with no repair pass needed: the hand-over was done before the node said OK.
        let untouched = pushed.map(\.name).filter { name in !updated.contains { $0.name == name } }
        let problems = ReplicaChecker.problems(files: untouched, copies: 2, stores: ring.liveStores)
        #expect(problems.isEmpty, "after the leave: \(problems)\n\(ring.logs())")
        // A piece's copies stay in the piece journals for about a second before they are chunk files the checker
        // can see: the updated files are checked once they are.
        try ReplicaChecker.waitForFullReplication(files: updated.map(\.name), copies: 2, stores: { ring.liveStores },
                                                  timeoutSeconds: 10, diagnostics: { ring.logs() })
        for node in remaining {
            for file in files {
                let pulled = try ring.pull(node, name: file.name)
                expectBytes(pulled, file.bytes, "\(file.name) from node \(node)")
            }
            let status = try ring.request(node, "NODE STATUS")
            let successor = remaining[(remaining.firstIndex(of: node)! + 1) % remaining.count]
            #expect(status == ["PORT \(ring.address(node))", "NEXT \(ring.address(successor))", "OK"], "node \(node): \(status)")
        }
        // And new files are spread over the three that remain.
        var generator = PseudoRandomBytes(seed: TestSeed.derived("nodeLeaves-new"))
        let fresh = generator.bytes(600_001)
        #expect(try ring.push(3, name: "after-leave", bytes: fresh) == ["FILE 600001 bytes split into 3 chunks and distributed", "OK"])
        #expect(ReplicaChecker.problems(files: ["after-leave"], copies: 2, stores: ring.liveStores) == [])
    }
}
