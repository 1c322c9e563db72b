import Glibc
import OuroCore

/// One client connection to a node: header lines out, replies in, payloads streamed both ways.
public final class Connection: @unchecked Sendable {
    public let address: NodeAddress
    public let socket: Socket
    public let reader: FramedReader
    /// When this connection was last handed back to a pool (monotonic seconds).
    public internal(set) var idleSince: Double = 0

    public init(to address: NodeAddress, timeoutMilliseconds: Int = Limits.connectTimeoutMilliseconds) throws {
        self.address = address
        if let local = LocalRoutes.shared.connect(address, timeoutMilliseconds: timeoutMilliseconds) {
            socket = local  // the node's own socket: no secret needed
            reader = FramedReader(source: socket)
        } else {
            socket = try Socket.connect(to: address, timeoutMilliseconds: timeoutMilliseconds)
            reader = FramedReader(source: socket)
            if ClientSecret.current != nil {
                // Within the caller's connect timeout: a liveness probe must not wait the I/O timeout on a node
                // that accepts connections but does not answer.
                socket.setTimeouts(seconds: max(1, (timeoutMilliseconds + 999) / 1000))
                try authenticate()
                socket.setTimeouts(seconds: Limits.ioTimeoutSeconds)
            }
        }
    }

    /// Proves the cluster secret, if this process has one (`ClientSecret`), before anything else on a TCP
    /// connection, without sending it: by the TLS handshake keyed with it (`TLSContext`, the default), or where
    /// encryption is off by the challenge (`ChallengeAuth`), in which the node must prove it first.
    func authenticate() throws {
        guard let secret = ClientSecret.current else { return }
        if ClientSecret.encrypts {
            try socket.startTLS(TLSContext.client(secret: secret))
            return
        }
        let clientNonce = ChallengeAuth.nonce()
        try send("NODE HELLO \(clientNonce)")
        let reply = try readReply()
        if reply == "OK" { return }  // the node has no secret
        let fields = reply.split(separator: " ")
        guard fields.count == 3, fields[0] == "CHALLENGE", Hex.is32Bytes(fields[1]) else {
            throw OuroError(.internal, "unexpected answer to NODE HELLO from \(address): \(reply.prefix(80))")
        }
        let serverNonce = String(fields[1])
        guard ChallengeAuth.matches(String(fields[2]), ChallengeAuth.proof(secret: secret, role: .node, clientNonce: clientNonce,
                                                                            serverNonce: serverNonce)) else {
            throw OuroError(.denied, "\(address) proved a different cluster secret than ours: a wrong secret file here, or another ring")
        }
        try send("NODE PROVE \(ChallengeAuth.proof(secret: secret, role: .client, clientNonce: clientNonce, serverNonce: serverNonce))")
        try expectOK()
    }

    /// A connection over a socket already open to `address`.
    init(_ address: NodeAddress, over socket: Socket) {
        self.address = address
        self.socket = socket
        reader = FramedReader(source: socket)
    }

    public func send(_ line: String) throws {
        try socket.write(line + "\n")
    }

    /// Reads one reply line; an `ERR` line is thrown as its error. End of stream is UNAVAILABLE.
    @discardableResult
    public func readReply() throws -> String {
        guard let line = try reader.readLine() else { throw OuroError.unavailable("\(address) closed the connection") }
        if let error = OuroError(errorLine: line) { throw error }
        return line
    }

    /// Reads `OK` (or `OK …`).
    public func expectOK() throws {
        let line = try readReply()
        guard line == "OK" || line.hasPrefix("OK ") else { throw OuroError(.internal, "unexpected reply from \(address): \(line)") }
    }

    /// Reads `OK <length>` and the JSON that follows.
    public func readJSON<T: Decodable>(_ type: T.Type) throws -> T {
        let line = try readReply()
        guard line.hasPrefix("OK "), let length = Int(line.dropFirst(3)), length >= 0, length <= Limits.jsonPayloadBytes else {
            throw OuroError(.internal, "unexpected reply from \(address): \(line.prefix(80))")
        }
        return try WireJSON.decode(type, from: reader.readBytes(length))
    }

    /// Reads `OK <length>` and the `WireBinary` value that follows.
    public func readBinary<T: BinaryCodable>(_ type: T.Type) throws -> T {
        let line = try readReply()
        guard line.hasPrefix("OK "), let length = Int(line.dropFirst(3)), length >= 0, length <= Limits.jsonPayloadBytes else {
            throw OuroError(.internal, "unexpected reply from \(address): \(line.prefix(80))")
        }
        return try WireBinary.decode(type, from: reader.readBytes(length))
    }

    /// Sends a header and a `WireBinary` payload in one write: `<header> <length> BIN`.
    public func sendBinary<T: BinaryCodable>(_ header: String, _ value: T) throws {
        let body = WireBinary.encode(value)
        try socket.write(line: "\(header) \(body.count) BIN", then: body)
    }

    /// Sends a header and a JSON payload.
    public func sendJSON<T: Encodable>(_ header: String, _ value: T) throws {
        let body = WireJSON.encode(value)
        try socket.write("\(header) \(body.count)\n")
        try socket.write(body)
    }
}

/// Keeps idle connections per node for reuse; at most `maxIdlePerNode` each.
public final class ConnectionPool: @unchecked Sendable {
    private var idle: [NodeAddress: [Connection]] = [:]
    private let lock = Lock()
    private let maxIdlePerNode: Int
    /// Idle connections older than this are dropped (the node closes idle connections after `Limits.idleTimeoutSeconds`).
    private let maxIdleSeconds = Double(Limits.idleTimeoutSeconds) / 2

    public init(maxIdlePerNode: Int = 32) {
        self.maxIdlePerNode = maxIdlePerNode
    }

    /// Errors that arrive as a complete `ERR` answer, after which a connection can carry the next request.
    static let answeredCodes: Set<ErrorCode> = [.notFound, .gone, .exists, .notEmpty, .notDir, .isDir, .badRequest, .denied,
                                                 .notSupported, .noSpace, .tooLarge]

    public func take(_ address: NodeAddress) throws -> Connection {
        let now = monotonicSeconds()
        let reused: Connection? = lock.withLock {
            while let connection = idle[address]?.popLast() {
                if now - connection.idleSince < maxIdleSeconds { return connection }
            }
            return nil
        }
        return try reused ?? Connection(to: address)
    }

    /// Returns a connection that finished its request cleanly (anything else must just be dropped).
    public func give(_ connection: Connection) {
        guard connection.reader.bufferedBytes == 0 else { return }
        connection.idleSince = monotonicSeconds()
        lock.withLock {
            if idle[connection.address, default: []].count < maxIdlePerNode { idle[connection.address, default: []].append(connection) }
        }
    }

    /// Drops every idle connection to `address` (after it failed).
    public func forget(_ address: NodeAddress) {
        lock.withLock { idle[address] = nil }
    }

    /// Runs `body` on a pooled connection; the connection is reused only if `body` succeeds.
    /// `retry` runs the body once more on a fresh connection when a reused one turns out dead (for idempotent calls).
    public func with<T>(_ address: NodeAddress, retry: Bool = false, _ body: (Connection) throws -> T) throws -> T {
        let connection = try take(address)
        do {
            let result = try body(connection)
            give(connection)
            return result
        } catch let error as OuroError where error.code == .unavailable && retry && connection.idleSince > 0 {
            let fresh = try Connection(to: address)
            let result = try body(fresh)
            give(fresh)
            return result
        } catch let error as OuroError where ConnectionPool.answeredCodes.contains(error.code) {
            // The node answered with a whole ERR line: the connection is still in step.
            give(connection)
            throw error
        }
    }
}

public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Seconds since 1970 (the wall clock: for times shown to people, never for measuring intervals).
public func wallClockSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

public func monotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// A pthread mutex: small, and usable from any thread without Swift concurrency.
public final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    public init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
