import Glibc
import Logging
import OuroClient
import OuroCore

extension Node {
    func startBackgroundLoops() {
        startThread(name: "gossip") { [self] in gossipLoop() }
        startThread(name: "sync") { [self] in syncLoop() }
        startThread(name: "janitor") { [self] in janitorLoop() }
        startThread(name: "catalog-gc") { [self] in gcLoop() }
        startThread(name: "repair") { [self] in repairLoop() }
        startThread(name: "scrub") { [self] in scrubLoop() }
        if configuration.secret != nil { startThread(name: "reaper") { [self] in reapUnprovedConnections() } }
        startThread(name: "journal") { [self] in
            while pause(seconds: 1) { pieceJournal.checkpoint() }
            pieceJournal.checkpoint()
        }
    }

    /// Every gossip interval: ping the successor (declare it dead after a few misses) and hand it our netmap (so a
    /// node that restarted with nothing learns the ring), and probe members marked dead (alive again when they
    /// answer). Only short-timeout probes run here, so a silent peer cannot delay failure detection.
    private func gossipLoop() {
        let interval = Double(configuration.gossipIntervalMilliseconds) / 1000
        var misses: [NodeAddress: Int] = [:]
        while pause(seconds: interval) {
            let map = netmap
            guard map.contains(address) else { continue }
            if let successor = map.liveSuccessor(of: address) {
                if isReachable(successor) {
                    misses[successor] = nil
                    shareNetmap(map, with: successor)
                } else {
                    misses[successor, default: 0] += 1
                    logger.warning("successor missed a ping", metadata: ["peer": "\(successor)", "misses": "\(misses[successor]!)"])
                    if misses[successor]! >= configuration.missesBeforeDead {
                        misses[successor] = nil
                        setLiveness(successor, alive: false)
                    }
                }
            }
            for member in map.members where !member.alive && isReachable(member.address) {
                setLiveness(member.address, alive: true)
            }
        }
    }

    /// Sends our netmap to a peer with short timeouts; the peer ignores it unless it is newer than its own.
    private func shareNetmap(_ map: Netmap, with peer: NodeAddress) {
        guard let connection = try? Connection(to: peer, timeoutMilliseconds: 1000) else { return }
        connection.socket.setTimeouts(seconds: 2)
        _ = try? connection.send("NETMAP SET \(map.epoch) \(map.wire)")
        _ = try? connection.expectOK()
    }

    /// Every gossip interval, on its own thread: pull catalog changes from both ring neighbours.
    private func syncLoop() {
        let interval = Double(configuration.gossipIntervalMilliseconds) / 1000
        var cursors: [NodeAddress: (String, UInt64)] = [:]
        while pause(seconds: interval) {
            let map = netmap
            guard map.contains(address) else { continue }
            let neighbours = Set([map.liveSuccessor(of: address), map.livePredecessor(of: address)].compactMap { $0 })
            var reachedAll = true
            for peer in neighbours where !pullCatalog(from: peer, cursors: &cursors) { reachedAll = false }
            refreshPeerDisks(map)
            // Garbage collection trusts the catalog only once it has heard from its neighbours.
            if reachedAll { markCaughtUp() }
            // When this node last had the ring's changes: a sweep after an absence keeps what is younger.
            if reachedAll, !neighbours.isEmpty { try? catalog.setMeta("lastContact", String(wallClockNanoseconds())) }
        }
    }

    /// Sleeps in short steps; false once the node is stopping.
    func pause(seconds: Double) -> Bool {
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline {
            if isStopping { return false }
            usleep(UInt32(min(0.1, max(0.001, deadline - monotonicSeconds())) * 1_000_000))
        }
        return !isStopping
    }

    /// Marks a member dead or alive in a new netmap epoch and tells every live node.
    func setLiveness(_ peer: NodeAddress, alive: Bool) {
        membershipLock.withLock { setLivenessLocked(peer, alive: alive) }
    }

    private func setLivenessLocked(_ peer: NodeAddress, alive: Bool) {
        var map = netmap
        guard let index = map.members.firstIndex(where: { $0.address == peer }), map.members[index].alive != alive else { return }
        map.members[index].alive = alive
        map.epoch += 1
        logger.notice(alive ? "node is back" : "node declared dead", metadata: ["peer": "\(peer)", "epoch": "\(map.epoch)"])
        publish(map)
    }

    /// Slow housekeeping: removes chunk files no live file references (failed pushes, overwritten and deleted
    /// files), once they are older than the grace period and this node's catalog has caught up.
    private func janitorLoop() {
        while pause(seconds: 30) {
            guard hasCaughtUp else { continue }
            collectGarbage()
        }
    }

    func collectGarbage() {
        guard let stored = try? chunks.list() else { return }
        // Chunks of live files this node is no longer a holder of (their copies moved while it was away) go too.
        let holdings: [ContentID: Set<Int>] = catalog.read { catalog in
            var holdings: [ContentID: Set<Int>] = [:]
            for content in catalog.liveContents() {
                holdings[content.id] = Set(content.chunks.indices.filter { content.chunks[$0].holders.contains(address) })
            }
            return holdings
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var removed = 0
        for entry in stored where !(holdings[entry.chunk.contentID]?.contains(entry.chunk.index) ?? false)
            && now.tv_sec - entry.modifiedSeconds > configuration.garbageGraceSeconds {
            guard chunks.deleteIfUnchanged(entry.chunk, modifiedSeconds: entry.modifiedSeconds) else { continue }
            verifier.forget(entry.chunk)
            verifier.dropReadBack(entry.chunk)
            removed += 1
        }
        // Quarantined corrupt copies are kept a while for an operator to look at, then dropped.
        for name in (try? FileManagerLite.list(chunks.directory)) ?? [] where name.hasSuffix(".corrupt") {
            var info = stat()
            let path = chunks.directory.appending(name).string
            if stat(path, &info) == 0, now.tv_sec - info.st_mtim.tv_sec > configuration.garbageGraceSeconds {
                unlink(path)
                removed += 1
            }
        }
        if removed > 0 { logger.info("removed unreferenced chunk files", metadata: ["count": "\(removed)"]) }
    }
}
