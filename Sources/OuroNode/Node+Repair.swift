import Glibc
import Logging
import Metrics
import OuroClient
import OuroCore

/// What the repair loop is doing, for `ouro status`.
final class RepairState: @unchecked Sendable {
    private let lock = Lock()
    private var deadSince: [NodeAddress: Double] = [:]
    private var activity = "idle"
    private var scanRequested = true
    private var lastScan = 0.0
    /// A full repair scan runs at least this often even when nothing asked for one.
    private let scanIntervalSeconds = 30.0

    /// Asks for a repair scan soon (the ring changed, or a copy was found bad).
    func requestScan() { lock.withLock { scanRequested = true } }

    /// Whether a scan is due: requested, a member's grace period ran out since the last one, or it has been a while.
    func shouldScan(gracePeriodSeconds: Double) -> Bool {
        lock.withLock {
            let now = monotonicSeconds()
            let graceEnded = deadSince.values.contains { $0 + gracePeriodSeconds <= now && $0 + gracePeriodSeconds > lastScan }
            guard scanRequested || graceEnded || now - lastScan >= scanIntervalSeconds else { return false }
            scanRequested = false
            lastScan = now
            return true
        }
    }

    /// Notes which members are dead since when (in this node's clock).
    func observe(_ netmap: Netmap) {
        lock.withLock {
            scanRequested = true
            let now = monotonicSeconds()
            for member in netmap.members {
                if member.alive { deadSince[member.address] = nil } else if deadSince[member.address] == nil { deadSince[member.address] = now }
            }
        }
    }

    func deadFor(_ address: NodeAddress) -> Double? {
        lock.withLock { deadSince[address].map { monotonicSeconds() - $0 } }
    }

    var status: String { lock.withLock { activity } }
    func set(_ text: String) { lock.withLock { activity = text } }
}

/// The scrubber's progress, for `NODE INFO` (`ouro status`, the dashboard).
final class ScrubState: @unchecked Sendable {
    private let lock = Lock()
    private var report = ScrubReport()
    private var requested = false

    func request() { lock.withLock { requested = true } }

    /// Whether a pass was asked for since the last call.
    func takeRequest() -> Bool {
        lock.withLock {
            defer { requested = false }
            return requested
        }
    }

    func begin(total: Int) {
        lock.withLock {
            report.running = true
            report.checked = 0
            report.total = total
            report.corrupt = 0
            report.startedAt = wallClockSeconds()
        }
    }

    func checked(corrupt: Int) { lock.withLock { report.checked += 1; report.corrupt = corrupt } }

    func end() {
        lock.withLock {
            report.running = false
            report.finishedAt = wallClockSeconds()
        }
    }

    var current: ScrubReport { lock.withLock { report } }
}

extension Node {
    /// Chunks of live files with fewer live holders than their content asks for.
    func underReplicatedChunks() -> Int {
        let map = netmap
        let contents = catalog.read { $0.liveContents() }
        let ringSize = max(1, map.liveAddresses.count)
        var short = 0
        for content in contents {
            let wanted = min(content.copies, ringSize)
            for chunk in content.chunks where chunk.holders.filter({ map.isAlive($0) }).count < wanted {
                short += 1
            }
        }
        return short
    }

    func repairStatus() -> String { repair.status }

    /// `ouro_node_repaired_chunks_total` and `_bytes_total` by how (`restored`: a copy this node lacked, fetched;
    /// `re-replicated`: a dead holder's copy made anew): their rate is the repair rate.
    static func countRepair(_ how: String, _ bytes: UInt64) {
        Metrics.Counter(label: "ouro_node_repaired_chunks_total", dimensions: [("how", how)]).increment()
        Metrics.Counter(label: "ouro_node_repaired_bytes_total", dimensions: [("how", how)]).increment(by: Int64(bytes))
    }

    /// Restores copies this node should hold but lacks (a corrupt copy was quarantined, or a copy was lost), and
    /// re-replicates chunks whose holder has been dead past the grace period. A scan walks every chunk of the
    /// catalog, so it runs when something changed (or now and then), not on every tick.
    func repairLoop() {
        let interval = max(0.5, Double(configuration.gossipIntervalMilliseconds) / 1000 * 2)
        while pause(seconds: interval) {
            guard hasCaughtUp, repair.shouldScan(gracePeriodSeconds: Double(configuration.gracePeriodSeconds)) else { continue }
            repairOnce()
        }
    }

    func repairOnce() {
        let map = netmap
        guard map.contains(address) else { return }
        let live = Set(map.liveAddresses)
        let contents = catalog.read { $0.liveContents() }
        let stored = Set(((try? chunks.list()) ?? []).map(\.chunk))
        var restored = 0
        var replicated = 0
        for content in contents {
            for (index, placement) in content.chunks.enumerated() {
                let chunk = content.chunkID(index)
                if placement.holders.contains(address), !stored.contains(chunk) {
                    repair.set("restoring copies")
                    if restoreCopy(chunk, placement) {
                        restored += 1
                        Self.countRepair("restored", placement.lengthBytes)
                    }
                }
                let gone = placement.holders.filter { holder in
                    !live.contains(holder) && (!map.contains(holder) || (repair.deadFor(holder) ?? 0) >= Double(configuration.gracePeriodSeconds))
                }
                let liveHolders = placement.holders.filter { live.contains($0) }
                // Also a chunk left with fewer holders than it should have while the ring has room for them (its
                // copies were moved off a node that died past the grace period, and the node came back).
                let short = liveHolders.count < min(content.copies, live.count)
                    && placement.holders.allSatisfy { live.contains($0) || gone.contains($0) }
                guard !gone.isEmpty || short else { continue }
                // One node acts for each chunk: its first live holder.
                guard liveHolders.first == address, stored.contains(chunk) else { continue }
                repair.set("re-replicating")
                if replicate(chunk, placement, liveHolders: liveHolders, copies: content.copies, map: map) {
                    replicated += 1
                    Self.countRepair("re-replicated", placement.lengthBytes)
                }
            }
        }
        if restored + replicated > 0 {
            logger.notice("repair pass", metadata: ["restored": "\(restored)", "re-replicated": "\(replicated)"])
        }
        repair.set("idle")
    }

    /// Fetches a good copy of a chunk this node should hold from another holder.
    @discardableResult
    func restoreCopy(_ chunk: ChunkID, _ placement: ChunkPlacement) -> Bool {
        for holder in placement.holders where holder != address && netmap.isAlive(holder) {
            do {
                let writer = try chunks.create(chunk)
                _ = try NodeClient(holder, pool: pool).readChunk(chunk, offset: 0, lengthBytes: placement.lengthBytes) { bytes in
                    try writer.write(bytes)
                }
                guard writer.writtenBytes == placement.lengthBytes, writer.crc.value == placement.crc32c else {
                    writer.abort()
                    throw OuroError(.corrupt, "copy from \(holder) does not match its checksum")
                }
                try writer.commit()
                try chunks.syncDirectory()
                verifier.markVerified(chunk, chunks)
                logger.notice("chunk copy restored", metadata: ["chunk": "\(chunk)", "from": "\(holder)"])
                return true
            } catch {
                logger.warning("could not restore chunk copy", metadata: ["chunk": "\(chunk)", "from": "\(holder)", "error": "\(error)"])
            }
        }
        return false
    }

    /// Sends copies of a local chunk to live nodes that do not hold it until it has its copies again, then records
    /// the new placement (dropping holders that are gone).
    func replicate(_ chunk: ChunkID, _ placement: ChunkPlacement, liveHolders: [NodeAddress], copies: Int, map: Netmap) -> Bool {
        let wanted = min(copies, map.liveAddresses.count)
        var holders = liveHolders
        for target in map.liveRing(from: address) where holders.count < wanted && !holders.contains(target) {
            do {
                try sendCopy(chunk, placement, to: target)
                holders.append(target)
            } catch {
                logger.warning("re-replication to a node failed", metadata: ["chunk": "\(chunk)", "to": "\(target)", "error": "\(error)"])
            }
        }
        guard holders != placement.holders else { return false }
        do {
            try commitAndBroadcast { catalog, version, _ in
                catalog.planPlacement(content: chunk.contentID, chunk: chunk.index, holders: holders, version: version)
            }
            logger.notice("chunk re-replicated", metadata: ["chunk": "\(chunk)", "holders": "\(holders.map(\.description))"])
            return true
        } catch {
            logger.error("recording a new placement failed", metadata: ["chunk": "\(chunk)", "error": "\(error)"])
            return false
        }
    }

    /// `CHUNK PUT` of a local chunk to another node.
    func sendCopy(_ chunk: ChunkID, _ placement: ChunkPlacement, to target: NodeAddress) throws {
        try verify(chunk)
        let fd = try chunks.open(chunk)
        defer { try? fd.close() }
        try NodeClient(target, pool: pool).upload(
            header: "CHUNK PUT \(chunk.contentID) \(chunk.index) \(chunk.parts) \(placement.lengthBytes) \(placement.crc32c)",
            file: fd.rawValue, sizeBytes: placement.lengthBytes) { connection in try connection.expectOK() }
    }

    /// Re-reads every local copy against its checksum, slowly, so rot that no reader met is found and repaired. A
    /// pass asked for (`NODE SCRUB`: the dashboard's verify button) starts at once and runs at full speed.
    func scrubLoop() {
        var lastPass = monotonicSeconds()
        while pause(seconds: 0.2) {
            let requested = scrub.takeRequest()
            guard requested || monotonicSeconds() - lastPass >= Double(configuration.scrubIntervalSeconds) else { continue }
            lastPass = monotonicSeconds()
            // A pass of its own waits for the catalog to catch up (start-up is busy enough); one asked for does not:
            // a content's checksums never change, and a copy the catalog does not know yet is left alone.
            guard requested || hasCaughtUp, let stored = try? chunks.list() else { continue }
            scrub.begin(total: stored.count)
            var bad = 0
            for entry in stored {
                guard !isStopping else { return }
                verifier.forget(entry.chunk)
                do { try verify(entry.chunk) } catch { bad += 1 }
                scrub.checked(corrupt: bad)
                if !requested { usleep(5_000) }
            }
            scrub.end()
            logger.info("scrub pass", metadata: ["chunks": "\(stored.count)", "corrupt": "\(bad)"])
            if bad > 0 { repairOnce() }
        }
    }

    /// What `NODE LEAVE` would move now (`MovePlan`, also `NODE PLAN LEAVE`).
    func leavePlan(for leaving: NodeAddress) -> MovePlan {
        MovePlan.leave(leaving, contents: catalog.read { $0.liveContents() }, netmap: netmap)
    }

    /// `NODE LEAVE`: gives up every copy this node holds as `leavePlan` says (a new copy on another live node first
    /// where the chunk would be short, then the placement without this node), then leaves the netmap. `progress`
    /// runs after each chunk with (chunks done, chunks, bytes copied, bytes to copy); when it throws (the client
    /// went away) the leave stops there, keeping every move made. Asked again, it plans from the catalog as it is:
    /// the chunks already handed over are no longer this node's, so it resumes where it stopped.
    func leaveRing(progress: (Int, Int, UInt64, UInt64) throws -> Void) throws {
        let map = netmap
        let others = map.liveAddresses.filter { $0 != address }
        guard !others.isEmpty else { throw OuroError(.denied, "the last live node of the ring cannot leave: its files would be lost") }
        let plan = leavePlan(for: address)
        guard plan.stranded == 0 else {
            throw OuroError(.denied, "\(plan.stranded) chunks have no other live copy and no node could take one: leaving would lose them")
        }
        var bytesCopied: UInt64 = 0
        for (number, move) in plan.moves.enumerated() {
            // The placement as it is now: a file removed or repaired since the plan changes what is left to do.
            if let placement = catalog.read({ $0.content(move.contentID) })?.chunks[safe: move.index], placement.holders.contains(address) {
                var holders = placement.holders.filter { $0 != address }
                if let target = move.to, !holders.contains(target) {
                    try sendCopy(move.chunk, placement, to: target)
                    holders.append(target)
                    bytesCopied += move.lengthBytes
                }
                try commitAndBroadcast { catalog, version, _ in
                    catalog.planPlacement(content: move.contentID, chunk: move.index, holders: holders, version: version)
                }
            }
            try progress(number + 1, plan.moves.count, bytesCopied, plan.bytesCopied)
        }
        var without = map
        without.members.removeAll { $0.address == address }
        without.epoch += 1
        for peer in others {
            do { try NodeClient(peer, pool: pool).setNetmap(without) } catch {
                logger.warning("netmap not delivered", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
        logger.notice("left the ring", metadata: ["netmap": "\(without.wire)"])
    }
}
