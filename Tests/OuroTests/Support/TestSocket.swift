import COuroTLS
import Glibc
import OuroClient
import OuroCore

/// A plain blocking TCP client for talking the wire protocol byte for byte, independent of `OuroClient`'s
/// connections (on an encrypting ring, `startTLS` runs the same TLS as every client, through COuroTLS).
/// Every receive and send is bounded by a timeout, so a silent node fails the test instead of hanging it.
final class TestSocket {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private(set) var closed = false
    private var tls: OpaquePointer?

    init(_ address: NodeAddress, timeoutSeconds: Int = 30) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address.host, String(address.port), &hints, &list) == 0, let info = list else {
            throw TestFailure("cannot resolve \(address)")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var time = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("cannot connect to \(address): \(reason)")
        }
        self.fd = fd
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        if let tls { ouro_tls_free(tls) }
        Glibc.close(fd)
    }

    /// The TLS handshake keyed by the cluster secret (`TLSContext`): what an encrypting ring's nodes expect first.
    func startTLS(secret: String) throws {
        var reason = [CChar](repeating: 0, count: 256)
        guard let session = ouro_tls_start(TLSContext.client(secret: secret).pointer, fd, &reason, reason.count) else {
            throw TestFailure("TLS handshake failed: \(String(cString: reason)) (\(String(cString: strerror(errno))))")
        }
        tls = session
    }

    /// Sends every byte (fails on a timeout or a reset).
    func send(_ bytes: UnsafeRawBufferPointer) throws {
        if let tls {
            guard bytes.isEmpty || ouro_tls_write(tls, bytes.baseAddress, bytes.count) >= 0 else {
                throw TestFailure("TLS send failed: \(String(cString: strerror(errno)))")
            }
            return
        }
        var sent = 0
        while sent < bytes.count {
            let count = Glibc.send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            if count > 0 { sent += count; continue }
            if count < 0 && errno == EINTR { continue }
            throw TestFailure("send failed: \(String(cString: strerror(errno)))")
        }
    }

    func send(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try send($0) } }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Half-closes: the node sees end of stream, and we can still read its replies.
    func shutdownWrite() {
        if let tls { ouro_tls_close_write(tls) }
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Reads what is available (0 at end of stream). A timeout throws.
    func receive(into target: UnsafeMutableRawBufferPointer) throws -> Int {
        if bufferStart < buffer.count {
            let count = min(target.count, buffer.count - bufferStart)
            buffer.withUnsafeBytes { raw in
                target.baseAddress!.copyMemory(from: raw.baseAddress! + bufferStart, byteCount: count)
            }
            bufferStart += count
            return count
        }
        while let tls {
            let count = ouro_tls_read(tls, target.baseAddress, target.count)
            if count >= 0 { return count }
            if errno == EAGAIN { throw TestFailure("timed out waiting for the node") }
            if errno == ECONNRESET { return 0 }
            throw TestFailure("TLS receive failed: \(String(cString: strerror(errno)))")
        }
        while true {
            let count = recv(fd, target.baseAddress, target.count, 0)
            if count >= 0 { return count }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw TestFailure("timed out waiting for the node") }
            if errno == ECONNRESET { return 0 }
            throw TestFailure("recv failed: \(String(cString: strerror(errno)))")
        }
    }

    /// One line without its LF (and without a CR before it); nil at end of stream. A partial last line is returned.
    func readLine(maxBytes: Int = 1 << 20) throws -> String? {
        var line: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if bufferStart < buffer.count {
                if let newline = buffer[bufferStart...].firstIndex(of: 0x0A) {
                    line += buffer[bufferStart..<newline]
                    bufferStart = newline + 1
                    if line.last == 0x0D { line.removeLast() }
                    return String(decoding: line, as: UTF8.self)
                }
                line += buffer[bufferStart...]
                buffer.removeAll(keepingCapacity: true)
                bufferStart = 0
                guard line.count <= maxBytes else { throw TestFailure("reply line longer than \(maxBytes) bytes") }
            }
            let count = try chunk.withUnsafeMutableBytes { try receive(into: $0) }
            if count == 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            buffer = Array(chunk[..<count])
            bufferStart = 0
        }
    }

    /// Every line until the node closes the connection.
    func readLinesToEnd() throws -> [String] {
        var lines: [String] = []
        while let line = try readLine() { lines.append(line) }
        return lines
    }

    /// Every byte until the node closes the connection.
    func readToEnd() throws -> [UInt8] {
        var result: [UInt8] = []
        try readToEnd { result.append(contentsOf: $0) }
        return result
    }

    /// Streams every byte until the node closes the connection.
    func readToEnd(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        try chunk.withUnsafeMutableBytes { raw in
            while true {
                let count = try receive(into: raw)
                if count == 0 { return }
                try sink(UnsafeRawBufferPointer(rebasing: raw[..<count]))
            }
        }
    }

    /// Whether the node has closed its side: waits up to `seconds` for end of stream (data read meanwhile is dropped).
    func waitForClose(seconds: Double) -> Bool {
        let deadline = Deadline(seconds: seconds)
        var scratch = [UInt8](repeating: 0, count: 4096)
        while !deadline.passed {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(max(1, deadline.remaining * 1000)))
            if ready <= 0 { continue }
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count == 0 { return true }
            if count < 0 && errno != EAGAIN && errno != EINTR { return true }
        }
        return false
    }
}
