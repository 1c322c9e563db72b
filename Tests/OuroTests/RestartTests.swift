import Foundation
import Glibc
import OuroClient
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

    /// A restart opens the catalog store and replays only the log written since its last checkpoint: after a
    /// few thousand files and a quiet second, a whole-ring SIGKILL and start replays nothing, and every file is
    /// there with its bytes, on every node.
    @Test func restartReplaysOnlyWhatCameAfterTheCheckpoint() throws {
        let ring = try Ring(nodes: 3, settings: Ring.Settings(environment: ["OURO_CATALOG_CHECKPOINT_MS": "500"]), label: "restart-store")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("restartReplaysOnly"))
        let files = (0..<3000).map { (name: "f\($0)", bytes: generator.bytes(1 + $0 % 300)) }
        let failures = parallelMap(Array(files.enumerated()), width: 6) { item -> String? in
            let client = NodeClient(ring.address(item.offset % 3))
            var request = FSRequest()
            request.parent = Inode.rootID
            request.name = item.element.name
            request.inode = UInt64(item.offset + 1000)
            request.mode = 0o644
            request.uid = 0
            request.gid = 0
            request.data = Data(item.element.bytes)
            do {
                _ = try client.fs(.create, request)
                return nil
            } catch { return "\(item.element.name): \(error)" }
        }.compactMap { $0 }
        #expect(failures.isEmpty, "\(failures.prefix(3))")
        let before = try ring.info(0)
        #expect(before.catalogRecords >= 6000, "an inode and a name per file: \(before.catalogRecords)")
        usleep(1_500_000)  // past the next checkpoint

        for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
        for node in 0..<3 { ring.kill(node) }
        for node in 0..<3 { try ring.start(node) }
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
        usleep(1_000_000)  // a few sync rounds with the neighbours
        for node in 0..<3 {
            let info = try ring.info(node)
            // Without the cursors kept in the store this is every record of both neighbours (12,000 and more); with
            // them, the last changes before the kill that a checkpoint had not covered yet.
            #expect((info.catalogPulledRecords ?? .max) < 1000, "node \(node) pulled \(info.catalogPulledRecords.map(String.init) ?? "?") records from its neighbours after the restart")
            #expect(info.catalogReplayedRecords == 0, "node \(node) replayed \(info.catalogReplayedRecords.map(String.init) ?? "?") records")
            #expect(info.catalogRecords == before.catalogRecords, "node \(node)")
            let listed = Dictionary(uniqueKeysWithValues: try ring.list(node).map { ($0.name, $0.sizeBytes) })
            #expect(listed.count == files.count, "node \(node) lists \(listed.count) files")
            for (index, file) in files.enumerated() where index % 97 == node {
                #expect(listed[file.name] == UInt64(file.bytes.count), "\(file.name) on node \(node)")
                expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node)")
            }
        }
    }

    /// SIGKILL of the whole ring at seeded random moments while files are created and the catalog checkpoints
    /// every 50 ms (its log starting over whenever it passed 16 KiB): every acknowledged file is back after the restart, on every
    /// node, with its bytes.
    @Test func killedDuringCheckpoints() throws {
        let settings = Ring.Settings(environment: ["OURO_CATALOG_CHECKPOINT_MS": "50", "OURO_CATALOG_LOG_RESTART_KB": "16"])
        let ring = try Ring(nodes: 3, settings: settings, label: "restart-checkpoints")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("killedDuringCheckpoints"))
        var acknowledged: [(name: String, bytes: [UInt8])] = []
        for round in 0..<4 {
            let delay = 300_000 + Int(generator.bytes(2).reduce(0) { $0 << 8 | Int($1) }) % 1_200_000
            let contents = (0..<2000).map { generator.bytes(1 + $0 % 200) }
            let lock = NSLock()
            var made: [(name: String, bytes: [UInt8])] = []
            let done = DispatchSemaphore(value: 0)
            for writer in 0..<3 {
                startThread {
                    let client = NodeClient(ring.address(writer))
                    for index in stride(from: writer, to: contents.count, by: 3) {
                        var request = FSRequest()
                        request.parent = Inode.rootID
                        request.name = "r\(round)-\(index)"
                        request.inode = UInt64(100_000 * (round + 1) + index)
                        request.mode = 0o644
                        request.uid = 0
                        request.gid = 0
                        request.data = Data(contents[index])
                        do { _ = try client.fs(.create, request) } catch {
                            break
                        }
                        lock.withLock { made.append((request.name!, contents[index])) }
                    }
                    done.signal()
                }
            }
            usleep(UInt32(delay))
            for node in 0..<3 { ring.members[node].process?.send(SIGKILL) }
            for _ in 0..<3 { done.wait() }
            for node in 0..<3 { ring.kill(node) }
            acknowledged += lock.withLock { made }
            for node in 0..<3 { try ring.start(node) }
            try ring.waitForNetmap(ring.expectedNetmap(dead: []), timeoutSeconds: 20)
            for node in 0..<3 {
                // A file whose coordinator was killed right after answering reaches the others by sync.
                var missing: [(name: String, bytes: [UInt8])] = []
                let deadline = Deadline(seconds: 15)
                repeat {
                    let listed = Dictionary(uniqueKeysWithValues: try ring.list(node).map { ($0.name, $0.sizeBytes) })
                    missing = acknowledged.filter { listed[$0.name] != UInt64($0.bytes.count) }
                    if !missing.isEmpty { usleep(100_000) }
                } while !missing.isEmpty && !deadline.passed
                #expect(missing.isEmpty, "round \(round) (killed after \(delay / 1000) ms): node \(node) lost \(missing.count) of \(acknowledged.count), e.g. \(missing.prefix(3).map(\.name))")
            }
            for file in acknowledged.suffix(20) {
                expectBytes(try ring.pull(round % 3, name: file.name), file.bytes, "\(file.name) after round \(round)")
            }
        }
        #expect(acknowledged.count > 20, "the writers got some files in: \(acknowledged.count)")
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
