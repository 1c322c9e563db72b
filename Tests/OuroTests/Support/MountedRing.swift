import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// A ring of real `ouro node` processes (a `Ring`) with one or more real FUSE mounts of it, each served by its own
/// `ouro mount --foreground` driver process, plus a local work directory outside the mounts for inputs and
/// expected outputs.
///
/// The test process never touches a mount itself (a process using its own FUSE mount can deadlock, and a stuck
/// request would hang the whole test run): every operation on a mount is a shell command in a child process, with a
/// deadline. `shutdown` (also run by `deinit`, so on every failure path) unmounts every mount, waits for each driver
/// to exit, stops leftovers (SIGTERM, then SIGKILL, then `fusermount3 -uz`), stops the nodes and removes the scratch
/// directories — never while something is still mounted under them. Use `MountedRing.with` in tests: it also
/// records an issue when a driver did not exit 0 after its unmount or something was left behind.
final class MountedRing: @unchecked Sendable {
    let ring: Ring
    /// Scratch directory of the mounts: mount points, spool caches, driver logs, the work directory.
    let directory: String
    /// Local directory for inputs and expected outputs (`$W` in scripts).
    let workDirectory: String
    private(set) var mounts: [DriverMount] = []
    /// How each unmounted driver ended, with any problem seen while unmounting it.
    private(set) var unmounted: [UnmountOutcome] = []
    private var isShutDown = false
    private var mountCounter = 0
    /// Scripts started with `spawn`: killed at shutdown if a failed test left them running.
    private var background: [ChildProcess] = []

    /// Starts `nodes` nodes (`--copies copies`, `--gossip-interval 200`) and mounts the ring once on each node
    /// listed in `mountOn` (mount 0 is `$M` in scripts, mount 1 is `$M1`).
    init(nodes: Int = 3, copies: Int = 2, mountOn: [Int] = [0], attrTimeoutSeconds: Double = 1,
         diskBytes: Int? = nil, nodeEnvironment: [String: String] = [:], secret: String? = nil, label: String = "mount") throws {
        MountSweeper.sweepOnce()
        var settings = Ring.Settings()
        settings.secret = secret
        settings.copies = copies
        settings.diskBytes = diskBytes
        settings.environment = nodeEnvironment
        settings.gossipIntervalMilliseconds = 200
        ring = try Ring(nodes: nodes, settings: settings, label: "\(label)-ring")
        do {
            directory = try TestEnvironment.makeScratchDirectory(label)
        } catch {
            ring.shutdown()
            throw error
        }
        workDirectory = directory + "/work"
        do {
            try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
            for node in mountOn { try mount(onNode: node, attrTimeoutSeconds: attrTimeoutSeconds) }
        } catch {
            shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    /// The first mount's mount point (`$M`).
    var mountpoint: String { mounts[0].mountpoint }

    /// Mounts the ring through node `index` at a new mount point and waits until it shows in the mount table.
    @discardableResult
    func mount(onNode index: Int, attrTimeoutSeconds: Double = 1, extraArguments: [String] = [],
               environment: [String: String] = [:]) throws -> DriverMount {
        let number = mountCounter
        mountCounter += 1
        let mount = try DriverMount(node: ring.address(index), nodeIndex: index,
                                    mountpoint: "\(directory)/mnt-\(number)", cacheDirectory: "\(directory)/cache-\(number)",
                                    logPath: "\(directory)/driver-\(number).log", attrTimeoutSeconds: attrTimeoutSeconds,
                                    extraArguments: (ring.settings.secret != nil ? ["--secret-file", ring.secretPath] : []) + extraArguments,
                                    environment: environment)
        mounts.append(mount)
        return mount
    }

    /// Mounts the ring again at the same mount point as `mount` (which must be unmounted), through node `index`
    /// (by default the same node), and puts the new mount in its place.
    @discardableResult
    func remount(_ mount: DriverMount, onNode index: Int? = nil) throws -> DriverMount {
        precondition(mount.isFinished, "remount of a mount whose driver still runs")
        let node = index ?? mount.nodeIndex
        let again = try DriverMount(node: ring.address(node), nodeIndex: node, mountpoint: mount.mountpoint,
                                    cacheDirectory: mount.cacheDirectory, logPath: mount.logPath,
                                    attrTimeoutSeconds: mount.attrTimeoutSeconds,
                                    extraArguments: ring.settings.secret != nil ? ["--secret-file", ring.secretPath] : [])
        if let position = mounts.firstIndex(where: { $0 === mount }) { mounts[position] = again } else { mounts.append(again) }
        return again
    }

    /// Kills `mount`'s driver with SIGKILL, as a crash would: its mount stays behind, stale (ENOTCONN), until
    /// something detaches it. Not counted as an unmount by `with`.
    @discardableResult
    func killDriver(_ mount: DriverMount) -> ChildProcess.Termination {
        mount.kill()
    }

    /// Unmounts `mount` with `fusermount3 -u` (or `ouro umount` when `withOuro`) and waits for its driver to exit;
    /// the outcome is also kept for `with`'s checks. Falls back to a forced cleanup when that does not work.
    @discardableResult
    func unmount(_ mount: DriverMount, withOuro: Bool = false) -> UnmountOutcome {
        let outcome = mount.unmount(withOuro: withOuro)
        unmounted.append(outcome)
        return outcome
    }

    // MARK: Shell commands

    /// The variables every script sees: `$M`, `$M1`, … (mount points in order) and `$W` (the work directory).
    private var scriptPrelude: String {
        // The C locale: byte-order sorting and English error messages, whatever the test run's environment.
        var lines = ["LC_ALL=C", "export LC_ALL", "umask 022", "W=\(Self.shellQuote(workDirectory))"]
        for (index, mount) in mounts.enumerated() {
            lines.append("M\(index == 0 ? "" : "\(index)")=\(Self.shellQuote(mount.mountpoint))")
        }
        lines.append("export W" + mounts.indices.map { " M\($0 == 0 ? "" : "\($0)")" }.joined())
        return lines.joined(separator: "\n") + "\n"
    }

    /// Runs `/bin/sh -c script` in the work directory, in its own process; kills it after `timeoutSeconds`.
    func sh(_ script: String, timeoutSeconds: Double = 60) throws -> ShellResult {
        let child = try start(script)
        let started = Deadline.now
        guard let status = child.process.wait(seconds: timeoutSeconds) else {
            ProcessTable.killTree(child.process)
            throw TestFailure("timed out after \(timeoutSeconds) s: \(script)\noutput:\n\(child.output)\n\(diagnostics())")
        }
        return ShellResult(script: script, status: status, output: child.output, seconds: Deadline.now - started)
    }

    /// Runs a script that must succeed (exit 0) and returns its output (standard output and error together).
    @discardableResult
    func ok(_ script: String, timeoutSeconds: Double = 60) throws -> String {
        let result = try sh(script, timeoutSeconds: timeoutSeconds)
        guard result.status == .exited(0) else {
            throw TestFailure("\(result.status): \(script)\noutput:\n\(result.output)\n\(diagnostics())")
        }
        return result.output
    }

    /// Starts a script in the background (for work that must be in progress while the test does something else).
    func spawn(_ script: String) throws -> BackgroundShell {
        let shell = try start(script)
        background.append(shell.process)
        return shell
    }

    private func start(_ script: String) throws -> BackgroundShell {
        let outputPath = "\(directory)/sh-\(UInt32.random(in: 0...UInt32.max)).out"
        let process = try ChildProcess(executable: "/bin/sh",
                                       arguments: ["-c", scriptPrelude + "cd \"$W\" || exit 99\n" + script],
                                       outputPath: outputPath)
        return BackgroundShell(process: process, outputPath: outputPath)
    }

    /// The ends of the driver logs and node logs, for failure messages.
    func diagnostics() -> String {
        var parts = mounts.map { "--- driver on \($0.node) (\($0.mountpoint))\n" + MountedRing.fileTail($0.logPath, bytes: 2000) }
        parts.append(ring.logs())
        return parts.joined(separator: "\n")
    }

    /// Index of the ring member with this address.
    func nodeIndex(of address: NodeAddress) -> Int? {
        (0..<ring.count).first { ring.address($0) == address }
    }

    /// The file's content as the catalog records it (placement of every chunk), asked of a running node.
    func content(of name: String) throws -> FileContent {
        var lastError: Error = TestFailure("no running node")
        for index in 0..<ring.count where ring.isRunning(index) {
            do {
                guard let content = try NodeClient(ring.address(index)).stat(name).inode.content else {
                    throw TestFailure("\(name) has no content")
                }
                return content
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    // MARK: Teardown

    /// Unmounts everything still mounted, stops every process and removes the scratch directories. Idempotent.
    func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        for process in background where process.isRunning { ProcessTable.killTree(process) }
        for mount in mounts where !mount.isFinished { unmounted.append(mount.unmount(withOuro: false)) }
        // Stale mounts of drivers a test killed on purpose.
        for mountpoint in MountTable.mountpoints(under: directory) { MountTable.detach(mountpoint) }
        ring.shutdown()
        // Remove only what nothing is mounted on any more: never recurse into a live (or stale) FUSE mount.
        if MountTable.mountpoints(under: directory).isEmpty {
            TestEnvironment.removeScratchDirectory(directory)
        } else {
            print("MountedRing: left \(directory) in place: still mounted: \(MountTable.mountpoints(under: directory))")
        }
    }

    /// Problems `shutdown` can see afterwards: mounts or processes left behind.
    func leftovers() -> [String] {
        var problems: [String] = []
        let stillMounted = MountTable.mountpoints(under: directory)
        if !stillMounted.isEmpty { problems.append("still mounted: \(stillMounted)") }
        for (pid, commandLine) in ProcessTable.processes(mentioning: [directory, ring.directory]) {
            problems.append("process \(pid) still runs: \(commandLine)")
        }
        return problems
    }

    /// Starts a mounted ring, runs `body`, and always shuts everything down; then records an issue for every
    /// driver that did not exit 0 after its unmount and for anything left behind. `body`'s error is rethrown.
    static func with(nodes: Int = 3, copies: Int = 2, mountOn: [Int] = [0], attrTimeoutSeconds: Double = 1,
                     diskBytes: Int? = nil, nodeEnvironment: [String: String] = [:], secret: String? = nil, label: String = "mount",
                     sourceLocation: SourceLocation = #_sourceLocation, _ body: (MountedRing) throws -> Void) throws {
        let started = Deadline.now
        let mounted = try MountedRing(nodes: nodes, copies: copies, mountOn: mountOn, attrTimeoutSeconds: attrTimeoutSeconds,
                                      diskBytes: diskBytes, nodeEnvironment: nodeEnvironment, secret: secret, label: label)
        var failure: Error?
        do { try body(mounted) } catch { failure = error }
        defer {
            // Swift Testing's own durations are skewed while tests block their threads: print the real one.
            print("MountedRing: \(label) took \(String(format: "%.1f", Deadline.now - started)) s")
        }
        mounted.shutdown()
        for outcome in mounted.unmounted {
            #expect(outcome.termination == .exited(0),
                    "driver for \(outcome.mountpoint) \(outcome.termination.map { "\($0)" } ?? "did not end") after unmount\n\(outcome.log)",
                    sourceLocation: sourceLocation)
            #expect(outcome.problems.isEmpty, "unmount of \(outcome.mountpoint): \(outcome.problems)\n\(outcome.log)",
                    sourceLocation: sourceLocation)
        }
        let left = mounted.leftovers()
        #expect(left.isEmpty, "left behind: \(left)", sourceLocation: sourceLocation)
        if let failure { throw failure }
    }
}

/// The result of one shell command.
struct ShellResult: CustomStringConvertible {
    var script: String
    var status: ChildProcess.Termination
    var output: String
    var seconds: Double

    var description: String { "\(status) after \(String(format: "%.1f", seconds)) s: \(script)\n\(output)" }
}

/// A shell command running in the background.
struct BackgroundShell {
    let process: ChildProcess
    let outputPath: String

    var output: String { MountedRing.fileTail(outputPath, bytes: 16 << 20) }
}

/// How an unmount went.
struct UnmountOutcome {
    var mountpoint: String
    /// How the driver ended (nil: it could not be reaped, which `forceKill` makes impossible in practice).
    var termination: ChildProcess.Termination?
    /// What went wrong on the way (an unmount that failed, a driver that had to be killed, a mount left behind).
    var problems: [String]
    /// The end of the driver's log.
    var log: String
}

/// One `ouro mount --foreground` driver and its mount point.
final class DriverMount: @unchecked Sendable {
    let node: NodeAddress
    let nodeIndex: Int
    let mountpoint: String
    let cacheDirectory: String
    let logPath: String
    let attrTimeoutSeconds: Double
    let process: ChildProcess
    private(set) var isFinished = false
    /// The mount's device (`0:NN` in the mount table), to tell it from other mounts at the same path.
    private(set) var device = ""

    /// Starts the driver and waits (by the mount table, never `stat`) until the mount is there.
    init(node: NodeAddress, nodeIndex: Int, mountpoint: String, cacheDirectory: String, logPath: String,
         attrTimeoutSeconds: Double, extraArguments: [String] = [], environment: [String: String] = [:],
         timeoutSeconds: Double = 20) throws {
        self.node = node
        self.nodeIndex = nodeIndex
        self.mountpoint = mountpoint
        self.cacheDirectory = cacheDirectory
        self.logPath = logPath
        self.attrTimeoutSeconds = attrTimeoutSeconds
        // mkdir(2), not FileManager: nothing here may stat the mount point (it may hold a stale mount on a remount).
        guard Glibc.mkdir(mountpoint, 0o755) == 0 || errno == EEXIST else {
            throw TestFailure("cannot create \(mountpoint): \(String(cString: strerror(errno)))")
        }
        process = try ChildProcess(executable: TestEnvironment.ouroExecutable,
                                   arguments: ["mount", "--node", node.description, mountpoint, "--foreground",
                                               "--cache-dir", cacheDirectory, "--attr-timeout", "\(attrTimeoutSeconds)"] + extraArguments,
                                   outputPath: logPath, environment: environment)
        // A pid file whose owner's command line names the scratch directory: a later run's sweep can kill it.
        try? "\(process.pid)\n".write(toFile: "\(logPath).pid", atomically: false, encoding: .utf8)
        let deadline = Deadline(seconds: timeoutSeconds)
        // Mounted once the driver holds /dev/fuse and the mount table lists the mount point: a stale mount left
        // there by a killed driver is detached by the new driver before it opens /dev/fuse, so it cannot count.
        while !(Self.holdsFuseDevice(process.pid) && MountTable.isMounted(mountpoint)) {
            if let ended = process.termination {
                isFinished = true
                throw TestFailure("the driver for \(mountpoint) \(ended) before mounting:\n\(MountedRing.fileTail(logPath, bytes: 4000))")
            }
            if deadline.passed {
                _ = forceCleanup()
                throw TestFailure("\(mountpoint) was not mounted within \(timeoutSeconds) s:\n\(MountedRing.fileTail(logPath, bytes: 4000))")
            }
            usleep(20_000)
        }
        device = MountTable.device(of: mountpoint) ?? ""
    }

    deinit { if !isFinished { _ = forceCleanup() } }

    private static func holdsFuseDevice(_ pid: pid_t) -> Bool {
        let directory = "/proc/\(pid)/fd"
        guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return false }
        return descriptors.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)")) == "/dev/fuse" }
    }

    /// SIGKILL, leaving the mount behind (stale).
    func kill() -> ChildProcess.Termination {
        precondition(!isFinished, "\(mountpoint) was already unmounted")
        isFinished = true
        return process.forceKill()
    }

    var isMounted: Bool { MountTable.isMounted(mountpoint) }

    /// `fusermount3 -u` (or `ouro umount`), then waits for the driver to exit by itself; anything else is a problem,
    /// cleaned up by force.
    func unmount(withOuro: Bool, timeoutSeconds: Double = 20) -> UnmountOutcome {
        precondition(!isFinished, "\(mountpoint) was already unmounted")
        var problems: [String] = []
        if process.isRunning && isMounted {
            let executable = withOuro ? TestEnvironment.ouroExecutable : "/bin/fusermount3"
            let arguments = withOuro ? ["umount", mountpoint] : ["-u", mountpoint]
            let output = "\(logPath).umount"
            do {
                let command = try ChildProcess(executable: executable, arguments: arguments, outputPath: output)
                if let status = command.wait(seconds: timeoutSeconds) {
                    if status != .exited(0) { problems.append("\(executable) \(arguments) \(status): \(MountedRing.fileTail(output, bytes: 1000))") }
                } else {
                    command.forceKill()
                    problems.append("\(executable) \(arguments) did not finish within \(timeoutSeconds) s")
                }
            } catch {
                problems.append("cannot run \(executable): \(error)")
            }
            unlink(output)
            MountTable.detachCopiesElsewhere(mountpoint, device: device)
        } else if isMounted {
            problems.append("the driver had already \(process.termination.map { "\($0)" } ?? "ended") while mounted")
        }
        var termination = process.wait(seconds: timeoutSeconds)
        if termination == nil { problems.append("the driver did not exit within \(timeoutSeconds) s of the unmount") }
        if termination == nil || isMounted {
            let forced = forceCleanup()
            problems += forced.problems
            termination = termination ?? forced.termination
        }
        isFinished = true
        if isMounted { problems.append("still mounted after the cleanup") }
        return UnmountOutcome(mountpoint: mountpoint, termination: termination, problems: problems,
                              log: MountedRing.fileTail(logPath, bytes: 3000))
    }

    /// Lazy-detaches the mount and stops the driver (SIGTERM, then SIGKILL). For failure paths only.
    func forceCleanup() -> (termination: ChildProcess.Termination, problems: [String]) {
        var problems: [String] = []
        if isMounted {
            problems.append("had to detach the mount with fusermount3 -uz")
            MountTable.detach(mountpoint)
        }
        MountTable.detachCopiesElsewhere(mountpoint, device: device)
        var termination = process.termination
        if termination == nil {
            problems.append("had to stop the driver with signals")
            termination = process.stop(graceSeconds: 5)
        }
        if isMounted { MountTable.detach(mountpoint) }
        isFinished = true
        return (termination!, problems)
    }
}

/// `/proc/self/mountinfo`, read the way FUSE-NOTES asks: never `stat` a mount point to learn whether it is mounted.
enum MountTable {
    /// Every mount point (field 5, with the kernel's octal escapes undone).
    static func mountpoints() -> [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            return fields.count > 4 ? unescape(String(fields[4])) : nil
        }
    }

    static func isMounted(_ path: String) -> Bool { mountpoints().contains(path) }

    /// The device (`major:minor`, field 3) of the mount at `path`.
    static func device(of path: String, table: String = "/proc/self/mountinfo") -> String? {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            if fields.count > 4, unescape(String(fields[4])) == path { return String(fields[2]) }
        }
        return nil
    }

    /// A process that enters a new mount namespace (`ip netns exec`, `unshare -m`) while a mount is up takes a
    /// private copy of it, which keeps the FUSE connection, and so the driver, alive after the mount is gone from
    /// ours: another test's `ip netns exec … ouro node` would keep our driver running for as long as that node.
    /// Detaches such copies (`nsenter -m umount -l`), which touches nothing else in those namespaces.
    static func detachCopiesElsewhere(_ path: String, device: String) {
        guard !device.isEmpty, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return }
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")) ?? ""
        var handled: Set<String> = [own]
        for entry in entries {
            guard let pid = pid_t(entry),
                  let namespace = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt"),
                  !handled.contains(namespace), MountTable.device(of: path, table: "/proc/\(pid)/mountinfo") == device else { continue }
            handled.insert(namespace)
            let commandLine = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data())
                .map { $0 == 0 ? UInt8(ascii: " ") : $0 }
            print("MountedRing: detaching a copy of \(path) held in the mount namespace of pid \(pid) "
                  + "(\(String(decoding: commandLine, as: UTF8.self).prefix(160)))")
            guard let command = try? ChildProcess(executable: "/usr/bin/nsenter",
                                                  arguments: ["-t", "\(pid)", "-m", "/usr/bin/umount", "-l", path],
                                                  outputPath: "/dev/null") else { continue }
            if command.wait(seconds: 10) == nil { command.forceKill() }
        }
    }

    static func mountpoints(under directory: String) -> [String] {
        mountpoints().filter { $0 == directory || $0.hasPrefix(directory + "/") }
    }

    /// `fusermount3 -uz`: detaches even a busy or stale mount.
    static func detach(_ path: String) {
        guard let command = try? ChildProcess(executable: "/bin/fusermount3", arguments: ["-uz", path],
                                              outputPath: "/dev/null") else { return }
        if command.wait(seconds: 10) == nil { command.forceKill() }
    }

    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Processes by command line (from `/proc`), to find what a test left running.
enum ProcessTable {
    /// SIGKILLs a shell and everything it started (a `cp` stuck in a mount outlives a killed `sh`), then reaps it.
    static func killTree(_ process: ChildProcess) {
        guard process.isRunning else { return }
        kill(process.pid, SIGSTOP)  // no new children while we look
        for pid in descendants(of: process.pid) { kill(pid, SIGKILL) }
        process.forceKill()
    }

    /// Every process below `root` (children, their children, …), from the parent ids in `/proc/*/stat`.
    static func descendants(of root: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var children: [pid_t: [pid_t]] = [:]
        for entry in entries {
            guard let pid = pid_t(entry), let raw = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { continue }
            // "pid (comm) state ppid …": the command may contain spaces and parentheses; the last ')' ends it.
            let text = String(decoding: raw, as: UTF8.self)
            guard let close = text.lastIndex(of: ")") else { continue }
            let fields = text[text.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = pid_t(fields[1]) { children[parent, default: []].append(pid) }
        }
        var result: [pid_t] = []
        var pending = [root]
        while let next = pending.popLast() {
            for child in children[next] ?? [] {
                result.append(child)
                pending.append(child)
            }
        }
        return result
    }

    static func processes(mentioning fragments: [String]) -> [(pid: pid_t, commandLine: String)] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [(pid_t, String)] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != getpid(),
                  let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !raw.isEmpty else { continue }
            let commandLine = String(decoding: raw.map { $0 == 0 ? UInt8(ascii: " ") : $0 }, as: UTF8.self)
            // A zombie has an empty command line and is skipped above; a process still alive names its paths.
            if fragments.contains(where: { commandLine.contains($0) }) { found.append((pid, commandLine)) }
        }
        return found
    }
}

/// Cleans up after test runs that died with mounts up: their drivers are killed and their mounts detached, so that
/// nothing (and no later sweep of scratch directories) ever walks into a dead run's mount.
enum MountSweeper {
    private static let once: Void = {
        let root = TestEnvironment.scratchRoot + "/"
        for mountpoint in MountTable.mountpoints() where mountpoint.hasPrefix(root) {
            let entry = mountpoint.dropFirst(root.count).split(separator: "/").first.map(String.init) ?? ""
            guard let owner = entry.split(separator: "-").first.flatMap({ pid_t($0) }), owner != getpid(),
                  kill(owner, 0) != 0 && errno == ESRCH else { continue }
            let directory = root + entry
            for (pid, _) in ProcessTable.processes(mentioning: [directory]) { kill(pid, SIGKILL) }
            MountTable.detach(mountpoint)
        }
    }()

    static func sweepOnce() { _ = once }
}

extension MountedRing {
    /// A string as one single-quoted shell word.
    static func shellQuote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The last `bytes` of a file, as text (for failure messages).
    static func fileTail(_ path: String, bytes: Int) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "(no \(path))" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }
}
