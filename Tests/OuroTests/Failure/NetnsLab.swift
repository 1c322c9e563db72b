import Foundation
import Glibc
import OuroCore

/// Several "hosts" on this machine: network namespaces of our own, each with one veth into a bridge that lives in
/// a hub namespace of our own (10.200.1.0/24), so that traffic stays between our namespaces and the host's network
/// is never touched. Node `i` runs in `<prefix>-n<i>` at 10.200.1.<i+1>:7000; the test talks to the ring from a
/// client namespace (10.200.1.100) through shell commands. `shutdown` (also run by `deinit`) stops the nodes and
/// deletes every namespace.
final class NetnsLab: @unchecked Sendable {
    static let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip"
    static let port: UInt16 = 7000

    /// Whether this test run may create network namespaces (root with CAP_SYS_ADMIN and CAP_NET_ADMIN, `ip` installed).
    static let isAvailable: Bool = {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: ip),
              FileManager.default.isExecutableFile(atPath: "/bin/bash") else { return false }
        let name = "ouro-probe-\(getpid())"
        guard let added = try? ChildProcess.shell("\(ip) netns add \(name)", in: "/tmp", timeoutSeconds: 10),
              added.status == .exited(0) else { return false }
        let veth = try? ChildProcess.shell("\(ip) -n \(name) link add pa type veth peer name pb && \(ip) -n \(name) link add pbr type bridge",
                                           in: "/tmp", timeoutSeconds: 10)
        _ = try? ChildProcess.shell("\(ip) netns del \(name)", in: "/tmp", timeoutSeconds: 10)
        return veth?.status == .exited(0)
    }()

    let prefix: String
    let directory: String
    let nodeCount: Int
    private(set) var namespaces: [String] = []
    private(set) var processes: [ChildProcess?]
    private var isShutDown = false

    var hub: String { "\(prefix)-hub" }
    var client: String { "\(prefix)-cl" }
    func namespace(_ node: Int) -> String { "\(prefix)-n\(node)" }
    func address(_ node: Int) -> NodeAddress { NodeAddress(host: "10.200.1.\(node + 1)", port: Self.port) }
    func dataDirectory(_ node: Int) -> String { "\(directory)/node-\(node)" }
    func logPath(_ node: Int) -> String { "\(directory)/node-\(node).log" }

    init(nodes: Int, label: String) throws {
        nodeCount = nodes
        Self.sweepOnce()
        prefix = "ouro\(getpid())"
        processes = Array(repeating: nil, count: nodes)
        directory = try TestEnvironment.makeScratchDirectory(label)
        do {
            try addNamespace(hub)
            try run("\(Self.ip) -n \(hub) link add br0 type bridge && \(Self.ip) -n \(hub) link set br0 up")
            for node in 0..<nodes { try attach(namespace(node), port: "v\(node)", address: "10.200.1.\(node + 1)") }
            try attach(client, port: "vcl", address: "10.200.1.100")
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    /// Deletes namespaces left by test runs that died (`ouro<pid>-…` whose process is gone).
    private static let swept: Void = {
        guard let (status, output) = try? ChildProcess.shell("\(ip) netns list", in: "/tmp", timeoutSeconds: 10),
              status == .exited(0) else { return }
        for line in String(decoding: output, as: UTF8.self).split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("ouro"), let dash = name.firstIndex(of: "-"),
                  let owner = pid_t(name[name.index(name.startIndex, offsetBy: 4)..<dash]),
                  owner != getpid(), kill(owner, 0) != 0 && errno == ESRCH else { continue }
            _ = try? ChildProcess.shell("\(ip) netns del \(name)", in: "/tmp", timeoutSeconds: 10)
        }
    }()

    static func sweepOnce() { _ = swept }

    private func addNamespace(_ name: String) throws {
        _ = try? ChildProcess.shell("\(Self.ip) netns del \(name)", in: directory, timeoutSeconds: 10)  // a stale one
        try run("\(Self.ip) netns add \(name)")
        namespaces.append(name)
        try run("\(Self.ip) -n \(name) link set lo up")
    }

    /// A namespace with `eth0` at `address`/24, its veth peer `port` in the hub's bridge.
    private func attach(_ name: String, port: String, address: String) throws {
        try addNamespace(name)
        try run("\(Self.ip) -n \(hub) link add \(port) type veth peer name eth0 netns \(name)")
        try run("\(Self.ip) -n \(hub) link set \(port) master br0 up")
        try run("\(Self.ip) -n \(name) addr add \(address)/24 dev eth0 && \(Self.ip) -n \(name) link set eth0 up")
    }

    /// Runs a shell command that must succeed.
    @discardableResult
    func run(_ script: String, timeoutSeconds: Double = 20) throws -> String {
        let (status, output) = try ChildProcess.shell(script, in: directory, timeoutSeconds: timeoutSeconds)
        let text = String(decoding: output, as: UTF8.self)
        guard status == .exited(0) else { throw TestFailure("\(status): \(script)\n\(text)") }
        return text
    }

    /// Runs `bash -c script` in the client namespace, bounded by `timeout`; returns its exit status and output.
    func inClient(_ script: String, timeoutSeconds: Int = 20) throws -> (status: ChildProcess.Termination, output: String) {
        // nsenter --net joins only the network namespace: unlike `ip netns exec` it makes no private copy of the
        // machine's mounts, which would pin every FUSE mount open (and keep its driver running) until this ends.
        let command = "nsenter --net=/run/netns/\(client) timeout \(timeoutSeconds) /bin/bash -c \(MountedRing.shellQuote(script))"
        let (status, output) = try ChildProcess.shell(command, in: directory, timeoutSeconds: Double(timeoutSeconds) + 10)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// One request from the client namespace: the reply lines up to `OK` or `ERR …` (or just the first when `oneLine`).
    func request(_ node: Int, _ line: String, oneLine: Bool = false) throws -> [String] {
        let address = address(node)
        let script = """
            exec 3<>/dev/tcp/\(address.host)/\(address.port) || exit 3
            printf '%s\\n' \(MountedRing.shellQuote(line)) >&3
            while IFS= read -r l <&3; do
              printf '%s\\n' "$l"
              case "$l" in OK|ERR*) break;; esac
              \(oneLine ? "break" : ":")
            done
            """
        let result = try inClient(script, timeoutSeconds: 10)
        guard result.status == .exited(0) else { throw TestFailure("request \(line) to node \(node): \(result.status) \(result.output)") }
        return result.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    func netmap(_ node: Int) throws -> [String] {
        let lines = try request(node, "NETMAP GET")
        guard lines.last == "OK" else { throw TestFailure("NETMAP GET on node \(node): \(lines)") }
        return Array(lines.dropLast())
    }

    func expectedNetmap(dead: Set<Int>) -> [String] {
        (0..<nodeCount).map { "\(address($0))=\(dead.contains($0) ? "Dead" : "Alive")" }
    }

    func waitForNetmap(_ expected: [String], on nodes: [Int], timeoutSeconds: Double) throws {
        for node in nodes {
            var last: [String] = []
            try waitUntil("node \(node)'s netmap to be \(expected)", timeoutSeconds: timeoutSeconds, intervalSeconds: 0.2,
                          describe: { "\(last)" }) {
                last = try netmap(node)
                return last == expected
            }
        }
    }

    /// `ouro …` in the client namespace (relative paths are in the scratch directory).
    func ouro(_ arguments: [String], timeoutSeconds: Int = 60) throws -> (status: ChildProcess.Termination, output: String) {
        let command = ([TestEnvironment.ouroExecutable] + arguments).map(MountedRing.shellQuote).joined(separator: " ")
        return try inClient("cd \(MountedRing.shellQuote(directory)) && exec \(command)", timeoutSeconds: timeoutSeconds)
    }

    /// Starts node `index` in its namespace and waits until it answers a ping from the client namespace.
    func start(_ node: Int, gossipIntervalMilliseconds: Int = 200, copies: Int = 2) throws {
        let process = try ChildProcess(executable: "/usr/bin/nsenter",
                                       arguments: ["--net=/run/netns/\(namespace(node))", TestEnvironment.ouroExecutable, "node",
                                                   "--listen", address(node).description, "--data", dataDirectory(node),
                                                   "--gossip-interval", "\(gossipIntervalMilliseconds)", "--copies", "\(copies)",
                                                   "--insecure"],  // the lab's own network, ours alone
                                       outputPath: logPath(node))
        processes[node] = process
        try? "\(process.pid)\n".write(toFile: "\(directory)/node-\(node).pid", atomically: false, encoding: .utf8)
        try waitUntil("node \(node) to answer", timeoutSeconds: 20, intervalSeconds: 0.1, describe: { process.outputTail() }) {
            if let ended = process.termination { throw TestFailure("node \(node) \(ended): \(process.outputTail())") }
            return (try? request(node, "NODE PING", oneLine: true)) == ["PONG"]
        }
    }

    /// Takes node `index`'s only link down (`up: false`) or up again.
    func setLink(_ node: Int, up: Bool) throws {
        try run("\(Self.ip) -n \(namespace(node)) link set eth0 \(up ? "up" : "down")")
    }

    func logs(bytes: Int = 2500) -> String {
        (0..<nodeCount).map { "--- node \($0) \(address($0))\n" + MountedRing.fileTail(logPath($0), bytes: bytes) }.joined(separator: "\n")
    }

    /// Stops the nodes (SIGTERM, then SIGKILL), deletes every namespace, removes the scratch directory.
    func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        let running = processes.compactMap { $0 }.filter(\.isRunning)
        for process in running { process.send(SIGTERM) }
        let deadline = Deadline(seconds: 5)
        for process in running where process.wait(seconds: deadline.remaining) == nil { process.forceKill() }
        for name in namespaces.reversed() {
            _ = try? ChildProcess.shell("\(Self.ip) netns del \(name)", in: "/tmp", timeoutSeconds: 10)
        }
        TestEnvironment.removeScratchDirectory(directory)
    }
}
