import Glibc
import OuroCore

/// The cluster secret this process sends first on every TCP connection to a node (`ClusterSecret`): from a
/// `--secret-file` option, else from the file named by `OURO_SECRET_FILE`, else none.
public enum ClientSecret {
    private static let lock = Lock()
    nonisolated(unsafe) private static var value: String?? = nil

    public static var current: String? {
        lock.withLock {
            if let value { return value }
            let loaded = getenv("OURO_SECRET_FILE").flatMap { try? load(file: String(cString: $0)) }
            value = .some(loaded)
            return loaded
        }
    }

    public static func use(_ secret: String?) {
        lock.withLock { value = .some(secret) }
    }

    nonisolated(unsafe) private static var encryption: Bool? = nil

    /// Whether TCP connections with a secret are encrypted (TLS keyed by it): yes, unless `--insecure` said no
    /// (`use(encryption:)`) or `OURO_INSECURE=1` is in the environment; then the secret is proved by the challenge
    /// alone and bytes cross in the clear (a trusted network).
    public static var encrypts: Bool {
        lock.withLock {
            if let encryption { return encryption }
            let on = getenv("OURO_INSECURE").map { String(cString: $0) != "1" } ?? true
            encryption = on
            return on
        }
    }

    public static func use(encryption on: Bool) {
        lock.withLock { encryption = on }
    }

    /// Reads a secret file: 1–256 printable characters without spaces (surrounding whitespace ignored).
    public static func load(file path: String) throws -> String {
        guard let fd = Optional(open(path, O_RDONLY | O_CLOEXEC)), fd >= 0 else {
            throw OuroError.badRequest("cannot read the secret file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: ClusterSecret.maxBytes + 64)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0, let secret = ClusterSecret.parse(String(decoding: bytes[..<count], as: UTF8.self)) else {
            throw OuroError.badRequest("the secret file \(path) must hold 1 to \(ClusterSecret.maxBytes) printable characters without spaces")
        }
        return secret
    }
}
