import Foundation
import Glibc
import OuroClient
import OuroCore

/// A ring of real `ouro node` processes on 127.0.0.1, each with its own port and data directory under one scratch
/// directory. `init` starts them, wires them with `NODE NEXT` and `NETMAP DISCOVER`, and waits until every node
/// sees the whole ring alive. `shutdown` (also run by `deinit`, so on every failure path) stops every process
/// (SIGTERM, then SIGKILL) and removes the directory.
final class Ring: @unchecked Sendable {
    struct Settings {
        var copies = 2
        var gossipIntervalMilliseconds = 200
        var maxFileSizeBytes: UInt64? = nil
        /// A cluster secret: the nodes get it in a file, and `connect` proves it first (by TLS keyed with it, or by
        /// the challenge where `insecure`).
        var secret: String? = nil
        /// The nodes run `--insecure`: with a secret, plain text proved by the challenge instead of TLS.
        var insecure = false
        /// Added to each node's environment.
        var environment: [String: String] = [:]
        /// Each node's data directory on a tmpfs of this many bytes (a small disk to fill; needs root).
        var diskBytes: Int? = nil
        /// Each node serves its dashboard and metrics (`--http`) on a port of its own (`Member.httpPort`).
        var http = false
    }

    final class Member {
        let index: Int
        fileprivate(set) var address: NodeAddress
        let dataDirectory: String
        let logPath: String
        fileprivate(set) var process: ChildProcess?
        /// With `Settings.http`: the node's dashboard port (kept across restarts).
        fileprivate(set) var httpPort: UInt16?

        init(index: Int, address: NodeAddress, dataDirectory: String, logPath: String) {
            self.index = index
            self.address = address
            self.dataDirectory = dataDirectory
            self.logPath = logPath
        }

        var chunksDirectory: String { dataDirectory + "/chunks" }
    }

    let directory: String
    let settings: Settings
    var secretPath: String { directory + "/secret" }
    private(set) var members: [Member] = []
    private var isShutDown = false

    var count: Int { members.count }

    init(nodes count: Int, settings: Settings = Settings(), label: String = "ring", wire: Bool = true) throws {
        precondition(count >= 1)
        self.settings = settings
        directory = try TestEnvironment.makeScratchDirectory(label)
        do {
            if let secret = settings.secret {
                try (secret + "\n").write(toFile: secretPath, atomically: true, encoding: .utf8)
                chmod(secretPath, 0o600)
            }
            for index in 0..<count {
                let member = Member(index: index, address: NodeAddress(host: "127.0.0.1", port: 1),
                                    dataDirectory: "\(directory)/node-\(index)", logPath: "\(directory)/node-\(index).log")
                members.append(member)
                try startFresh(member)
            }
            if wire { try self.wire() }
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    func address(_ index: Int) -> NodeAddress { members[index].address }

    // MARK: Processes

    private func arguments(for member: Member) -> [String] {
        var arguments = ["node", "--listen", member.address.description, "--data", member.dataDirectory,
                         "--gossip-interval", "\(settings.gossipIntervalMilliseconds)", "--copies", "\(settings.copies)"]
        if let max = settings.maxFileSizeBytes { arguments += ["--max-file-size", "\(max)"] }
        if settings.secret != nil { arguments += ["--secret-file", secretPath] }
        if settings.insecure { arguments.append("--insecure") }
        if let port = member.httpPort { arguments += ["--http", "127.0.0.1:\(port)"] }
        return arguments
    }

    /// Starts a member on a new port, retrying with another port if the node could not bind its own.
    private func startFresh(_ member: Member) throws {
        if let bytes = settings.diskBytes {
            try FileManager.default.createDirectory(atPath: member.dataDirectory, withIntermediateDirectories: true)
            let (status, output) = try ChildProcess.shell("mount -t tmpfs -o size=\(bytes) ouro-test \(MountedRing.shellQuote(member.dataDirectory))",
                                                          in: directory, timeoutSeconds: 10)
            guard status == .exited(0) else { throw TestFailure("cannot mount a tmpfs: \(String(decoding: output, as: UTF8.self))") }
        }
        var lastError: Error?
        for _ in 0..<5 {
            member.address = NodeAddress(host: "127.0.0.1", port: try PortAllocator.freePort())
            if settings.http { member.httpPort = try PortAllocator.freePort() }
            do {
                try start(member.index)
                return
            } catch {
                lastError = error
                guard let log = try? String(contentsOfFile: member.logPath, encoding: .utf8),
                      log.contains("cannot listen") || log.contains("in use") else { throw error }
            }
        }
        throw lastError!
    }

    /// Starts member `index` (again) on its port and data directory, and waits until it answers `NODE PING`.
    func start(_ index: Int, timeoutSeconds: Double = 20) throws {
        let member = members[index]
        guard member.process?.isRunning != true else { throw TestFailure("node \(index) is already running") }
        let process = try ChildProcess(executable: TestEnvironment.ouroExecutable, arguments: arguments(for: member),
                                       outputPath: member.logPath, environment: settings.environment)
        member.process = process
        try? "\(process.pid)\n".write(toFile: "\(directory)/node-\(index).pid", atomically: false, encoding: .utf8)
        let deadline = Deadline(seconds: timeoutSeconds)
        while true {
            if let ended = process.termination {
                throw TestFailure("node \(index) (\(member.address)) \(ended) while starting:\n\(process.outputTail())")
            }
            if ping(index) { return }
            if deadline.passed {
                process.forceKill()
                throw TestFailure("node \(index) (\(member.address)) did not answer within \(timeoutSeconds) s:\n\(process.outputTail())")
            }
            usleep(20_000)
        }
    }

    /// SIGTERM (then SIGKILL after a grace period); returns how the node ended.
    @discardableResult
    func stop(_ index: Int) -> ChildProcess.Termination? {
        members[index].process?.stop()
    }

    /// SIGKILL: a crash.
    func kill(_ index: Int) {
        members[index].process?.forceKill()
    }

    func isRunning(_ index: Int) -> Bool { members[index].process?.isRunning ?? false }

    /// Stops every node (all get SIGTERM at once, stragglers SIGKILL) and removes the scratch directory.
    func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        let running = members.compactMap(\.process).filter(\.isRunning)
        for process in running { process.send(SIGTERM) }
        let deadline = Deadline(seconds: 5)
        for process in running where process.wait(seconds: deadline.remaining) == nil { process.forceKill() }
        if settings.diskBytes != nil {
            for member in members { _ = try? ChildProcess.shell("umount -l \(MountedRing.shellQuote(member.dataDirectory))", in: "/tmp", timeoutSeconds: 10) }
        }
        TestEnvironment.removeScratchDirectory(directory)
    }

    /// The last lines each node logged (for failure messages).
    func logs() -> String {
        members.map { "--- node \($0.index) \($0.address)\n" + ($0.process?.outputTail(bytes: 2000) ?? "") }.joined(separator: "\n")
    }

    // MARK: Wiring

    /// `NODE NEXT` around the ring (a single node is its own successor), `NETMAP DISCOVER` from node 0, then waits
    /// until every node's netmap lists the whole ring alive, in order from node 0.
    func wire() throws {
        for index in members.indices {
            let next = address((index + 1) % count)
            let reply = try request(index, "NODE NEXT \(next)")
            guard reply == ["OK next=\(next)"] else { throw TestFailure("NODE NEXT on node \(index) answered \(reply)") }
        }
        let reply = try request(0, "NETMAP DISCOVER")
        guard reply == ["OK"] else { throw TestFailure("NETMAP DISCOVER answered \(reply)") }
        try waitForNetmap(expectedNetmap(dead: []), timeoutSeconds: 15)
    }

    /// The `NETMAP GET` lines (without `OK`) of the whole ring in order, with `dead` members marked dead.
    func expectedNetmap(dead: Set<Int>) -> [String] {
        members.map { "\($0.address)=\(dead.contains($0.index) ? "Dead" : "Alive")" }
    }

    /// Waits until each of `on` (default: every running node) reports `expected` from `NETMAP GET`.
    func waitForNetmap(_ expected: [String], on nodes: [Int]? = nil, timeoutSeconds: Double) throws {
        for index in nodes ?? members.indices.filter(isRunning) {
            var last: [String] = []
            try waitUntil("node \(index)'s netmap to be \(expected)", timeoutSeconds: timeoutSeconds, describe: { "\(last)" }) {
                last = try netmap(index)
                return last == expected
            }
        }
    }

    // MARK: Requests

    func connect(_ index: Int, timeoutSeconds: Int = 30) throws -> TestSocket {
        let socket = try TestSocket(address(index), timeoutSeconds: timeoutSeconds)
        if let secret = settings.secret, !settings.insecure {
            try socket.startTLS(secret: secret)
        } else if let secret = settings.secret {
            // The challenge, as a client proves the secret (`ChallengeAuth`).
            let clientNonce = ChallengeAuth.nonce()
            try socket.send("NODE HELLO \(clientNonce)\n")
            let fields = (try socket.readLine() ?? "").split(separator: " ").map(String.init)
            guard fields.count == 3, fields[0] == "CHALLENGE",
                  fields[2] == ChallengeAuth.proof(secret: secret, role: .node, clientNonce: clientNonce, serverNonce: fields[1]) else {
                throw TestFailure("node \(index) did not prove the cluster secret: \(fields)")
            }
            try socket.send("NODE PROVE \(ChallengeAuth.proof(secret: secret, role: .client, clientNonce: clientNonce, serverNonce: fields[1]))\n")
            guard try socket.readLine() == "OK" else { throw TestFailure("node \(index) refused the cluster secret") }
        }
        return socket
    }

    /// Sends one header line, half-closes, and returns every reply line until the node closes.
    func request(_ index: Int, _ line: String) throws -> [String] {
        let socket = try connect(index)
        try socket.send(line + "\n")
        socket.shutdownWrite()
        return try socket.readLinesToEnd()
    }

    func ping(_ index: Int) -> Bool {
        guard let socket = try? TestSocket(address(index), timeoutSeconds: 5) else { return false }
        guard (try? socket.send("NODE PING\n")) != nil else { return false }
        return (try? socket.readLine()) == "PONG"
    }

    /// `NETMAP GET` without the final `OK`.
    func netmap(_ index: Int) throws -> [String] {
        let lines = try request(index, "NETMAP GET")
        guard lines.last == "OK" else { throw TestFailure("NETMAP GET answered \(lines)") }
        return Array(lines.dropLast())
    }

    /// `FILE PUSH` of `bytes`; returns the reply lines.
    func push(_ index: Int, name: String, bytes: [UInt8]) throws -> [String] {
        let socket = try connect(index, timeoutSeconds: 120)
        try socket.send("FILE PUSH \(bytes.count) \(name)\n")
        try socket.send(bytes)
        socket.shutdownWrite()
        return try socket.readLinesToEnd()
    }

    /// `FILE PUSH` of `sizeBytes` generated piece by piece by `fill` (never held whole).
    func push(_ index: Int, name: String, sizeBytes: UInt64,
              fill: (UnsafeMutableRawBufferPointer) -> Void) throws -> [String] {
        let socket = try connect(index, timeoutSeconds: 120)
        try socket.send("FILE PUSH \(sizeBytes) \(name)\n")
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var sent: UInt64 = 0
        try buffer.withUnsafeMutableBytes { raw in
            while sent < sizeBytes {
                let piece = UnsafeMutableRawBufferPointer(rebasing: raw[..<Int(min(UInt64(raw.count), sizeBytes - sent))])
                fill(piece)
                try socket.send(UnsafeRawBufferPointer(piece))
                sent += UInt64(piece.count)
            }
        }
        socket.shutdownWrite()
        return try socket.readLinesToEnd()
    }

    /// `FILE PULL`: every byte until the node closes.
    func pull(_ index: Int, name: String) throws -> [UInt8] {
        let socket = try connect(index, timeoutSeconds: 120)
        try socket.send("FILE PULL \(name)\n")
        return try socket.readToEnd()
    }

    /// `FILE PULL`, streamed to `sink`.
    func pull(_ index: Int, name: String, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let socket = try connect(index, timeoutSeconds: 120)
        try socket.send("FILE PULL \(name)\n")
        try socket.readToEnd(sink)
    }

    struct ListRow: Equatable, CustomStringConvertible {
        var name: String
        var start: String
        var sizeBytes: UInt64
        var description: String { "\(name),\(start),\(sizeBytes)" }
    }

    /// `FILE LIST`, parsed (the header must be `name,start,size`).
    func list(_ index: Int) throws -> [ListRow] {
        let lines = try request(index, "FILE LIST")
        guard lines.first == "name,start,size" else { throw TestFailure("FILE LIST began with \(lines.first ?? "nothing")") }
        var rows: [ListRow] = []
        var pending = ""
        for line in lines.dropFirst() {
            pending = pending.isEmpty ? line : pending + "\n" + line
            guard let fields = CSV.parseRow(pending) else { continue }
            pending = ""
            guard fields.count == 3, let size = UInt64(fields[2]) else { throw TestFailure("bad FILE LIST row \(line)") }
            rows.append(ListRow(name: fields[0], start: fields[1], sizeBytes: size))
        }
        guard pending.isEmpty else { throw TestFailure("FILE LIST ended inside a quoted name") }
        return rows
    }

    /// `FILE STAT`: the file's inode with its recorded placement.
    func stat(_ index: Int, name: String) throws -> InodeStat {
        try requestJSON(index, "FILE STAT \(name)", InodeStat.self)
    }

    /// `NODE INFO`: the node's state.
    func info(_ index: Int) throws -> NodeInfo {
        try requestJSON(index, "NODE INFO", NodeInfo.self)
    }

    /// Sends `line` and decodes its `OK <length>` JSON answer.
    func requestJSON<T: Decodable>(_ index: Int, _ line: String, _ type: T.Type) throws -> T {
        let socket = try connect(index)
        try socket.send(line + "\n")
        guard let answer = try socket.readLine(), answer.hasPrefix("OK "), let length = Int(answer.dropFirst(3)) else {
            throw TestFailure("\(line) was refused")
        }
        var body = [UInt8](repeating: 0, count: length)
        var filled = 0
        try body.withUnsafeMutableBytes { raw in
            while filled < length {
                let count = try socket.receive(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
                guard count > 0 else { throw TestFailure("\(line) reply cut short") }
                filled += count
            }
        }
        return try WireJSON.decode(T.self, from: body)
    }

    // MARK: Disk

    /// The chunk directory's files (name → size), temp files included.
    func chunkFiles(_ index: Int) -> [String: UInt64] {
        let directory = members[index].chunksDirectory
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var result: [String: UInt64] = [:]
        for name in names {
            var info = Glibc.stat()
            guard lstat("\(directory)/\(name)", &info) == 0 else { continue }
            result[name] = UInt64(info.st_size)
        }
        return result
    }

    /// Temp files (`.tmp-`) in any node's chunk directory.
    func tempChunkFiles() -> [String] {
        members.flatMap { member in chunkFiles(member.index).keys.filter { $0.contains(".tmp-") }.map { "node \(member.index): \($0)" } }
    }
}
