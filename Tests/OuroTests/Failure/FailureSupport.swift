import Foundation
import Logging
import Glibc
import OuroClient
import OuroCore
import Testing

// Support for the fault tests: a ring whose nodes take the failure-handling settings (`--grace-period`,
// `--scrub-interval`) and can grow by `--join`; the on-disk replication checker; byte flips; the `ouro` tool as a
// child process. `Ring` and `MountedRing` are reused where their settings suffice.

/// Wire calls by address (for nodes that are not `Ring` members, and for `FaultRing`).
enum Wire {
    /// Sends one header line, half-closes, and returns every reply line until the node closes.
    static func request(_ address: NodeAddress, _ line: String, timeoutSeconds: Int = 30) throws -> [String] {
        let socket = try TestSocket(address, timeoutSeconds: timeoutSeconds)
        try socket.send(line + "\n")
        socket.shutdownWrite()
        return try socket.readLinesToEnd()
    }

    static func ping(_ address: NodeAddress) -> Bool {
        guard let socket = try? TestSocket(address, timeoutSeconds: 5) else { return false }
        guard (try? socket.send("NODE PING\n")) != nil else { return false }
        return (try? socket.readLine()) == "PONG"
    }

    /// `NETMAP GET` without the final `OK`.
    static func netmap(_ address: NodeAddress) throws -> [String] {
        let lines = try request(address, "NETMAP GET")
        guard lines.last == "OK" else { throw TestFailure("NETMAP GET on \(address) answered \(lines)") }
        return Array(lines.dropLast())
    }

    /// `FILE PUSH`; returns the reply lines.
    static func push(_ address: NodeAddress, name: String, bytes: [UInt8]) throws -> [String] {
        let socket = try TestSocket(address, timeoutSeconds: 120)
        try socket.send("FILE PUSH \(bytes.count) \(name)\n")
        try socket.send(bytes)
        socket.shutdownWrite()
        return try socket.readLinesToEnd()
    }

    /// `FILE PULL`: every byte until the node closes.
    static func pull(_ address: NodeAddress, name: String) throws -> [UInt8] {
        let socket = try TestSocket(address, timeoutSeconds: 120)
        try socket.send("FILE PULL \(name)\n")
        return try socket.readToEnd()
    }

    /// `FILE STAT`: the inode with its recorded placement.
    static func stat(_ address: NodeAddress, name: String) throws -> InodeStat {
        try NodeClient(address).stat(name)
    }

    /// `FILE LIST`: name → size.
    static func list(_ address: NodeAddress) throws -> [String: UInt64] {
        var result: [String: UInt64] = [:]
        for row in try NodeClient(address).list() { result[row.name] = row.sizeBytes }
        return result
    }
}

/// A ring of real `ouro node` processes on 127.0.0.1 like `Ring`, started with the failure-handling settings, and
/// able to grow: `addNode(joining:)` starts one more node with `--join`. `shutdown` (also run by `deinit`, so on
/// every failure path) stops every process (SIGTERM, then SIGKILL) and removes the directory.
final class FaultRing: @unchecked Sendable {
    struct Settings {
        var copies = 2
        var gossipIntervalMilliseconds = 200
        var gracePeriodSeconds = 60
        var scrubIntervalSeconds = 600
    }

    final class Member {
        let index: Int
        fileprivate(set) var address: NodeAddress
        let dataDirectory: String
        let logPath: String
        let join: NodeAddress?
        fileprivate(set) var process: ChildProcess?

        init(index: Int, dataDirectory: String, logPath: String, join: NodeAddress?) {
            self.index = index
            address = NodeAddress(host: "127.0.0.1", port: 1)
            self.dataDirectory = dataDirectory
            self.logPath = logPath
            self.join = join
        }

        var chunksDirectory: String { dataDirectory + "/chunks" }
    }

    let directory: String
    let settings: Settings
    private(set) var members: [Member] = []
    private var isShutDown = false

    var count: Int { members.count }

    init(nodes count: Int, settings: Settings = Settings(), label: String) throws {
        self.settings = settings
        directory = try TestEnvironment.makeScratchDirectory(label)
        do {
            for _ in 0..<count { try startFresh(join: nil) }
            try wire()
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    func address(_ index: Int) -> NodeAddress { members[index].address }

    var running: [Int] { members.indices.filter(isRunning) }

    func isRunning(_ index: Int) -> Bool { members[index].process?.isRunning ?? false }

    /// Sends `signal` to a running node (SIGSTOP hangs it without closing its sockets; SIGCONT resumes it).
    func signal(_ index: Int, _ signal: Int32) {
        if let process = members[index].process, process.isRunning { Glibc.kill(process.pid, signal) }
    }

    /// The chunk directories of the running nodes, for the checker.
    var liveStores: [NodeStore] { running.map { NodeStore(address: address($0), chunksDirectory: members[$0].chunksDirectory) } }

    /// Starts one more node that enters the ring through member `via` (`--join`); returns its index.
    @discardableResult
    func addNode(joining via: Int) throws -> Int {
        try startFresh(join: address(via))
        return members.count - 1
    }

    /// Starts `count` more nodes at the same moment, all entering through member `via`; returns their indices.
    func addNodes(_ count: Int, joining via: Int) throws -> [Int] {
        let indices = Array(members.count..<(members.count + count))
        for index in indices {
            let member = Member(index: index, dataDirectory: "\(directory)/node-\(index)", logPath: "\(directory)/node-\(index).log",
                                join: address(via))
            member.address = NodeAddress(host: "127.0.0.1", port: try PortAllocator.freePort())
            members.append(member)
        }
        let errors = Lock()
        var failure: Error?
        DispatchQueue.concurrentPerform(iterations: count) { offset in
            do { try start(indices[offset]) } catch { errors.withLock { failure = failure ?? error } }
        }
        if let failure { throw failure }
        return indices
    }

    private func startFresh(join: NodeAddress?) throws {
        let index = members.count
        let member = Member(index: index, dataDirectory: "\(directory)/node-\(index)", logPath: "\(directory)/node-\(index).log",
                            join: join)
        members.append(member)
        var lastError: Error?
        for _ in 0..<5 {
            member.address = NodeAddress(host: "127.0.0.1", port: try PortAllocator.freePort())
            do {
                try start(index)
                return
            } catch {
                lastError = error
                let log = (try? String(contentsOfFile: member.logPath, encoding: .utf8)) ?? ""
                guard log.contains("cannot listen") || log.contains("in use") else { throw error }
            }
        }
        throw lastError!
    }

    private func arguments(for member: Member) -> [String] {
        var arguments = ["node", "--listen", member.address.description, "--data", member.dataDirectory,
                         "--gossip-interval", "\(settings.gossipIntervalMilliseconds)", "--copies", "\(settings.copies)",
                         "--grace-period", "\(settings.gracePeriodSeconds)", "--scrub-interval", "\(settings.scrubIntervalSeconds)"]
        if let join = member.join { arguments += ["--join", join.description] }
        // Nodes in network namespaces listen on addresses other than loopback: the test's own network.
        if !member.address.isLoopback { arguments.append("--insecure") }
        return arguments
    }

    /// Starts member `index` (again) on its port and data directory and waits until it answers `NODE PING`.
    func start(_ index: Int, timeoutSeconds: Double = 20) throws {
        let member = members[index]
        guard member.process?.isRunning != true else { throw TestFailure("node \(index) is already running") }
        let process = try ChildProcess(executable: TestEnvironment.ouroExecutable, arguments: arguments(for: member),
                                       outputPath: member.logPath)
        member.process = process
        // A pid file whose owner's command line names the scratch directory: a later run's sweep can kill it.
        try? "\(process.pid)\n".write(toFile: "\(directory)/node-\(index).pid", atomically: false, encoding: .utf8)
        let deadline = Deadline(seconds: timeoutSeconds)
        while true {
            if let ended = process.termination {
                throw TestFailure("node \(index) (\(member.address)) \(ended) while starting:\n\(process.outputTail())")
            }
            if Wire.ping(member.address) { return }
            if deadline.passed {
                process.forceKill()
                throw TestFailure("node \(index) (\(member.address)) did not answer within \(timeoutSeconds) s:\n\(process.outputTail())")
            }
            usleep(20_000)
        }
    }

    /// SIGKILL (a crash), reaped.
    func kill(_ index: Int) { members[index].process?.forceKill() }

    /// SIGKILL to every listed node before reaping any: they die together.
    func killTogether(_ indices: [Int]) {
        for index in indices { members[index].process?.send(SIGKILL) }
        for index in indices { members[index].process?.forceKill() }
    }

    /// Stops every node (SIGTERM at once, stragglers SIGKILL) and removes the scratch directory.
    func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        let running = members.compactMap(\.process).filter(\.isRunning)
        for process in running { process.send(SIGTERM) }
        let deadline = Deadline(seconds: 5)
        for process in running where process.wait(seconds: deadline.remaining) == nil { process.forceKill() }
        TestEnvironment.removeScratchDirectory(directory)
    }

    func logs(bytes: Int = 2000) -> String {
        members.map { "--- node \($0.index) \($0.address)\n" + ($0.process?.outputTail(bytes: bytes) ?? "") }.joined(separator: "\n")
    }

    // MARK: Wiring and requests

    /// `NODE NEXT` around the ring, `NETMAP DISCOVER` from node 0, then waits for every node to see all alive.
    private func wire() throws {
        for index in members.indices {
            let next = address((index + 1) % count)
            let reply = try Wire.request(address(index), "NODE NEXT \(next)")
            guard reply == ["OK next=\(next)"] else { throw TestFailure("NODE NEXT on node \(index) answered \(reply)") }
        }
        let reply = try Wire.request(address(0), "NETMAP DISCOVER")
        guard reply == ["OK"] else { throw TestFailure("NETMAP DISCOVER answered \(reply)") }
        try waitForNetmap(expectedNetmap(order: Array(members.indices), dead: []), timeoutSeconds: 15)
    }

    /// The `NETMAP GET` lines of the members in `order`, with `dead` ones marked dead.
    func expectedNetmap(order: [Int], dead: Set<Int>) -> [String] {
        order.map { "\(address($0))=\(dead.contains($0) ? "Dead" : "Alive")" }
    }

    /// Waits until each of `nodes` (default: every running node) reports `expected` from `NETMAP GET`.
    func waitForNetmap(_ expected: [String], on nodes: [Int]? = nil, timeoutSeconds: Double) throws {
        for index in nodes ?? running {
            var last: [String] = []
            try waitUntil("node \(index)'s netmap to be \(expected)", timeoutSeconds: timeoutSeconds, describe: { "\(last)" }) {
                last = try Wire.netmap(address(index))
                return last == expected
            }
        }
    }

    func push(_ index: Int, name: String, bytes: [UInt8]) throws -> [String] { try Wire.push(address(index), name: name, bytes: bytes) }
    func pull(_ index: Int, name: String) throws -> [UInt8] { try Wire.pull(address(index), name: name) }
}

/// One live node's chunk directory, as the checker walks it.
struct NodeStore {
    var address: NodeAddress
    var chunksDirectory: String
}

extension Ring {
    /// The chunk directories of the running members, for the checker.
    var liveStores: [NodeStore] {
        members.filter { isRunning($0.index) }.map { NodeStore(address: $0.address, chunksDirectory: $0.chunksDirectory) }
    }
}

/// The replication checker of the fault tests: walks every live node's chunk directory, computes each chunk file's
/// CRC-32C, and compares holders, copy count and checksums with the placement the catalog records (`FILE STAT`,
/// asked of every live node, which must all agree).
/// Three pages of every file over 20 kB rewritten in one commit per file (`FS WRITESLICES` carrying the bytes, as a
/// mount's fsync sends them): each file then reads from one more piece, on `copies` nodes by rendezvous hashing.
/// Returns those files with their new bytes.
func updatedInPlace(_ files: [(name: String, bytes: [UInt8])], through node: NodeAddress, stat: NodeAddress,
                    seed: UInt64) throws -> [(name: String, bytes: [UInt8])] {
    let client = RingClient(seed: node, logger: Logger(label: "test"))
    var generator = PseudoRandomBytes(seed: seed)
    var updated: [(name: String, bytes: [UInt8])] = []
    for file in files where file.bytes.count > 20_000 {
        var bytes = file.bytes
        var request = FSRequest()
        request.inode = try Wire.stat(stat, name: file.name).inode.id
        request.sizeBytes = UInt64(bytes.count)
        var data: [UInt8] = []
        request.slices = (1...3).map { k in
            let offset = bytes.count / 4 * k - 1000
            let patch = generator.bytes(4096)
            bytes.replaceSubrange(offset..<(offset + 4096), with: patch)
            data += patch
            return ContentSlice(fileOffset: UInt64(offset), lengthBytes: 4096,
                                source: FileContent(id: .random(), sizeBytes: 4096, start: node, copies: 0, chunks: []))
        }
        request.data = Data(data)
        _ = try client.fs(.writeslices, request, idempotent: true)
        updated.append((file.name, bytes))
    }
    return updated
}

enum ReplicaChecker {
    struct StoredChunk {
        var sizeBytes: UInt64
        var crc32c: UInt32
    }

    /// Every chunk file (temp and quarantined files apart) on every given node: node → file name → size and CRC.
    static func census(_ stores: [NodeStore]) -> [NodeAddress: [String: StoredChunk]] {
        var result: [NodeAddress: [String: StoredChunk]] = [:]
        for store in stores {
            var files: [String: StoredChunk] = [:]
            let names = (try? FileManager.default.contentsOfDirectory(atPath: store.chunksDirectory)) ?? []
            for name in names where name.contains(".part-") && !name.contains(".tmp-") && !name.hasSuffix(".corrupt") {
                let path = "\(store.chunksDirectory)/\(name)"
                guard let crc = try? crc32cOfFile(path) else { continue }  // removed meanwhile
                files[name] = StoredChunk(sizeBytes: fileSize(path) ?? 0, crc32c: crc)
            }
            result[store.address] = files
        }
        return result
    }

    /// What is wrong with the replication of `files` on the live nodes `stores` (empty: all is well). Each chunk
    /// must have `min(copies, live nodes)` distinct holders, all live, each storing a copy of the recorded length
    /// and CRC-32C; every live node's catalog must record the same placement.
    static func problems(files: [String], copies: Int, stores: [NodeStore]) -> [String] {
        let wanted = min(copies, stores.count)
        let disk = census(stores)
        var problems: [String] = []
        for name in files {
            var contents: [NodeAddress: FileContent?] = [:]
            for store in stores {
                do {
                    contents[store.address] = try Wire.stat(store.address, name: name).inode.content
                } catch {
                    problems.append("\(name): FILE STAT on \(store.address) failed: \(error)")
                }
            }
            guard let first = stores.first, let recorded = contents[first.address] else { continue }
            for (node, content) in contents where content != recorded {
                problems.append("\(name): the catalog on \(node) records \(describe(content)), on \(first.address) \(describe(recorded))")
            }
            guard let recorded = recorded else { continue }  // an empty file has no chunks
            // Every stored content the file reads from: itself, its segments, or the pieces its slices name.
            var sources: [FileContent] = []
            for source in recorded.slices?.map(\.source) ?? recorded.segments ?? [recorded]
            where !source.isInline && !sources.contains(where: { $0.id == source.id }) {
                sources.append(source)
            }
            for content in sources {
            for (index, chunk) in content.chunks.enumerated() {
                let fileName = Ring.chunkFileName(content.id.hex, index: index, parts: content.parts)
                if Set(chunk.holders).count != chunk.holders.count {
                    problems.append("\(name) \(fileName): duplicate holders \(chunk.holders)")
                }
                if chunk.holders.count != wanted {
                    problems.append("\(name) \(fileName): \(chunk.holders.count) holders \(chunk.holders), want \(wanted)")
                }
                for holder in chunk.holders {
                    guard let files = disk[holder] else {
                        problems.append("\(name) \(fileName): recorded on \(holder), which is not a live node")
                        continue
                    }
                    guard let stored = files[fileName] else {
                        problems.append("\(name) \(fileName): recorded on \(holder) but not stored there")
                        continue
                    }
                    if stored.sizeBytes != chunk.lengthBytes || stored.crc32c != chunk.crc32c {
                        problems.append("\(name) \(fileName) on \(holder): \(stored.sizeBytes) bytes CRC \(stored.crc32c), "
                                        + "catalog says \(chunk.lengthBytes) bytes CRC \(chunk.crc32c)")
                    }
                }
                let good = disk.filter { $0.value[fileName].map { $0.sizeBytes == chunk.lengthBytes && $0.crc32c == chunk.crc32c } ?? false }
                if good.count < wanted {
                    problems.append("\(name) \(fileName): only \(good.count) good copies on live nodes (\(good.keys.sorted())), want \(wanted)")
                }
            }
            }
        }
        return problems
    }

    /// Waits (bounded) until the checker finds nothing wrong; throws with its last findings otherwise.
    static func waitForFullReplication(files: [String], copies: Int, stores: () -> [NodeStore], timeoutSeconds: Double,
                                       diagnostics: () -> String = { "" }) throws {
        var last: [String] = []
        do {
            try waitUntil("every chunk to have \(copies) good copies on live nodes", timeoutSeconds: timeoutSeconds,
                          intervalSeconds: 0.25, describe: { last.prefix(12).joined(separator: "\n") }) {
                last = problems(files: files, copies: copies, stores: stores())
                return last.isEmpty
            }
        } catch {
            throw TestFailure("\(error)\n\(diagnostics())")
        }
    }

    private static func describe(_ content: FileContent?) -> String {
        guard let content else { return "no content" }
        return "\(content.id.hex) " + content.chunks.map { "\($0.holders)" }.joined(separator: " ")
    }
}


func fileSize(_ path: String) -> UInt64? {
    var info = Glibc.stat()
    guard lstat(path, &info) == 0 else { return nil }
    return UInt64(info.st_size)
}

/// Flips every bit of one byte of a file in place (bit rot on a real disk), durably.
func flipByte(_ path: String, at offset: Int) throws {
    let fd = open(path, O_RDWR | O_CLOEXEC)
    guard fd >= 0 else { throw TestFailure("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var byte: UInt8 = 0
    guard pread(fd, &byte, 1, off_t(offset)) == 1 else { throw TestFailure("cannot read byte \(offset) of \(path)") }
    byte ^= 0xFF
    guard pwrite(fd, &byte, 1, off_t(offset)) == 1, fsync(fd) == 0 else { throw TestFailure("cannot write byte \(offset) of \(path)") }
}

/// Reads a whole local file (inputs and outputs in work directories, never a mount).
func readLocalFile(_ path: String) -> [UInt8]? {
    FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

func writeLocalFile(_ path: String, _ bytes: [UInt8]) throws {
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw TestFailure("cannot write \(path)") }
}

/// The `ouro` command-line tool as a child process, bounded in time.
enum OuroTool {
    struct Result: CustomStringConvertible {
        var status: ChildProcess.Termination
        var output: String
        var description: String { "\(status): \(output)" }
    }

    /// Runs `ouro arguments…` in `directory` (relative paths are taken from there); kills it after `timeoutSeconds`.
    static func run(_ arguments: [String], in directory: String, timeoutSeconds: Double = 60) throws -> Result {
        let quoted = ([TestEnvironment.ouroExecutable] + arguments).map(MountedRing.shellQuote).joined(separator: " ")
        let (status, output) = try ChildProcess.shell("cd \(MountedRing.shellQuote(directory)) && exec \(quoted)", in: directory,
                                                      timeoutSeconds: timeoutSeconds)
        return Result(status: status, output: String(decoding: output, as: UTF8.self))
    }
}

/// Records an issue when `got` is not `want`, saying how they differ (never dumping the bytes).
func expectBytes(_ got: [UInt8]?, _ want: [UInt8], _ what: @autoclosure () -> String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    guard got != want else { return }
    var detail = describeDifference(got, want)
    if let got, got.count < 200, let text = String(bytes: got, encoding: .utf8) { detail += " (\"\(text.trimmingCharacters(in: .newlines))\")" }
    Issue.record("\(what()): got \(detail)", sourceLocation: sourceLocation)
}

/// A dump of what the test's data looked like, for failure messages: size and the first differing offset.
func describeDifference(_ got: [UInt8]?, _ want: [UInt8]) -> String {
    guard let got else { return "nothing (missing)" }
    if got == want { return "identical" }
    let common = min(got.count, want.count)
    let first = (0..<common).first { got[$0] != want[$0] } ?? common
    return "\(got.count) bytes (want \(want.count)), first difference at offset \(first)"
}

/// Prints how long the phases of a test took (Swift Testing's own durations are skewed while tests block threads).
struct PhaseClock {
    let label: String
    let started = Deadline.now
    func mark(_ phase: String) {
        print("FailureTests: \(label): \(phase) at \(String(format: "%.2f", Deadline.now - started)) s")
    }
}
