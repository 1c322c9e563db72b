import Glibc
import Logging
import OuroClient
import OuroCore

/// One `CATALOG SYNC` answer.
struct SyncBatch: BinaryCodable {
    var incarnation: String
    var last: UInt64
    var more: Bool
    /// Sent and stored as they were stored: no record is decoded and encoded again on the way.
    var records: EncodedRecords

    init(incarnation: String, last: UInt64, more: Bool, records: EncodedRecords) {
        self.incarnation = incarnation
        self.last = last
        self.more = more
        self.records = records
    }

    func encode(to writer: inout BinaryWriter) {
        writer.string(incarnation)
        writer.u64(last)
        writer.bool(more)
        writer.raw(records.arrayBytes)
    }

    init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(incarnation: try reader.string(), last: try reader.u64(), more: try reader.bool(),
                  records: try EncodedRecords.read(from: &reader))
    }
}

/// When a commit is durable: before its answer, or within a few milliseconds (namespace changes, as in a local file
/// system: see docs/design.md, Catalog model).
enum CommitDurability: Sendable {
    case now
    case lazy
    /// `.lazy`, but answered only once every live peer has applied it: a rename, which a reader through another
    /// node opens by name right after (a file replaced by renaming a new one over it must read new at once).
    case appliedEverywhere
}

extension Node {
    /// Applies a change here (durably), then sends its records to every other live node and waits for them, so a
    /// client that reads from any node afterwards sees it (close-to-open). A node that misses it catches up by sync.
    /// Our own fsync runs while the peers apply theirs: one round of disk latency, not two. The change is on disk on
    /// as many disks as a file has copies (this node's, then those of the next nodes in ring order) before the
    /// answer; the other peers fsync it a few milliseconds later, with what else came meanwhile (`… DEFER`).
    /// `.lazy` (a namespace change): written here and queued for the peers before the answer (`NamespaceBroadcast`:
    /// sent right after, with whatever else queued meanwhile); fsynced everywhere within a few milliseconds, or at
    /// once by `FS SYNC` or the next synchronous commit.
    @discardableResult
    func commitAndBroadcast(withRegions: Bool = true, durability: CommitDurability = .now,
                            _ plan: (StoredCatalog, Version, Int64) throws -> Catalog.Change) throws -> InodeStat? {
        let (records, stat) = try catalog.mutate(withRegions: withRegions, plan)
        switch durability {
        case .now:
            let pending = sendToPeers(records)
            try catalog.syncLog()
            let delivered = awaitPeers(pending)
            syncElsewhereIfNeeded(pending, delivered: delivered)
        case .lazy:
            if !records.isEmpty { namespaceBroadcast.submit(records.encoded) }
            catalog.syncSoon()
        case .appliedEverywhere:
            let ticket = records.isEmpty ? nil : namespaceBroadcast.submit(records.encoded)
            catalog.syncSoon()
            if let ticket { namespaceBroadcast.wait(for: ticket) }
        }
        return stat
    }

    /// `FS SYNC` (`fsync` of a directory, or of a file with nothing to push): everything this node has applied is
    /// made durable on as many disks as a file has copies, as a synchronous commit would make it: our log, and
    /// the logs of the peers after us in ring order, one per disk. The peers hold the same namespace changes (they
    /// applied them before the answers) and an empty `CATALOG APPLY` fsyncs theirs.
    func syncCatalog() throws {
        namespaceBroadcast.awaitEarlier()
        let peers = peersInRingOrder()
        let chosen = peersThatSyncNow(peers)
        let pending = sendApply(EncodedRecords([]).arrayBytes, to: peers.filter(chosen.contains), syncNow: chosen)
        try catalog.syncLog()
        let delivered = awaitPeers(pending)
        syncElsewhereIfNeeded(pending, delivered: delivered, candidates: peers.filter { !chosen.contains($0) })
    }

    /// The other live members, starting after this node in ring order.
    func peersInRingOrder() -> [NodeAddress] {
        let live = netmap.liveAddresses
        let after = live.firstIndex(of: address).map { $0 + 1 } ?? 0
        return (live[after...] + live[..<after]).filter { $0 != address }
    }

    /// One `CATALOG APPLY` in flight to a peer.
    struct PendingApply {
        var peer: NodeAddress
        var connection: Connection?
        /// Whether the peer fsyncs before it answers (no `DEFER`).
        var syncNow: Bool
        /// The same encoded records for every peer (one buffer, not a copy each).
        var body: [UInt8]

        var header: String { "CATALOG APPLY \(body.count)" + (syncNow ? "" : " DEFER") }
    }

    /// A peer that was to fsync the change before the answer did not confirm it: the peers that applied it with
    /// `DEFER` (or `candidates`) are asked to fsync it now (a plain `CATALOG APPLY` of the same records: nothing new
    /// to apply, the log is fsynced), one per disk not holding it yet, so the answer still waits for `copies` disks.
    func syncElsewhereIfNeeded(_ pending: [PendingApply], delivered: Set<NodeAddress>, candidates: [NodeAddress]? = nil) {
        var missing = pending.filter { $0.syncNow && !delivered.contains($0.peer) }.count
        guard missing > 0, let body = pending.first?.body else { return }
        let synced = pending.filter { $0.syncNow && delivered.contains($0.peer) }.map(\.peer)
        let covered = Set(([ownDisk] + synced.map { peerDisks.disk(of: $0) }).compactMap { $0 })
        let others = candidates ?? pending.filter { !$0.syncNow && delivered.contains($0.peer) }.map(\.peer)
        for peer in Self.syncPeers(others, covered: covered, wanted: missing, diskOf: { peerDisks.disk(of: $0) }) {
            var again = PendingApply(peer: peer, connection: nil, syncNow: true, body: body)
            again.connection = try? send(again, on: pool.take(peer))
            if awaitPeers([again]).contains(peer) { missing -= 1 }
        }
        if missing > 0 {
            logger.warning("a catalog change is on fewer disks than a file has copies; the peers catch up by sync",
                           metadata: ["missing": "\(missing)"])
        }
    }

    /// Sends a synchronous commit's `records` to every other live node without waiting for the answers (no thread
    /// per peer); the peers after this node that make it durable on `copies` disks fsync before they answer.
    func sendToPeers(_ records: EncodedRecords) -> [PendingApply] {
        guard !records.isEmpty else { return [] }
        // Applied by the peers after every namespace change queued before it, so their fsync covers those too.
        namespaceBroadcast.awaitEarlier()
        let peers = peersInRingOrder()
        return sendApply(records.arrayBytes, to: peers, syncNow: peersThatSyncNow(peers))
    }

    /// Sends one `CATALOG APPLY` of `body` to each of `peers`, those in `syncNow` without `DEFER`.
    func sendApply(_ body: [UInt8], to peers: [NodeAddress], syncNow: Set<NodeAddress>) -> [PendingApply] {
        peers.map { peer in
            var pending = PendingApply(peer: peer, connection: nil, syncNow: syncNow.contains(peer), body: body)
            pending.connection = try? send(pending, on: pool.take(peer))
            return pending
        }
    }

    private func send(_ pending: PendingApply, on connection: Connection) throws -> Connection {
        do {
            try connection.socket.write(line: pending.header, then: pending.body)
            return connection
        } catch {
            connection.socket.abort()
            throw error
        }
    }

    /// Collects the peers' answers; returns the peers that confirmed. Merging is idempotent, so a stale pooled
    /// connection (the peer restarted) is simply retried on a fresh one; a peer that stays unreachable catches up by
    /// sync later.
    @discardableResult
    func awaitPeers(_ pending: [PendingApply]) -> Set<NodeAddress> {
        var confirmed: Set<NodeAddress> = []
        for item in pending {
            do {
                if let connection = item.connection {
                    do {
                        try connection.expectOK()
                        pool.give(connection)
                        confirmed.insert(item.peer)
                        continue
                    } catch let error as OuroError where error.code != .unavailable {
                        throw error
                    } catch {
                        connection.socket.abort()
                    }
                }
                let fresh = try send(item, on: Connection(to: item.peer))
                try fresh.expectOK()
                pool.give(fresh)
                confirmed.insert(item.peer)
            } catch {
                pool.forget(item.peer)
                logger.warning("catalog update not delivered; the peer will catch up by sync",
                               metadata: ["peer": "\(item.peer)", "error": "\(error)"])
            }
        }
        return confirmed
    }

    func syncBatch(incarnation: String, after: UInt64) -> SyncBatch {
        // A cursor from another incarnation of our log means nothing: start over.
        let from = incarnation == catalog.incarnation ? after : 0
        let (records, last, more) = catalog.changes(after: from, limit: Limits.syncBatchRecords)
        return SyncBatch(incarnation: catalog.incarnation, last: last, more: more, records: records)
    }

    /// Pulls every catalog change `peer` has that we have not seen; returns false if the peer could not be reached.
    @discardableResult
    func pullCatalog(from peer: NodeAddress, cursors: inout [NodeAddress: (String, UInt64)]) -> Bool {
        var (incarnation, after) = cursors[peer] ?? catalog.syncCursor(for: peer) ?? ("-", 0)
        let start = (incarnation, after)
        do {
            while true {
                let batch: SyncBatch = try pool.with(peer, retry: true) { connection in
                    try connection.send("CATALOG SYNC \(incarnation) \(after)")
                    return try connection.readBinary(SyncBatch.self)
                }
                // A peer hands out only records on its disk already: ours follows within a few milliseconds.
                let applied = try catalog.merge(batch.records, deferSync: true)
                pulledRecords.add(batch.records.records.count)
                if !applied.isEmpty {
                    logger.debug("caught up from peer", metadata: ["peer": "\(peer)", "records": "\(applied.count)"])
                }
                incarnation = batch.incarnation
                after = batch.last
                cursors[peer] = (incarnation, after)
                if !batch.more {
                    if start != (incarnation, after) { catalog.setSyncCursor((incarnation, after), for: peer) }
                    return true
                }
            }
        } catch {
            pool.forget(peer)
            return false
        }
    }

    /// `FS <OP>`: metadata calls of the mount and the tools.
    func metadata(_ operation: FSOperation, _ request: FSRequest) throws -> FSReply {
        var reply = FSReply()
        func stat(_ id: UInt64?) throws -> InodeStat {
            try catalog.read { catalog in catalog.stat(try catalog.existingWithContent(id)) }
        }
        func mutate(withRegions: Bool = true, _ durability: CommitDurability = .now,
                    _ plan: (StoredCatalog, Version, Int64) throws -> Catalog.Change) throws {
            reply.stat = try commitAndBroadcast(withRegions: withRegions, durability: durability, plan)
        }
        let uid = request.uid ?? 0
        let gid = request.gid ?? 0
        switch operation {
        case .lookup:
            reply.stat = try catalog.read { catalog in
                let name = try PathName.validComponent(request.name ?? "")
                guard let inode = catalog.lookup(parent: request.parent ?? 0, name: name) else {
                    throw OuroError.notFound("\(name) not found")
                }
                return catalog.stat(inode).withoutContentDetail()  // attributes only; GETATTR on open brings the bytes
            }
        case .getattr:
            reply.stat = try stat(request.inode)
        case .resolve:
            let path = request.path ?? ""
            reply.stat = try catalog.read { catalog in
                if path.isEmpty || path == "/" { return catalog.stat(try catalog.existing(Inode.rootID)) }
                guard let inode = catalog.resolve(try PathName(path)) else { throw OuroError.notFound("\(path) not found") }
                return catalog.stat(inode)
            }
        case .readdir:
            // A page when asked for one (the mount asks for `Limits.readdirPageEntries` at a time): one more than
            // the limit is read to know whether names follow.
            let limit = request.limit.map { max(1, min(Int($0), Limits.readdirPageEntries)) }
            func page<Entry>(_ read: (StoredCatalog, UInt64, Int) -> [Entry]) throws -> [Entry] {
                let entries = try catalog.read { catalog in
                    let directory = try catalog.existing(request.inode)
                    guard directory.kind == .directory else { throw OuroError(.notDir, "not a directory") }
                    return read(catalog, directory.id, limit.map { $0 + 1 } ?? .max)
                }
                guard let limit else { return entries }
                reply.more = entries.count > limit
                return Array(entries.prefix(limit))
            }
            if request.namesOnly == true {
                reply.names = try page { catalog, directory, limit in catalog.names(of: directory, after: request.after, limit: limit) }
            } else {
                reply.entries = try page { catalog, directory, limit in
                    // Attributes only: an entry's placement and attributes are fetched by GETATTR when it is opened,
                    // and leaving them out keeps a listing of thousands of files small and quick to decode.
                    catalog.listing(of: directory, after: request.after, limit: limit).map { entry in
                        var stat = entry.stat.withoutContentDetail(chunks: false)
                        stat.inode.xattrs = [:]
                        return FSReply.Entry(name: entry.name, stat: stat)
                    }
                }
            }
        case .mkdir, .mknod, .symlink:
            let kind: InodeKind = operation == .mkdir ? .directory : operation == .symlink ? .symlink : (request.kind ?? .file)
            if kind == .symlink {
                guard let target = request.target, !target.isEmpty, target.utf8.count <= Limits.pathBytes,
                      !target.utf8.contains(0) else { throw OuroError.badRequest("bad symlink target") }
            }
            try mutate(.lazy) { catalog, version, now in
                try catalog.planCreate(parent: request.parent, name: request.name, kind: kind,
                                       permissions: request.mode ?? (kind == .directory ? 0o755 : 0o644), uid: uid, gid: gid,
                                       rdev: request.rdev ?? 0, symlinkTarget: kind == .symlink ? request.target : nil,
                                       version: version, nowNs: now, newID: newInodeID())
            }
        case .link:
            try mutate(.lazy) { catalog, version, now in
                try catalog.planLink(inode: request.inode, newParent: request.newParent, newName: request.newName,
                                     version: version, nowNs: now)
            }
        case .unlink:
            try mutate(.lazy) { catalog, version, now in try catalog.planUnlink(parent: request.parent, name: request.name, version: version, nowNs: now) }
        case .rmdir:
            try mutate(.lazy) { catalog, version, now in try catalog.planRmdir(parent: request.parent, name: request.name, version: version, nowNs: now) }
        case .rename:
            try mutate(.appliedEverywhere) { catalog, version, now in
                try catalog.planRename(parent: request.parent, name: request.name, newParent: request.newParent,
                                       newName: request.newName, flags: request.flags ?? 0, version: version, nowNs: now)
            }
        case .setattr:
            try mutate(.lazy) { catalog, version, now in try catalog.planSetattr(request, version: version, nowNs: now) }
        case .setxattr:
            try mutate(.lazy) { catalog, version, now in try catalog.planSetxattr(request, version: version, nowNs: now) }
        case .removexattr:
            try mutate(.lazy) { catalog, version, now in try catalog.planRemovexattr(request, version: version, nowNs: now) }
        case .getxattr:
            let inode = try stat(request.inode).inode
            guard let value = inode.xattrs[request.xattrName ?? ""] else { throw OuroError.notFound("no such attribute") }
            reply.xattrValue = value
        case .listxattr:
            reply.xattrNames = try stat(request.inode).inode.xattrs.keys.sorted()
        case .create:
            let bytes = request.data.map { [UInt8]($0) }
            if let bytes, bytes.count > Limits.inlineContentBytes {
                throw OuroError(.tooLarge, "CREATE carries at most \(Limits.inlineContentBytes) bytes")
            }
            let content = bytes.map { FileContent.inline($0, start: address) }
            // A name without bytes is a namespace change; bytes are content, durable before the answer.
            try mutate(content == nil ? .lazy : .now) { catalog, version, now in
                try catalog.planCreateFile(parent: request.parent, name: request.name, id: request.inode,
                                           permissions: request.mode ?? 0o644, uid: uid, gid: gid, content: content,
                                           version: version, nowNs: now)
            }
        case .setcontent:
            let content = try assembledContent(request.content)
            try mutate { catalog, version, now in
                try catalog.planWriteContent(inode: request.inode, content: content, version: version, nowNs: now)
            }
        case .writeslices:
            var slices = request.slices ?? []
            guard let size = request.sizeBytes, size <= Limits.maxSparseFileBytes, slices.count <= Limits.maxSlices else {
                throw OuroError.badRequest("WRITESLICES needs a size of at most \(Limits.maxSparseFileBytes) bytes")
            }
            var pending: [PendingPieceCopy] = []
            if let data = request.data {
                // The bytes came along (a small update): stored here and on the other holders while we commit.
                let (total, overflow) = slices.reduce((UInt64(0), false)) { sum, slice in
                    let (next, over) = sum.0.addingReportingOverflow(slice.lengthBytes)
                    return (next, sum.1 || over || slice.lengthBytes == 0 || slice.fileOffset.addingReportingOverflow(slice.lengthBytes).overflow
                                || slice.fileOffset + slice.lengthBytes > size)
                }
                guard !overflow, total == UInt64(data.count), data.count <= Limits.streamBufferBytes else {
                    throw OuroError.badRequest("WRITESLICES carries at most \(Limits.streamBufferBytes) bytes, as many as its slices say, inside the file")
                }
                let plan = { [address] (stored: [ContentSlice]) in
                    { (catalog: StoredCatalog, version: Version, now: Int64) throws -> Catalog.Change in
                        try catalog.planWriteSlices(inode: request.inode, slices: stored, truncatedTo: request.truncatedTo, sizeBytes: size,
                                                    contentID: .random(), start: address, version: version, nowNs: now)
                    }
                }
                if let (stat, stored) = try commitCarriedSlices(slices, data: [UInt8](data), plan: plan) {
                    reply.stat = stat
                    reply.stat?.inode.content = nil
                    reply.slices = stored
                    reply.regions = compactionCandidates(request.inode, stored)
                    return reply
                }
                // The piece journal is full or broken: pieces stored the ordinary way, then an ordinary commit.
                (slices, pending) = try storeCarriedPieces(slices, data: [UInt8](data))
            }
            guard slices.allSatisfy({ $0.isWellFormed && $0.fileEnd <= size && $0.source.sizeBytes <= configuration.maxFileSizeBytes }) else {
                throw OuroError.badRequest("WRITESLICES needs slices of stored contents inside the file")
            }
            let contentID = ContentID.random()
            do {
                try mutate(withRegions: false) { [address] catalog, version, now in
                    try catalog.planWriteSlices(inode: request.inode, slices: slices, truncatedTo: request.truncatedTo, sizeBytes: size,
                                                contentID: contentID, start: address, version: version, nowNs: now)
                }
            } catch {
                for copy in pending { copy.connection?.socket.abort() }  // their pieces are garbage now
                throw error
            }
            // The writer works out the new content itself (the same rule): the answer stays small however many
            // slices the file has. It compacts the regions that grew past the threshold.
            reply.stat?.inode.content = nil
            if request.data != nil {
                reply.slices = slices
                try finishPieceCopies(pending)
            }
            reply.regions = compactionCandidates(request.inode, slices)
        case .compact:
            guard let merged = request.content, let offset = request.offset, let seen = request.slices, let cuts = request.cuts else {
                throw OuroError.badRequest("COMPACT needs the merged content, its offset, the slices it merged and the region's cuts")
            }
            try mutate(withRegions: false) { catalog, version, _ in
                try catalog.planCompactRegion(inode: request.inode, offset: offset, seen: seen, cuts: cuts, merged: merged, version: version)
            }
            reply.stat?.inode.content = nil
            reply.regions = catalog.read { $0.regionRecord(of: request.inode ?? 0, region: offset / Limits.regionBytes) }.map { [$0] }
        case .statfs:
            reply.usage = ringUsage()
        case .sync:
            try syncCatalog()
        }
        if operation.changesNames {
            // The changed directories' new attributes: the kernel asks for them right after (their mtime moved).
            let parents = Set([request.parent, request.newParent].compactMap { $0 })
            reply.directories = catalog.read { catalog in parents.compactMap { catalog.inode($0).map { catalog.stat($0) } } }
        }
        return reply
    }

    /// The regions a write went to that hold enough slices to be compacted (the writer compacts them).
    func compactionCandidates(_ inode: UInt64?, _ slices: [ContentSlice]) -> [RegionRecord] {
        let written = Set(slices.flatMap { slice in (slice.fileOffset / Limits.regionBytes)...((slice.fileEnd - 1) / Limits.regionBytes) })
        return catalog.read { catalog in
            written.sorted().compactMap { catalog.regionRecord(of: inode ?? 0, region: $0) }.filter { $0.slices.count > Limits.compactRegionSlices }
        }
    }

    /// The content of a large file the mount pushed in segments (`CONTENT PUSH`) while it was being written: checked
    /// for shape, and every chunk copy confirmed on its holder with `CHUNK KEEP`, which also keeps the janitor off it
    /// until the commit has named it. A copy that is gone (the janitor took it, or its node died) is NOT_FOUND: the
    /// mount then pushes the whole file again.
    func assembledContent(_ proposed: FileContent?) throws -> FileContent {
        guard let segments = proposed?.segments, !segments.isEmpty else { throw OuroError.badRequest("SETCONTENT needs segments") }
        var byHolder: [NodeAddress: [ChunkID]] = [:]
        var total: UInt64 = 0
        for segment in segments {
            // Checked in this order so that nothing below can trap on a crafted request.
            guard segment.segments == nil, !segment.isInline, !segment.chunks.isEmpty, segment.chunks.count <= 999,
                  segment.chunks.allSatisfy({ !$0.holders.isEmpty }) else {
                throw OuroError.badRequest("malformed segment \(segment.id)")
            }
            let layout = ChunkLayout(sizeBytes: segment.sizeBytes, parts: segment.chunks.count)
            let (sum, overflow) = total.addingReportingOverflow(segment.sizeBytes)
            guard !overflow, sum <= configuration.maxFileSizeBytes,
                  segment.chunks.indices.allSatisfy({ segment.chunks[$0].lengthBytes == layout.lengthBytes(ofChunk: $0) }) else {
                throw OuroError.badRequest("malformed segment \(segment.id)")
            }
            total = sum
            for (index, placement) in segment.chunks.enumerated() {
                let chunk = try ChunkID(contentID: segment.id, index: index, parts: segment.chunks.count)
                for holder in placement.holders { byHolder[holder, default: []].append(chunk) }
            }
        }
        let problems = parallelMap(Array(byHolder), width: 16) { [self] holder, ids -> String? in
            do {
                for id in ids {
                    if holder == address {
                        guard keepChunk(id) else { return "\(id) is not on \(holder)" }
                        continue
                    }
                    try pool.with(holder, retry: true) { connection in
                        try connection.send("CHUNK KEEP \(id.contentID) \(id.index) \(id.parts)")
                        try connection.expectOK()
                    }
                }
                return nil
            } catch {
                return "\(holder): \(error)"
            }
        }.compactMap { $0 }
        guard problems.isEmpty else { throw OuroError.notFound("a segment's chunk copy is missing: \(problems[0])") }
        return FileContent(id: .random(), segments: segments)
    }

    /// `CHUNK KEEP` here. Touching the file changes its ctime, which the verifier reads as "changed since checked":
    /// a copy verified before stays verified (its bytes did not change), or its first read would re-read it whole.
    func keepChunk(_ chunk: ChunkID) -> Bool {
        let wasVerified = verifier.isVerified(chunk, chunks)
        guard chunks.keep(chunk) else { return false }
        if wasVerified { verifier.markVerified(chunk, chunks) }
        return true
    }

    /// The ring's disks added up (each node reports its own with the cheap `NODE USAGE`; unreachable nodes count
    /// as nothing).
    func ringUsage() -> RingUsage {
        let peers = netmap.liveAddresses.filter { $0 != address }
        let others = parallelMap(peers, width: 16) { [self] peer in try? NodeClient(peer, pool: pool).usage() }
        var usage = diskUsage()
        var counted: Set<String> = usage.disk.map { [$0] } ?? []
        for other in others.compactMap({ $0 }) {
            if let disk = other.disk, !counted.insert(disk).inserted { continue }  // a disk shared with a node counted
            usage.totalBytes += other.totalBytes
            usage.freeBytes += other.freeBytes
            usage.availableBytes += other.availableBytes
        }
        return usage
    }
}
