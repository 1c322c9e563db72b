import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// A ring with a cluster secret encrypts every TCP connection (TLS 1.3 keyed by the secret): between nodes (relay
/// hops, catalog broadcasts, pings), and from `ouro` and mounts. Plain text gets only `NODE PING` and `NODE LOCAL`;
/// a wrong secret fails the handshake; and a capture of every loopback packet shows neither the secret, nor a file's
/// bytes or name, nor a request.
@Suite struct EncryptionTests {
    static let secret = "tls-ring-secret-0123456789"
    static let refusal = "ERR DENIED this ring has a cluster secret and encrypts its traffic: connect with TLS keyed by the secret "
        + "(ouro, a mount or a node given --secret-file), or use the node's Unix socket (NODE LOCAL names it; docs/protocol.md)"

    @Test func plainTextAndWrongSecretsAreRefused() throws {
        let ring = try Ring(nodes: 3, settings: Ring.Settings(secret: Self.secret, environment: ["OURO_LOCAL_ROUTES": "0"]),
                            label: "tls")
        defer { ring.shutdown() }
        // Over TLS (the test's socket runs the handshake): pushed through node 1, relayed to the others, pulled
        // from node 2.
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        #expect(try ring.push(1, name: "kept.bin", bytes: bytes).last == "OK")
        #expect(try ring.pull(2, name: "kept.bin") == bytes)

        func plain(_ text: String) throws -> [String] {
            let socket = try TestSocket(ring.address(0), timeoutSeconds: 10)
            try socket.send(text)
            socket.shutdownWrite()
            return try socket.readLinesToEnd()
        }
        #expect(try plain("NODE PING\n") == ["PONG"])
        let local = try plain("NODE LOCAL\n")
        #expect(local.count == 1 && local[0].hasPrefix("OK /") && local[0].hasSuffix("node.sock"), "\(local)")
        #expect(try plain("FILE LIST\n") == [Self.refusal])
        // The plain-text challenge is not a way around the encryption.
        #expect(try plain("NODE HELLO \(ChallengeAuth.nonce())\nFILE LIST\n") == [Self.refusal])
        #expect(try plain("FILE PUSH 5 x\nNODE LEAVE\n") == [Self.refusal])

        // TLS keyed by another secret: the handshake fails, and the node stays up.
        let wrong = try TestSocket(ring.address(0), timeoutSeconds: 10)
        #expect(throws: (any Error).self) { try wrong.startTLS(secret: "another-secret") }
        #expect(ring.ping(0) && ring.isRunning(0))

        // `ouro` over TCP: with the secret it works; with a wrong one every command says why; asked not to encrypt
        // (--insecure), the node refuses it.
        let directory = ring.directory
        try "not-the-secret\n".write(toFile: directory + "/wrong", atomically: true, encoding: .utf8)
        let tcp = "OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable)"
        let (listed, listing) = try ChildProcess.shell("\(tcp) ls --node \(ring.address(0)) --secret-file \(ring.secretPath) 2>&1",
                                                       in: directory, timeoutSeconds: 30)
        #expect(listed == .exited(0) && String(decoding: listing, as: UTF8.self).contains("kept.bin"))
        for command in ["ls", "status", "verify", "pull kept.bin -"] {
            let (status, output) = try ChildProcess.shell("\(tcp) \(command) --node \(ring.address(1)) --secret-file \(directory)/wrong 2>&1",
                                                          in: directory, timeoutSeconds: 30)
            let text = String(decoding: output, as: UTF8.self)
            #expect(status != .exited(0) && text.contains("TLS handshake") && text.contains("different cluster secret"), "\(command): \(text)")
        }
        let (plainStatus, plainOutput) = try ChildProcess.shell(
            "\(tcp) ls --insecure --node \(ring.address(0)) --secret-file \(ring.secretPath) 2>&1", in: directory, timeoutSeconds: 30)
        #expect(plainStatus != .exited(0) && String(decoding: plainOutput, as: UTF8.self).contains("encrypts its traffic"))
    }

    /// A mount over TCP: with a wrong secret it does not come up, and says why; with the right one it works.
    @Test func aMountNeedsTheRightSecret() throws {
        try MountedRing.with(mountOn: [], nodeEnvironment: ["OURO_LOCAL_ROUTES": "0"], secret: Self.secret, label: "tls-mount") { ring in
            let directory = ring.workDirectory
            try "not-the-secret\n".write(toFile: directory + "/wrong", atomically: true, encoding: .utf8)
            let mountpoint = directory + "/wrong-mount"
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            defer { _ = try? ChildProcess.shell("fusermount3 -uz \(mountpoint) 2>/dev/null", in: directory, timeoutSeconds: 10) }
            let (status, output) = try ChildProcess.shell(
                "OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) mount --node \(ring.ring.address(0)) \(mountpoint) --secret-file \(directory)/wrong 2>&1",
                in: directory, timeoutSeconds: 30)
            let text = String(decoding: output, as: UTF8.self)
            #expect(status != .exited(0) && text.contains("different cluster secret"), "\(text)")
            #expect(!MountTable.isMounted(mountpoint))
            try ring.mount(onNode: 0, environment: ["OURO_LOCAL_ROUTES": "0"])
            #expect(try ring.ok(#"printf 'through TLS\n' > "$M/tls.txt" && cat "$M/tls.txt""#) == "through TLS\n")
        }
    }

    /// A client with a secret, at a ring without one: a clear error at once, not a hang until a timeout.
    @Test func aSecretAgainstAnOpenRingFailsFast() throws {
        let ring = try Ring(nodes: 1, label: "tls-open")
        defer { ring.shutdown() }
        try "some-secret\n".write(toFile: ring.directory + "/secret", atomically: true, encoding: .utf8)
        let started = monotonicSeconds()
        let (status, output) = try ChildProcess.shell(
            "OURO_LOCAL_ROUTES=0 \(TestEnvironment.ouroExecutable) ls --node \(ring.address(0)) --secret-file \(ring.directory)/secret 2>&1",
            in: ring.directory, timeoutSeconds: 30)
        let text = String(decoding: output, as: UTF8.self)
        #expect(status != .exited(0) && text.contains("closed the connection during the TLS handshake"), "\(text)")
        #expect(monotonicSeconds() - started < 20, "took \(monotonicSeconds() - started) s")
    }

    /// Every packet on the loopback interface, read with a raw packet socket (root, as CI runs) while a file is
    /// pushed through a 3-node ring and pulled back, all over TCP. With encryption: no file byte, no file name, no
    /// request word and not the secret. The same run with `--insecure` shows the file's bytes (the capture works).
    @Test func aWireCaptureShowsNothingInTheClear() throws {
        let marker = "ouro-plaintext-marker-7f3a9c "
        let bytes = Array(String(repeating: marker, count: 80_000).utf8)  // 2.3 MB: chunks relayed between nodes
        let name = "captured-file-name.bin"
        for encrypted in [true, false] {
            let ring = try Ring(nodes: 3, settings: Ring.Settings(secret: Self.secret, insecure: !encrypted,
                                                                  environment: ["OURO_LOCAL_ROUTES": "0"]),
                                label: encrypted ? "tls-capture" : "plain-capture")
            defer { ring.shutdown() }
            let capture = ring.directory + "/capture.bin"
            // Only this ring's connections (one end is a node's port): other tests talk plain text on loopback too.
            let script = """
                import socket, struct, sys
                ports = {int(port) for port in sys.argv[2:]}
                sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
                sniffer.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: keep up with loopback
                sniffer.bind(("lo", 0))
                out = open(sys.argv[1], "wb")
                print("capturing", flush=True)
                while True:
                    packet, address = sniffer.recvfrom(1 << 18)
                    if address[2] == socket.PACKET_OUTGOING or packet[12:14] != b"\\x08\\x00": continue  # each once; IPv4
                    ip = packet[14:]
                    if ip[9] != 6: continue  # TCP
                    tcp = ip[(ip[0] & 15) * 4:]
                    source, destination = struct.unpack("!HH", tcp[:4])
                    if source in ports or destination in ports:
                        out.write(tcp[(tcp[12] >> 4) * 4:])
                        out.flush()
                """
            try script.write(toFile: ring.directory + "/capture.py", atomically: true, encoding: .utf8)
            let sniffer = try ChildProcess(executable: "/usr/bin/env", arguments: ["python3", ring.directory + "/capture.py", capture]
                                                                + (0..<ring.count).map { "\(ring.address($0).port)" },
                                           outputPath: ring.directory + "/capture.log")
            defer { ProcessTable.killTree(sniffer) }
            try waitUntil("the capture to start", timeoutSeconds: 20) {
                (try? String(contentsOfFile: ring.directory + "/capture.log", encoding: .utf8))?.contains("capturing") == true
            }
            let file = ring.directory + "/in.bin"
            try writeLocalFile(file, bytes)
            let tool = "OURO_LOCAL_ROUTES=0 OURO_SECRET_FILE=\(ring.secretPath)\(encrypted ? "" : " OURO_INSECURE=1") \(TestEnvironment.ouroExecutable)"
            for command in ["push \(file) \(name) --node \(ring.address(0))", "pull \(name) \(ring.directory)/out.bin --node \(ring.address(2))",
                            "ls --node \(ring.address(1))"] {
                let (status, output) = try ChildProcess.shell("\(tool) \(command) 2>&1", in: ring.directory, timeoutSeconds: 60)
                #expect(status == .exited(0), "\(command): \(String(decoding: output, as: UTF8.self))")
            }
            expectBytes(FileManager.default.contents(atPath: ring.directory + "/out.bin").map { Array($0) }, bytes, "the pulled file")
            // The catalog broadcast and pings between nodes keep going meanwhile; a moment for the capture to write.
            usleep(500_000)
            let seen = try #require(FileManager.default.contents(atPath: capture))
            // Every byte of the file crosses at least twice (pushed, relayed, pulled): the capture kept up.
            #expect(seen.count > 2 * bytes.count, "the capture holds only \(seen.count) bytes")
            func appears(_ text: String) -> Bool { seen.range(of: Data(text.utf8)) != nil }
            #expect(!appears(Self.secret), "the secret crossed the wire")
            if encrypted {
                // Each 5 bytes or more: not found in that much ciphertext by chance.
                for clear in [marker, name, "FILE PUSH", "CHUNK", "NODE ", "NETMAP"] {
                    #expect(!appears(clear), "\"\(clear)\" crossed the wire in the clear")
                }
            } else {
                #expect(appears(marker) && appears(name) && appears("FILE PUSH"), "the capture did not see the plain-text run")
            }
        }
    }
}
