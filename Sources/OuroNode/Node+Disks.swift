import Glibc
import OuroClient
import OuroCore
import SystemPackage

/// Which disk a node keeps its data on: the running kernel (its boot id) and the device of the data directory.
/// Nodes on one disk are one copy as far as a crash of the machine or a lost disk is concerned, so a catalog change
/// waits for an fsync on as many *different* disks as a file has copies, and `df` counts every disk once. (The
/// boot id, unlike `/etc/machine-id`, differs between VMs cloned from one image; containers on one kernel share it,
/// and there the device tells their disks apart.)
enum DiskIdentity {
    static func of(_ directory: FilePath) -> String? {
        var info = stat()
        guard let kernel = bootID, stat(directory.string, &info) == 0 else { return nil }
        return "\(kernel)/\(String(info.st_dev, radix: 16))"
    }

    static let bootID: String? = FileManagerLite.read(FilePath("/proc/sys/kernel/random/boot_id"))
        .map { String(decoding: $0.filter { $0 > 0x20 }, as: UTF8.self) }
        .flatMap { $0.isEmpty ? nil : $0 }
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

    /// The peers (in ring order after this node) that must fsync a change before it is answered, so that it is on
    /// `copies` disks: this node's counts first.
    func peersThatSyncNow(_ peers: [NodeAddress]) -> Set<NodeAddress> {
        Set(Self.syncPeers(peers, covered: Set([ownDisk].compactMap { $0 }), wanted: configuration.copies - 1) {
            peerDisks.disk(of: $0)
        })
    }

    /// Up to `wanted` of `peers`, in order, one per disk not in `covered` (an unknown disk counts as one of its own).
    public static func syncPeers(_ peers: [NodeAddress], covered: Set<String>, wanted: Int,
                                 diskOf: (NodeAddress) -> String?) -> [NodeAddress] {
        var covered = covered
        var chosen: [NodeAddress] = []
        for peer in peers where chosen.count < wanted {
            let disk = diskOf(peer)
            if let disk, covered.contains(disk) { continue }
            if let disk { covered.insert(disk) }
            chosen.append(peer)
        }
        return chosen
    }
}
