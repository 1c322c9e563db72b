import COuroSupport
import Glibc
import OuroCore

/// Short-circuit local reads (as HDFS does for a client on a DataNode's machine): when a chunk's holder runs on
/// this machine, its node hands us an open descriptor of the chunk file over its Unix socket (`<data>/node.sock`,
/// found with `NODE LOCAL`), after checking the copy as it would for `CHUNK GET`, and reads become `pread`s with no
/// network hop. Descriptors are cached for a few seconds only, so a copy the node has since found corrupt and moved
/// aside stops being read soon; any failure falls back to reading over TCP.
public final class LocalChunkFiles: LocalChunkSource, @unchecked Sendable {
    private struct OpenChunk {
        var fd: Int32
        var opened: Double
    }

    private let pool: ConnectionPool
    private let lock = Lock()
    /// Per holder: the node's local socket path, or nil when it is not on this machine (rechecked after a while).
    private var sockets: [NodeAddress: (path: String?, checked: Double)] = [:]
    private var files: [ChunkID: OpenChunk] = [:]
    private let maxOpenFiles = 128
    private let descriptorSeconds = 10.0

    public init(pool: ConnectionPool) {
        self.pool = pool
    }

    deinit {
        for file in files.values { close(file.fd) }
    }

    public func readLocal(_ chunk: ChunkID, holders: [NodeAddress], offset: UInt64,
                          into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        // Our own duplicate: another thread may close the cached descriptor (expiry, eviction) meanwhile.
        guard let fd = descriptor(for: chunk, holders: holders) else { return false }
        defer { close(fd) }
        if buffer.count >= 256 << 10 {
            // Several readers share one descriptor, so the kernel's read-ahead sees a random pattern: ask for the
            // whole range at once instead of page by page.
            _ = posix_fadvise(fd, off_t(offset), off_t(buffer.count), POSIX_FADV_WILLNEED)
        }
        var filled = 0
        while filled < buffer.count {
            let count = pread(fd, buffer.baseAddress! + filled, buffer.count - filled, off_t(offset) + off_t(filled))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                forget(chunk)
                return false
            }
            filled += count
        }
        return true
    }

    /// A descriptor of the chunk's file on this machine, checked by its node, for the caller to read and close; nil
    /// when no holder runs here.
    public func openChunk(_ chunk: ChunkID, holders: [NodeAddress]) -> Int32? {
        descriptor(for: chunk, holders: holders)
    }

    private func descriptor(for chunk: ChunkID, holders: [NodeAddress]) -> Int32? {
        let now = monotonicSeconds()
        if let fd: Int32 = lock.withLock({ () -> Int32? in
            guard let file = files[chunk] else { return nil }
            if now - file.opened < descriptorSeconds { return dup(file.fd) }
            close(file.fd)
            files[chunk] = nil
            return nil
        }) {
            return fd
        }
        for holder in holders {
            guard let path = socketPath(of: holder, now: now), let fd = open(chunk, at: path, from: holder) else { continue }
            return lock.withLock {
                if let raced = files[chunk] {
                    close(fd)
                    return dup(raced.fd)
                }
                if files.count >= maxOpenFiles, let oldest = files.min(by: { $0.value.opened < $1.value.opened }) {
                    close(oldest.value.fd)
                    files[oldest.key] = nil
                }
                files[chunk] = OpenChunk(fd: fd, opened: now)
                return dup(fd)
            }
        }
        return nil
    }

    private func forget(_ chunk: ChunkID) {
        lock.withLock {
            if let file = files.removeValue(forKey: chunk) { close(file.fd) }
        }
    }

    /// `NODE LOCAL` once a minute per holder: the path of its Unix socket if that exists on this machine.
    private func socketPath(of holder: NodeAddress, now: Double) -> String? {
        if let known = lock.withLock({ sockets[holder] }), now - known.checked < 60 { return known.path }
        var path: String?
        if let line = try? pool.with(holder, retry: true, { connection -> String in
            try connection.send("NODE LOCAL")
            return try connection.readReply()
        }), line.hasPrefix("OK ") {
            let candidate = String(line.dropFirst(3))
            if access(candidate, F_OK) == 0 { path = candidate }
        }
        lock.withLock { sockets[holder] = (path, now) }
        return path
    }

    /// Asks the node on `path` for the chunk file; the answer names the node, which must be `holder` (another
    /// machine's node could report a path that happens to exist here too).
    private func open(_ chunk: ChunkID, at path: String, from holder: NodeAddress) -> Int32? {
        let sock = ouro_unix_connect(path)
        guard sock >= 0 else { return nil }
        defer { close(sock) }
        var timeout = timeval(tv_sec: Limits.ioTimeoutSeconds, tv_usec: 0)
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("CHUNK OPEN \(chunk.contentID) \(chunk.index) \(chunk.parts)\n".utf8)
        guard request.withUnsafeBytes({ ouro_send_with_fd(sock, $0.baseAddress, $0.count, -1) }) == 0 else { return nil }
        var reply: [UInt8] = []
        var received: Int32 = -1
        var buffer = [UInt8](repeating: 0, count: 256)
        while !reply.contains(0x0A) && reply.count < 1024 {
            var fd: Int32 = -1
            let count = buffer.withUnsafeMutableBytes { ouro_receive_with_fd(sock, $0.baseAddress, $0.count, &fd) }
            if fd >= 0 {
                if received >= 0 { close(received) }
                received = fd
            }
            guard count > 0 else { break }
            reply += buffer[..<count]
        }
        let line = String(decoding: reply.prefix { $0 != 0x0A }, as: UTF8.self)
        let words = line.split(separator: " ")
        guard received >= 0, words.count == 3, words[0] == "OK", NodeAddress(words[2]) == holder else {
            if received >= 0 { close(received) }
            return nil
        }
        return received
    }
}
