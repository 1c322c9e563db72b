import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// A ring started with a cluster secret and `--insecure` (plain text, the secret proved by the challenge; the default,
/// TLS, is `EncryptionTests`): nothing but `NODE PING`, `NODE LOCAL` and the challenge runs for a TCP client that has
/// not proved it knows the secret; the secret itself never crosses the wire (`NODE AUTH` is refused
/// even with the right one), a recorded proof does not work again, a refused request's payload is never read as
/// commands, and the nodes, the mount and `ouro` that have the secret work as usual.
@Suite struct ClusterSecretTests {
    static let secret = "correct-horse-battery-staple"
    static let refusal = "ERR DENIED this ring has a cluster secret: prove it first (NODE HELLO, NODE PROVE)"

    /// `NODE HELLO` with `clientNonce`; checks the node's proof; returns the node's nonce.
    static func hello(_ socket: TestSocket, clientNonce: String, secret: String = ClusterSecretTests.secret) throws -> String {
        try socket.send("NODE HELLO \(clientNonce)\n")
        let fields = try #require(try socket.readLine()).split(separator: " ").map(String.init)
        try #require(fields.count == 3 && fields[0] == "CHALLENGE", "\(fields)")
        // The node proves it knows the secret first, over both nonces.
        #expect(fields[2] == ChallengeAuth.proof(secret: Self.secret, role: .node, clientNonce: clientNonce, serverNonce: fields[1]))
        return fields[1]
    }

    @Test func requestsNeedTheSecret() throws {
        // Nodes on TCP between themselves (no Unix sockets): every relay hop and catalog update proves the secret.
        let ring = try Ring(nodes: 3, settings: Ring.Settings(secret: Self.secret, insecure: true, environment: ["OURO_LOCAL_ROUTES": "0"]),
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
        // Pings keep no unauthenticated connection open for ever: after a few, the proof or goodbye.
        let pings = try raw(0, String(repeating: "NODE PING\n", count: Limits.unauthenticatedPings + 1))
        #expect(pings == Array(repeating: "PONG", count: Limits.unauthenticatedPings) + [Self.refusal])
        #expect(try raw(0, "FILE LIST\n") == [Self.refusal])
        // The secret in the clear is refused, right or wrong: it must never cross the wire.
        for offered in ["wrong", Self.secret] {
            let answer = try raw(0, "NODE AUTH \(offered)\nFILE LIST\n")
            #expect(answer.count == 1 && answer[0].hasPrefix("ERR DENIED NODE AUTH would send the secret in the clear"), "\(answer)")
        }
        #expect(try raw(0, "NODE PROVE \(String(repeating: "a", count: 64))\nFILE LIST\n") == ["ERR DENIED NODE PROVE before NODE HELLO"])

        // The challenge: the right proof lets the connection in.
        let clientNonce = ChallengeAuth.nonce()
        let socket = try TestSocket(ring.address(0), timeoutSeconds: 10)
        let serverNonce = try Self.hello(socket, clientNonce: clientNonce)
        let prove = "NODE PROVE \(ChallengeAuth.proof(secret: Self.secret, role: .client, clientNonce: clientNonce, serverNonce: serverNonce))\n"
        try socket.send(prove + "FILE LIST\n")
        socket.shutdownWrite()
        #expect(try socket.readLinesToEnd() == ["OK", "name,start,size", "kept.txt,127.0.0.1:\(ring.address(1).port),26"])
        // Replayed on a new connection (same client nonce, so only the node's fresh nonce differs): refused.
        let replay = try TestSocket(ring.address(0), timeoutSeconds: 10)
        let freshNonce = try Self.hello(replay, clientNonce: clientNonce)
        #expect(freshNonce != serverNonce)
        try replay.send(prove + "FILE LIST\n")
        replay.shutdownWrite()
        #expect(try replay.readLinesToEnd() == ["ERR DENIED wrong cluster secret"])
        // The node's proof reflected back as the client's: refused (the roles differ).
        let reflect = try TestSocket(ring.address(0), timeoutSeconds: 10)
        let reflectedNonce = try Self.hello(reflect, clientNonce: clientNonce)
        try reflect.send("NODE PROVE \(ChallengeAuth.proof(secret: Self.secret, role: .node, clientNonce: clientNonce, serverNonce: reflectedNonce))\nFILE LIST\n")
        reflect.shutdownWrite()
        #expect(try reflect.readLinesToEnd() == ["ERR DENIED wrong cluster secret"])
        // A proof made with another secret: refused.
        let other = try TestSocket(ring.address(0), timeoutSeconds: 10)
        let otherNonce = try Self.hello(other, clientNonce: clientNonce)
        try other.send("NODE PROVE \(ChallengeAuth.proof(secret: "another", role: .client, clientNonce: clientNonce, serverNonce: otherNonce))\n")
        other.shutdownWrite()
        #expect(try other.readLinesToEnd() == ["ERR DENIED wrong cluster secret"])

        // A refused push: its body is not run as commands (NODE LEAVE would stop the node).
        #expect(try raw(0, "FILE PUSH 11 x\nNODE LEAVE\n") == [Self.refusal])
        #expect(ring.ping(0) && ring.isRunning(0))
        #expect(try raw(0, "NODE LEAVE\n").first?.hasPrefix("ERR DENIED") == true)
        #expect(ring.ping(0) && ring.isRunning(0))

        // `ouro` without the secret over TCP is refused with the node's reason; with it (option or environment), it
        // works; on this machine without it, through the node's Unix socket (its own user only), it works too.
        let directory = ring.directory
        let (refusedStatus, refusedOutput) = try ChildProcess.shell(
            "OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) ls --node \(ring.address(0)) 2>&1", in: directory, timeoutSeconds: 30)
        #expect(refusedStatus != .exited(0) && String(decoding: refusedOutput, as: UTF8.self).contains("ERR DENIED"))
        let listed = try OuroTool.run(["ls", "--node", ring.address(0).description, "--secret-file", ring.secretPath], in: directory)
        #expect(listed.status == .exited(0) && listed.output.contains("kept.txt"), "\(listed)")
        let local = try OuroTool.run(["ls", "--node", ring.address(0).description], in: directory)
        #expect(local.status == .exited(0) && local.output.contains("kept.txt"), "\(local)")
        let (status, output) = try ChildProcess.shell(
            "OURO_SECRET_FILE=\(ring.secretPath) OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) pull --node \(ring.address(2)) kept.txt -",
            in: directory, timeoutSeconds: 30)
        #expect(status == .exited(0) && output == bytes, "\(String(decoding: output, as: UTF8.self))")
        // With the wrong secret, every command says so (by the challenge: OURO_INSECURE=1).
        try "not-the-secret\n".write(toFile: directory + "/wrong", atomically: true, encoding: .utf8)
        for command in ["ls", "status", "verify", "pull kept.txt -"] {
            let (wrongStatus, wrongOutput) = try ChildProcess.shell(
                "OURO_INSECURE=1 OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) \(command) --node \(ring.address(1)) --secret-file \(directory)/wrong 2>&1",
                in: directory, timeoutSeconds: 30)
            let text = String(decoding: wrongOutput, as: UTF8.self)
            #expect(wrongStatus != .exited(0) && text.contains("proved a different cluster secret"), "\(command): \(text)")
        }
    }

    /// What crosses the wire between `ouro` and a node, read by a proxy in between, when the ring does not encrypt:
    /// the challenge does, the secret never does.
    @Test func theSecretNeverCrossesTheWire() throws {
        let ring = try Ring(nodes: 2, settings: Ring.Settings(secret: Self.secret, insecure: true), label: "secret-wire")
        defer { ring.shutdown() }
        let proxyPort = try PortAllocator.freePort()
        let capture = ring.directory + "/capture.bin"
        let script = """
            import socket, sys, threading
            listen = socket.socket(); listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listen.bind(("127.0.0.1", int(sys.argv[1]))); listen.listen(16)
            out = open(sys.argv[3], "ab"); lock = threading.Lock()
            def pipe(a, b):
                while True:
                    data = a.recv(65536)
                    if not data: break
                    with lock: out.write(data); out.flush()
                    b.sendall(data)
                try: b.shutdown(socket.SHUT_WR)
                except OSError: pass
            while True:
                client, _ = listen.accept()
                server = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
                threading.Thread(target=pipe, args=(client, server), daemon=True).start()
                threading.Thread(target=pipe, args=(server, client), daemon=True).start()
            """
        try script.write(toFile: ring.directory + "/proxy.py", atomically: true, encoding: .utf8)
        let proxy = try ChildProcess(executable: "/usr/bin/env", arguments: ["python3", ring.directory + "/proxy.py", "\(proxyPort)",
                                                                            "\(ring.address(0).port)", capture],
                                     outputPath: ring.directory + "/proxy.log")
        defer { ProcessTable.killTree(proxy) }
        try waitUntil("the proxy to listen", timeoutSeconds: 20) { (try? TestSocket(NodeAddress(host: "127.0.0.1", port: proxyPort), timeoutSeconds: 2)) != nil }
        let file = ring.directory + "/in.txt"
        try "bytes through the proxy\n".write(toFile: file, atomically: true, encoding: .utf8)
        for command in ["push \(file) through.txt", "ls", "status", "pull through.txt \(ring.directory)/out.txt"] {
            let (status, output) = try ChildProcess.shell(
                "OURO_INSECURE=1 OURO_LOCAL_ROUTES=0 OURO_SECRET_FILE=\(ring.secretPath) \(TestEnvironment.ouroExecutable) \(command) --node 127.0.0.1:\(proxyPort) 2>&1",
                in: ring.directory, timeoutSeconds: 30)
            #expect(status == .exited(0), "\(command): \(String(decoding: output, as: UTF8.self))")
        }
        let seen = try #require(FileManager.default.contents(atPath: capture))
        let text = String(decoding: seen, as: UTF8.self)
        #expect(text.contains("NODE HELLO") && text.contains("CHALLENGE") && text.contains("NODE PROVE"), "the proxy saw no handshake")
        #expect(!text.contains(Self.secret) && !text.contains("NODE AUTH"), "the secret crossed the wire")
    }

    @Test func secretFiles() {
        #expect(ClusterSecret.parse("  s3cret \n") == "s3cret")
        #expect(ClusterSecret.parse("two words") == nil)
        #expect(ClusterSecret.parse("\n") == nil)
        #expect(ClusterSecret.parse(String(repeating: "x", count: 257)) == nil)
        #expect(ClusterSecret.matches("abc", "abc") && !ClusterSecret.matches("abd", "abc") && !ClusterSecret.matches("ab", "abc"))
    }
}
