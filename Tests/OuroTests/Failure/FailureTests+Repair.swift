import Foundation
import Glibc
import Logging
import OuroClient
import OuroCore
import Testing

/// Repair: re-replication after the grace period, corrupt copies found by reads and by the scrubber.
extension FailureTests {
    /// A few files of assorted sizes, pushed from assorted nodes.
    static func assortedFiles(_ label: String) -> [(name: String, bytes: [UInt8])] {
        var generator = PseudoRandomBytes(seed: TestSeed.derived(label))
        return [
            ("empty", []), ("one", generator.bytes(1)), ("seven", generator.bytes(7)), ("docs/4099", generator.bytes(4099)),
            ("docs/with space.bin", generator.bytes(300_001)), ("mib", generator.bytes(1 << 20)),
            ("big/five.bin", generator.bytes((5 << 20) + 5)), ("big/nine.bin", generator.bytes((9 << 20) + 1)),
        ]
    }

    /// A ring with copies 2 and a 2 s grace period, holding `assortedFiles(label)` pushed round the nodes.
    static func graceRingWithFiles(nodes: Int, label: String) throws -> (ring: FaultRing, files: [(name: String, bytes: [UInt8])]) {
        var settings = FaultRing.Settings()
        settings.copies = 2
        settings.gracePeriodSeconds = 2
        let ring = try FaultRing(nodes: nodes, settings: settings, label: "fault-\(label)")
        let files = assortedFiles(label)
        do {
            for (index, file) in files.enumerated() {
                #expect(try ring.push(index % nodes, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
            }
        } catch {
            ring.shutdown()
            throw error
        }
        return (ring, files)
    }

    @Test("3. a node dead past the grace period: its chunks get their copies back; then a second death loses nothing")
    func reReplicationAfterGracePeriod() throws {
        let (ring, files) = try Self.graceRingWithFiles(nodes: 4, label: "reReplication")
        defer { ring.shutdown() }
        let names = files.map(\.name)
        // The checker agrees with a freshly pushed ring.
        #expect(ReplicaChecker.problems(files: names, copies: 2, stores: ring.liveStores) == [])

        ring.kill(2)
        let killedAt = Deadline.now
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2, 3], dead: [2]), timeoutSeconds: 15)
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 40,
                                                  diagnostics: { ring.logs() })
        print("FailureTests: re-replicated \(String(format: "%.1f", Deadline.now - killedAt)) s after the kill (grace 2 s)")
        for node in ring.running {
            let info = try NodeClient(ring.address(node)).info()
            #expect(info.underReplicatedChunks == 0, "node \(node) still counts \(info.underReplicatedChunks) short chunks")
        }

        // A second node dies: every file still comes back whole, from every survivor, at once.
        ring.kill(0)
        for node in ring.running {
            for file in files {
                let pulled = try ring.pull(node, name: file.name)
                expectBytes(pulled, file.bytes, "\(file.name) from node \(node) after the second kill")
            }
        }
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2, 3], dead: [0, 2]), timeoutSeconds: 15)
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 40,
                                                  diagnostics: { ring.logs() })
        for node in ring.running {
            for file in files {
                expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node) after re-replication")
            }
        }

        // The first victim comes back on its old disk: it catches up and serves every file (from the new holders).
        try ring.start(2)
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2, 3], dead: [0]), timeoutSeconds: 20)
        for file in files {
            expectBytes(try ring.pull(2, name: file.name), file.bytes, "\(file.name) from the restarted node 2")
        }
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 20,
                                                  diagnostics: { ring.logs() })
    }

    @Test("3e. files updated in place (their pieces on copies nodes): a rotten piece copy is read around and repaired; a node dead past the grace period, every piece gets its copies back")
    func piecesReReplicatedAfterGracePeriod() throws {
        let (ring, pushed) = try Self.graceRingWithFiles(nodes: 4, label: "pieceRepair")
        defer { ring.shutdown() }
        let files = try updatedInPlace(pushed, through: ring.address(1), stat: ring.address(0), seed: TestSeed.derived("pieceRepair"))
        try #require(files.count >= 2, "too few files to update")
        let names = files.map(\.name)
        for file in files { expectBytes(try ring.pull(2, name: file.name), file.bytes, "\(file.name) after its update") }
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 20,
                                                  diagnostics: { ring.logs() })
        let pieces = Set(try files.flatMap { try Wire.stat(ring.address(0), name: $0.name).inode.content?.slices?.map(\.source.id) ?? [] })
        #expect(pieces.count >= files.count * 2, "the files read from \(pieces.count) stored contents: not layered?")

        // A flipped byte in a piece's copy: reads still give the right bytes, and the copy is repaired.
        let layered = try #require(try Wire.stat(ring.address(0), name: files[0].name).inode.content)
        let piece = try #require(layered.slices?.first { $0.source.chunks.count == 1 && $0.source.sizeBytes == 4096 * 3 }?.source)
        let holder = try #require(ring.members.first { $0.address == piece.chunks[0].holders[0] })
        try flipByte("\(holder.chunksDirectory)/\(Ring.chunkFileName(piece.id.hex, index: 0, parts: 1))", at: 5000)
        for node in ring.running {
            expectBytes(try ring.pull(node, name: files[0].name), files[0].bytes, "\(files[0].name) from node \(node) with a rotten piece copy")
        }
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 30,
                                                  diagnostics: { ring.logs() })

        // A node holding pieces dies; past the grace period every piece (and chunk) has 2 live copies again, and
        // every file reads back whole from every survivor.
        ring.kill(3)
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2, 3], dead: [3]), timeoutSeconds: 15)
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 40,
                                                  diagnostics: { ring.logs() })
        ring.kill(0)
        for node in ring.running {
            for file in files { expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node) after two deaths") }
        }
    }

    @Test("3c. a node back after its copies moved away (2 nodes, --copies 2): its chunks get their second copy again")
    func copiesComeBackWhenTheRingRegrows() throws {
        let (ring, files) = try Self.graceRingWithFiles(nodes: 2, label: "regrow")
        defer { ring.shutdown() }
        let names = files.map(\.name)
        ring.kill(1)
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1], dead: [1]), timeoutSeconds: 15)
        // Past the grace period, the survivor records itself as the only holder (one live node: one copy).
        try ReplicaChecker.waitForFullReplication(files: names, copies: 1, stores: { ring.liveStores }, timeoutSeconds: 40,
                                                  diagnostics: { ring.logs() })
        sleep(3)
        try ring.start(1)
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1], dead: []), timeoutSeconds: 20)
        // Two live nodes again: every chunk gets its second copy back.
        try ReplicaChecker.waitForFullReplication(files: names, copies: 2, stores: { ring.liveStores }, timeoutSeconds: 60,
                                                  diagnostics: { ring.logs() })
        for node in ring.running {
            #expect(try NodeClient(ring.address(node)).info().underReplicatedChunks == 0)
        }
        ring.kill(0)
        for file in files {
            expectBytes(try ring.pull(1, name: file.name), file.bytes, "\(file.name) from node 1 alone")
        }
    }

    @Test("3d. a relay hop that hangs (SIGSTOP) mid-push: the push fails once the ring declares it dead, and a retry stores the file")
    func hungRelayHopIsNotWaitedFor() throws {
        var settings = FaultRing.Settings()
        settings.copies = 2
        let ring = try FaultRing(nodes: 3, settings: settings, label: "fault-hung")
        defer {
            for node in ring.running { ring.signal(node, SIGCONT) }
            ring.shutdown()
        }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("hung"))
        let bytes = generator.bytes(1_000_003)  // small enough to sit in the hops' socket buffers
        // The last hop stops: the hops before it send everything, then wait for its answer.
        ring.signal(2, SIGSTOP)
        let first = try ring.push(0, name: "during-hang.bin", bytes: bytes)  // used to wait 600 s (the client gave up at 120 s)
        #expect(first.last?.hasPrefix("ERR UNAVAILABLE") == true || first.last == "OK", "\(first)")
        var reply = first
        let deadline = Deadline(seconds: 60)
        while reply.last != "OK", !deadline.passed {
            usleep(500_000)
            reply = try ring.push(0, name: "during-hang.bin", bytes: bytes)
        }
        #expect(reply.last == "OK", "\(reply)")
        expectBytes(try ring.pull(1, name: "during-hang.bin"), bytes, "pulled while node 2 hangs")
        ring.signal(2, SIGCONT)
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2], dead: []), timeoutSeconds: 20)
        expectBytes(try ring.pull(2, name: "during-hang.bin"), bytes, "pulled from node 2 once it runs again")
    }

    @Test("3b. every holder of a chunk dead (4 nodes, --copies 2, two neighbours killed): pulls fail loudly and in bounded time")
    func lostChunkFailsLoudly() throws {
        let ring = try Ring(nodes: 4, label: "fault-lost")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("lostChunk"))
        let bytes = generator.bytes((12 << 20) + 4)
        #expect(try ring.push(0, name: "lost.bin", bytes: bytes).last == "OK")
        // Chunk i lives on nodes i and i-1: with 1 and 2 dead, chunk 3 (bytes 6–9 MiB) has no copy left.
        for node in [1, 2] { ring.members[node].process?.send(SIGKILL) }
        for node in [1, 2] { ring.kill(node) }
        try ring.waitForNetmap(ring.expectedNetmap(dead: [1, 2]), timeoutSeconds: 15)

        // `ouro pull`: an error, and no file (not even a partial one) at the destination.
        let started = Deadline.now
        let result = try OuroTool.run(["pull", "--node", ring.address(0).description, "lost.bin", "out.bin"], in: ring.directory,
                                      timeoutSeconds: 90)
        #expect(result.status != .exited(0), "ouro pull of a file with a lost chunk succeeded: \(result)")
        #expect(Deadline.now - started < 30, "ouro pull took \(Deadline.now - started) s to fail")
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: ring.directory)) ?? []).filter { $0.hasPrefix("out.bin") }
        #expect(leftovers.isEmpty, "ouro pull left \(leftovers)")

        // FILE PULL: a true prefix, then `ERR …`, then the node closes the connection (protocol.md, FILE PULL).
        let socket = try TestSocket(ring.address(3), timeoutSeconds: 15)
        try socket.send("FILE PULL lost.bin\n")
        var received: [UInt8] = []
        let pullStarted = Deadline.now
        var readError: Error?
        do { try socket.readToEnd { received.append(contentsOf: $0) } } catch { readError = error }
        let seconds = Deadline.now - pullStarted
        let how = "\(String(format: "%.1f", seconds)) s, \(readError.map { "\($0)" } ?? ""); received \(received.count) bytes"
        #expect(readError == nil, "FILE PULL of a file with a lost chunk: the node did not close the connection after its ERR line (\(how))")
        // The ERR line follows the last byte sent, with no newline before it.
        let marker = Array("ERR ".utf8)
        let searchFrom = max(0, received.count - 1024)
        let errorStart = (searchFrom..<max(searchFrom, received.count - marker.count + 1)).first {
            Array(received[$0..<($0 + marker.count)]) == marker
        } ?? received.count
        let errorLine = String(decoding: received[errorStart...], as: UTF8.self)
        let body = Array(received[..<errorStart])
        #expect(errorLine.hasPrefix("ERR "), "FILE PULL did not end with an ERR line: \(errorLine.suffix(120))")
        let truePrefix = body.count < bytes.count && Array(bytes.prefix(body.count)) == body
        #expect(truePrefix, "FILE PULL sent \(body.count) bytes of \(bytes.count) before the error: not a true prefix")
    }

    /// The chunk file of `chunk` of `content` in member `node`'s chunk directory.
    static func chunkPath(_ ring: Ring, node: Int, content: FileContent, chunk: Int) -> String {
        "\(ring.members[node].chunksDirectory)/\(Ring.chunkFileName(content.id.hex, index: chunk, parts: content.parts))"
    }

    @Test("5. a flipped byte in a chunk copy: pull and a cold mount read return the right bytes, and the copy is repaired")
    func flippedByteIsRepaired() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-rot") { mounted in
            let ring = mounted.ring
            var generator = PseudoRandomBytes(seed: TestSeed.derived("flippedByte"))
            let files: [(name: String, bytes: [UInt8])] = [
                ("rot/pulled.bin", generator.bytes((3 << 20) + 2)),
                ("rot/local.bin", generator.bytes((2 << 20) + 7)),
                ("rot/mounted.bin", generator.bytes((3 << 20) + 1)),
            ]
            for (index, file) in files.enumerated() {
                #expect(try ring.push(index, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
                try writeLocalFile("\(mounted.workDirectory)/src-\(index)", file.bytes)
            }
            var damaged: [(name: String, path: String, crc: UInt32)] = []
            func damage(_ name: String, chunk: Int, copy: Int) throws -> (holder: Int, others: [Int]) {
                let content = try mounted.content(of: name)
                let placement = content.chunks[chunk]
                let holder = try #require(mounted.nodeIndex(of: placement.holders[copy]))
                let path = Self.chunkPath(ring, node: holder, content: content, chunk: chunk)
                try flipByte(path, at: Int(placement.lengthBytes / 2))
                #expect(try crc32cOfFile(path) != placement.crc32c)
                damaged.append((name, path, placement.crc32c))
                let holders = placement.holders.compactMap { mounted.nodeIndex(of: $0) }
                return (holder, (0..<ring.count).filter { !holders.contains($0) })
            }

            // (a) The primary copy of chunk 2 rots; `ouro pull` through a node that does not hold it asks the
            //     primary first, which must refuse its bad copy, and the reader fails over.
            let pulled = try damage(files[0].name, chunk: 1, copy: 0)
            let via = try #require(pulled.others.first)
            let result = try OuroTool.run(["pull", "--node", ring.address(via).description, files[0].name, "out-0"],
                                          in: mounted.workDirectory, timeoutSeconds: 60)
            #expect(result.status == .exited(0), "ouro pull: \(result)")
            let got = readLocalFile("\(mounted.workDirectory)/out-0")
            expectBytes(got, files[0].bytes, "ouro pull of \(files[0].name)")

            // (b) The second copy of chunk 3 rots; FILE PULL through that very node reads its own copy first.
            let local = try damage(files[1].name, chunk: 2, copy: 1)
            let pulledLocally = try ring.pull(local.holder, name: files[1].name)
            expectBytes(pulledLocally, files[1].bytes, "FILE PULL through the rotten holder")

            // (c) The primary copy of chunk 1 rots; a cold read through the mount.
            _ = try damage(files[2].name, chunk: 0, copy: 0)
            let read = try mounted.sh(#"cmp "$W/src-2" "$M/rot/mounted.bin" && echo same"#, timeoutSeconds: 60)
            #expect(read.status == .exited(0) && read.output == "same\n", "cold read through the mount: \(read)\n\(mounted.diagnostics())")

            // Each rotten copy is replaced by a good one.
            for entry in damaged {
                var last = "?"
                do {
                    try waitUntil("\(entry.path) to be repaired", timeoutSeconds: 20, intervalSeconds: 0.1, describe: { last }) {
                        guard let crc = try? crc32cOfFile(entry.path) else { last = "missing"; return false }
                        last = "CRC \(crc), want \(entry.crc)"
                        return crc == entry.crc
                    }
                } catch {
                    Issue.record("\(entry.name): \(error)\n\(ring.logs())")
                }
            }
            let problems = ReplicaChecker.problems(files: files.map(\.name), copies: 2, stores: ring.liveStores)
            #expect(problems.isEmpty, "\(problems)")
            for node in 0..<ring.count {
                for file in files {
                    expectBytes(try ring.pull(node, name: file.name), file.bytes, "\(file.name) from node \(node) after the repair")
                }
            }
        }
    }

    @Test("5c. both copies of a chunk rotten, or a copy deleted: reads never return wrong bytes; a deleted copy comes back")
    func bothCopiesRottenOrDeleted() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-rot2") { mounted in
            let ring = mounted.ring
            var generator = PseudoRandomBytes(seed: TestSeed.derived("bothCopiesRotten"))
            let rotten = generator.bytes((3 << 20) + 5)
            let deleted = generator.bytes((3 << 20) + 6)
            #expect(try ring.push(1, name: "rotten.bin", bytes: rotten).last == "OK")
            #expect(try ring.push(2, name: "deleted.bin", bytes: deleted).last == "OK")

            // Every copy of chunk 2 of rotten.bin is damaged: no read may succeed, none may hand out wrong bytes.
            let content = try mounted.content(of: "rotten.bin")
            for holder in content.chunks[1].holders {
                let node = try #require(mounted.nodeIndex(of: holder))
                try flipByte(Self.chunkPath(ring, node: node, content: content, chunk: 1), at: 777)
            }
            let read = try mounted.sh(#"cat "$M/rotten.bin" > "$W/rotten.out""#, timeoutSeconds: 90)
            #expect(read.status != .exited(0), "a read through the mount succeeded with every copy of a chunk rotten")
            #expect(read.seconds < 45, "the failing read took \(read.seconds) s")
            let delivered = readLocalFile(mounted.workDirectory + "/rotten.out") ?? []
            let truePrefix = delivered.count < rotten.count && Array(rotten.prefix(delivered.count)) == delivered
            #expect(truePrefix, "the mount delivered \(delivered.count) bytes that are not a true prefix of the file")
            let pulled = try OuroTool.run(["pull", "--node", ring.address(0).description, "rotten.bin", "rotten.pulled"],
                                          in: mounted.workDirectory, timeoutSeconds: 60)
            #expect(pulled.status != .exited(0), "ouro pull succeeded with every copy of a chunk rotten: \(pulled)")
            #expect(readLocalFile(mounted.workDirectory + "/rotten.pulled") == nil, "ouro pull left a file behind")
            // Repair never spreads a bad copy: no good copy of the chunk appears anywhere.
            usleep(1_500_000)
            let fileName = Ring.chunkFileName(content.id.hex, index: 1, parts: content.parts)
            for node in 0..<ring.count {
                let path = "\(ring.members[node].chunksDirectory)/\(fileName)"
                if let crc = try? crc32cOfFile(path) {
                    #expect(crc != content.chunks[1].crc32c, "a good copy of \(fileName) appeared on node \(node) from nowhere")
                }
            }

            // A copy deleted from disk (a lost file, a replaced disk) is fetched again from the other holder.
            let other = try mounted.content(of: "deleted.bin")
            let holder = try #require(mounted.nodeIndex(of: other.chunks[0].holders[0]))
            let path = Self.chunkPath(ring, node: holder, content: other, chunk: 0)
            #expect(unlink(path) == 0)
            try writeLocalFile(mounted.workDirectory + "/deleted.src", deleted)
            let cold = try mounted.sh(#"cmp "$W/deleted.src" "$M/deleted.bin" && echo same"#, timeoutSeconds: 60)
            #expect(cold.status == .exited(0) && cold.output == "same\n", "read with a deleted copy: \(cold)")
            do {
                try waitUntil("the deleted copy \(path) to come back", timeoutSeconds: 20, intervalSeconds: 0.1) {
                    (try? crc32cOfFile(path)) == other.chunks[0].crc32c
                }
            } catch {
                Issue.record("\(error)\n\(ring.logs())")
            }
            #expect(ReplicaChecker.problems(files: ["deleted.bin"], copies: 2, stores: ring.liveStores) == [])
        }
    }

    @Test("5d. a node whose disk was replaced (data directory wiped) comes back on its address and gets its copies again",
          arguments: [false, true])
    func wipedNodeGetsItsCopiesBack(restartAtOnce: Bool) throws {
        let ring = try FaultRing(nodes: 3, label: "fault-wiped")
        defer { ring.shutdown() }
        let files = Self.assortedFiles("wipedNode")
        for (index, file) in files.enumerated() {
            #expect(try ring.push(index % 3, name: file.name, bytes: file.bytes).last == "OK", "push \(file.name)")
        }
        ring.kill(1)
        if !restartAtOnce {
            try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2], dead: [1]), timeoutSeconds: 15)
        }
        try FileManager.default.removeItem(atPath: ring.members[1].dataDirectory)
        try ring.start(1)
        // It is a member again, with the whole catalog, and every chunk it holds is back on its new disk.
        var converged = true
        do {
            try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2], dead: []), timeoutSeconds: 10)
        } catch {
            Issue.record("the wiped node never learns the ring: \(error)")
            converged = false
        }
        var listed: [String] = []
        do {
            try waitUntil("the wiped node to list every file", timeoutSeconds: 10, describe: { "\(listed)" }) {
                listed = try Wire.list(ring.address(1)).keys.sorted()
                return Set(listed) == Set(files.map(\.name))
            }
        } catch {
            Issue.record("\(error)")
        }
        if converged {
            try ReplicaChecker.waitForFullReplication(files: files.map(\.name), copies: 2, stores: { ring.liveStores },
                                                      timeoutSeconds: 30, diagnostics: { ring.logs() })
        } else {
            let problems = ReplicaChecker.problems(files: files.map(\.name), copies: 2, stores: ring.liveStores)
            #expect(problems.isEmpty, "copies still missing 20 s after the wiped node came back: \(problems.prefix(6))")
        }
        let unreadable = try files.filter { try ring.pull(1, name: $0.name) != $0.bytes }.map(\.name)
        #expect(unreadable.isEmpty, "FILE PULL through the wiped node fails for \(unreadable)")
    }

    @Test("5b. a flipped byte nobody reads: the scrubber finds it and the copy is repaired")
    func scrubberRepairsUnreadRot() throws {
        var settings = FaultRing.Settings()
        settings.scrubIntervalSeconds = 1
        let ring = try FaultRing(nodes: 3, settings: settings, label: "fault-scrub")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("scrubber"))
        let bytes = generator.bytes((2 << 20) + 11)
        #expect(try ring.push(0, name: "quiet.bin", bytes: bytes).last == "OK")
        let content = try #require(try Wire.stat(ring.address(0), name: "quiet.bin").inode.content)
        let placement = content.chunks[1]
        let holder = try #require(ring.members.first { $0.address == placement.holders[1] })
        let path = "\(holder.chunksDirectory)/\(Ring.chunkFileName(content.id.hex, index: 1, parts: content.parts))"
        try flipByte(path, at: 12345)
        var last = "?"
        do {
            try waitUntil("the scrubber to repair \(path)", timeoutSeconds: 30, intervalSeconds: 0.1, describe: { last }) {
                guard let crc = try? crc32cOfFile(path) else { last = "missing"; return false }
                last = "CRC \(crc), want \(placement.crc32c)"
                return crc == placement.crc32c
            }
        } catch {
            Issue.record("\(error)\n\(ring.logs())")
        }
        #expect(ReplicaChecker.problems(files: ["quiet.bin"], copies: 2, stores: ring.liveStores) == [])
        for node in 0..<3 { expectBytes(try ring.pull(node, name: "quiet.bin"), bytes, "pull from node \(node)") }
    }
}
