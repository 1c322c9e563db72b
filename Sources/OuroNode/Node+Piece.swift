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
            let failures = parallelMap(holders, width: holders.count) { [self] holder -> OuroError? in
                do {
                    if holder == address {
                        try storeLocalCopy(chunk, bytes)
                    } else {
                        try pool.with(holder, retry: true) { connection in
                            try connection.socket.write(line: "CHUNK PUT \(contentID) 0 1 \(sizeBytes) \(crc32c)", then: bytes)
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

    private func storeLocalCopy(_ chunk: ChunkID, _ bytes: [UInt8]) throws {
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
    private func pieceFailure(_ holder: NodeAddress, _ error: Error) -> OuroError {
        let error = error as? OuroError ?? OuroError(.internal, "\(error)")
        guard holder != address, error.code == .unavailable else { return error }
        pool.forget(holder)
        if !isReachable(holder) { setLiveness(holder, alive: false) }
        return OuroError.unavailable("cannot store a piece copy on \(holder): \(error.message)")
    }

    private func readExactly(_ input: FramedReader, into buffer: UnsafeMutableRawBufferPointer) throws {
        var filled = 0
        while filled < buffer.count {
            let count = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            guard count > 0 else { throw OuroError.unavailable("the sender disconnected before the end of the piece") }
            filled += count
        }
    }
}
