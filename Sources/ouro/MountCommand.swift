import ArgumentParser
import Glibc
import Logging
import OuroClient
import OuroCore
import OuroFS
import OuroHTTP

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount the ring as a directory.")

    @OptionGroup var options: NodeOption
    @Argument(help: "The directory to mount on.") var mountpoint: String
    @Flag(help: "Stay in the foreground (otherwise the driver runs in the background once mounted).") var foreground = false
    @Option(name: .customLong("cache-dir"), help: "Directory for write spools (default /var/tmp/ouro-cache-<pid>).") var cacheDir: String?
    @Option(name: .customLong("attr-timeout"), help: "Seconds the kernel may cache attributes and names.") var attrTimeout = 1.0
    @Flag(name: .customLong("no-allow-other"), help: "Only the mounting user may use the mount (default for root: every user, with the kernel checking modes).") var noAllowOther = false
    @Flag(name: .customLong("no-default-permissions"), help: "Do not let the kernel check permissions from mode bits.") var noDefaultPermissions = false
    @Flag(help: "Print every FUSE request.") var debug = false
    @Option(help: "Serve GET /metrics (Prometheus text) on this address (host:port).") var http: NodeAddress?

    /// The last line a failed driver wrote with `fail` (`ouro: …`), without its prefix.
    static func lastFailure(inLog path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var last: String?
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            if text.hasPrefix("ouro: ") { last = String(text.dropFirst(6).prefix { $0 != "\n" }) }
        }
        return last
    }

    func run() throws {
        let mountpoint = absolutePath(self.mountpoint)
        if !foreground {
            // Run the driver as a background child and return once the mount is up (or report why it is not).
            var arguments = CommandLine.arguments.dropFirst().filter { $0 != "--foreground" }
            arguments.append("--foreground")
            let child = Child(name: "mount", arguments: Array(arguments), logPath: "/var/tmp/ouro-mount-\(getpid()).log")
            try child.spawn()
            guard waitUntil(seconds: 15, { isMounted(mountpoint) || waitpid(child.pid, nil, WNOHANG) == child.pid }),
                  isMounted(mountpoint) else {
                // The driver's own reason (its last `ouro:` line), so that the user need not open the log for it.
                let reason = Self.lastFailure(inLog: child.logPath).map { ": \($0)" } ?? ""
                throw fail("mount failed\(reason); see \(child.logPath)")
            }
            print("mounted \(mountpoint) (driver pid \(child.pid), log \(child.logPath))")
            return
        }
        limitMallocArenas()
        bootstrapLogging()
        let logger = Logger(label: "ouro.mount")
        let ring = RingClient(seed: options.node, logger: logger)
        // NODE STATUS, not a ping: it needs the cluster secret where there is one, so a mount without it fails here.
        do { _ = try NodeClient(options.node, pool: ring.pool).status() } catch { throw fail("cannot reach \(options.node): \(error)") }
        if cacheDir == nil { removeStaleCaches(in: "/var/tmp") }
        let cache = cacheDir ?? "/var/tmp/ouro-cache-\(getpid())"
        var disk = statvfs()
        mkdir(cache, 0o700)
        let available = statvfs(cache, &disk) == 0 ? UInt64(disk.f_bavail) * UInt64(disk.f_frsize) : 1 << 30
        var fileSystemOptions = RingFileSystemOptions(cacheDirectory: cache, spoolLimitBytes: available / 10 * 8)
        fileSystemOptions.attributeSeconds = attrTimeout
        let fileSystem = try RingFileSystem(ring: ring, options: fileSystemOptions, logger: logger)
        if let http {
            MetricsServer.start(on: http, logger: logger) { fileSystem.collectMetrics() }
            logger.info("metrics served", metadata: ["address": "http://\(http)/metrics"])
        }
        var mountOptions = FuseMountOptions(attributeTimeoutSeconds: attrTimeout)
        if noAllowOther { mountOptions.allowOther = false }
        mountOptions.defaultPermissions = !noDefaultPermissions
        mountOptions.fsName = "ouro@\(options.node)"
        mountOptions.debug = debug
        do {
            // The ring's health inside the mount: `.ouro/` and the `user.ouro.*` attributes.
            let mount = try FuseMount(fileSystem: HealthFiles(wrapping: fileSystem, source: fileSystem), mountpoint: mountpoint,
                                      options: mountOptions, logger: logger)
            logger.info("serving", metadata: ["mountpoint": "\(mountpoint)", "node": "\(options.node)"])
            _ = try mount.run()
            logger.info("unmounted", metadata: ["mountpoint": "\(mountpoint)"])
        } catch {
            throw fail("\(error)")
        }
    }
}

struct UmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "umount", abstract: "Unmount a mounted ring.")
    @Argument(help: "The mount point.") var mountpoint: String

    func run() throws {
        do { try FuseMount.unmount(absolutePath(mountpoint)) } catch { throw fail("\(error)") }
    }
}

/// The spool directories of drivers that were killed: their spools were unlinked when created, so only the empty
/// directory is left; one whose process is gone is removed (rmdir leaves anything that is not empty alone).
func removeStaleCaches(in parent: String) {
    guard let directory = opendir(parent) else { return }
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        guard name.hasPrefix("ouro-cache-"), let pid = Int32(name.dropFirst("ouro-cache-".count)),
              kill(pid, 0) != 0 && errno == ESRCH else { continue }
        _ = rmdir("\(parent)/\(name)")
    }
}
