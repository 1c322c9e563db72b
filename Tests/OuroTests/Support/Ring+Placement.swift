import Foundation
import Glibc
import OuroCore
import Testing

/// The checker run after each scenario: the catalog's placement of a file is the one the design prescribes, and
/// every node's chunk directory holds exactly those chunk files, of the right lengths, byte-identical across copies.
extension Ring {
    /// `fair_chunk_len`, written out here independently of `ChunkLayout`.
    static func fairChunkLength(_ index: Int, sizeBytes: UInt64, parts: Int) -> UInt64 {
        sizeBytes / UInt64(parts) + (UInt64(index) < sizeBytes % UInt64(parts) ? 1 : 0)
    }

    static func chunkFileName(_ contentID: String, index: Int, parts: Int) -> String {
        "\(contentID).part-\(String(format: "%03d", index + 1))-of-\(String(format: "%03d", parts))"
    }

    /// Live ring order from `start` (member indices), skipping `dead`.
    func chain(from start: Int, dead: Set<Int> = []) -> [Int] {
        (0..<count).map { (start + $0) % count }.filter { !dead.contains($0) }
    }

    /// Checks where `name` lives: chunk `i` on `chain[i]` and, for each further copy, the positions before it
    /// (`chain[i-1]`, … around the chain). `original` (when given) is compared byte for byte with every chunk file;
    /// otherwise `chunkChecksums` (CRC-32C per chunk, computed while generating the file) are.
    /// Returns the content id.
    @discardableResult
    func expectPlacement(of name: String, start: Int, dead: Set<Int> = [], sizeBytes: UInt64, original: [UInt8]? = nil,
                         chunkChecksums: [UInt32]? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let chain = chain(from: start, dead: dead)
        let parts = chain.count
        let copies = min(settings.copies, parts)
        let stat = try self.stat(start, name: name)
        let content = try #require(stat.inode.content, "\(name) has no content", sourceLocation: sourceLocation)
        let contentID = content.id.hex
        #expect(content.start == address(start), "start of \(name)", sourceLocation: sourceLocation)
        #expect(content.sizeBytes == sizeBytes, "size of \(name)", sourceLocation: sourceLocation)
        #expect(content.copies == copies, "copies of \(name)", sourceLocation: sourceLocation)
        try #require(content.chunks.count == parts, "\(name) has \(content.chunks.count) chunks, want \(parts)",
                     sourceLocation: sourceLocation)

        var expectedFiles: [Int: [String: UInt64]] = [:]  // member → chunk file → length
        for chunk in 0..<parts {
            let holders = (0..<copies).map { chain[(chunk - $0 + parts) % parts] }
            let length = Ring.fairChunkLength(chunk, sizeBytes: sizeBytes, parts: parts)
            #expect(content.chunks[chunk].holders == holders.map(address), "holders of chunk \(chunk) of \(name)",
                    sourceLocation: sourceLocation)
            #expect(content.chunks[chunk].lengthBytes == length, "recorded length of chunk \(chunk) of \(name)",
                    sourceLocation: sourceLocation)
            let offset = (0..<chunk).reduce(UInt64(0)) { $0 + Ring.fairChunkLength($1, sizeBytes: sizeBytes, parts: parts) }
            let fileName = Ring.chunkFileName(contentID, index: chunk, parts: parts)
            for holder in holders {
                expectedFiles[holder, default: [:]][fileName] = length
                let path = "\(members[holder].chunksDirectory)/\(fileName)"
                if let original {
                    let bytes = FileManager.default.contents(atPath: path).map { [UInt8]($0) }
                    #expect(bytes == Array(original[Int(offset)..<Int(offset + length)]),
                            "bytes of \(fileName) on node \(holder)", sourceLocation: sourceLocation)
                }
                let crc = try fileChecksum(path)
                #expect(crc == content.chunks[chunk].crc32c, "CRC-32C of \(fileName) on node \(holder) vs the catalog",
                        sourceLocation: sourceLocation)
                if let chunkChecksums {
                    #expect(crc == chunkChecksums[chunk], "CRC-32C of \(fileName) on node \(holder) vs the data sent",
                            sourceLocation: sourceLocation)
                }
            }
        }
        for member in members {
            let onDisk = chunkFiles(member.index).filter { $0.key.hasPrefix(contentID) }
            #expect(onDisk == expectedFiles[member.index] ?? [:], "chunk files of \(name) on node \(member.index)",
                    sourceLocation: sourceLocation)
        }
        #expect(tempChunkFiles().isEmpty, "temp chunk files left: \(tempChunkFiles())", sourceLocation: sourceLocation)
        return contentID
    }

    /// The ring-wide consistency check, whatever the placement is: every chunk of `name`, as the catalog (asked
    /// through node `via`) records it, has `copies` distinct holders, and each holder's chunk file has the recorded
    /// length and checksum (so all copies are byte-identical).
    func expectRecordedPlacementHolds(of name: String, via node: Int, copies: Int,
                                      sourceLocation: SourceLocation = #_sourceLocation) throws {
        let stat = try self.stat(node, name: name)
        let content = try #require(stat.inode.content, "\(name) has no content", sourceLocation: sourceLocation)
        for (index, chunk) in content.chunks.enumerated() {
            let fileName = Ring.chunkFileName(content.id.hex, index: index, parts: content.parts)
            #expect(Set(chunk.holders).count == chunk.holders.count, "holders of \(fileName) are distinct: \(chunk.holders)",
                    sourceLocation: sourceLocation)
            #expect(chunk.holders.count == copies, "\(fileName) has \(chunk.holders.count) holders: \(chunk.holders)",
                    sourceLocation: sourceLocation)
            #expect(chunk.lengthBytes == Ring.fairChunkLength(index, sizeBytes: content.sizeBytes, parts: content.parts),
                    sourceLocation: sourceLocation)
            for holder in chunk.holders {
                guard let member = members.first(where: { $0.address == holder }) else {
                    Issue.record("\(fileName) is recorded on \(holder), which is not a ring member", sourceLocation: sourceLocation)
                    continue
                }
                let path = "\(member.chunksDirectory)/\(fileName)"
                guard access(path, F_OK) == 0 else {
                    Issue.record("\(fileName) is recorded on node \(member.index) but not stored there", sourceLocation: sourceLocation)
                    continue
                }
                #expect(chunkFiles(member.index)[fileName] == chunk.lengthBytes, "length of \(fileName) on node \(member.index)",
                        sourceLocation: sourceLocation)
                #expect(try fileChecksum(path) == chunk.crc32c, "CRC-32C of \(fileName) on node \(member.index)",
                        sourceLocation: sourceLocation)
            }
        }
    }

    /// CRC-32C of a file, streamed.
    func fileChecksum(_ path: String) throws -> UInt32 { try crc32cOfFile(path) }
}

/// CRC-32C of a file (OuroCore's `CRC32C`), streamed.
func crc32cOfFile(_ path: String) throws -> UInt32 {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw TestFailure("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var crc = CRC32C()
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    try buffer.withUnsafeMutableBytes { raw in
        while true {
            let count = read(fd, raw.baseAddress, raw.count)
            if count == 0 { break }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw TestFailure("reading \(path): \(String(cString: strerror(errno)))") }
            crc.update(UnsafeRawBufferPointer(rebasing: raw[..<count]))
        }
    }
    return crc.value
}
