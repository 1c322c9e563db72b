import Foundation
import Glibc
import Testing

/// `ouro up`: starts and wires a ring, restarts a node that dies (also after a rebuild replaced the binary on disk),
/// stops every child on Ctrl-C, and brings the same ring back with every file from the same data directory.
@Suite struct LauncherTests {
    @Test func superviseStopAndComeBack() throws {
        let directory = try TestEnvironment.makeScratchDirectory("up")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let binary = directory + "/ouro"
        // Copied by `cp`, not by this process: a file this process has open for writing could leak into a child
        // that a parallel test spawns meanwhile, and exec of it would fail with ETXTBSY.
        try Self.copy(TestEnvironment.ouroExecutable, to: binary, in: directory)
        let data = directory + "/data"
        let base = try PortAllocator.freePorts(count: 3)
        let addresses = (0..<3).map { "127.0.0.1:\(base + UInt16($0))" }
        let metricsBase = try PortAllocator.freePorts(count: 4)
        var up: ChildProcess?
        defer {
            up?.stop(graceSeconds: 15)
            for pid in Self.nodeProcesses(data: data) { kill(pid, SIGKILL) }
        }
        let upLog = directory + "/up.log"
        func startsLogged() -> Int {
            ((try? String(contentsOfFile: upLog, encoding: .utf8)) ?? "").components(separatedBy: "Press Ctrl-C").count - 1
        }
        func startUp() throws -> ChildProcess {
            let before = startsLogged()
            let child = try ChildProcess(executable: binary, arguments: [
                "up", "--nodes", "3", "--base-port", "\(base)", "--data", data, "--gossip-interval", "200",
                "--http", "127.0.0.1:\(metricsBase)"], outputPath: upLog)
            try Self.waitFor("the ring to come up", seconds: 60, child) { startsLogged() > before }
            return child
        }
        func run(_ command: String) throws -> String {
            let (status, output) = try ChildProcess.shell("cd '\(directory)' && \(command)", in: directory)
            let text = String(decoding: output, as: UTF8.self)
            #expect(status == .exited(0), "\(command): \(text)")
            return text
        }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("up"))
        let bytes = generator.bytes(3_000_017)
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/input.bin"))

        up = try startUp()
        let pids = Self.nodeProcesses(data: data)
        try #require(pids.count == 3, "expected 3 node processes, found \(pids); \(up!.outputTail())")
        _ = try run("./ouro push --node \(addresses[0]) input.bin docs/in.bin")
        // Closed by default: `ouro up` made a cluster secret (its owner's only) and gave it to every node; a client
        // that reaches the ring over TCP without it is refused, one on this machine gets in by the node's own socket.
        var secretInfo = stat()
        #expect(stat(data + "/secret", &secretInfo) == 0 && secretInfo.st_mode & 0o777 == 0o600)
        #expect(up!.outputTail().contains("Cluster secret: \(data)/secret (made now)"), "\(up!.outputTail())")
        let (refusedStatus, refused) = try ChildProcess.shell("cd '\(directory)' && OURO_LOCAL_ROUTES=0 ./ouro ls --node \(addresses[1]) 2>&1",
                                                              in: directory)
        #expect(refusedStatus != .exited(0) && String(decoding: refused, as: UTF8.self).contains("ERR DENIED"))
        #expect(try run("OURO_LOCAL_ROUTES=0 ./ouro ls --node \(addresses[1]) --secret-file \(data)/secret").contains("docs/in.bin"))
        #expect(try run("./ouro ls --node \(addresses[1])").contains("docs/in.bin"))
        // Each node serves its metrics on the port `--http` gave it, and `ouro up` printed where.
        #expect(up!.outputTail().contains("dashboard http://127.0.0.1:\(metricsBase + 2)/"), "\(up!.outputTail())")
        let scraped = try MetricsTests.fetch("http://127.0.0.1:\(metricsBase + 2)/metrics", in: directory).body
        #expect(MetricsTests.samples(scraped)["ouro_node_members_alive"] == 3, "\(scraped)")

        // A rebuild replaces the binary with a new file of the same name; then node 1 dies.
        try Self.copy(binary, to: binary + ".new", in: directory)
        #expect(rename(binary + ".new", binary) == 0)
        let victim = try #require(Self.nodeProcesses(data: data, node: 1).first)
        kill(victim, SIGKILL)
        try Self.waitFor("node 1 to be restarted", seconds: 30, up!) {
            let now = Self.nodeProcesses(data: data, node: 1)
            // Polled quietly: `run` would record every refused attempt as a failure.
            return !now.isEmpty && !now.contains(victim)
                && (try? ChildProcess.shell("cd '\(directory)' && ./ouro status --node \(addresses[1])", in: directory))?.status == .exited(0)
        }
        let log = up!.outputTail()
        #expect(log.contains("node \(addresses[1]) exited") && !log.contains("cannot start"), "\(log)")
        _ = try run("./ouro pull --node \(addresses[1]) docs/in.bin out1.bin")
        #expect(FileManager.default.contents(atPath: directory + "/out1.bin").map { [UInt8]($0) } == bytes)

        // Ctrl-C: every child stops, nothing is left running.
        up!.send(SIGINT)
        #expect(up!.wait(seconds: 30) == .exited(0), "\(up!.outputTail())")
        up = nil
        #expect(Self.nodeProcesses(data: data).isEmpty)

        // The same data directory: the same ring, with the file.
        up = try startUp()
        let listed = try run("./ouro ls --node \(addresses[2])")
        #expect(listed.contains("docs/in.bin"), "\(listed)")
        _ = try run("./ouro pull --node \(addresses[2]) docs/in.bin out2.bin")
        #expect(FileManager.default.contents(atPath: directory + "/out2.bin").map { [UInt8]($0) } == bytes)
    }

    static func copy(_ source: String, to destination: String, in directory: String) throws {
        let (status, output) = try ChildProcess.shell("cp '\(source)' '\(destination)'", in: directory)
        guard status == .exited(0) else { throw TestFailure("cp failed: \(String(decoding: output, as: UTF8.self))") }
    }

    /// Node processes of the ring in `data` (all, or node `node`), found by their command line.
    static func nodeProcesses(data: String, node: Int? = nil) -> [pid_t] {
        let wanted = node.map { "--data\0\(data)/node-\($0)\0" } ?? "--data\0\(data)/node-"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry),
                  let commandLine = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline"),
                  String(decoding: commandLine, as: UTF8.self).contains(wanted) else { return nil }
            return pid
        }
    }

    static func waitFor(_ what: String, seconds: Double, _ up: ChildProcess, _ condition: () throws -> Bool) throws {
        let deadline = Deadline(seconds: seconds)
        while !(try condition()) {
            guard !deadline.passed, up.isRunning else {
                throw TestFailure("timed out waiting for \(what) (ouro up \(up.isRunning ? "running" : "exited")): \(up.outputTail())")
            }
            usleep(100_000)
        }
    }
}
