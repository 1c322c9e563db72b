import Foundation
import Glibc
import OuroCore
import Testing

/// Every program in `examples/`, run as a user would run it, against real nodes and mounts, so that none can rot:
/// each script checks its own steps and exits non-zero when one does not hold.
@Suite struct ExamplesTests {
    /// The package's `examples/` folder (this file is `Tests/OuroTests/ExamplesTests.swift`).
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples").path

    /// Runs an example under `timeout` (SIGTERM first: the scripts clean up on it); returns its output.
    static func run(_ command: String, environment: [String: String], in directory: String, seconds: Int,
                    sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let assignments = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\(MountedRing.shellQuote($0.value))" }
        let script = "\(assignments.joined(separator: " ")) timeout --kill-after=20 \(seconds) \(command) < /dev/null 2>&1"
        let (status, output) = try ChildProcess.shell(script, in: directory, timeoutSeconds: Double(seconds) + 40)
        let text = String(decoding: output, as: UTF8.self)
        #expect(status == .exited(0), "\(command) → \(status):\n\(text.suffix(6000))", sourceLocation: sourceLocation)
        return text
    }

    /// Whether a line of `ouro status` in `output` shows `node` dead.
    static func showsDead(_ node: String, _ output: String) -> Bool {
        output.split(separator: "\n").contains { $0.split(separator: " ").map(String.init) == [node, "dead"] }
    }

    @Test func walkthroughSurvivesAKilledNodeAndRepairs() throws {
        let directory = try TestEnvironment.makeScratchDirectory("walkthrough")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let base = try PortAllocator.freePorts(count: 4)
        let output = try Self.run("\(Self.examples)/walkthrough.sh", environment: [
            "OURO": TestEnvironment.ouroExecutable, "BASE_PORT": "\(base)", "WORK": directory + "/tour"],
            in: directory, seconds: 240)
        // The steps it shows: the dead node, every file read back, the repair, the node back with the new file.
        #expect(Self.showsDead("127.0.0.1:\(base + 3)", output), "\(output.suffix(4000))")
        #expect(output.contains("every file reads back the same"))
        #expect(output.contains("written while node 4 was dead"))
        #expect(output.contains("== Done"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/tour"), "the walkthrough left its work directory")
    }

    /// With a cluster secret, `nc` over TCP is refused; the session goes through the node's Unix socket instead.
    @Test func netcatSessionOnARingWithASecret() throws {
        let ring = try Ring(nodes: 3, settings: Ring.Settings(secret: "nc-example-secret"), label: "nc-example-secret")
        defer { ring.shutdown() }
        let output = try Self.run("\(Self.examples)/nc-session.sh", environment: ["NODE": ring.address(0).description],
                                  in: ring.directory, seconds: 60)
        #expect(output.contains("this ring has a cluster secret: talking to \(ring.address(0)) through its Unix socket"), "\(output)")
        #expect(output.contains("(the same bytes as were pushed)") && output.contains("every answer had the documented form"), "\(output)")
    }

    @Test func netcatSessionGetsTheDocumentedAnswers() throws {
        let ring = try Ring(nodes: 3, label: "nc-example")
        defer { ring.shutdown() }
        let output = try Self.run("\(Self.examples)/nc-session.sh", environment: ["NODE": ring.address(1).description],
                                  in: ring.directory, seconds: 60)
        for command in ["NODE PING", "NODE STATUS", "NODE NEXT", "NETMAP DISCOVER", "NETMAP GET", "TOPOLOGY WALK",
                        "FILE PUSH", "FILE LIST", "FILE PULL"] {
            #expect(output.contains("> \(command)"), "\(command) not shown:\n\(output)")
        }
        #expect(output.contains("(the same bytes as were pushed)"))
        #expect(output.contains("every answer had the documented form"))
        // What it pushed is in the ring, on every node.
        for node in 0..<3 {
            let rows = try ring.list(node)
            #expect(rows.contains { $0.name == "holiday/photo.jpg" && $0.sizeBytes == 102_400 }, "node \(node): \(rows)")
        }
    }

    @Test func swiftClientPushesAndPullsTheSameBytes() throws {
        let ring = try Ring(nodes: 3, label: "swift-example")
        defer { ring.shutdown() }
        let client = (TestEnvironment.ouroExecutable as NSString).deletingLastPathComponent + "/ouro-example-client"
        var generator = PseudoRandomBytes(seed: TestSeed.derived("swift-example"))
        for (name, size) in [("big.bin", 9_000_011), ("small.txt", 17)] {
            let path = ring.directory + "/" + name
            try Data(generator.bytes(size)).write(to: URL(fileURLWithPath: path))
            let output = try Self.run("\(client) \(ring.address(2)) \(path) examples/\(name)", environment: [:],
                                      in: ring.directory, seconds: 60)
            #expect(output.contains("pulled: \(size) bytes, the same as \(path)"), "\(output)")
            #expect(output.contains("chunk 3 of 3"), "\(output)")
            let rows = try ring.list(0)
            #expect(rows.contains { $0.description == "examples/\(name),\(ring.address(2)),\(size)" }, "\(rows)")
        }
    }

    /// The unit files are what `netns-ring.sh` runs on each host; here systemd itself checks them, with the
    /// binary and env files where the test has them.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "needs systemd-analyze"))
    func systemdUnitsVerify() throws {
        let directory = try TestEnvironment.makeScratchDirectory("units")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        for (unit, name) in [("ouro-node@.service", "ouro-node@a.service"), ("ouro-mount.service", "ouro-mount.service")] {
            let text = try String(contentsOfFile: "\(Self.examples)/systemd/\(unit)", encoding: .utf8)
            #expect(text.contains("Restart=always"), "\(unit) is not restarted when it dies")
            try text.replacingOccurrences(of: "/usr/local/bin/ouro", with: TestEnvironment.ouroExecutable)
                .replacingOccurrences(of: "/etc/ouro/", with: "\(Self.examples)/systemd/")
                .write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
        }
        _ = try Self.run("systemd-analyze verify \(directory)/ouro-node@a.service \(directory)/ouro-mount.service", environment: [:],
                         in: directory, seconds: 60)
    }

    @Test(.enabled(if: NetnsLab.isAvailable, "needs permission to create network namespaces"))
    func severalHostsInNetworkNamespaces() throws {
        let directory = try TestEnvironment.makeScratchDirectory("netns-example")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let output = try Self.run("\(Self.examples)/netns-ring.sh", environment: ["OURO": TestEnvironment.ouroExecutable],
                                  in: directory, seconds: 300)
        #expect(Self.showsDead("10.200.7.3:7000", output), "\(output.suffix(4000))")
        #expect(output.contains("written while host c was cut off"))
        #expect(output.contains("== Done"))
        let namespaces = try ChildProcess.shell("ip netns list", in: directory).output
        #expect(!String(decoding: namespaces, as: UTF8.self).contains("ox"), "namespaces left behind")
    }
}
