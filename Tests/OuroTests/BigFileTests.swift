import Foundation
import Glibc
import OuroCore
import Testing

/// A 256 MiB file through rings of 1, 2, 3 and 5 nodes, generated and checked while streaming: nothing holds it whole.
@Suite struct BigFileTests {
    /// CRC-32C of each chunk of a file, fed the file's bytes in order in pieces of any size.
    struct ChunkChecksums {
        let lengths: [UInt64]
        private(set) var checksums: [CRC32C]
        private var chunk = 0
        private var filledInChunk: UInt64 = 0

        init(sizeBytes: UInt64, parts: Int) {
            lengths = (0..<parts).map { Ring.fairChunkLength($0, sizeBytes: sizeBytes, parts: parts) }
            checksums = Array(repeating: CRC32C(), count: parts)
        }

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            var offset = 0
            while offset < bytes.count {
                while filledInChunk == lengths[chunk] { chunk += 1; filledInChunk = 0 }
                let count = Int(min(UInt64(bytes.count - offset), lengths[chunk] - filledInChunk))
                checksums[chunk].update(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)]))
                filledInChunk += UInt64(count)
                offset += count
            }
        }

        var values: [UInt32] { checksums.map(\.value) }
    }

    @Test(arguments: [1, 2, 3, 5])
    func quarterGibibyte(nodes: Int) throws {
        let sizeBytes: UInt64 = 256 << 20
        let seed = TestSeed.derived("quarterGibibyte-\(nodes)")
        let ring = try Ring(nodes: nodes, label: "big-\(nodes)")
        defer { ring.shutdown() }
        // Pushed to the last node, pulled from the first: with more than one node, not the start node.
        let start = nodes - 1
        let puller = 0

        var generator = PseudoRandomBytes(seed: seed)
        var chunks = ChunkChecksums(sizeBytes: sizeBytes, parts: nodes)
        var whole = CRC32C()
        let pushStarted = Deadline.now
        let reply = try ring.push(start, name: "big/quarter.bin", sizeBytes: sizeBytes) { buffer in
            generator.fill(buffer)
            chunks.update(UnsafeRawBufferPointer(buffer))
            whole.update(UnsafeRawBufferPointer(buffer))
        }
        let pushSeconds = Deadline.now - pushStarted
        #expect(reply == ["FILE \(sizeBytes) bytes split into \(nodes) chunks and distributed", "OK"])
        try ring.expectPlacement(of: "big/quarter.bin", start: start, sizeBytes: sizeBytes, chunkChecksums: chunks.values)

        // Compare every pulled byte with the regenerated stream.
        var expected = PseudoRandomBytes(seed: seed)
        var scratch = [UInt8](repeating: 0, count: 1 << 20)
        var received: UInt64 = 0
        var pulledChecksum = CRC32C()
        var firstMismatch: UInt64?
        let pullStarted = Deadline.now
        try ring.pull(puller, name: "big/quarter.bin") { bytes in
            pulledChecksum.update(bytes)
            scratch.withUnsafeMutableBytes { raw in
                let target = UnsafeMutableRawBufferPointer(rebasing: raw[..<bytes.count])
                expected.fill(target)
                if firstMismatch == nil, memcmp(target.baseAddress!, bytes.baseAddress!, bytes.count) != 0 {
                    firstMismatch = received
                }
            }
            received += UInt64(bytes.count)
        }
        let pullSeconds = Deadline.now - pullStarted
        print("OuroTests: 256 MiB on \(nodes) nodes: push \(String(format: "%.1f", pushSeconds)) s, pull \(String(format: "%.1f", pullSeconds)) s")
        #expect(received == sizeBytes)
        #expect(firstMismatch == nil, "pulled bytes differ from the pushed ones in the MiB starting at \(firstMismatch ?? 0)")
        #expect(pulledChecksum == whole)
        // Every node streamed: none held the file, or one of its chunks (51 to 256 MiB), in memory.
        for node in 0..<nodes {
            let peak = try #require(Self.peakResidentBytes(of: ring.members[node].process!.pid))
            #expect(peak < 80 << 20, "node \(node) peaked at \(peak >> 20) MiB resident")
        }
    }

    /// `VmHWM` of a process (peak resident set), in bytes.
    static func peakResidentBytes(of pid: pid_t) -> UInt64? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let number = line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
            return number.map { $0 * 1024 }
        }
        return nil
    }
}
