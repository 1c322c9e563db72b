import CFuse
import Glibc
import Logging
import Synchronization

/// How a `FuseMount` is mounted and served.
public struct FuseMountOptions: Sendable {
    /// How long the kernel may cache attributes and name lookups (attr_timeout and entry_timeout), in seconds.
    public var attributeTimeoutSeconds: Double
    /// Lets users other than the one who mounted use the mount (`allow_other`; for a user other than root,
    /// /etc/fuse.conf must say `user_allow_other`).
    public var allowOther: Bool
    /// Lets the kernel check permissions from mode, uid and gid before calling the file system.
    public var defaultPermissions: Bool
    /// The mount's source as mount(8) and df(1) show it; its type shows as `fuse.ouro`.
    public var fsName: String
    /// The mount's read-ahead window in KiB, set during FUSE INIT; 0 keeps the kernel's default (128).
    public var readAheadKB: Int
    /// The most libfuse worker threads, i.e. requests the file system works on at once.
    public var maxThreads: Int
    /// Makes libfuse print every request and reply to stderr.
    public var debug: Bool

    public init(attributeTimeoutSeconds: Double = 1, allowOther: Bool = getuid() == 0,
                defaultPermissions: Bool = true, fsName: String = "ouro", readAheadKB: Int = 4096,
                maxThreads: Int = 16, debug: Bool = false) {
        self.attributeTimeoutSeconds = attributeTimeoutSeconds
        self.allowOther = allowOther
        self.defaultPermissions = defaultPermissions
        self.fsName = fsName
        self.readAheadKB = readAheadKB
        self.maxThreads = maxThreads
        self.debug = debug
    }
}

/// A failure to mount, serve or unmount (as opposed to a `FileSystemError` answered to the kernel).
public struct FuseMountError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// A FUSE mount whose requests a `FileSystemOperations` answers: `init` mounts, `run` serves until the end and
/// then unmounts. Only one mount per process may run at a time: libfuse's signal handlers are process-wide.
public final class FuseMount: @unchecked Sendable {
    /// The mount point's canonical path.
    public let mountpoint: String
    private let adapter: FuseAdapter
    private let session: OpaquePointer
    private let maxThreads: Int

    private enum Phase {
        case mounted
        case running(pthread_t)
        case finished
    }

    private let state = Mutex<(phase: Phase, exitRequested: Bool)>((.mounted, false))

    /// Mounts the file system at `mountpoint`, first clearing a stale mount left there by a driver that died.
    /// Requests are served only once `run` is called (until then, processes touching the mount wait).
    public init(fileSystem: FileSystemOperations, mountpoint: String, options: FuseMountOptions = FuseMountOptions(),
                logger: Logger = Logger(label: "ouro.fuse")) throws {
        precondition(options.maxThreads > 0 && options.readAheadKB >= 0, "invalid FuseMountOptions")
        try Self.clearStaleMount(mountpoint, logger: logger)
        guard let resolved = realpath(mountpoint, nil) else {
            throw FuseMountError("mount point \(mountpoint): \(Self.errnoDescription(errno))")
        }
        let canonical = String(cString: resolved)
        free(resolved)

        let adapter = FuseAdapter(fileSystem: fileSystem, timeoutSeconds: options.attributeTimeoutSeconds,
                                  readAheadKB: options.readAheadKB, mountpoint: canonical, logger: logger)
        var arguments = ["ouro", "-o", Self.mountOptions(options)]
        if options.debug { arguments.append("-d") }
        var operations = FuseAdapter.operations()
        let cArguments = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        // The session keeps an unretained pointer to the adapter: `self` keeps the adapter alive until after
        // fuse_session_destroy.
        guard let session = cfuse_session_new(Int32(cArguments.count), cArguments.map { UnsafePointer($0) },
                                              &operations, Unmanaged.passUnretained(adapter).toOpaque())
        else {
            throw FuseMountError("libfuse refused the options \(arguments.dropFirst())")
        }
        guard fuse_session_mount(session, canonical) == 0 else {
            fuse_session_destroy(session)
            throw FuseMountError("could not mount at \(canonical) (libfuse printed why)")
        }
        // Requests and replies through CFuse's watch, to negotiate FUSE_HANDLE_KILLPRIV_V2 (no GETXATTR before
        // each write). Without it the kernel keeps clearing setuid/setgid itself: nothing is lost but speed.
        _ = cfuse_session_watch_io(session)
        self.mountpoint = canonical
        self.adapter = adapter
        self.session = session
        self.maxThreads = options.maxThreads
    }

    deinit {
        if case .mounted = state.withLock({ $0.phase }) {
            fuse_session_unmount(session)
            fuse_session_destroy(session)
        }
    }

    /// Serves requests on up to `maxThreads` libfuse threads until the mount is unmounted (`fusermount3 -u`,
    /// `umount`), the process gets SIGINT, SIGTERM or SIGHUP, or `requestExit` is called; then unmounts and
    /// destroys the session, which calls the file system's `unmounting`. Call it once, from a thread that may
    /// block for that long (not from a Swift concurrency task).
    /// - Returns: 0 after an unmount or `requestExit`, otherwise the number of the signal that stopped it.
    public func run() throws -> Int32 {
        state.withLock { state in
            guard case .mounted = state.phase else { preconditionFailure("FuseMount.run() called twice") }
        }
        // Signal handling: the signals may arrive blocked (a child started from a Dispatch or Swift
        // concurrency thread inherits that), and libfuse only installs its handlers over SIG_DFL.
        cfuse_prepare_signals()
        guard fuse_set_signal_handlers(session) == 0 else {
            throw FuseMountError("could not install libfuse's signal handlers")
        }
        state.withLock { $0.phase = .running(pthread_self()) }
        let result = cfuse_session_loop_mt(session, UInt32(maxThreads))
        // Finished before the handlers go: `requestExit` must not signal this thread without them.
        let exitRequested = state.withLock { state in
            state.phase = .finished
            return state.exitRequested
        }
        fuse_remove_signal_handlers(session)
        fuse_session_unmount(session)
        fuse_session_destroy(session)
        guard result >= 0 else { throw FuseMountError("the FUSE session failed: \(Self.errnoDescription(-result))") }
        return exitRequested ? 0 : result
    }

    /// Makes `run` stop serving, unmount and return 0, as a signal would. Safe from any thread, at any time.
    public func requestExit() {
        state.withLock { state in
            state.exitRequested = true
            switch state.phase {
            case .mounted:
                fuse_session_exit(session)  // `run` will return at once
            case .running(let thread):
                // The loop thread waits on a semaphore only a worker or a signal wakes; SIGINT always has a handler
                // while running (ours or the process's), and the handler interrupts the wait.
                fuse_session_exit(session)
                pthread_kill(thread, SIGINT)
            case .finished:
                break
            }
        }
    }

    /// Unmounts the FUSE mount at `mountpoint` with `fusermount3 -u`; fails if it is busy.
    public static func unmount(_ mountpoint: String) throws {
        let status = cfuse_fusermount("-u", mountpoint)
        guard status == 0 else { throw fusermountError("-u", mountpoint, status) }
    }

    /// A driver killed without unmounting leaves its mount behind, answering ENOTCONN to everything: detach it.
    /// (Checking with stat(2) is safe here: this process serves no mount at that path yet.)
    private static func clearStaleMount(_ mountpoint: String, logger: Logger) throws {
        var info = stat()
        guard stat(mountpoint, &info) != 0, errno == ENOTCONN else { return }
        logger.notice("clearing a stale FUSE mount left by a driver that died",
                      metadata: ["mountpoint": "\(mountpoint)"])
        let status = cfuse_fusermount("-uz", mountpoint)
        guard status == 0 else { throw fusermountError("-uz", mountpoint, status) }
    }

    private static func fusermountError(_ option: String, _ mountpoint: String, _ status: Int32) -> FuseMountError {
        status < 0
            ? FuseMountError("could not run fusermount3: \(errnoDescription(-status))")
            : FuseMountError("fusermount3 \(option) \(mountpoint) failed with status \(status)")
    }

    /// The `-o` option list. libfuse splits it at commas, so commas and backslashes in the name are escaped.
    private static func mountOptions(_ options: FuseMountOptions) -> String {
        var escapedName = ""
        for character in options.fsName {
            if character == "," || character == "\\" { escapedName.append("\\") }
            escapedName.append(character)
        }
        var list = ["fsname=\(escapedName)", "subtype=ouro"]
        if options.allowOther { list.append("allow_other") }
        if options.defaultPermissions { list.append("default_permissions") }
        return list.joined(separator: ",")
    }

    private static func errnoDescription(_ code: Int32) -> String {
        String(cString: strerror(code))
    }
}
