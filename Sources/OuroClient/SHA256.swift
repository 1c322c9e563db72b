import COpenSSL
import OuroCore

/// SHA-256 of a stream of bytes, through the system's OpenSSL (hardware SHA extensions where the CPU has them).
public final class SHA256Hasher: @unchecked Sendable {
    private let context: OpaquePointer

    public init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// The digest as 64 lowercase hex digits (what `sha256sum` prints). The hasher is spent afterwards.
    public func finish() -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &length)
        return Hex.encode(digest)
    }

    public static func hex(of bytes: [UInt8]) -> String {
        let hasher = SHA256Hasher()
        hasher.update(bytes)
        return hasher.finish()
    }
}

extension FileContent {
    /// A new content of bytes kept inline in the catalog, with their SHA-256.
    public static func inline(_ bytes: [UInt8], start: NodeAddress) -> FileContent {
        var content = FileContent(id: .random(), inline: bytes, start: start)
        content.sha256 = SHA256Hasher.hex(of: bytes)
        return content
    }
}

/// HMAC-SHA256 (RFC 2104) through the system's OpenSSL.
public enum HMACSHA256 {
    public static func hex(key: [UInt8], message: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                HMAC(EVP_sha256(), keyBytes.baseAddress, Int32(key.count),
                     messageBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), messageBytes.count, &digest, &length)
            }
        }
        return Hex.encode(digest)
    }
}
