import Foundation
import Glibc
import OuroCore
import Testing

/// The `ouro` executable the tests start, and its client commands against a real ring.
@Suite struct CommandLineTests {
    /// `swift build --build-tests` puts `ouro` next to the test bundle (`/proc/self/exe`), because the test target
    /// depends on it: every ring in these tests runs that binary.
    @Test func ouroSitsNextToTheTestBundle() throws {
        let bundle = TestEnvironment.testExecutable
        let ouro = TestEnvironment.ouroExecutable
        #expect((ouro as NSString).deletingLastPathComponent == (bundle as NSString).deletingLastPathComponent)
        #expect(access(ouro, X_OK) == 0, "\(ouro) is not an executable")
        let directory = try TestEnvironment.makeScratchDirectory("help")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let (status, output) = try ChildProcess.shell("'\(ouro)' --help", in: directory)
        #expect(status == .exited(0))
        #expect(String(decoding: output, as: UTF8.self).contains("node"))
    }

    /// A node reachable from other machines needs a cluster secret, or `--insecure` said out loud.
    @Test func anOpenNodeOnTheNetworkIsRefused() throws {
        let directory = try TestEnvironment.makeScratchDirectory("insecure")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let port = try PortAllocator.freePort()
        let ouro = "'\(TestEnvironment.ouroExecutable)'"
        for listen in ["0.0.0.0:\(port)", "127.0.0.1:\(port) --http 0.0.0.0:\(port + 1)"] {
            let (status, output) = try ChildProcess.shell("\(ouro) node --listen \(listen) --data \(directory)/d 2>&1", in: directory, timeoutSeconds: 20)
            let text = String(decoding: output, as: UTF8.self)
            #expect(status != .exited(0) && text.contains("has no cluster secret") && text.contains("--insecure"), "\(listen): \(text)")
        }
        // With --insecure it starts (and answers on every address, loopback included).
        let node = try ChildProcess(executable: TestEnvironment.ouroExecutable,
                                    arguments: ["node", "--listen", "0.0.0.0:\(port)", "--data", directory + "/d", "--insecure"],
                                    outputPath: directory + "/node.log")
        defer { node.stop() }
        try? "\(node.pid)\n".write(toFile: directory + "/node.pid", atomically: false, encoding: .utf8)
        try waitUntil("the insecure node to answer", timeoutSeconds: 20) { Wire.ping(NodeAddress(host: "127.0.0.1", port: port)) }
    }

    @Test func pushListPullHeal() throws {
        let ring = try Ring(nodes: 2, label: "cli")
        defer { ring.shutdown() }
        let directory = ring.directory
        let ouro = "'\(TestEnvironment.ouroExecutable)'"
        let node0 = "--node \(ring.address(0))"
        let node1 = "--node \(ring.address(1))"
        var generator = PseudoRandomBytes(seed: TestSeed.derived("cli"))
        let bytes = generator.bytes(200_003)
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/input.bin"))

        func run(_ command: String) throws -> String {
            let (status, output) = try ChildProcess.shell("cd '\(directory)' && \(command)", in: directory)
            let text = String(decoding: output, as: UTF8.self)
            #expect(status == .exited(0), "\(command): \(text)")
            return text
        }
        let pushed = try run("\(ouro) push \(node0) input.bin 'docs/my input.bin'")
        #expect(pushed.contains("FILE 200003 bytes split into 2 chunks and distributed"), "\(pushed)")
        let listed = try run("\(ouro) ls \(node1)")
        #expect(listed.contains("docs/my input.bin"), "\(listed)")
        _ = try run("\(ouro) pull \(node1) 'docs/my input.bin' output.bin")
        let output = try Data(contentsOf: URL(fileURLWithPath: directory + "/output.bin"))
        #expect([UInt8](output) == bytes)
        let healed = try run("\(ouro) heal \(node0)")
        #expect(healed.contains("OK network healed"), "\(healed)")
        let status = try run("\(ouro) status \(node1)")
        #expect(status.contains(ring.address(0).description) && status.contains(ring.address(1).description), "\(status)")
        #expect(ring.ping(0) && ring.ping(1))
    }
}
