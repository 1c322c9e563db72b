/// The shared cluster secret (PROTOCOL.md: "anyone who could reach a port could rewire the ring or kill nodes").
/// A node started with one answers nothing but `NODE PING`, `NODE LOCAL` and the challenge (`NODE HELLO`, `NODE
/// PROVE`: `ChallengeAuth`, the secret never on the wire) on a TCP connection until that connection has proved it
/// knows the secret; its Unix socket (mode 0600: only its own user) needs none. Clients (the other nodes, the mount,
/// `ouro`) prove it first on every TCP connection when they have the secret.
public enum ClusterSecret {
    public static let maxBytes = 256

    /// 1–256 printable ASCII characters, no spaces (it travels as one word of a header line).
    public static func isValid(_ secret: String) -> Bool {
        !secret.isEmpty && secret.utf8.count <= maxBytes && secret.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// The secret in a file's text: surrounding whitespace and line ends do not count.
    public static func parse(_ text: String) -> String? {
        let trimmed = String(decoding: text.utf8.drop { $0 <= 0x20 }.reversed().drop { $0 <= 0x20 }.reversed(), as: UTF8.self)
        return isValid(trimmed) ? trimmed : nil
    }

    /// Compares without stopping at the first difference, so the time taken does not tell how much was right.
    public static func matches(_ offered: String, _ secret: String) -> Bool {
        let a = Array(offered.utf8), b = Array(secret.utf8)
        var difference = UInt8(a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}
