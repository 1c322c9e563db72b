import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// Short-circuit reads: a client on the nodes' machine gets chunk files from a node's Unix socket and reads them
/// directly; only from the node it asked for, only copies that pass the node's check.
@Suite struct LocalReadTests {
    @Test func chunkFilesFromTheLocalSocket() throws {
        let ring = try Ring(nodes: 3, label: "local-read")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("chunkFilesFromTheLocalSocket"))
        let bytes = generator.bytes(3_000_017)
        #expect(try ring.push(0, name: "f.bin", bytes: bytes).last == "OK")
        let content = try #require(ring.stat(1, name: "f.bin").inode.content)
        let local = LocalChunkFiles(pool: ConnectionPool())
        // Every chunk, from its primary, through the node's socket: the same bytes as the file's range.
        var offset = 0
        for (index, placement) in content.chunks.enumerated() {
            var buffer = [UInt8](repeating: 0, count: Int(placement.lengthBytes))
            let read = try buffer.withUnsafeMutableBytes { raw in
                try local.readLocal(content.chunkID(index), holders: placement.holders, offset: 0, into: raw)
            }
            #expect(read, "chunk \(index) not readable locally")
            #expect(buffer == Array(bytes[offset..<(offset + buffer.count)]), "chunk \(index)")
            offset += buffer.count
        }
        // A node answers only for itself: asking node 0's socket on behalf of node 1 is refused by the client.
        let chunkOnZero = try #require(content.chunks.indices.first { content.chunks[$0].holders.first == ring.address(0) })
        let strangers = LocalChunkFiles(pool: ConnectionPool())
        var probe = [UInt8](repeating: 0, count: 16)
        let wrongHolder = try probe.withUnsafeMutableBytes { raw in
            try strangers.readLocal(content.chunkID(chunkOnZero), holders: [ring.address(1)], offset: 0, into: raw)
        }
        #expect(!wrongHolder, "node 1 does not hold that chunk; its socket must not hand out node 0's file")
        // The full reader through the local files returns the whole file.
        var whole = [UInt8](repeating: 0, count: bytes.count)
        let count = try whole.withUnsafeMutableBytes { raw in
            try ContentReader(content: content, pool: ConnectionPool(), local: LocalChunkFiles(pool: ConnectionPool())).read(offset: 0, into: raw)
        }
        #expect(count == bytes.count && whole == bytes)
        // A malformed request on the socket gets an error line and no descriptor.
        let reply = try rawLocalRequest(ring.members[0].dataDirectory + "/node.sock", "CHUNK OPEN nonsense\n")
        #expect(reply.hasPrefix("ERR BAD_REQUEST"), "\(reply)")
    }

    /// Clients on the nodes' machine talk to them over their Unix socket (`LocalRoutes`), which serves the whole
    /// protocol; a route holds only for the node process it was checked with.
    @Test func ordinarySessionsOverTheLocalSocket() throws {
        let ring = try Ring(nodes: 2, label: "local-route")
        defer { ring.shutdown() }
        let path = ring.members[0].dataDirectory + "/node.sock"
        #expect(try rawLocalRequest(path, "NODE PING\n") == "PONG\n")

        let connection = try Connection(to: ring.address(0))
        #expect(Self.family(of: connection.socket.fd) == AF_UNIX, "a connection to a node on this machine goes over its socket")
        try connection.send("NODE STATUS")
        #expect(try connection.readReply() == "PORT \(ring.address(0))")
        #expect(try NodeClient(ring.address(1), pool: ConnectionPool()).list().isEmpty)

        // Node 0 stops and another process listens at its socket's path: nothing meant for node 0 reaches it.
        ring.stop(0)
        unlink(path)
        let impostor = try Self.listen(path)
        defer { close(impostor); unlink(path) }
        #expect(throws: (any Error).self) { try Connection(to: ring.address(0)) }
        var buffer = [UInt8](repeating: 0, count: 64)
        var waiting = pollfd(fd: impostor, events: Int16(POLLIN), revents: 0)
        if poll(&waiting, 1, 0) == 1 {
            let stray = accept(impostor, nil, nil)
            defer { close(stray) }
            #expect(recv(stray, &buffer, buffer.count, Int32(MSG_DONTWAIT)) <= 0, "a request went to the wrong process")
        }
    }

    private static func family(of fd: Int32) -> Int32 {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int32(address.ss_family)
    }

    private static func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        _ = withUnsafeMutableBytes(of: &address.sun_path) { raw in path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && Glibc.listen(fd, 8) == 0, "listen on \(path): \(String(cString: strerror(errno)))")
        return fd
    }

    private func rawLocalRequest(_ path: String, _ line: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        _ = withUnsafeMutableBytes(of: &address.sun_path) { raw in path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(connected == 0, "connect \(path): \(String(cString: strerror(errno)))")
        _ = line.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let count = recv(fd, &buffer, buffer.count, 0)
        return String(decoding: buffer[..<max(0, count)], as: UTF8.self)
    }
}
