import COuroSupport
import Glibc
import Logging
import OuroClient
import OuroCore
import SystemPackage

extension Node: LocalChunkSource {
    /// `FILE PULL`: the file's raw bytes, fetched from the chunk holders in parallel and written in order.
    func sendFile(_ name: PathName, _ session: ClientSession) throws {
        guard let inode = catalog.read({ $0.resolve(name) }), inode.kind == .file else {
            throw OuroError.notFound("file not found")
        }
        guard let content = inode.content else { return }  // an empty file
        session.socket.setTimeouts(seconds: 600)
        let reader = ContentReader(content: content, pool: pool, local: self)
        try reader.stream { bytes in try session.socket.write(bytes) }
    }

    /// `FILE LIST`: CSV `name,start,size`, one row per file, depth first in name order (as `allFiles`), streamed as
    /// `walkFiles` goes.
    func sendList(_ session: ClientSession) throws {
        try streamRows(session, header: "name,start,size") { row in
            try walkFiles { path, inode in
                try row("\(CSV.field(path)),\(inode.content?.start.description ?? address.description),\(inode.sizeBytes)")
            }
        }
    }

    /// `FILE SHORT`: CSV `name,copies,wanted`, one row per file with a chunk on fewer live nodes than it should be
    /// (`ContentHealth`, as the netmap sees the ring now), in the order of `FILE LIST`, then `OK`. Streamed as that.
    func sendShortOfCopies(_ session: ClientSession) throws {
        let map = netmap
        try streamRows(session, header: "name,copies,wanted", trailer: "OK") { row in
            try walkFiles { path, inode in
                let health = ContentHealth(content: inode.content, netmap: map)
                if health.isShort { try row("\(CSV.field(path)),\(health.liveCopies),\(health.wantedCopies)") }
            }
        }
    }

    /// Lines of text sent as they are made, in writes of about 256 KiB: the header, every row `rows` hands over,
    /// then the trailer if any.
    private func streamRows(_ session: ClientSession, header: String, trailer: String? = nil,
                            _ rows: (_ row: (String) throws -> Void) throws -> Void) throws {
        var text = header + "\n"
        try rows { line in
            text += line + "\n"
            if text.utf8.count > 256 * 1024 {
                try session.socket.write(text)
                text = ""
            }
        }
        try session.socket.write(text + (trailer.map { $0 + "\n" } ?? ""))
    }

    /// Every file of the catalog with its path, depth first in name order. A page of a directory at a time: the
    /// catalog lock is held for one page (`Limits.readdirPageEntries`), never for the whole tree, and memory holds
    /// one page per level, not every file.
    func walkFiles(_ visit: (_ path: String, _ inode: OuroCore.Inode) throws -> Void) throws {
        var visited = Set<UInt64>()
        func walk(_ directory: UInt64, prefix: String) throws {
            guard visited.insert(directory).inserted else { return }
            var after: String?
            repeat {
                let page = catalog.read { $0.entries(of: directory, after: after, limit: Limits.readdirPageEntries) }
                after = page.count == Limits.readdirPageEntries ? page.last?.0 : nil
                for (name, inode) in page {
                    let path = prefix.isEmpty ? name : prefix + "/" + name
                    switch inode.kind {
                    case .directory: try walk(inode.id, prefix: path)
                    case .file: try visit(path, inode)
                    default: break
                    }
                }
            } while after != nil
        }
        try walk(Inode.rootID, prefix: "")
    }

    /// `CHUNK GET`: `DATA <n>` then n bytes of the stored chunk, checked against its checksum first.
    func sendChunk(_ chunk: ChunkID, offset: UInt64, lengthBytes: UInt64, _ session: ClientSession) throws {
        guard chunks.exists(chunk) else {
            noteMissing(chunk)
            throw OuroError.notFound("chunk \(chunk) is not stored here")
        }
        try verify(chunk)
        let fd = try chunks.open(chunk)
        defer { try? fd.close() }
        let size = chunks.sizeBytes(of: chunk) ?? 0
        let length = offset >= size ? 0 : min(lengthBytes, size - offset)
        if length < UInt64(Limits.streamBufferBytes) {
            // A small range (a random read through the mount): the file is opened afresh for each request, so the
            // kernel would start a full read-ahead window every time and read far more of the disk than asked.
            _ = posix_fadvise(fd.rawValue, off_t(offset), off_t(length), POSIX_FADV_RANDOM)
        }
        try session.reply("DATA \(length)")
        // On a plain connection sendfile: the bytes go from the page cache to the socket without a copy through
        // this process. On TLS they are read and encrypted here.
        var position = off_t(offset)
        let end = off_t(offset + length)
        while position < end {
            let count = try session.socket.sendFile(fd.rawValue, from: &position, count: Int(min(off_t(Limits.streamBufferBytes * 4), end - position)))
            // The header promised `length` bytes: a chunk that shrank under us cannot be served honestly.
            guard count > 0 else { throw OuroError(.corrupt, "chunk \(chunk) ended early") }
        }
    }

    public func readLocal(_ chunk: ChunkID, holders: [NodeAddress], offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        guard chunks.exists(chunk) else {
            noteMissing(chunk)
            return false
        }
        do {
            try verify(chunk)
        } catch {
            return false  // a bad local copy: read a good one from another holder
        }
        let fd = try chunks.open(chunk)
        defer { try? fd.close() }
        var filled = 0
        while filled < buffer.count {
            let count = try fd.read(fromAbsoluteOffset: Int64(offset) + Int64(filled),
                                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled...]))
            guard count > 0 else { return false }
            filled += count
        }
        return true
    }

    /// Checks a stored copy against the checksum the catalog recorded (once; later reads trust it).
    /// A copy that fails is removed so it is never served, and repaired from a good one.
    func verify(_ chunk: ChunkID) throws {
        if verifier.isVerified(chunk, chunks) { return }
        guard let placement = catalog.read({ $0.content(chunk.contentID) })?.chunks[safe: chunk.index] else {
            // Not committed yet (a push in flight) or unknown: there is nothing to compare with.
            return
        }
        let (length, crc) = try chunks.check(chunk)
        guard length == placement.lengthBytes, crc == placement.crc32c else {
            logger.error("corrupt chunk copy", metadata: ["chunk": "\(chunk)", "crc": "\(crc)", "expected": "\(placement.crc32c)"])
            quarantine(chunk)
            throw OuroError(.corrupt, "the copy of \(chunk) on \(address) is corrupt")
        }
        verifier.markVerified(chunk, chunks)
        verifier.noteReadBack(chunk)
    }

    /// `CHUNK VERIFY`: the copy read from disk now (not trusting an earlier check) and compared with the catalog.
    /// `ERR NOT_FOUND` (and a repair scan soon) if this node should hold it but does not; `ERR CORRUPT` if it does not
    /// match (moved aside; the repair loop fetches a good copy); `ERR BAD_REQUEST` for a chunk the catalog does not
    /// place here.
    func verifyStoredCopy(_ chunk: ChunkID) throws {
        guard catalog.read({ $0.content(chunk.contentID)?.chunks[safe: chunk.index]?.holders.contains(address) }) == true else {
            throw OuroError(.badRequest, "the catalog places no copy of \(chunk) on \(address)")
        }
        guard chunks.exists(chunk) else {
            noteMissing(chunk)
            throw OuroError.notFound("the copy of \(chunk) on \(address) is missing; it will be restored")
        }
        verifier.forget(chunk)
        try verify(chunk)
    }

    /// A copy the catalog says this node holds is not on disk (lost, or removed by hand): repair soon.
    func noteMissing(_ chunk: ChunkID) {
        let holder = catalog.read { $0.content(chunk.contentID)?.chunks[safe: chunk.index]?.holders.contains(address) } ?? false
        if holder { repair.requestScan() }
    }

    /// Moves a corrupt copy aside so it is never served again; the repair loop fetches a good copy in its place.
    func quarantine(_ chunk: ChunkID) {
        verifier.forget(chunk)
        verifier.dropReadBack(chunk)
        let path = chunks.path(of: chunk)
        _ = rename(path.string, path.string + ".corrupt")
        repair.requestScan()
    }

    /// `FILE DELETE`: removes a file by name.
    func deleteFile(_ name: PathName) throws {
        try commitAndBroadcast { catalog, version, now in
            var parent = Inode.rootID
            for component in name.parentComponents {
                guard let next = catalog.lookup(parent: parent, name: component), next.kind == .directory else {
                    throw OuroError.notFound("\(name) not found")
                }
                parent = next.id
            }
            guard catalog.lookup(parent: parent, name: name.lastComponent) != nil else { throw OuroError.notFound("\(name) not found") }
            return try catalog.planUnlink(parent: parent, name: name.lastComponent, version: version, nowNs: now)
        }
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}

extension Node {
    /// Connections to `<data>/node.sock`: one `CHUNK OPEN <content id> <index> <parts>` each, answered with
    /// `OK <length> <node address>` and the chunk file's descriptor attached, or an `ERR` line.
    func localAcceptLoop() {
        while !isStopping {
            let client = accept(localListenerDescriptor, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            startThread(name: "local-conn") { [self] in
                var timeout = timeval(tv_sec: Limits.ioTimeoutSeconds, tv_usec: 0)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                // `CHUNK OPEN` is answered here, with a descriptor; any other first request starts an ordinary
                // session, as on the TCP port (clients on this machine: `LocalRoutes`).
                let chunkOpen = Array("CHUNK OPEN".utf8)
                var first = [UInt8](repeating: 0, count: chunkOpen.count)
                func peek(_ flags: Int32) -> Int {
                    first.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, Int32(MSG_PEEK) | flags) }
                }
                // Until the first word pair is in (or a line end, or a second passes): a `CHUNK OPEN` line may come
                // in pieces. (MSG_WAITALL does not wait when peeking a Unix socket.)
                var peeked = peek(0)
                var waits = 0
                while peeked > 0, peeked < first.count, !first[..<peeked].contains(0x0A),
                      chunkOpen.starts(with: first[..<peeked]), waits < 100 {
                    usleep(10_000)
                    waits += 1
                    peeked = peek(Int32(MSG_DONTWAIT))
                }
                guard peeked > 0 else { close(client); return }
                guard peeked == first.count, first == chunkOpen else {
                    serveAdmitted(Socket(fd: client, peer: "local"), trusted: true)
                    return
                }
                defer { close(client) }
                var line: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 256)
                while !line.contains(0x0A) && line.count < Limits.headerLineBytes {
                    let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                    guard count > 0 else { return }
                    line += buffer[..<count]
                }
                let text = String(decoding: line.prefix { $0 != 0x0A }, as: UTF8.self)
                var (reply, fd): (String, Int32) = ("", -1)
                do {
                    (reply, fd) = try openLocal(text)
                } catch let error as OuroError {
                    reply = error.line
                } catch {
                    reply = OuroError(.internal, "\(error)").line
                }
                defer { if fd >= 0 { close(fd) } }
                let bytes = Array((reply + "\n").utf8)
                _ = bytes.withUnsafeBytes { ouro_send_with_fd(client, $0.baseAddress, $0.count, fd) }
            }
        }
    }

    private func openLocal(_ line: String) throws -> (String, Int32) {
        let words = line.split(separator: " ")
        guard words.count == 5, words[0] == "CHUNK", words[1] == "OPEN", let content = ContentID(words[2]),
              let index = Int(words[3]), let parts = Int(words[4]) else {
            throw OuroError.badRequest("want CHUNK OPEN <content id> <index> <parts>")
        }
        let chunk = try ChunkID(contentID: content, index: index, parts: parts)
        guard chunks.exists(chunk) else {
            noteMissing(chunk)
            throw OuroError.notFound("chunk \(chunk) is not stored here")
        }
        try verify(chunk)
        let fd = try chunks.open(chunk)
        return ("OK \(chunks.sizeBytes(of: chunk) ?? 0) \(address)", fd.rawValue)
    }
}
