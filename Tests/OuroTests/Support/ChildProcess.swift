import Foundation
import Glibc

/// A child process started with `posix_spawn`, with no blocked signals and default signal handlers whatever the
/// test thread that starts it has (Swift concurrency threads block some signals, and children inherit that).
/// Its standard output and error go to a file. Reaped exactly once, by whoever sees it exit first.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let executable: String
    let arguments: [String]
    let outputPath: String
    private let lock = NSLock()
    private var waitStatus: Int32?

    enum Termination: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)

        var description: String {
            switch self {
            case .exited(let code): "exited with \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            }
        }
    }

    /// Starts `executable` with `arguments`; stdout and stderr are appended to `outputPath`, stdin is /dev/null.
    init(executable: String, arguments: [String], outputPath: String, environment: [String: String] = [:]) throws {
        self.executable = executable
        self.arguments = arguments
        self.outputPath = outputPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TestFailure("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// The way the process ended, or nil while it runs (never blocks).
    var termination: Termination? {
        lock.lock()
        defer { lock.unlock() }
        if waitStatus == nil {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { waitStatus = status }
        }
        return waitStatus.map(Self.decode)
    }

    var isRunning: Bool { termination == nil }

    private static func decode(_ status: Int32) -> Termination {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    func send(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits up to `seconds` for the process to end; returns how it ended, or nil if it still runs.
    @discardableResult
    func wait(seconds: Double) -> Termination? {
        let deadline = Deadline(seconds: seconds)
        while true {
            if let termination { return termination }
            if deadline.passed { return nil }
            usleep(5_000)
        }
    }

    /// SIGTERM, a grace period, then SIGKILL; always reaps the process.
    @discardableResult
    func stop(graceSeconds: Double = 5) -> Termination {
        send(SIGTERM)
        if let ended = wait(seconds: graceSeconds) { return ended }
        return forceKill()
    }

    /// SIGKILL and reap.
    @discardableResult
    func forceKill() -> Termination {
        send(SIGKILL)
        while true {
            if let ended = wait(seconds: 10) { return ended }
            kill(pid, SIGKILL)
        }
    }

    /// The tail of the process's output file (for failure messages).
    func outputTail(bytes: Int = 4000) -> String {
        guard let data = FileManager.default.contents(atPath: outputPath) else { return "(no output)" }
        return String(decoding: data.suffix(bytes), as: UTF8.self)
    }

    /// Runs `/bin/sh -c script` to completion (bounded) and returns its exit code and output.
    static func shell(_ script: String, in directory: String, timeoutSeconds: Double = 60) throws -> (status: Termination, output: [UInt8]) {
        let outputPath = directory + "/sh-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { unlink(outputPath) }
        let child = try ChildProcess(executable: "/bin/sh", arguments: ["-c", script], outputPath: outputPath)
        guard let status = child.wait(seconds: timeoutSeconds) else {
            child.forceKill()
            throw TestFailure("shell command timed out after \(timeoutSeconds) s: \(script.prefix(200))")
        }
        let output = FileManager.default.contents(atPath: outputPath).map { [UInt8]($0) } ?? []
        return (status, output)
    }
}

/// A failure of the test machinery itself (a node that never came up, a wait that timed out).
struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
