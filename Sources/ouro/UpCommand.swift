import ArgumentParser
import Glibc
import OuroClient
import OuroCore

/// A child process of `ouro up` (a node or the mount), restarted with the same arguments when it dies.
final class Child {
    let name: String
    let arguments: [String]
    let logPath: String
    var pid: pid_t = 0
    var restarts = 0
    /// While `pid` is 0 (it died, or a start failed): when to start it again.
    var retryAt = 0.0
    /// When it was last started, and the wait before the next restart (doubled each time it dies young).
    var startedAt = 0.0
    var backoffSeconds = 0.25

    /// The next start, after twice the last wait (at most 30 s).
    func scheduleRestart() {
        backoffSeconds = min(backoffSeconds * 2, 30)
        retryAt = monotonicSeconds() + backoffSeconds
    }

    init(name: String, arguments: [String], logPath: String) {
        self.name = name
        self.arguments = arguments
        self.logPath = logPath
    }

    /// Starts `ouro <arguments>` (this same executable) with its output appended to `logPath`.
    func spawn() throws {
        pid = 0
        // The very binary this process runs, even if a rebuild has replaced or removed its file since: a restarted
        // node runs the same version as the rest of the ring. Its path is only the name the child is listed under.
        do {
            pid = try spawnProcess("/proc/self/exe", [selfExecutablePath()] + arguments, logPath: logPath)
        } catch {
            throw fail("cannot start \(name): \(error)")
        }
        startedAt = monotonicSeconds()
    }
}

/// Starts `executable` with `argv` (argv[0] first), output appended to `logPath`, no signals blocked and default
/// handlers whatever this process has; in a session of its own if `newSession` (it then outlives this process's).
func spawnProcess(_ executable: String, _ argv: [String], logPath: String, newSession: Bool = false) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attributes, &empty)
    var defaults = Signals.set
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    let setSessionID: Int32 = 0x80  // POSIX_SPAWN_SETSID (glibc), which Swift does not import
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (newSession ? setSessionID : 0)))
    let pointers = argv.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    var started: pid_t = 0
    let result = posix_spawn(&started, executable, &actions, &attributes, pointers, environ)
    guard result == 0 else { throw OuroError(.internal, "cannot start \(executable): \(String(cString: strerror(result)))") }
    return started
}

/// The path this process was started from (without the " (deleted)" the kernel adds once the file is replaced).
func selfExecutablePath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard count > 0 else { return CommandLine.arguments[0] }
    let path = String(cString: buffer)
    return path.hasSuffix(" (deleted)") ? String(path.dropLast(" (deleted)".count)) : path
}

struct UpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a ring of N nodes on this machine (and mount it), and supervise them until Ctrl-C.")

    @Option(help: "Number of nodes.") var nodes = 3
    @Option(name: .customLong("base-port"), help: "Port of the first node; the others follow.") var basePort: UInt16 = 7000
    @Option(help: "Host the nodes listen on.") var host = "127.0.0.1"
    @Option(help: "Directory holding every node's data (node-0, node-1, …).") var data = "ouro-data"
    @Option(help: "Copies of every chunk.") var copies = 2
    @Option(name: .customLong("gossip-interval"), help: "Milliseconds between pings and catalog syncs.") var gossipInterval = 1000
    @Option(name: .customLong("grace-period"), help: "Seconds a node may stay dead before its chunks are re-replicated.") var gracePeriod = 60
    @Option(help: "Also mount the ring at this directory.") var mount: String?
    @Option(name: .customLong("secret-file"), help: "File holding the cluster secret every node and client must present.")
    var secretFile: String?
    @Option(help: "Serve the web dashboard and GET /metrics from here on: node i on this port + i, the mount's metrics on the port after the nodes' (host:port; default: the first free ports from 127.0.0.1:8000).")
    var http: NodeAddress?
    @Flag(name: .customLong("no-http"), help: "Serve no dashboard and no metrics.") var noHTTP = false
    @Flag(help: "Do not encrypt the ring's traffic, and make no cluster secret (with --secret-file: the secret is still proved, by a challenge, but bytes cross in the clear). Trusted networks only.")
    var insecure = false

    func run() throws {
        Signals.block()
        guard nodes >= 1, nodes <= 100 else { throw fail("--nodes must be between 1 and 100") }
        if let http, Int(http.port) + nodes > 65535 { throw fail("--http: no room for \(nodes + 1) ports from \(http.port)") }
        let http = noHTTP ? nil : self.http ?? Self.freePorts(host: "127.0.0.1", from: 8000, count: nodes + 1)
        /// The HTTP address of child `index` (the nodes, then the mount).
        func metricsAddress(_ index: Int) -> NodeAddress? {
            http.map { NodeAddress(host: $0.host, port: $0.port + UInt16(index)) }
        }
        let root = absolutePath(data)
        mkdir(root, 0o755)
        // Closed by default: a secret of our own in the data directory when none is given (kept across restarts).
        var secretArguments: [String] = []
        var madeSecret: String?
        if insecure { ClientSecret.use(encryption: false) }
        if !insecure || secretFile != nil {
            var secretFile = secretFile ?? ProcessInfoLite.environment("OURO_SECRET_FILE")
            if secretFile == nil {
                secretFile = root + "/secret"
                do { if try Self.makeSecretFile(root + "/secret") { madeSecret = root + "/secret" } } catch { throw fail("\(error)") }
            }
            let path = absolutePath(secretFile!)
            do { ClientSecret.use(try ClientSecret.load(file: path)) } catch { throw fail("\(error)") }
            secretArguments = ["--secret-file", path]
        }
        let addresses = (0..<nodes).map { NodeAddress(host: host, port: basePort + UInt16($0)) }
        var children: [Child] = []
        for (index, address) in addresses.enumerated() {
            let directory = "\(root)/node-\(index)"
            mkdir(directory, 0o755)
            children.append(Child(name: "node \(address)", arguments: [
                "node", "--listen", address.description, "--data", directory, "--copies", "\(copies)",
                "--gossip-interval", "\(gossipInterval)", "--grace-period", "\(gracePeriod)"] + secretArguments
                + (insecure ? ["--insecure"] : [])
                + (metricsAddress(index).map { ["--http", $0.description] } ?? []),
                logPath: "\(directory)/node.log"))
        }
        let stopAll = { (children: [Child]) in
            for child in children.reversed() where child.pid > 0 { kill(child.pid, SIGTERM) }
            let deadline = monotonicSeconds() + 10
            for child in children.reversed() where child.pid > 0 {
                var status: Int32 = 0
                while waitpid(child.pid, &status, WNOHANG) == 0 {
                    if monotonicSeconds() > deadline { kill(child.pid, SIGKILL) }
                    usleep(20_000)
                }
            }
        }
        for child in children { try child.spawn() }
        let pool = ConnectionPool()
        for address in addresses {
            guard waitUntil(seconds: 15, { (try? NodeClient(address, pool: pool).ping()) != nil }) else {
                stopAll(children)
                throw fail("node \(address) did not start; see its node.log under \(root)")
            }
        }
        do {
            for (index, address) in addresses.enumerated() {
                try NodeClient(address, pool: pool).setNext(addresses[(index + 1) % addresses.count])
            }
            try NodeClient(addresses[0], pool: pool).discover()
        } catch {
            stopAll(children)
            throw fail("wiring the ring failed: \(error)")
        }
        print("OuroborosFS ring of \(nodes) node\(nodes == 1 ? "" : "s") is up (data in \(root)):")
        for (index, (child, address)) in zip(children, addresses).enumerated() {
            print("  node \(address)  pid \(child.pid)  log \(child.logPath)"
                  + (metricsAddress(index).map { "  dashboard http://\($0)/" } ?? ""))
        }
        if let mount {
            let mountpoint = absolutePath(mount)
            mkdir(mountpoint, 0o755)
            let driver = Child(name: "mount \(mountpoint)",
                               arguments: ["mount", "--node", addresses[0].description, mountpoint, "--foreground"] + secretArguments
                                   + (insecure ? ["--insecure"] : [])
                                   + (metricsAddress(nodes).map { ["--http", $0.description] } ?? []),
                               logPath: "\(root)/mount.log")
            try driver.spawn()
            children.append(driver)
            guard waitUntil(seconds: 15, { isMounted(mountpoint) }) else {
                stopAll(children)
                throw fail("the mount did not come up; see \(root)/mount.log")
            }
            print("  mounted at \(mountpoint)  pid \(driver.pid)  log \(driver.logPath)"
                  + (metricsAddress(nodes).map { "  metrics http://\($0)/metrics" } ?? ""))
        }
        if let secret = secretArguments.last {
            print("Cluster secret: \(secret)\(madeSecret != nil ? " (made now)" : "")  (clients on this machine need nothing;"
                  + " elsewhere: --secret-file or OURO_SECRET_FILE)")
            print(insecure ? "Traffic is not encrypted (--insecure): anyone on the network can read it."
                           : "Traffic between nodes, mounts and tools: TLS 1.3 keyed by the secret.")
        } else {
            print("No cluster secret (--insecure): anyone who reaches these ports can read, write and stop the ring.")
        }
        if let dashboard = metricsAddress(0) { print("Dashboard: http://\(dashboard)/  (every node serves one; metrics at /metrics)") }
        print("Press Ctrl-C to stop.")
        fflush(stdout)
        supervise(children)
        stopAll(children)
        print("stopped")
    }

    /// Writes a new random secret (32 bytes from the kernel, as hex) to `path`, readable by its owner only, unless
    /// the file exists; true when it made one.
    static func makeSecretFile(_ path: String) throws -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 && errno == EEXIST { return false }
        guard fd >= 0 else { throw OuroError.unavailable("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let text = ChallengeAuth.nonce() + "\n"
        guard write(fd, text, text.utf8.count) == text.utf8.count, fsync(fd) == 0 else {
            unlink(path)
            throw OuroError.unavailable("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return true
    }

    /// The first `count` consecutive ports from `from` on that are all free now (nil: none below 9000).
    static func freePorts(host: String, from: UInt16, count: Int) -> NodeAddress? {
        var base = Int(from)
        while base + count <= 9000 {
            let taken = (0..<count).first { (try? ListeningSocket(address: NodeAddress(host: host, port: UInt16(base + $0)))) == nil }
            guard let taken else { return NodeAddress(host: host, port: UInt16(base)) }
            base += taken + 1
        }
        return nil
    }

    /// Restarts children that die, until SIGINT/SIGTERM/SIGHUP.
    private func supervise(_ children: [Child]) {
        while true {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGHUP) == 1 {
                _ = Signals.wait()
                return
            }
            for child in children {
                if child.pid == 0 {
                    if monotonicSeconds() >= child.retryAt { restart(child) }
                    continue
                }
                var status: Int32 = 0
                guard waitpid(child.pid, &status, WNOHANG) == child.pid else { continue }
                child.pid = 0
                child.restarts += 1
                // A child that dies young (a port taken, a bad data directory) is restarted less and less often.
                if monotonicSeconds() - child.startedAt >= 10 { child.backoffSeconds = 0.25 }
                child.scheduleRestart()
                FileHandleLite.standardError.write(
                    "ouro up: \(child.name) exited (status \(status)); restarting in \(child.backoffSeconds) s\n")
            }
            usleep(100_000)
        }
    }

    /// Starts `child` again; if that fails, tries again later (a failed start must not end the supervision).
    private func restart(_ child: Child) {
        do {
            try child.spawn()
        } catch {
            child.scheduleRestart()
            FileHandleLite.standardError.write("ouro up: \(error); trying again in \(child.backoffSeconds) s\n")
        }
    }
}

func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: 4096)
    return String(cString: getcwd(&buffer, buffer.count)) + "/" + path
}

func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        usleep(50_000)
    }
    return condition()
}

/// Whether `path` is a mount point, from /proc/self/mountinfo (never `stat`: a FUSE mount may not answer yet).
func isMounted(_ path: String) -> Bool {
    guard let file = fopen("/proc/self/mountinfo", "r") else { return false }
    defer { fclose(file) }
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, file) > 0 {
        let fields = String(cString: line!).split(separator: " ")
        if fields.count > 4, fields[4] == path { return true }
    }
    return false
}
