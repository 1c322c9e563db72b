import Glibc
import Logging
import OuroClient
import OuroCore
import Synchronization

extension Node {
    /// Whether a node answers `NODE PING` within a short time.
    func isReachable(_ peer: NodeAddress) -> Bool {
        if peer == address { return true }
        do {
            let connection = try Connection(to: peer, timeoutMilliseconds: 1000)
            connection.socket.setTimeouts(seconds: 2)
            try connection.send("NODE PING")
            return try connection.readReply() == "PONG"
        } catch {
            return false
        }
    }

    /// `NETMAP DISCOVER` and `NODE HEAL`: walks the successor pointers around the ring from here, keeps members the
    /// walk no longer reaches in their old place, probes every member, and sends the new netmap to all live nodes.
    /// Each node then routes around the dead: its successor becomes the next live member.
    func discover() throws {
        try membershipLock.withLock { try discoverLocked() }
    }

    private func discoverLocked() throws {
        let old = netmap
        var order: [NodeAddress] = [address]
        var current = address
        for _ in 0..<1000 {
            let successor: NodeAddress?
            if current == address {
                successor = next
            } else if isReachable(current) {
                successor = try? NodeClient(current, pool: pool).status().next
            } else {
                // A dead node cannot say who follows it; the old netmap can.
                let members = old.members.map(\.address)
                successor = members.firstIndex(of: current).map { members[($0 + 1) % members.count] }
            }
            guard let successor, successor != address, !order.contains(successor) else { break }
            order.append(successor)
            current = successor
        }
        for (index, member) in old.members.enumerated() where !order.contains(member.address) {
            // Keep a member the walk skipped right after its old predecessor, so it can come back.
            let predecessor = old.members[(index + old.members.count - 1) % old.members.count].address
            let position = order.firstIndex(of: predecessor).map { $0 + 1 } ?? order.count
            order.insert(member.address, at: position)
        }
        let alive = parallelMap(order, width: 16) { [self] in isReachable($0) }
        let map = Netmap(epoch: old.epoch + 1, members: zip(order, alive).map { .init(address: $0, alive: $1) })
        publish(map)
        logger.info("ring discovered", metadata: ["netmap": "\(map.wire)", "epoch": "\(map.epoch)"])
    }

    func healRing() throws {
        try discover()
    }

    /// Adopts a netmap here and sends it to every other live member.
    func publish(_ map: Netmap) {
        adopt(map)
        let peers = map.liveAddresses.filter { $0 != address }
        _ = parallelMap(peers, width: 16) { [self] peer in
            do { try NodeClient(peer, pool: pool).setNetmap(map) } catch {
                logger.warning("netmap not delivered", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }

    /// `NODE JOIN`: puts `joiner` right after this node in the ring and tells everyone; returns our old successor.
    func admit(_ joiner: NodeAddress) throws -> NodeAddress {
        try membershipLock.withLock { try admitLocked(joiner) }
    }

    private func admitLocked(_ joiner: NodeAddress) throws -> NodeAddress {
        let previous = next ?? address
        var map = netmap
        if !map.contains(address) { map.members = [.init(address: address, alive: true)] }
        map.members.removeAll { $0.address == joiner }
        let index = map.members.firstIndex { $0.address == address }!
        map.members.insert(.init(address: joiner, alive: true), at: index + 1)
        map.epoch += 1
        try setNext(joiner)
        publish(map)
        logger.info("node joined", metadata: ["joiner": "\(joiner)", "netmap": "\(map.wire)"])
        return previous == joiner ? address : previous
    }

    /// `--join`: asks a ring member to admit this node, retrying until it answers.
    func joinRing(via member: NodeAddress) {
        while !isStopping {
            do {
                let reply: String = try pool.with(member) { connection in
                    try connection.send("NODE JOIN \(address)")
                    return try connection.readReply()
                }
                if reply.hasPrefix("OK next="), let successor = NodeAddress(reply.dropFirst(8)), next == nil || !netmap.contains(address) {
                    try setNext(successor)
                }
                logger.info("joined the ring", metadata: ["via": "\(member)"])
                var cursors: [NodeAddress: (String, UInt64)] = [:]
                pullCatalog(from: member, cursors: &cursors)
                return
            } catch {
                logger.warning("join failed, retrying", metadata: ["via": "\(member)", "error": "\(error)"])
                sleep(1)
            }
        }
    }

    /// `TOPOLOGY WALK`: the ring edges, following successor pointers from this node.
    func topology() -> [(from: NodeAddress, to: NodeAddress)] {
        var edges: [(NodeAddress, NodeAddress)] = []
        var current = address
        var seen: Set<NodeAddress> = [address]
        for _ in 0..<1000 {
            let successor = current == address ? next : (try? NodeClient(current, pool: pool).status().next)
            guard let successor else { break }
            edges.append((current, successor))
            guard seen.insert(successor).inserted else { break }
            current = successor
        }
        return edges
    }

    /// The disk holding this node's chunks, and the live inodes of the catalog (`NODE USAGE`, for `df`).
    func diskUsage() -> RingUsage {
        let disk = chunks.diskUsage()
        return RingUsage(totalBytes: disk.total, freeBytes: disk.free, availableBytes: disk.available,
                         files: UInt64(catalog.read { $0.fileCount }), disk: ownDisk)
    }

    func info() -> NodeInfo {
        let stored = (try? chunks.list()) ?? []
        var info = NodeInfo(address: address, next: next, usage: diskUsage(),
                            chunkFiles: stored.count, chunkBytes: stored.reduce(0) { $0 + $1.sizeBytes },
                            catalogRecords: catalog.recordCount, underReplicatedChunks: underReplicatedChunks(),
                            repair: repairStatus(), netmap: netmap)
        info.catalogUnsyncedRecords = catalog.unsyncedRecords
        info.pieceJournalBytes = pieceJournal.journalledBytes
        info.catalogBytes = catalog.diskBytes
        info.catalogReplayedRecords = catalog.replayedRecords
        info.catalogPulledRecords = pulledRecords.value
        (info.catalogBroadcastChanges, info.catalogBroadcastMessages) = namespaceBroadcast.counts
        info.catalogCollectedRecords = catalog.collectedRecords
        (info.catalogStoreBytes, info.catalogStoreFreeBytes) = catalog.storeBytes
        info.catalogSweptRecords = sweptRecords.value
        info.scrub = scrub.current
        info.bytesReceived = SocketTraffic.received.load(ordering: .relaxed)
        info.bytesSent = SocketTraffic.sent.load(ordering: .relaxed)
        return info
    }
}
