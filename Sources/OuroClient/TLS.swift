import COpenSSL
import COuroTLS
import Glibc
import OuroCore

/// TLS 1.3 keyed by the cluster secret (external PSK, `COuroTLS`): what every TCP connection of a ring with a
/// secret runs over, unless encryption is turned off (`ClientSecret.encrypts`). The handshake proves the secret
/// both ways, so an encrypted connection needs no `NODE HELLO` challenge after it.
public final class TLSContext: @unchecked Sendable {
    /// The COuroTLS context (for a caller that drives COuroTLS itself, as the tests' raw socket does).
    public let pointer: OpaquePointer

    private init(server: Bool, secret: String) {
        // A write to a connection the peer closed must come back as EPIPE, not kill the process: OpenSSL writes with
        // write(2), which has no MSG_NOSIGNAL.
        signal(SIGPIPE, SIG_IGN)
        let key = Self.key(secret: secret)
        guard let context = key.withUnsafeBufferPointer({ ouro_tls_context_new(server ? 1 : 0, $0.baseAddress, $0.count) }) else {
            fatalError("OpenSSL refused a TLS 1.3 context: \(TLSContext.lastError())")
        }
        pointer = context
    }

    /// The pre-shared key: HMAC-SHA256 of a fixed label under the secret, never the secret itself (which also keys
    /// the challenge and the dashboard's session).
    static func key(secret: String) -> [UInt8] {
        Hex.decode(HMACSHA256.hex(key: Array(secret.utf8), message: Array("ouro tls psk v1".utf8)))!
    }

    private static let lock = Lock()
    nonisolated(unsafe) private static var contexts: [String: TLSContext] = [:]

    /// The (cached) context for connecting to nodes, or for a node accepting connections, with `secret`.
    public static func client(secret: String) -> TLSContext { cached(server: false, secret: secret) }
    public static func server(secret: String) -> TLSContext { cached(server: true, secret: secret) }

    private static func cached(server: Bool, secret: String) -> TLSContext {
        let name = (server ? "server " : "client ") + secret
        return lock.withLock {
            if let context = contexts[name] { return context }
            let context = TLSContext(server: server, secret: secret)
            contexts[name] = context
            return context
        }
    }

    static func lastError() -> String {
        var text = [CChar](repeating: 0, count: 256)
        ouro_tls_last_error(&text, text.count)
        return String(cString: text)
    }
}

extension Socket {
    /// The first byte of every TLS connection (a handshake record); a plain-text request starts with a letter.
    public static let tlsHandshakeByte: UInt8 = 0x16

    /// Waits (within the socket's timeouts) for the first byte the peer sends, without taking it; nil: the peer
    /// closed or sent nothing in time.
    public func peekFirstByte() -> UInt8? {
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, Int32(MSG_PEEK))
            if count == 1 { return byte }
            if count < 0 && errno == EINTR { continue }
            return nil
        }
    }
}
