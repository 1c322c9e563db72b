import Glibc
import Logging
import OuroClient
import OuroCore

/// One stored copy, as reported back up the relay chain: position, chunk index, checksum.
struct StoredCopy: Equatable {
    var position: Int
    var chunk: Int
    var crc32c: UInt32

    var wire: String { "\(position).\(chunk).\(crc32c)" }

    init(position: Int, chunk: Int, crc32c: UInt32) {
        self.position = position
        self.chunk = chunk
        self.crc32c = crc32c
    }

    init?(wire: Substring) {
        let parts = wire.split(separator: ".")
        guard parts.count == 3, let position = Int(parts[0]), let chunk = Int(parts[1]), let crc = UInt32(parts[2]) else { return nil }
        self.init(position: position, chunk: chunk, crc32c: crc)
    }
}

extension Node {
    /// The start node's side of a push: splits the incoming bytes into chunks over the live ring, stores its own,
    /// relays the rest hop to hop, and returns the placement once every copy is fsynced and checksummed.
    func receivePush(_ input: FramedReader, sizeBytes: UInt64, hashing: Bool = true) throws -> FileContent {
        let chain = liveRing
        let plan = RelayPlan(sizeBytes: sizeBytes, chainLength: chain.count, copies: configuration.copies)
        let contentID = ContentID.random()
        let usage = chunks.diskUsage()
        let localBytes = plan.storedChunks(at: 0).reduce(0) { $0 + plan.layout.lengthBytes(ofChunk: $1) }
        guard usage.total == 0 || localBytes < usage.available else {
            throw OuroError(.noSpace, "\(localBytes) bytes do not fit in the \(usage.available) bytes free on \(address)")
        }
        // Position 0 sees every byte, in order: relayStream checks each downstream copy against its own checksums,
        // and hashes the whole content.
        let hasher = hashing ? SHA256Hasher() : nil
        let copies = try relayStream(input, contentID: contentID, plan: plan, position: 0, chain: chain, hasher: hasher)
        let placements = try (0..<plan.parts).map { index throws -> ChunkPlacement in
            let positions = plan.holderPositions(ofChunk: index)
            for position in positions where !copies.contains(where: { $0.position == position && $0.chunk == index }) {
                throw OuroError(.internal, "no copy of chunk \(index + 1) was reported by \(chain[position])")
            }
            return ChunkPlacement(lengthBytes: plan.layout.lengthBytes(ofChunk: index),
                                  crc32c: copies.first(where: { $0.chunk == index })!.crc32c,
                                  holders: positions.map { chain[$0] })
        }
        logger.info("push stored", metadata: ["content": "\(contentID)", "bytes": "\(sizeBytes)", "parts": "\(plan.parts)"])
        var content = FileContent(id: contentID, sizeBytes: sizeBytes, start: address, copies: plan.copies, chunks: placements)
        content.sha256 = hasher?.finish()
        return content
    }

    /// A relay hop: stores this position's chunks, forwards the rest, answers with every copy stored from here on.
    func receiveRelay(_ header: RelayHeader, _ session: ClientSession) throws {
        guard header.chain[header.position] == address else {
            throw OuroError.badRequest("this node is \(address), not position \(header.position) of the chain")
        }
        let plan = RelayPlan(sizeBytes: header.sizeBytes, chainLength: header.chain.count, copies: header.copies)
        let copies = try relayStream(session.reader, contentID: header.contentID, plan: plan, position: header.position,
                                     chain: header.chain)
        try session.reply("OK " + copies.map(\.wire).joined(separator: " "))
    }

    /// The stream at one position: the incoming bytes are this position's received chunks in order. Each chunk goes
    /// to a local chunk file if this node stores it, and on to the next hop if a later hop needs it. Returns the
    /// copies stored here and downstream, after all of them are durable.
    func relayStream(_ input: FramedReader, contentID: ContentID, plan: RelayPlan, position: Int,
                     chain: [NodeAddress], hasher: SHA256Hasher? = nil) throws -> [StoredCopy] {
        let stored = Set(plan.storedChunks(at: position))
        let forwarded = Set(plan.forwardedChunks(at: position))
        var writers: [Int: ChunkWriter] = [:]
        var downstream: Connection?
        var committed = false
        defer {
            if !committed {
                for writer in writers.values { writer.abort() }
                downstream?.socket.abort()
            }
        }
        for index in stored.sorted() {
            writers[index] = try chunks.create(ChunkID(contentID: contentID, index: index, parts: plan.parts))
        }
        if !forwarded.isEmpty {
            let next = chain[position + 1]
            do {
                downstream = try Connection(to: next)
            } catch {
                // Do not wait for the pinger: a successor that refuses connections is checked and routed around now.
                if !isReachable(next) { setLiveness(next, alive: false) }
                throw OuroError.unavailable("cannot reach \(next) to relay chunks: \(error)")
            }
            downstream!.socket.enlargeSendBufferForStreaming()
            try downstream!.send(RelayHeader(contentID: contentID, sizeBytes: plan.layout.sizeBytes, copies: plan.copies,
                                             position: position + 1, chain: chain).line)
        }
        var checksums: [Int: CRC32C] = [:]
        // No bigger than the stream: a small file's push does not touch a whole MiB of fresh memory.
        var buffer = [UInt8](repeating: 0, count: Int(max(1, min(UInt64(Limits.streamBufferBytes), plan.streamBytes(at: position)))))
        try buffer.withUnsafeMutableBytes { raw in
            for index in plan.receivedChunks(at: position) {
                var remaining = plan.layout.lengthBytes(ofChunk: index)
                var crc = CRC32C()
                while remaining > 0 {
                    let want = Int(min(UInt64(raw.count), remaining))
                    let count = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want]))
                    guard count > 0 else { throw OuroError.unavailable("the sender disconnected before the end of the data") }
                    let bytes = UnsafeRawBufferPointer(rebasing: raw[..<count])
                    hasher?.update(bytes)
                    try writers[index]?.write(bytes)
                    if forwarded.contains(index) {
                        do {
                            try downstream!.socket.write(bytes)
                        } catch {
                            // The next hop refused or died: its ERR line, if any, says why.
                            if let line = try? downstream!.reader.readLine(), let refusal = OuroError(errorLine: line) { throw refusal }
                            throw OuroError.unavailable("relay to \(chain[position + 1]) failed: \(error)")
                        }
                    }
                    // A chunk stored here is checksummed by its writer already; only pass-through bytes need it here.
                    if writers[index] == nil { crc.update(bytes) }
                    remaining -= UInt64(count)
                }
                checksums[index] = writers[index]?.crc ?? crc
            }
        }
        // Make our copies durable while the next hops finish theirs.
        for writer in writers.values { try writer.commit() }
        try chunks.syncDirectory()
        var copies = stored.sorted().map { StoredCopy(position: position, chunk: $0, crc32c: writers[$0]!.crc.value) }
        if let downstream {
            let line = try awaitRelayAnswer(downstream, from: chain[position + 1])
            if let error = OuroError(errorLine: line) { throw error }
            guard line.hasPrefix("OK") else { throw OuroError(.internal, "bad relay answer: \(line.prefix(80))") }
            for word in line.dropFirst(2).split(separator: " ") {
                guard let copy = StoredCopy(wire: word) else { throw OuroError(.internal, "bad relay answer") }
                guard copy.crc32c == checksums[copy.chunk]?.value else {
                    throw OuroError(.corrupt, "chunk \(copy.chunk + 1) arrived altered at \(chain[copy.position])")
                }
                copies.append(copy)
            }
        }
        committed = true
        for index in stored { verifier.markVerified(try ChunkID(contentID: contentID, index: index, parts: plan.parts), chunks) }
        return copies
    }

    /// The next hop's answer. It fsyncs its copies and waits for the hops after it first, which may take minutes
    /// for big chunks on a slow disk (up to 600 s here); but a hop the ring has declared dead meanwhile (hung, not
    /// crashed: its socket still takes bytes) is not waited for, so that the client can retry around it.
    private func awaitRelayAnswer(_ downstream: Connection, from next: NodeAddress) throws -> String {
        downstream.socket.setTimeouts(seconds: 2)
        let deadline = monotonicSeconds() + 600
        while true {
            do {
                guard let line = try downstream.reader.readLine(maxBytes: 1 << 20) else {
                    throw OuroError.unavailable("\(next) closed the relay without an answer")
                }
                return line
            } catch let error as OuroError where error.code == .unavailable && error.message.hasPrefix("timed out") {
                // The reader keeps what it has read of the line: waiting again loses nothing.
                guard netmap.isAlive(next) else { throw OuroError.unavailable("\(next) stopped answering the relay") }
                guard monotonicSeconds() < deadline else { throw error }
            }
        }
    }

    /// Removes the chunks of a content that will never be referenced (its catalog commit failed).
    func discardContent(_ content: FileContent) {
        for index in 0..<content.parts {
            let chunk = content.chunkID(index)
            for holder in content.chunks[index].holders where holder == address { chunks.delete(chunk) }
        }
    }

    /// `CHUNK PUT`: stores one chunk copy (re-replication and repair), checked against the given checksum.
    func receiveChunkCopy(_ chunk: ChunkID, lengthBytes: UInt64, crc32c: UInt32, deferSync: Bool = false, _ input: FramedReader) throws {
        if chunk.parts == 1, lengthBytes <= UInt64(PieceJournal.maxRecordBytes) {
            // A piece's copy (or a small one-chunk content): one buffer, durable through the piece journal.
            var bytes = [UInt8](repeating: 0, count: Int(lengthBytes))
            try bytes.withUnsafeMutableBytes { try readExactly(input, into: $0) }
            guard CRC32C.checksum(bytes) == crc32c else { throw OuroError(.corrupt, "chunk \(chunk) arrived with a different checksum") }
            try storeLocalCopy(chunk, bytes, crc32c: crc32c, deferSync: deferSync)
            return
        }
        let writer = try chunks.create(chunk)
        var buffer = [UInt8](repeating: 0, count: Int(min(lengthBytes, UInt64(Limits.streamBufferBytes))))
        var remaining = lengthBytes
        try buffer.withUnsafeMutableBytes { raw in
            while remaining > 0 {
                let want = Int(min(UInt64(raw.count), remaining))
                let count = try input.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want]))
                guard count > 0 else { throw OuroError.unavailable("the sender disconnected before the end of the chunk") }
                try writer.write(UnsafeRawBufferPointer(rebasing: raw[..<count]))
                remaining -= UInt64(count)
            }
        }
        guard writer.crc.value == crc32c else {
            writer.abort()
            throw OuroError(.corrupt, "chunk \(chunk) arrived with a different checksum")
        }
        try writer.commit()
        try chunks.syncDirectory()
        verifier.markVerified(chunk, chunks)
    }
}
