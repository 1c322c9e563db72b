import OuroCore

/// A `ByteSource` that plays back fixed bytes, at most `piece` bytes per read, and counts what it handed out.
/// `piece: 1` drips one byte at a time; `piece: .max` gives all it can at once.
final class ScriptedSource: ByteSource {
    private let bytes: [UInt8]
    private let piece: Int
    private(set) var consumed = 0
    private(set) var reads = 0

    init(_ bytes: [UInt8], piece: Int) {
        self.bytes = bytes
        self.piece = piece
    }

    convenience init(_ text: String, piece: Int) { self.init(Array(text.utf8), piece: piece) }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        reads += 1
        let count = min(buffer.count, piece, bytes.count - consumed)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { raw in buffer.baseAddress!.copyMemory(from: raw.baseAddress! + consumed, byteCount: count) }
        consumed += count
        return count
    }
}
