import ArgumentParser
import Glibc
import OuroClient
import OuroCore

/// `ouro drill`: proves on a running ring that a node's death loses nothing. It writes files through a temporary
/// mount, SIGKILLs a node of this machine halfway, waits until the ring declares it dead and has copied what it held
/// elsewhere, reads every file back and compares, then brings the node back (its supervisor's restart, or the same
/// command line again) and reports the times. Exit status 0: PASS.
struct DrillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill",
        abstract: "Kill a node in the middle of writes, wait for detection and repair, verify every file, bring it back.")
    @OptionGroup var options: NodeOption
    @Option(help: "The node to kill (host:port, a node on this machine); default: a random live one other than --node.")
    var kill: NodeAddress?
    @Option(help: "Files to write through the mount (half before the kill, half after).") var files = 8
    @Option(name: .customLong("file-size"), help: "Bytes per file.") var fileSize = 2_000_000
    @Option(help: "Seconds to wait for each of detection, repair and the node's return.") var timeout = 300
    @Flag(help: "Run even when the ring keeps one copy (the drill's files on the killed node are then lost).") var force = false

    func run() throws {
        let pool = ConnectionPool()
        let node = NodeClient(options.node, pool: pool)
        let map: Netmap
        do { map = try node.netmap() } catch { throw fail("\(options.node): \(error)") }
        let live = map.liveAddresses.filter { $0 != options.node }
        guard !live.isEmpty else { throw fail("refusing: the ring has no live node but \(options.node), the one the drill mounts through") }
        let victim = kill ?? live.randomElement()!
        guard victim != options.node else { throw fail("refusing: the drill mounts through \(options.node); kill another node") }
        guard live.contains(victim) else { throw fail("\(victim) is not a live node of the ring") }
        guard let process = NodeProcess.find(victim) else {
            throw fail("\(victim) runs no node process on this machine: the drill can only kill nodes here")
        }

        let work = makeTemporaryDirectory()
        let mountpoint = work + "/mnt"
        mkdir(mountpoint, 0o755)
        var secretArguments: [String] = []
        if let file = options.secretFile ?? ProcessInfoLite.environment("OURO_SECRET_FILE") { secretArguments = ["--secret-file", file] }
        let driver = Child(name: "drill mount", arguments: ["mount", "--node", options.node.description, mountpoint, "--foreground",
                                                              "--cache-dir", work + "/cache"] + secretArguments, logPath: work + "/mount.log")
        defer {
            _ = Glibc.kill(driver.pid, SIGTERM)
            if !waitUntil(seconds: 10, { !isMounted(mountpoint) }) { _ = system("fusermount3 -uz '\(mountpoint)' 2>/dev/null") }
            var status: Int32 = 0
            waitpid(driver.pid, &status, 0)
            _ = system("rm -rf '\(work)'")
        }
        try driver.spawn()
        guard waitUntil(seconds: 20, { isMounted(mountpoint) }) else { throw fail("the drill's mount did not come up; see \(work)/mount.log") }

        let folder = "ouro-drill-\(getpid())"
        let directory = mountpoint + "/" + folder
        guard mkdir(directory, 0o755) == 0 else { throw fail("cannot make \(directory): \(String(cString: strerror(errno)))") }
        defer { _ = system("rm -rf '\(directory)'") }
        print("drill: \(files) files of \(RingReport.bytes(UInt64(fileSize))) through a mount of \(options.node); killing \(victim) (pid \(process.pid)) halfway")

        var hashes: [String] = []
        var placementsBefore: [String: FileContent] = [:]
        var killedAt = 0.0
        for index in 0..<files {
            if index == files / 2 {
                // What is on the victim now, to count what the repair moves; then the kill.
                for earlier in 0..<index { placementsBefore["\(folder)/file-\(earlier)"] = try? node.stat("\(folder)/file-\(earlier)").inode.content }
                if let copies = placementsBefore.values.first?.copies, copies < 2, !force {
                    throw fail("refusing: the ring keeps \(copies) copy of each chunk, so the killed node's chunks would be lost (--force to run anyway)")
                }
                _ = Glibc.kill(process.pid, SIGKILL)
                killedAt = monotonicSeconds()
                print("drill: killed \(victim) after \(index) files")
            }
            hashes.append(try write(directory + "/file-\(index)", seed: UInt64(index + 1)))
        }
        print("drill: wrote \(files) files")

        // Detection: the ring marks it dead (unless its supervisor restarted it first).
        var detectedAfter: Double?
        var restartedBySupervisor = false
        _ = waitUntil(seconds: Double(timeout)) {
            guard let now = try? node.netmap() else { return false }
            if !now.isAlive(victim) { detectedAfter = monotonicSeconds() - killedAt; return true }
            if let found = NodeProcess.find(victim), found.pid != process.pid { restartedBySupervisor = true; return true }
            return false
        }
        print("drill: " + (detectedAfter.map { "declared dead after \(String(format1: $0)) s" }
                           ?? (restartedBySupervisor ? "restarted by its supervisor before it was declared dead" : "NOT declared dead within \(timeout) s")))

        // Repair: no file of the ring short of copies (after the nodes' grace period).
        var repairedAfter: Double?
        if detectedAfter != nil {
            _ = waitUntil(seconds: Double(timeout)) {
                var short = 0
                guard (try? node.shortOfCopies { _ in short += 1 }) != nil else { return false }
                if short == 0 { repairedAfter = monotonicSeconds() - killedAt }
                return short == 0
            }
            print("drill: " + (repairedAfter.map { "every file whole again after \(String(format1: $0)) s" } ?? "NOT repaired within \(timeout) s"))
        }
        var movedBytes: UInt64 = 0
        for (name, before) in placementsBefore {
            guard let after = try? node.stat(name).inode.content else { continue }
            for (old, new) in zip(before.chunks, after.chunks) where old.holders.contains(victim) && new.holders != old.holders {
                movedBytes += old.lengthBytes * UInt64(Set(new.holders).subtracting(old.holders).count)
            }
        }
        if detectedAfter != nil { print("drill: \(RingReport.bytes(movedBytes)) of the drill's files copied to other nodes") }

        // Every file read back through the mount.
        var good = 0
        for index in 0..<files where (try? hash(directory + "/file-\(index)")) == hashes[index] { good += 1 }
        print("drill: \(good) of \(files) files read back the same")

        // The node back: its supervisor's doing, or the same command line again.
        var backAfter: Double?
        let restartAt = monotonicSeconds()
        if !waitUntil(seconds: 3, { NodeProcess.find(victim) != nil }) {
            do {
                try process.respawn()
                print("drill: started \(victim) again: \(process.arguments.joined(separator: " "))")
            } catch {
                print("drill: could not start \(victim) again: \(error)")
            }
        }
        if waitUntil(seconds: Double(timeout), { (try? node.netmap().isAlive(victim)) == true }) { backAfter = monotonicSeconds() - restartAt }
        print("drill: " + (backAfter.map { "\(victim) alive again after \(String(format1: $0)) s" } ?? "\(victim) NOT back within \(timeout) s"))

        let passed = good == files && (restartedBySupervisor || (detectedAfter != nil && repairedAfter != nil)) && backAfter != nil
        print(passed ? "PASS" : "FAIL")
        if !passed { throw ExitCode(1) }
    }

    /// Writes `fileSize` pseudo-random bytes (from `seed`) to `path` and returns their SHA-256.
    private func write(_ path: String, seed: UInt64) throws -> String {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(path): \(String(cString: strerror(errno)))") }
        let hasher = SHA256Hasher()
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var left = fileSize
        while left > 0 {
            let count = min(left, buffer.count)
            for index in stride(from: 0, to: count, by: 8) {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                withUnsafeBytes(of: state) { word in for offset in 0..<min(8, count - index) { buffer[index + offset] = word[offset] } }
            }
            let written = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress!, count) }
            guard written == count else {
                close(fd)
                throw fail("writing \(path): \(String(cString: strerror(errno)))")
            }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            left -= count
        }
        guard close(fd) == 0 else { throw fail("closing \(path): \(String(cString: strerror(errno)))") }
        return hasher.finish()
    }

    private func hash(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw OuroError(.notFound, path) }
        defer { close(fd) }
        let hasher = SHA256Hasher()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            guard count >= 0 else { throw OuroError(.internal, "reading \(path)") }
            if count == 0 { return hasher.finish() }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
    }

    private func makeTemporaryDirectory() -> String {
        var template = Array("/tmp/ouro-drill.XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }
}

/// A node process on this machine, found by its command line (`… node … --listen <address> …`).
struct NodeProcess {
    var pid: pid_t
    var executable: String
    var arguments: [String]
    /// Where its standard error went (its log), to send a restarted one's there too.
    var logPath: String?

    static func find(_ address: NodeAddress) -> NodeProcess? {
        guard let entries = opendir("/proc") else { return nil }
        defer { closedir(entries) }
        while let entry = readdir(entries) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(name), pid != getpid(),
                  let raw = readAll("/proc/\(pid)/cmdline") else { continue }
            let arguments = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard arguments.count > 3, arguments[1] == "node",
                  let listen = arguments.firstIndex(of: "--listen"), listen + 1 < arguments.count,
                  NodeAddress(arguments[listen + 1]) == address else { continue }
            let executable = (try? readLink("/proc/\(pid)/exe")) ?? arguments[0]
            let log = try? readLink("/proc/\(pid)/fd/2")
            return NodeProcess(pid: pid, executable: executable.replacingOccurrences(of: " (deleted)", with: ""),
                               arguments: Array(arguments.dropLast(arguments.last == "" ? 1 : 0)),
                               logPath: log.flatMap { $0.hasPrefix("/") ? $0 : nil })
        }
        return nil
    }

    private static func readAll(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            guard count > 0 else { return count == 0 ? bytes : nil }
            bytes += buffer[..<count]
        }
    }

    private static func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink(path, &buffer, buffer.count - 1)
        guard count > 0 else { throw OuroError(.notFound, path) }
        buffer[count] = 0
        return String(cString: buffer)
    }

    /// Starts the same command line again, in a session of its own (it outlives the drill), logging where it did.
    func respawn() throws {
        _ = try spawnProcess(executable, arguments, logPath: logPath ?? "/dev/null", newSession: true)
    }
}
