import Foundation
import Glibc
import OuroCore
import Testing

/// `ouro plan leave|join` and `ouro leave`: the plan lists what would move, the leave then moves exactly that, and an
/// interrupted leave loses nothing and resumes.
@Suite struct PlanTests {
    static func ouro(_ ring: Ring, _ arguments: String) throws -> (status: ChildProcess.Termination, output: String) {
        let (status, output) = try ChildProcess.shell("\(TestEnvironment.ouroExecutable) \(arguments) 2>&1", in: ring.directory,
                                                      timeoutSeconds: 120)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// Every chunk's holders, by file name, as node `via` has them.
    static func placements(_ ring: Ring, _ names: [String], via node: Int) throws -> [String: [[NodeAddress]]] {
        var result: [String: [[NodeAddress]]] = [:]
        for name in names { result[name] = try #require(try ring.stat(node, name: name).inode.content).chunks.map(\.holders) }
        return result
    }

    static func push(_ ring: Ring, files count: Int, seed: String) throws -> [(name: String, bytes: [UInt8])] {
        var generator = PseudoRandomBytes(seed: TestSeed.derived(seed))
        var files: [(String, [UInt8])] = []
        for index in 0..<count {
            let file = ("f/\(index).bin", generator.bytes(20_000 + 7_919 * index))
            #expect(try ring.push(index % ring.count, name: file.0, bytes: file.1).last == "OK")
            files.append(file)
        }
        return files
    }

    @Test func leaveMovesExactlyWhatThePlanSaid() throws {
        let ring = try Ring(nodes: 4, label: "plan-leave")
        defer { ring.shutdown() }
        let files = try Self.push(ring, files: 12, seed: "plan-leave")
        let names = files.map(\.name)
        let leaving = ring.address(3)
        let before = try Self.placements(ring, names, via: 0)

        // A join moves nothing.
        let join = try Self.ouro(ring, "plan join 127.0.0.1:1 --node \(ring.address(0))")
        #expect(join.status == .exited(0) && join.output.contains("nothing moves"), "\(join.output)")

        let shown = try Self.ouro(ring, "plan --json leave \(leaving) --node \(ring.address(1))")
        #expect(shown.status == .exited(0), "\(shown.output)")
        let plan = try WireJSON.decode(MovePlan.self, from: Array(shown.output.utf8))
        // Every copy the node holds is in the plan, once.
        let held = before.values.flatMap { $0 }.filter { $0.contains(leaving) }.count
        #expect(plan.moves.count == held && held > 0 && plan.stranded == 0)
        #expect(plan.moves.allSatisfy { $0.from == leaving && $0.to != leaving })
        let text = try Self.ouro(ring, "plan leave \(leaving) --node \(ring.address(0))")
        #expect(text.output.contains("Leaving \(leaving): it holds \(held) chunk copies") && text.output.contains("Estimated time:"),
                "\(text.output)")

        let left = try Self.ouro(ring, "leave --node \(leaving)")
        #expect(left.status == .exited(0) && left.output.contains("OK left the ring (\(held) of \(held) chunk copies given up)"), "\(left.output)")
        _ = ring.members[3].process?.wait(seconds: 10)
        try ring.waitForNetmap((0..<3).map { "\(ring.address($0))=Alive" }, on: [0, 1, 2], timeoutSeconds: 10)

        // What moved: each chunk that was on the leaving node lost it and gained exactly the planned holder.
        let after = try Self.placements(ring, names, via: 2)
        var expected: [String: [NodeAddress]] = [:]
        for move in plan.moves { expected["\(move.contentID) \(move.index)"] = move.to.map { [$0] } ?? [] }
        var copiedBytes: UInt64 = 0
        for name in names {
            let content = try #require(try ring.stat(2, name: name).inode.content)
            for (index, holders) in before[name]!.enumerated() {
                let now = after[name]![index]
                #expect(!now.contains(leaving), "\(name) chunk \(index) still on the node that left")
                guard holders.contains(leaving) else {
                    #expect(now == holders, "\(name) chunk \(index) was not the leaving node's, and changed")
                    continue
                }
                let gained = now.filter { !holders.contains($0) }
                #expect(gained == expected["\(content.id) \(index)"], "\(name) chunk \(index): gained \(gained)")
                if !gained.isEmpty { copiedBytes += content.chunks[index].lengthBytes }
            }
        }
        #expect(copiedBytes == plan.bytesCopied && copiedBytes > 0)
        for (name, bytes) in files {
            #expect(try ring.pull(0, name: name) == bytes, "\(name)")
            try ring.expectRecordedPlacementHolds(of: name, via: 1, copies: 2)
        }
    }

    @Test func anInterruptedLeaveLosesNothingAndResumes() throws {
        let ring = try Ring(nodes: 3, label: "plan-resume")
        defer { ring.shutdown() }
        let files = try Self.push(ring, files: 30, seed: "plan-resume")
        let leaving = ring.address(2)
        let first = try WireJSON.decode(MovePlan.self, from: Array(try Self.ouro(ring, "plan --json leave \(leaving) --node \(leaving)").output.utf8))
        #expect(first.moves.count > 20)

        // The client goes away after the first chunk: the node stops there.
        let socket = try ring.connect(2)
        try socket.send("NODE LEAVE\n")
        let line = try socket.readLine()
        #expect(line == "MOVED 1/\(first.moves.count) \(first.moves[0].to == nil ? 0 : first.moves[0].lengthBytes)/\(first.bytesCopied)", "\(line ?? "nil")")
        socket.close()
        var remaining = first
        try waitUntilStable("the leave to stop", timeoutSeconds: 20, stableSeconds: 1, intervalSeconds: 0.2) {
            let seen = remaining.moves.count
            remaining = try WireJSON.decode(MovePlan.self, from: Array(try Self.ouro(ring, "plan --json leave \(leaving) --node \(ring.address(0))").output.utf8))
            return remaining.moves.count == seen
        }
        #expect(remaining.moves.count < first.moves.count && remaining.moves.count > 0, "stopped with \(remaining.moves.count) of \(first.moves.count) left")
        #expect(ring.isRunning(2))
        try ring.waitForNetmap(ring.expectedNetmap(dead: []), on: [0, 1, 2], timeoutSeconds: 10)
        // Nothing was lost meanwhile: every file reads back from every node, with its copies.
        for (name, bytes) in files {
            for node in 0..<3 { #expect(try ring.pull(node, name: name) == bytes, "\(name) from node \(node)") }
            try ring.expectRecordedPlacementHolds(of: name, via: 0, copies: 2)
        }

        // Run again: it does what was left, and only that.
        let resumed = try Self.ouro(ring, "leave --node \(leaving)")
        #expect(resumed.status == .exited(0) && resumed.output.contains("(\(remaining.moves.count) of \(remaining.moves.count) chunk copies given up)"),
                "\(resumed.output)")
        _ = ring.members[2].process?.wait(seconds: 10)
        try ring.waitForNetmap([0, 1].map { "\(ring.address($0))=Alive" }, on: [0, 1], timeoutSeconds: 10)
        for (name, bytes) in files {
            #expect(try ring.pull(1, name: name) == bytes, "\(name)")
            let holders = try ring.stat(0, name: name).inode.content?.chunks.flatMap(\.holders) ?? []
            #expect(!holders.contains(leaving))
            try ring.expectRecordedPlacementHolds(of: name, via: 0, copies: 2)
        }
    }
}
