import Foundation
import Glibc
import OuroCore
import Testing

/// A ring started with a cluster secret: nothing but `NODE PING` and `NODE AUTH` runs for a TCP client that has
/// not sent it, a refused request's payload is never read as commands, and the nodes, the mount and `ouro` that
/// have the secret work as usual.
@Suite struct ClusterSecretTests {
    static let secret = "correct-horse-battery-staple"

    @Test func requestsNeedTheSecret() throws {
        // Nodes on TCP between themselves (no Unix sockets): every relay hop and catalog update sends the secret.
        let ring = try Ring(nodes: 3, settings: Ring.Settings(secret: Self.secret, environment: ["OURO_LOCAL_ROUTES": "0"]),
                            label: "secret")
        defer { ring.shutdown() }
        // Pushed through node 1 (with the secret): the relay and the catalog broadcast between nodes carry it too.
        let bytes = Array("the ring keeps its secret\n".utf8)
        #expect(try ring.push(1, name: "kept.txt", bytes: bytes).last == "OK")
        #expect(try ring.pull(2, name: "kept.txt") == bytes)

        func raw(_ node: Int, _ text: String) throws -> [String] {
            let socket = try TestSocket(ring.address(node), timeoutSeconds: 10)
            try socket.send(text)
            socket.shutdownWrite()
            return try socket.readLinesToEnd()
        }
        #expect(try raw(0, "NODE PING\n") == ["PONG"])
        // Pings keep no unauthenticated connection open for ever: after a few, the secret or goodbye.
        let pings = try raw(0, String(repeating: "NODE PING\n", count: Limits.unauthenticatedPings + 1))
        #expect(pings == Array(repeating: "PONG", count: Limits.unauthenticatedPings)
                + ["ERR DENIED this ring has a cluster secret: send NODE AUTH <secret> first"])
        #expect(try raw(0, "FILE LIST\n") == ["ERR DENIED this ring has a cluster secret: send NODE AUTH <secret> first"])
        #expect(try raw(0, "NODE AUTH wrong\nFILE LIST\n") == ["ERR DENIED wrong cluster secret"])
        #expect(try raw(0, "NODE AUTH \(Self.secret)\nFILE LIST\n") == ["OK", "name,start,size", "kept.txt,127.0.0.1:\(ring.address(1).port),26"])
        // A refused push: its body is not run as commands (NODE LEAVE would stop the node).
        #expect(try raw(0, "FILE PUSH 11 x\nNODE LEAVE\n") == ["ERR DENIED this ring has a cluster secret: send NODE AUTH <secret> first"])
        #expect(ring.ping(0) && ring.isRunning(0))
        #expect(try raw(0, "NODE LEAVE\n").first?.hasPrefix("ERR DENIED") == true)
        #expect(ring.ping(0) && ring.isRunning(0))

        // `ouro` without the secret is refused with the node's reason; with it (option or environment), it works.
        let directory = ring.directory
        let refused = try OuroTool.run(["ls", "--node", ring.address(0).description], in: directory)
        #expect(refused.status != .exited(0) && refused.output.contains("ERR DENIED"), "\(refused)")
        let listed = try OuroTool.run(["ls", "--node", ring.address(0).description, "--secret-file", ring.secretPath], in: directory)
        #expect(listed.status == .exited(0) && listed.output.contains("kept.txt"), "\(listed)")
        let (status, output) = try ChildProcess.shell(
            "OURO_SECRET_FILE=\(ring.secretPath) OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) pull --node \(ring.address(2)) kept.txt -",
            in: directory, timeoutSeconds: 30)
        #expect(status == .exited(0) && output == bytes, "\(String(decoding: output, as: UTF8.self))")
    }

    @Test func secretFiles() {
        #expect(ClusterSecret.parse("  s3cret \n") == "s3cret")
        #expect(ClusterSecret.parse("two words") == nil)
        #expect(ClusterSecret.parse("\n") == nil)
        #expect(ClusterSecret.parse(String(repeating: "x", count: 257)) == nil)
        #expect(ClusterSecret.matches("abc", "abc") && !ClusterSecret.matches("abd", "abc") && !ClusterSecret.matches("ab", "abc"))
    }
}
