import Glibc
import OuroCore

/// Proving knowledge of the cluster secret without sending it (`NODE HELLO` / `CHALLENGE` / `NODE PROVE`): each
/// side sends a fresh random nonce, and each proves the secret with an HMAC-SHA256 over both nonces and its own role,
/// so a recorded session proves nothing on another connection (the node's nonce is new each time) and one side's
/// proof cannot be reflected as the other's (the roles differ). The node proves itself first: a client never sends
/// its proof to something that does not know the secret.
public enum ChallengeAuth {
    public enum Role: String, Sendable { case node, client }

    /// 32 random bytes from the kernel (getrandom), as 64 hex digits.
    public static func nonce() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        return Hex.encode(bytes)
    }

    public static func proof(secret: String, role: Role, clientNonce: String, serverNonce: String) -> String {
        HMACSHA256.hex(key: Array(secret.utf8), message: Array("ouro auth v1 \(role.rawValue) \(clientNonce) \(serverNonce)".utf8))
    }

    public static func matches(_ offered: String, _ expected: String) -> Bool { ClusterSecret.matches(offered, expected) }
}
