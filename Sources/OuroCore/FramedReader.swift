/// Anything bytes can be read from (a socket, or a scripted source in tests). Returns 0 at end of stream.
public protocol ByteSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

/// Reads the framing of the protocol from a byte source: bounded header lines, then exact-length payloads.
/// Payload bytes are handed out in pieces into the caller's buffer, so nothing is ever held whole.
public final class FramedReader {
    public let source: ByteSource
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0

    public init(source: ByteSource, bufferBytes: Int = 64 * 1024) {
        precondition(bufferBytes >= Limits.headerLineBytes)
        self.source = source
        buffer = [UInt8](repeating: 0, count: bufferBytes)
    }

    /// Bytes already read from the source but not yet consumed.
    public var bufferedBytes: Int { end - start }

    /// Reads one line (LF or CRLF terminated) of at most `maxBytes`. Returns nil at a clean end of stream.
    /// A longer line fails with TOO_LARGE without reading the rest of it.
    public func readLine(maxBytes: Int = Limits.headerLineBytes) throws -> String? {
        var scanned = 0
        while true {
            if let newline = buffer[(start + scanned)..<end].firstIndex(of: 0x0A) {
                var lineEnd = newline
                if lineEnd > start, buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                guard newline - start + 1 <= maxBytes else { throw OuroError(.tooLarge, "line longer than \(maxBytes) bytes") }
                let bytes = buffer[start..<lineEnd]
                start = newline + 1
                guard let line = String(validating: bytes, as: UTF8.self) else { throw OuroError.badRequest("line is not UTF-8") }
                return line
            }
            scanned = end - start
            guard scanned < maxBytes else { throw OuroError(.tooLarge, "line longer than \(maxBytes) bytes") }
            if end == buffer.count {
                if start > 0 {
                    // Slide the partial line to the front to make room.
                    buffer.withUnsafeMutableBytes { raw in
                        _ = memmoveBytes(raw, from: start, count: end - start)
                    }
                    end -= start
                    start = 0
                } else {
                    // A line longer than the buffer but within the caller's limit: grow, up to that limit.
                    buffer += [UInt8](repeating: 0, count: min(buffer.count, maxBytes - buffer.count + 1))
                }
            }
            let count = try buffer.withUnsafeMutableBytes { raw in
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
            }
            if count == 0 {
                if end == start { return nil }
                throw OuroError.badRequest("connection closed in the middle of a line")
            }
            end += count
        }
    }

    /// Reads up to `into.count` bytes of payload (from the buffer first). Returns 0 only at end of stream.
    public func read(into target: UnsafeMutableRawBufferPointer) throws -> Int {
        if end > start {
            let count = min(target.count, end - start)
            buffer.withUnsafeBytes { raw in
                target.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: count)
            }
            start += count
            if start == end { start = 0; end = 0 }
            return count
        }
        return try source.read(into: target)
    }

    /// Fills `target` completely, or fails if the stream ends first.
    public func readExactly(into target: UnsafeMutableRawBufferPointer) throws {
        var filled = 0
        while filled < target.count {
            let count = try read(into: UnsafeMutableRawBufferPointer(rebasing: target[filled...]))
            guard count > 0 else { throw OuroError.unavailable("connection closed \(target.count - filled) bytes early") }
            filled += count
        }
    }

    /// Reads exactly `count` bytes into a new array (only for small, bounded payloads such as JSON).
    public func readBytes(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { raw in try readExactly(into: raw) }
        return bytes
    }

    /// Reads and drops `count` bytes (the payload of a refused request), through a small buffer.
    public func discard(_ count: UInt64) throws {
        var remaining = count
        var scratch = [UInt8](repeating: 0, count: 64 * 1024)
        try scratch.withUnsafeMutableBytes { raw in
            while remaining > 0 {
                let want = Int(min(UInt64(raw.count), remaining))
                let got = try read(into: UnsafeMutableRawBufferPointer(rebasing: raw[..<want]))
                guard got > 0 else { throw OuroError.unavailable("connection closed while discarding a payload") }
                remaining -= UInt64(got)
            }
        }
    }
}

private func memmoveBytes(_ raw: UnsafeMutableRawBufferPointer, from offset: Int, count: Int) -> Int {
    if count > 0, offset > 0 { (raw.baseAddress!).copyMemory(from: raw.baseAddress! + offset, byteCount: count) }
    return count
}
