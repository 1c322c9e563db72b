// libFuzzer target: random sessions against live nodes in this process (fuzz/run-node.sh builds it with SwiftPM's
// --sanitize=fuzzer, so the node's own code is instrumented and guides the mutations). Two nodes, each a ring of
// one: an open one (every command reachable) and one with a cluster secret (plain text meets the refusals; TLS meets
// OpenSSL). An input's first byte picks the node (even: open, odd: closed); the rest is sent on a fresh TCP
// connection, which is then half-closed and read to its end. After every input the node must still answer NODE
// PING: a node that stopped serving is a crash (abort, input kept). FuzzCorpusTests replays fuzz/corpus/node.
import Glibc
import Logging
import OuroClient
import OuroCore
import OuroNode
import SystemPackage

nonisolated(unsafe) var nodes: [Node] = []

func startNode(_ name: String, secret: String?) -> Node {
    let directory = "/tmp/ouro-node-fuzz/\(getpid())-\(name)"
    var configuration = NodeConfiguration(listen: NodeAddress(host: "127.0.0.1", port: 0), dataDirectory: FilePath(directory))
    configuration.copies = 1
    configuration.maxFileSizeBytes = 1 << 20  // what the fuzzer pushes stays small on disk
    configuration.secret = secret
    var logger = Logger(label: "fuzz.\(name)")
    logger.logLevel = .critical
    do {
        let node = try Node(configuration: configuration, logger: logger)
        node.start()
        return node
    } catch {
        fatalError("cannot start the \(name) node: \(error)")
    }
}

/// Sends `bytes` on a new connection, half-closes, and reads until the node closes (bounded by timeouts).
func session(_ address: NodeAddress, _ bytes: UnsafeRawBufferPointer) {
    guard let socket = try? Socket.connect(to: address, timeoutMilliseconds: 2000) else { return }
    socket.setTimeouts(seconds: 2)
    try? socket.write(bytes)
    socket.shutdownWrite()
    var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    let deadline = monotonicSeconds() + 5
    while monotonicSeconds() < deadline {
        guard let count = try? scratch.withUnsafeMutableBytes({ try socket.read(into: $0) }), count > 0 else { break }
    }
}

func answersPing(_ address: NodeAddress) -> Bool {
    for _ in 0..<3 {  // a node busy with the last session's work gets a moment
        if let socket = try? Socket.connect(to: address, timeoutMilliseconds: 2000) {
            socket.setTimeouts(seconds: 5)
            let reader = FramedReader(source: socket)
            if (try? socket.write("NODE PING\n")) != nil, (try? reader.readLine()) == "PONG" { return true }
        }
        usleep(200_000)
    }
    return false
}

// SwiftPM builds a fuzzer's executable as a library (-parse-as-library): libFuzzer's main calls these.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<Int32>?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    signal(SIGPIPE, SIG_IGN)
    nodes = [startNode("open", secret: nil), startNode("closed", secret: "node-fuzzer-secret")]
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let node = nodes[Int(data[0] & 1)]
    // NODE LEAVE takes the node out of service on purpose (FuzzCorpusTests skips it too).
    let body = UnsafeBufferPointer(start: data + 1, count: size - 1)
    guard !String(decoding: body, as: UTF8.self).contains("NODE LEAVE") else { return 0 }
    session(node.address, UnsafeRawBufferPointer(body))
    guard answersPing(node.address) else {
        fputs("node-fuzzer: the \(data[0] & 1 == 0 ? "open" : "closed") node stopped answering NODE PING\n", stderr)
        abort()
    }
    return 0
}
