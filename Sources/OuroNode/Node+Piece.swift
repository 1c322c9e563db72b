import Glibc
import OuroClient
import OuroCore

extension Node {
    /// `PIECE PUT`: the bytes of an update in place, stored as a one-chunk content on `copies` live nodes chosen by
    /// rendezvous hashing of a fresh id (this node among them only if the hash says so). Every copy is fsynced and
    /// renamed into place, with the checksum the client sent, before the placement is returned; nothing names the
    /// piece until the client's `FS WRITESLICES` (an unnamed piece is garbage after the janitor's grace period).
    func receivePiece(_ input: FramedReader, sizeBytes: UInt64, crc32c: UInt32) throws -> FileContent {
        let contentID = ContentID.random()
        let chunk = try ChunkID(contentID: contentID, index: 0, parts: 1)
        let live = liveRing
        let holders = Rendezvous.holders(of: contentID, among: live, count: max(1, min(configuration.copies, live.count)))
        let content = FileContent(id: contentID, sizeBytes: sizeBytes, start: holders[0], copies: holders.count,
                                  chunks: [ChunkPlacement(lengthBytes: sizeBytes, crc32c: crc32c, holders: holders)])
        var stored = false
        defer { if !stored, holders.contains(address) { chunks.delete(chunk) } }
        if sizeBytes <= UInt64(Limits.streamBufferBytes) {
            // A small piece (the usual update): read whole, then written to every holder at once on pooled connections.
            var bytes = [UInt8](repeating: 0, count: Int(sizeBytes))
            try bytes.withUnsafeMutableBytes { raw in try readExactly(input, into: raw) }
            guard CRC32C.checksum(bytes) == crc32c else { throw OuroError(.corrupt, "the piece arrived with a different checksum") }
            let syncing = holdersThatSync(holders)
            let failures = parallelMap(holders, width: holders.count) { [self] holder -> OuroError? in
                do {
                    if holder == address {
                        try storeLocalCopy(chunk, bytes, crc32c: crc32c, deferSync: !syncing.contains(holder))
                    } else {
                        let line = "CHUNK PUT \(contentID) 0 1 \(sizeBytes) \(crc32c)" + (syncing.contains(holder) ? "" : " DEFER")
                        try pool.with(holder, retry: true) { connection in
                            try connection.socket.write(line: line, then: bytes)
                            try connection.expectOK()
                        }
                    }
                    return nil
                } catch {
                    return pieceFailure(holder, error)
                }
            }
            if let failure = failures.compactMap({ $0 }).first { throw failure }
        } else {
            try streamPiece(input, chunk: chunk, sizeBytes: sizeBytes, crc32c: crc32c, holders: holders)
        }
        stored = true
        logger.debug("piece stored", metadata: ["content": "\(contentID)", "bytes": "\(sizeBytes)", "holders": "\(holders)"])
        return content
    }

    /// A small copy: through the piece journal (one fdatasync, or with `deferSync` one shortly after), or the
    /// ordinary way when the journal cannot take it.
    func storeLocalCopy(_ chunk: ChunkID, _ bytes: [UInt8], crc32c: UInt32, deferSync: Bool = false) throws {
        if try bytes.withUnsafeBytes({ try pieceJournal.store(chunk, $0, crc32c: crc32c, deferSync: deferSync) }) {
            verifier.markVerified(chunk, chunks)
            return
        }
        let writer = try chunks.create(chunk)
        do {
            try bytes.withUnsafeBytes { try writer.write($0) }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        try chunks.syncDirectory()
        verifier.markVerified(chunk, chunks)
    }

    /// A large piece: its bytes go to the local copy and to every other holder as they arrive (fresh connections,
    /// one buffer), then each holder's answer is awaited.
    private func streamPiece(_ input: FramedReader, chunk: ChunkID, sizeBytes: UInt64, crc32c: UInt32, holders: [NodeAddress]) throws {
        let writer = holders.contains(address) ? try chunks.create(chunk) : nil
        var remotes: [(NodeAddress, Connection)] = []
        var finished = false
        defer {
            if !finished {
                writer?.abort()
                for (_, connection) in remotes { connection.socket.abort() }
            }
        }
        for holder in holders where holder != address {
            do {
                let connection = try Connection(to: holder)
                connection.socket.enlargeSendBufferForStreaming()
                try connection.send("CHUNK PUT \(chunk.contentID) 0 1 \(sizeBytes) \(crc32c)")
                remotes.append((holder, connection))
            } catch {
                throw pieceFailure(holder, error)
            }
        }
        var crc = CRC32C()
        var buffer = [UInt8](repeating: 0, count: Limits.streamBufferBytes)
        var remaining = sizeBytes
        try buffer.withUnsafeMutableBytes { raw in
            while remaining > 0 {
                let want = Int(min(UInt64(raw.count), remaining))
                let count = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want]))
                guard count > 0 else { throw OuroError.unavailable("the sender disconnected before the end of the piece") }
                let bytes = UnsafeRawBufferPointer(rebasing: raw[..<count])
                crc.update(bytes)
                try writer?.write(bytes)
                for (holder, connection) in remotes {
                    do { try connection.socket.write(bytes) } catch { throw pieceFailure(holder, error) }
                }
                remaining -= UInt64(count)
            }
        }
        guard crc.value == crc32c else { throw OuroError(.corrupt, "the piece arrived with a different checksum") }
        if let writer {
            try writer.commit()
            try chunks.syncDirectory()
        }
        for (holder, connection) in remotes {
            connection.socket.setTimeouts(seconds: 600)  // the holder fsyncs before it answers
            do { try connection.expectOK() } catch { throw pieceFailure(holder, error) }
        }
        finished = true
        if writer != nil { verifier.markVerified(chunk, chunks) }
    }

    /// A holder that failed: one that refuses connections is checked and routed around now, so the client's retry
    /// picks others.
    func pieceFailure(_ holder: NodeAddress, _ error: Error) -> OuroError {
        let error = error as? OuroError ?? OuroError(.internal, "\(error)")
        guard holder != address, error.code == .unavailable else { return error }
        pool.forget(holder)
        if !isReachable(holder) { setLiveness(holder, alive: false) }
        return OuroError.unavailable("cannot store a piece copy on \(holder): \(error.message)")
    }

    func readExactly(_ input: FramedReader, into buffer: UnsafeMutableRawBufferPointer) throws {
        var filled = 0
        while filled < buffer.count {
            let count = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            guard count > 0 else { throw OuroError.unavailable("the sender disconnected before the end of the piece") }
            filled += count
        }
    }
}

/// A piece copy sent to another holder whose answer is read later (the commit's own work goes on meanwhile).
struct PendingPieceCopy {
    var holder: NodeAddress
    var chunk: ChunkID
    var crc32c: UInt32
    var bytes: ArraySlice<UInt8>
    /// Another holder on the holder's disk fsyncs its copy: this one may be fsynced just after the answer.
    var deferSync: Bool
    var connection: Connection?
    var reused: Bool

    var line: String { "CHUNK PUT \(chunk.contentID) 0 1 \(bytes.count) \(crc32c)" + (deferSync ? " DEFER" : "") }
}

/// A carried update's bytes as one piece (a commit of many pages costs one copy per holder, not one per page):
/// held by the node and `copies - 1` others chosen by rendezvous hashing; each slice names its part by source offset.
struct CarriedPiece {
    let chunk: ChunkID
    let crc32c: UInt32
    let holders: [NodeAddress]
    /// The slices, each now naming its bytes in the piece.
    let slices: [ContentSlice]
}

extension Node {
    /// The piece a carried update's bytes become (placement chosen over the live ring now).
    func carriedPiece(_ slices: [ContentSlice], data: [UInt8]) throws -> CarriedPiece {
        let live = liveRing
        let copies = max(1, min(configuration.copies, live.count))
        let id = ContentID.random()
        let crc = CRC32C.checksum(data)
        let holders = [address] + Rendezvous.holders(of: id, among: live.filter { $0 != address }, count: copies - 1)
        let piece = FileContent(id: id, sizeBytes: UInt64(data.count), start: address, copies: holders.count,
                                chunks: [ChunkPlacement(lengthBytes: UInt64(data.count), crc32c: crc, holders: holders)])
        var offset: UInt64 = 0
        let named = slices.map { slice in
            defer { offset += slice.lengthBytes }
            return ContentSlice(fileOffset: slice.fileOffset, lengthBytes: slice.lengthBytes, source: piece, sourceOffset: offset)
        }
        return CarriedPiece(chunk: try ChunkID(contentID: id, index: 0, parts: 1), crc32c: crc, holders: holders, slices: named)
    }

    /// The copies of `piece` on its other holders, to send (this node fsyncs its own).
    func otherCopies(of piece: CarriedPiece, data: [UInt8]) -> [PendingPieceCopy] {
        let syncing = holdersThatSync(piece.holders)
        return piece.holders.dropFirst().map { holder in
            PendingPieceCopy(holder: holder, chunk: piece.chunk, crc32c: piece.crc32c, bytes: data[...],
                             deferSync: !syncing.contains(holder), connection: nil, reused: false)
        }
    }

    /// The holders of a new piece that fsync their copy before answering: the first on each disk, in order (an
    /// unknown disk counts as one of its own). A copy on a disk already holding a durable one is fsynced shortly
    /// after (`CHUNK PUT … DEFER`): as for the catalog, a disk is one copy against a crash of the machine, and a
    /// killed process loses nothing it wrote.
    func holdersThatSync(_ holders: [NodeAddress]) -> Set<NodeAddress> {
        Set(Self.syncPeers(holders, covered: [], wanted: holders.count) { [self] holder in
            holder == address ? ownDisk : peerDisks.disk(of: holder)
        })
    }

    /// `FS WRITESLICES` that carries its bytes, without the piece journal: they become one piece (`carriedPiece`).
    /// The copies elsewhere are sent first and their answers read after the commit; this node's copy is durable
    /// before the commit is planned, so a catalog record never names a piece this node could lose. Returns the
    /// slices naming the piece, and the copies in flight.
    func storeCarriedPieces(_ slices: [ContentSlice], data: [UInt8]) throws -> (slices: [ContentSlice], pending: [PendingPieceCopy]) {
        let piece = try carriedPiece(slices, data: data)
        let pending = otherCopies(of: piece, data: data).map(sendPieceCopy)
        do {
            try storeLocalCopy(piece.chunk, data, crc32c: piece.crc32c)
        } catch {
            for copy in pending { copy.connection?.socket.abort() }
            throw error
        }
        return (piece.slices, pending)
    }

    /// Sends one copy on a pooled connection (the answer is read by `finishPieceCopies`).
    func sendPieceCopy(_ copy: PendingPieceCopy) -> PendingPieceCopy {
        var copy = copy
        guard let connection = try? pool.take(copy.holder) else { return copy }  // retried on a fresh one at the end
        copy.reused = connection.idleSince > 0
        do {
            try connection.socket.write(line: copy.line, then: Array(copy.bytes))
            copy.connection = connection
        } catch {
            connection.socket.abort()
        }
        return copy
    }

    /// Waits for every copy sent elsewhere; a copy whose connection failed is sent once more on a fresh one.
    func finishPieceCopies(_ pending: [PendingPieceCopy]) throws {
        var failure: OuroError?
        for copy in pending {
            do {
                if let connection = copy.connection {
                    do {
                        try connection.expectOK()
                        pool.give(connection)
                        continue
                    } catch let error as OuroError where error.code == .unavailable && copy.reused {
                        connection.socket.abort()  // a pooled connection the peer had closed: once more below
                    }
                }
                try pool.with(copy.holder) { connection in
                    try connection.socket.write(line: copy.line, then: Array(copy.bytes))
                    try connection.expectOK()
                }
            } catch {
                failure = failure ?? pieceFailure(copy.holder, error)
            }
        }
        if let failure { throw failure }
    }
}

extension Node {
    /// A small update in one fdatasync here: the slices' bytes become pieces held by this node (in the piece
    /// journal) and by `copies - 1` others (sent first, answers read last), and the commit's records go into the
    /// same journal append, before the catalog log or any peer sees them. Nil when the journal cannot take it.
    func commitCarriedSlices(_ slices: [ContentSlice], data: [UInt8],
                             plan: ([ContentSlice]) -> (StoredCatalog, Version, Int64) throws -> Catalog.Change) throws -> (InodeStat?, [ContentSlice])? {
        let piece = try carriedPiece(slices, data: data)
        let stored = piece.slices
        let local: [(chunk: ChunkID, bytes: [UInt8], crc32c: UInt32)] = [(piece.chunk, data, piece.crc32c)]
        var pending = otherCopies(of: piece, data: data)
        var ticket: PieceJournal.Ticket?
        var declined = false
        let records: EncodedRecords
        let stat: InodeStat?
        do {
            (records, stat) = try catalog.mutateJournalled(withRegions: false, plan(stored)) { planned in
                ticket = try pieceJournal.writeCommit(pieces: local, records: planned)
                if ticket == nil {
                    declined = true
                    throw OuroError(.unavailable, "the piece journal is full")
                }
            }
        } catch where declined {
            return nil
        }
        guard let ticket else { return nil }
        defer { pieceJournal.logged(ticket) }
        // The copies elsewhere go out while this node's journal is synced.
        pending = pending.map(sendPieceCopy)
        // Namespace changes not fsynced yet (the file's own name, often) become durable with this commit, as in
        // any synchronous commit: the log is fsynced too, while the peers apply.
        let namesPending = catalog.unsyncedRecords > 0
        do {
            try pieceJournal.sync(ticket)
        } catch {
            catalog.abandonJournalled(records)
            for copy in pending { copy.connection?.socket.abort() }
            throw error
        }
        do {
            try catalog.appendJournalled(records)
        } catch {
            for copy in pending { copy.connection?.socket.abort() }
            throw error
        }
        let peers = sendToPeers(records)
        if namesPending {
            do { try catalog.syncLog() } catch {
                _ = awaitPeers(peers)
                for copy in pending { copy.connection?.socket.abort() }
                throw error
            }
        }
        let delivered = awaitPeers(peers)
        syncElsewhereIfNeeded(peers, delivered: delivered)
        try finishPieceCopies(pending)
        return (stat, stored)
    }
}
