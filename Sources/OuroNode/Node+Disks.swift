import Glibc
import OuroClient
import OuroCore
import SystemPackage

/// Which disk a node keeps its data on: this machine's id and the device of the data directory. Nodes on one
/// disk are one copy as far as a crash of the machine or a lost disk is concerned, so a catalog change waits for an
/// fsync on as many *different* disks as a file has copies, and `df` counts every disk once.
enum DiskIdentity {
    static func of(_ directory: FilePath) -> String? {
        var info = stat()
        guard stat(directory.string, &info) == 0 else { return nil }
        return "\(machineID)/\(String(info.st_dev, radix: 16))"
    }

    /// `/etc/machine-id` (systemd, dbus), else the host name.
    static let machineID: String = {
        for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
            if let bytes = FileManagerLite.read(FilePath(path)) {
                let id = String(decoding: bytes.filter { $0 > 0x20 }, as: UTF8.self)
                if !id.isEmpty { return id }
            }
        }
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return String(cString: name)
    }()
}

/// The disks of the other members, as their `NODE USAGE` last said (refreshed by the sync loop).
final class PeerDisks: @unchecked Sendable {
    private let lock = Lock()
    private var disks: [NodeAddress: (disk: String?, asked: Double)] = [:]
    /// How long an answer holds: a member restarted at the same address may keep its data elsewhere now.
    static let refreshSeconds = 60.0

    func disk(of peer: NodeAddress) -> String? { lock.withLock { disks[peer]?.disk } }

    func needsAsking(_ peer: NodeAddress, now: Double) -> Bool {
        lock.withLock { disks[peer].map { now - $0.asked >= Self.refreshSeconds } ?? true }
    }

    func record(_ disk: String?, for peer: NodeAddress, now: Double) {
        lock.withLock { disks[peer] = (disk, now) }
    }
}

extension Node {
    /// Asks live members whose disk we do not know (or not lately) with short timeouts; a member that does not
    /// answer stays unknown, which counts as a disk of its own.
    func refreshPeerDisks(_ map: Netmap) {
        let now = monotonicSeconds()
        for peer in map.liveAddresses where peer != address && peerDisks.needsAsking(peer, now: now) {
            guard let connection = try? Connection(to: peer, timeoutMilliseconds: 1000) else { continue }
            connection.socket.setTimeouts(seconds: 2)
            guard (try? connection.send("NODE USAGE")) != nil,
                  let usage = try? connection.readJSON(RingUsage.self) else { continue }
            peerDisks.record(usage.disk, for: peer, now: now)
        }
    }

    /// The peers, in ring order after this node, that must fsync a change before it is answered: one per disk not
    /// yet holding it, until it is on as many disks as a file has copies (this node's disk counts first).
    func peersThatSyncNow(_ peers: [NodeAddress]) -> Set<NodeAddress> {
        var covered: Set<String> = ownDisk.map { [$0] } ?? []
        var wanted = configuration.copies - 1
        var chosen: Set<NodeAddress> = []
        for peer in peers where wanted > 0 {
            let disk = peerDisks.disk(of: peer)
            if let disk, covered.contains(disk) { continue }
            if let disk { covered.insert(disk) }
            chosen.insert(peer)
            wanted -= 1
        }
        return chosen
    }
}
