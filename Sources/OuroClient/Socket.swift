import COuroSupport
import COuroTLS
import Glibc
import Synchronization
import OuroCore

/// A blocking TCP socket with send/receive timeouts, plain or encrypted (`startTLS`). Closed when released.
/// Like any blocking connection, one thread at a time reads or writes it (another may `abort` it).
public final class Socket: ByteSource, @unchecked Sendable {
    public let fd: Int32
    public let peer: String
    /// The TLS session once `startTLS` succeeded: every byte then goes through it.
    private var tls: OpaquePointer?
    /// Where `sendFile` reads a file's bytes to encrypt them (TLS only; made on first use).
    private var fileBuffer: UnsafeMutableRawBufferPointer?

    /// Whether bytes on this socket are encrypted: `sendFile` then reads and encrypts instead of handing the kernel the file
    /// (sendfile).
    public var isEncrypted: Bool { tls != nil }

    public init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit {
        if let tls { ouro_tls_free(tls) }
        fileBuffer?.deallocate()
        close(fd)
    }

    /// Runs the TLS handshake (client or server side, as `context` is) within the socket's timeouts; afterwards
    /// everything read and written is encrypted and authenticated.
    public func startTLS(_ context: TLSContext) throws {
        precondition(tls == nil, "TLS started twice")
        var reason = [CChar](repeating: 0, count: 256)
        guard let session = ouro_tls_start(context.pointer, fd, &reason, reason.count) else {
            let code = errno
            let text = String(cString: reason)
            switch code {
            case EAGAIN, EWOULDBLOCK:
                throw OuroError.unavailable("timed out in the TLS handshake with \(peer)")
            case EPROTO:
                throw OuroError(.denied, "the TLS handshake with \(peer) failed (\(text.isEmpty ? "protocol error" : text)): it has a "
                                + "different cluster secret, or is not an encrypting OuroborosFS node")
            case ECONNRESET:
                throw OuroError.unavailable("\(peer) closed the connection during the TLS handshake (a node without a cluster "
                                            + "secret, or started with --insecure, does so)")
            default:
                throw OuroError.unavailable("TLS handshake with \(peer): \(String(cString: strerror(code)))")
            }
        }
        tls = session
    }

    /// Connects to `address`, trying each resolved address, each within `timeoutMilliseconds`.
    public static func connect(to address: NodeAddress, timeoutMilliseconds: Int = Limits.connectTimeoutMilliseconds) throws -> Socket {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(address.host, String(address.port), &hints, &list)
        guard status == 0, let first = list else {
            throw OuroError.unavailable("cannot resolve \(address): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = ECONNREFUSED
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { lastError = errno; continue }
            // Non-blocking connect so that an unreachable host fails within the timeout.
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var result = Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen)
            if result != 0 && errno == EINPROGRESS {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&poller, 1, Int32(timeoutMilliseconds))
                if ready == 1 {
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                    result = error == 0 ? 0 : -1
                    errno = error
                } else {
                    errno = ready == 0 ? ETIMEDOUT : errno
                    result = -1
                }
            }
            if result == 0 {
                _ = fcntl(fd, F_SETFL, flags)
                let socket = Socket(fd: fd, peer: address.description)
                socket.setTimeouts(seconds: Limits.ioTimeoutSeconds)
                return socket
            }
            lastError = errno
            close(fd)
        }
        throw OuroError.unavailable("cannot connect to \(address): \(String(cString: strerror(lastError)))")
    }

    /// Connects to a Unix socket (a node's `<data>/node.sock`); `peer` names the node in errors.
    public static func connect(unixPath path: String, peer: String) throws -> Socket {
        let fd = ouro_unix_connect(path)
        guard fd >= 0 else { throw OuroError.unavailable("cannot connect to \(path): \(String(cString: strerror(errno)))") }
        let socket = Socket(fd: fd, peer: peer)
        socket.setTimeouts(seconds: Limits.ioTimeoutSeconds)
        return socket
    }

    /// Makes room for a bulk stream in the send buffer of a Unix-socket connection (`Limits.streamSocketSendBufferBytes`).
    /// On TCP it does nothing: a fixed size would turn off the kernel's autotuning, and a stock `wmem_max` caps it low.
    public func enlargeSendBufferForStreaming() {
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let family = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 ? Int32($0.pointee.sa_family) : -1 }
        }
        guard family == AF_UNIX else { return }
        var bytes = Limits.streamSocketSendBufferBytes
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A send or receive blocked this long fails with UNAVAILABLE.
    public func setTimeouts(seconds: Int) {
        var time = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let tls {
            let count = ouro_tls_read(tls, buffer.baseAddress, buffer.count)
            if count >= 0 {
                SocketTraffic.received.add(UInt64(count), ordering: .relaxed)
                return count
            }
            throw transportError(reading: true)
        }
        while true {
            let count = recv(fd, buffer.baseAddress, buffer.count, 0)
            if count >= 0 {
                SocketTraffic.received.add(UInt64(count), ordering: .relaxed)
                return count
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: throw OuroError.unavailable("timed out reading from \(peer)")
            default: throw OuroError.unavailable("reading from \(peer): \(String(cString: strerror(errno)))")
            }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if let tls {
            guard !bytes.isEmpty else { return }
            guard ouro_tls_write(tls, bytes.baseAddress, bytes.count) >= 0 else { throw transportError(reading: false) }
            SocketTraffic.sent.add(UInt64(bytes.count), ordering: .relaxed)
            return
        }
        var sent = 0
        while sent < bytes.count {
            let count = send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            if count >= 0 {
                sent += count
                SocketTraffic.sent.add(UInt64(count), ordering: .relaxed)
                continue
            }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: throw OuroError.unavailable("timed out writing to \(peer)")
            default: throw OuroError.unavailable("writing to \(peer): \(String(cString: strerror(errno)))")
            }
        }
    }

    public func write(_ text: String) throws {
        var text = text
        try text.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// A header line and the payload after it, gathered into one send (one segment, so the peer wakes once)
    /// without copying the payload next to the header.
    public func write(line: String, then body: [UInt8]) throws {
        var header = Array((line + "\n").utf8)
        if isEncrypted {
            // One record for a small answer (one segment, as below); a big body needs no copy next to its header.
            if body.count <= Self.tlsRecordBytes {
                header.append(contentsOf: body)
                return try write(header)
            }
            try write(header)
            return try write(body)
        }
        let sent: Int = header.withUnsafeMutableBytes { head in
            body.withUnsafeBytes { payload in
                var parts = [iovec(iov_base: head.baseAddress, iov_len: head.count),
                             iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)]
                return parts.withUnsafeMutableBufferPointer { vectors in
                    var message = msghdr()
                    message.msg_iov = vectors.baseAddress
                    message.msg_iovlen = payload.count > 0 ? 2 : 1
                    var count: Int
                    repeat { count = sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) } while count < 0 && errno == EINTR
                    return count
                }
            }
        }
        // Whatever one call did not take (a full socket buffer, an error) goes the ordinary way, which reports errors.
        let done = max(sent, 0)
        SocketTraffic.sent.add(UInt64(done), ordering: .relaxed)
        if done < header.count {
            try header.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[done...])) }
            try write(body)
        } else if done - header.count < body.count {
            try body.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[(done - header.count)...])) }
        }
    }

    /// Sends up to `count` bytes of the regular file `file` from `position` (advanced by what was sent): with
    /// sendfile on a plain socket (page cache to socket, no copy through this process), read and encrypted here on
    /// a TLS one. Returns the bytes sent; 0: the file ended.
    public func sendFile(_ file: Int32, from position: inout off_t, count: Int) throws -> Int {
        guard isEncrypted else {
            while true {
                let sent = sendfile(fd, file, &position, count)
                if sent >= 0 {
                    SocketTraffic.sent.add(UInt64(sent), ordering: .relaxed)
                    return sent
                }
                if errno == EINTR { continue }
                throw errno == EAGAIN ? OuroError.unavailable("timed out writing to \(peer)")
                    : OuroError.unavailable("writing to \(peer): \(String(cString: strerror(errno)))")
            }
        }
        if fileBuffer == nil { fileBuffer = .allocate(byteCount: Limits.streamBufferBytes, alignment: 4096) }
        let buffer = fileBuffer!
        while true {
            let got = pread(file, buffer.baseAddress, min(count, buffer.count), position)
            if got < 0 && errno == EINTR { continue }
            guard got >= 0 else { throw OuroError.unavailable("reading the file to send to \(peer): \(String(cString: strerror(errno)))") }
            guard got > 0 else { return 0 }
            try write(UnsafeRawBufferPointer(rebasing: buffer[..<got]))
            position += off_t(got)
            return got
        }
    }

    /// The largest TLS record's plaintext.
    static let tlsRecordBytes = 16384

    /// The error after a failed TLS read or write (errno set by COuroTLS).
    private func transportError(reading: Bool) -> OuroError {
        let code = errno
        let direction = reading ? "reading from" : "writing to"
        switch code {
        case EAGAIN, EWOULDBLOCK: return OuroError.unavailable("timed out \(direction) \(peer)")
        case EPROTO: return OuroError.unavailable("\(direction) \(peer): TLS failure (\(TLSContext.lastError()))")
        default: return OuroError.unavailable("\(direction) \(peer): \(String(cString: strerror(code)))")
        }
    }

    /// Tells the peer nothing more will be sent (e.g. after a payload), keeping the read side open.
    public func shutdownWrite() {
        if let tls { ouro_tls_close_write(tls) }
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Ends the connection at once in both directions (wakes up a peer blocked on it).
    public func abort() { shutdown(fd, Int32(SHUT_RDWR)) }
}

/// A listening TCP socket.
public final class ListeningSocket: @unchecked Sendable {
    public let fd: Int32
    public let address: NodeAddress

    /// Binds `address` (port 0 picks a free port; `address` then reports the real one).
    public init(address: NodeAddress) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(address.host, String(address.port), &hints, &list)
        guard status == 0, let info = list else {
            throw OuroError.unavailable("cannot resolve \(address): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw OuroError.unavailable("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw OuroError.unavailable("cannot listen on \(address): \(reason)")
        }
        guard listen(fd, 512) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw OuroError.unavailable("listen on \(address): \(reason)")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port = storage.ss_family == sa_family_t(AF_INET6)
            ? withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
            : withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        self.fd = fd
        self.address = NodeAddress(host: address.host, port: port)
    }

    deinit { close(fd) }

    /// `host:port` (`[v6]:port`) of a peer's address, as the node's connection budget and logs name it.
    static func describe(_ storage: inout sockaddr_storage) -> String {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let length = socklen_t(storage.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let status = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard status == 0 else { return "client" }
        let name = String(cString: host), port = String(cString: service)
        return storage.ss_family == sa_family_t(AF_INET6) ? "[\(name)]:\(port)" : "\(name):\(port)"
    }

    /// Waits for the next connection; nil once the socket is shut down.
    public func accept() -> Socket? {
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(fd, $0, &length) }
            }
            if client >= 0 {
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                return Socket(fd: client, peer: Self.describe(&storage))
            }
            switch errno {
            case EINTR, ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM:
                if errno != EINTR && errno != ECONNABORTED { usleep(10_000) }
                continue
            default: return nil
            }
        }
    }

    /// Stops `accept` from waiting.
    public func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}

/// Bytes this process received and sent on its sockets (TCP and Unix), for `/metrics`.
public enum SocketTraffic {
    public static let received = Atomic<UInt64>(0)
    public static let sent = Atomic<UInt64>(0)
}
