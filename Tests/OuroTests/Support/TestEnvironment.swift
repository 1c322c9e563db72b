import Foundation
import Glibc

/// Where the test run finds the `ouro` executable and keeps its scratch directories.
enum TestEnvironment {
    /// The test bundle itself (`/proc/self/exe`).
    static var testExecutable: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        precondition(count > 0, "cannot read /proc/self/exe")
        return String(cString: buffer)
    }

    /// `ouro`, built by `swift build --build-tests` next to the test bundle (the test target depends on it).
    static var ouroExecutable: String {
        (testExecutable as NSString).deletingLastPathComponent + "/ouro"
    }

    /// Every scratch directory of every run lives under here: `<root>/<test pid>-<random>`.
    static let scratchRoot = "/tmp/ouro-tests"

    /// Keeps scratch directories (node logs, data) when set, for a post-mortem.
    static var keepScratch: Bool { ProcessInfo.processInfo.environment["OURO_TEST_KEEP"] != nil }

    /// A fresh scratch directory for one ring or test. Leftovers of crashed runs are cleaned up first (once).
    static func makeScratchDirectory(_ label: String) throws -> String {
        _ = sweptOnce
        let path = "\(scratchRoot)/\(getpid())-\(label)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func removeScratchDirectory(_ path: String) {
        guard !keepScratch else {
            print("OuroTests: kept \(path)")
            return
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Kills node processes left by a test run that died (their pid files are in its scratch directories),
    /// and removes those directories. A run that still lives is left alone.
    private static let sweptOnce: Void = {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: scratchRoot) else { return }
        for entry in entries {
            guard let owner = entry.split(separator: "-").first.flatMap({ pid_t($0) }),
                  owner != getpid(), kill(owner, 0) != 0 && errno == ESRCH else { continue }
            let directory = "\(scratchRoot)/\(entry)"
            let files = (FileManager.default.enumerator(atPath: directory)?.allObjects as? [String]) ?? []
            for file in files where file.hasSuffix(".pid") {
                guard let text = try? String(contentsOfFile: "\(directory)/\(file)", encoding: .utf8),
                      let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                      let commandLine = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                      String(decoding: commandLine, as: UTF8.self).contains(directory) else { continue }
                kill(pid, SIGKILL)
            }
            // A directory with a (possibly stale) FUSE mount under it is left to the mount tests' own sweeper:
            // removing files through a mount could hang.
            let mountInfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
            guard !mountInfo.contains(directory + "/") else { continue }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }()
}

/// Hands out TCP ports for nodes: below the kernel's ephemeral range (so that no outgoing connection of the test
/// can be using it, and a restarted node gets its port back), checked free by binding, never twice per run.
enum PortAllocator {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var handedOut: Set<UInt16> = []

    static let range: ClosedRange<UInt16> = {
        var low: UInt16 = 32768
        if let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
           let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
           let value = UInt16(first) {
            low = value
        }
        return low > 12000 ? 10000...(low - 1) : 61001...65000
    }()

    static func freePort() throws -> UInt16 {
        for _ in 0..<1000 {
            let port = UInt16.random(in: range)
            let fresh = lock.withLock { handedOut.insert(port).inserted }
            guard fresh, isFree(port) else { continue }
            return port
        }
        throw TestFailure("no free port found in \(range)")
    }

    /// `count` consecutive free ports (for `ouro up --base-port`); returns the first.
    static func freePorts(count: Int) throws -> UInt16 {
        for _ in 0..<1000 {
            let base = UInt16.random(in: range.lowerBound...(range.upperBound - UInt16(count)))
            let ports = (0..<count).map { base + UInt16($0) }
            let fresh = lock.withLock {
                guard handedOut.isDisjoint(with: ports) else { return false }
                handedOut.formUnion(ports)
                return true
            }
            guard fresh, ports.allSatisfy(isFree) else { continue }
            return base
        }
        throw TestFailure("no \(count) consecutive free ports found in \(range)")
    }

    private static func isFree(_ port: UInt16) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}
