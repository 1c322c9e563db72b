import ArgumentParser
import COuroSupport
import Glibc
import Logging
import OuroClient
import OuroCore

@main
struct Ouro: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ouro",
        abstract: "OuroborosFS: a distributed, self-healing, ring-based file store.",
        subcommands: [NodeCommand.self, UpCommand.self, MountCommand.self, UmountCommand.self, StatusCommand.self,
                      ListCommand.self, PushCommand.self, PullCommand.self, VerifyCommand.self, DrillCommand.self, HealCommand.self, PlanCommand.self, LeaveCommand.self])

    static func main() {
        // A node that goes away mid-transfer gives an error message, not a silent death by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        main(nil)
    }
}

/// Logs go to standard error; `OURO_LOG_LEVEL` (trace…critical) sets the level, info by default.
func bootstrapLogging() {
    let level = ProcessInfoLite.environment("OURO_LOG_LEVEL").flatMap(Logger.Level.init(rawValue:)) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

enum ProcessInfoLite {
    static func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

extension NodeAddress: ExpressibleByArgument {
    public init?(argument: String) { self.init(argument) }
}

/// The `--node` and `--secret-file` options every client command takes.
struct NodeOption: ParsableArguments {
    @Option(name: .long, help: "A node of the ring (host:port).")
    var node: NodeAddress = NodeAddress(host: "127.0.0.1", port: 7000)
    @Option(name: .customLong("secret-file"), help: "File holding the ring's cluster secret (default: the file named by OURO_SECRET_FILE, if any).")
    var secretFile: String?
    @Flag(help: "Prove the secret by the challenge and send bytes in the clear, not over TLS (for a ring whose nodes run --insecure; also OURO_INSECURE=1).")
    var insecure = false

    func validate() throws {
        if insecure { ClientSecret.use(encryption: false) }
        guard let secretFile else { return }
        do {
            ClientSecret.use(try ClientSecret.load(file: secretFile))
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// Fails a command with a message and exit code 1 (no stack trace for the world's failures).
func fail(_ message: String) -> ExitCode {
    FileHandleLite.standardError.write("ouro: \(message)\n")
    return ExitCode(1)
}

enum FileHandleLite {
    struct Output {
        let fd: Int32
        func write(_ text: String) {
            var text = text
            text.withUTF8 { bytes in
                var offset = 0
                while offset < bytes.count {
                    let count = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if count <= 0 { if errno == EINTR { continue }; return }
                    offset += count
                }
            }
        }
    }
    static let standardError = Output(fd: 2)
    static let standardOutput = Output(fd: 1)
}

/// Progress on a terminal for long transfers: `name  42%  120.3 MB/s`, redrawn in place.
final class Progress: @unchecked Sendable {
    private let label: String
    private let totalBytes: UInt64
    private let enabled: Bool
    private let started = monotonicSeconds()
    private var lastDraw = 0.0

    init(label: String, totalBytes: UInt64) {
        self.label = label
        self.totalBytes = totalBytes
        enabled = isatty(2) == 1 && totalBytes >= 8 << 20
    }

    private let lock = Lock()

    /// May be called from several threads (a pull copies chunks in parallel).
    func update(_ doneBytes: UInt64) {
        guard enabled else { return }
        lock.withLock { draw(doneBytes) }
    }

    private func draw(_ doneBytes: UInt64) {
        let now = monotonicSeconds()
        guard now - lastDraw > 0.2 || doneBytes == totalBytes else { return }
        lastDraw = now
        let percent = totalBytes == 0 ? 100 : Int(doneBytes * 100 / totalBytes)
        let rate = Double(doneBytes) / max(0.001, now - started) / 1e6
        FileHandleLite.standardError.write("\r\(label)  \(percent)%  \(String(format1: rate)) MB/s   ")
    }

    func finish() {
        guard enabled else { return }
        FileHandleLite.standardError.write("\n")
    }
}

extension String {
    init(format1 value: Double) {
        let scaled = (value * 10).rounded() / 10
        self = "\(scaled)"
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in every thread (call first, before threads start) and waits for one of them.
enum Signals {
    static var set: sigset_t = {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGHUP)
        return set
    }()

    static func block() {
        signal(SIGPIPE, SIG_IGN)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Waits for a termination signal; returns its number.
    static func wait() -> Int32 {
        var received: Int32 = 0
        sigwait(&set, &received)
        return received
    }
}

/// glibc gives each thread that allocates its own malloc arena, and freed memory stays in them: with dozens of I/O
/// threads that multiplies the resident size. Two arenas are plenty for a process that mostly moves bytes.
/// `keepFreeBytes`: free heap kept for reuse instead of given back at once (0: glibc's default, 128 KiB).
func limitMallocArenas(keepFreeBytes: Int32 = 0) {
    ouro_limit_malloc_arenas(2, keepFreeBytes)
}
