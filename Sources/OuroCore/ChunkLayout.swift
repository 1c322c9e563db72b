/// How a file of `sizeBytes` is cut into `parts` chunks: the first `size % parts` chunks are one byte longer.
public struct ChunkLayout: Sendable, Equatable {
    public let sizeBytes: UInt64
    public let parts: Int

    public init(sizeBytes: UInt64, parts: Int) {
        precondition(parts >= 1, "a file has at least one chunk")
        self.sizeBytes = sizeBytes
        self.parts = parts
    }

    /// `fair_chunk_len(i) = size / parts + (i < size % parts ? 1 : 0)`.
    public func lengthBytes(ofChunk index: Int) -> UInt64 {
        precondition(index >= 0 && index < parts)
        let base = sizeBytes / UInt64(parts)
        return base + (UInt64(index) < sizeBytes % UInt64(parts) ? 1 : 0)
    }

    /// Byte offset of chunk `index` within the file.
    public func offset(ofChunk index: Int) -> UInt64 {
        precondition(index >= 0 && index <= parts)
        let i = UInt64(index)
        let base = sizeBytes / UInt64(parts)
        return base * i + min(i, sizeBytes % UInt64(parts))
    }

    /// One piece of a byte range that lies inside one chunk.
    public struct Slice: Sendable, Equatable {
        public var chunk: Int
        public var offsetInChunk: UInt64
        public var lengthBytes: UInt64
        public var offsetInFile: UInt64
    }

    /// The chunk slices covering `[offset, offset + length)`, clipped to the file's end.
    public func slices(offset: UInt64, length: UInt64) -> [Slice] {
        guard offset < sizeBytes, length > 0 else { return [] }
        let end = length > sizeBytes - offset ? sizeBytes : offset + length
        var result: [Slice] = []
        var chunk = chunkIndex(containing: offset)
        var position = offset
        while position < end {
            let chunkStart = self.offset(ofChunk: chunk)
            let chunkEnd = chunkStart + lengthBytes(ofChunk: chunk)
            let sliceEnd = min(end, chunkEnd)
            if sliceEnd > position {
                result.append(Slice(chunk: chunk, offsetInChunk: position - chunkStart,
                                    lengthBytes: sliceEnd - position, offsetInFile: position))
            }
            position = sliceEnd
            chunk += 1
        }
        return result
    }

    /// The chunk holding byte `offset` (offset < size).
    public func chunkIndex(containing offset: UInt64) -> Int {
        let base = sizeBytes / UInt64(parts)
        let longer = sizeBytes % UInt64(parts)  // chunks 0..<longer have base+1 bytes
        let longZone = longer * (base + 1)
        if offset < longZone { return Int(offset / (base + 1)) }
        return Int(longer + (offset - longZone) / base)
    }
}
