import Foundation
import Glibc
import OuroCore
import Testing

/// `ouro verify`: every copy of every chunk checked by its holder against the catalog; corrupt and missing copies
/// repaired from good ones; a clear report, and a non-zero exit when something could not be verified or repaired.
@Suite struct VerifyTests {
    static func verify(_ ring: Ring, _ arguments: String = "", node: Int = 0) throws -> (status: ChildProcess.Termination, output: String) {
        let (status, output) = try ChildProcess.shell("\(TestEnvironment.ouroExecutable) verify --node \(ring.address(node)) \(arguments) 2>&1",
                                                      in: ring.directory, timeoutSeconds: 120)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// The path of chunk `index` of `name`'s content on node `node`, and that node's index in the ring.
    static func copyPath(_ ring: Ring, _ name: String, chunk index: Int, holder: Int) throws -> String {
        let content = try #require(try ring.stat(0, name: name).inode.content)
        let holderAddress = ring.address(holder)
        try #require(content.chunks[index].holders.contains(holderAddress), "chunk \(index) of \(name) is not on node \(holder)")
        return ring.members[holder].chunksDirectory + "/" + Ring.chunkFileName(content.id.hex, index: index, parts: content.parts)
    }

    /// A node that holds a copy of chunk `index` of `name`.
    static func holders(_ ring: Ring, _ name: String, chunk index: Int) throws -> [Int] {
        let content = try #require(try ring.stat(0, name: name).inode.content)
        return content.chunks[index].holders.compactMap { holder in (0..<3).first { ring.address($0) == holder } }
    }

    static func flipByte(_ path: String, at offset: off_t) {
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, offset) == 1)
        byte ^= 0x5A
        #expect(pwrite(fd, &byte, 1, offset) == 1)
    }

    @Test func findsAndRepairsCorruptAndMissingCopies() throws {
        let ring = try Ring(nodes: 3, label: "verify")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("verify"))
        let files = [("docs/a.bin", generator.bytes(3_000_001)), ("docs/b.bin", generator.bytes(900_000)), ("c.bin", generator.bytes(5_000))]
        for (name, bytes) in files { #expect(try ring.push(0, name: name, bytes: bytes).last == "OK") }
        // FILE PUSH records each file's SHA-256 (the start node saw every byte in order): what sha256sum says.
        for (name, bytes) in files {
            let path = ring.directory + "/expected"
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let expected = String(decoding: try ChildProcess.shell("sha256sum < '\(path)' | cut -d' ' -f1", in: ring.directory).output,
                                  as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try ring.stat(1, name: name).inode.content?.sha256 == expected, "\(name)")
        }
        let clean = try Self.verify(ring)
        #expect(clean.status == .exited(0) && clean.output.contains("OK: every copy is good"), "\(clean.output)")
        #expect(clean.output.contains("verified 3 files: 18 chunk copies"), "\(clean.output)")
        #expect(clean.output.contains("3 read back whole and match their SHA-256"), "\(clean.output)")

        // One copy of a.bin's second chunk has a byte flipped (same size, so only reading it tells); one copy of
        // b.bin's first chunk is gone.
        let flippedHolder = try Self.holders(ring, "docs/a.bin", chunk: 1)[0]
        let flipped = try Self.copyPath(ring, "docs/a.bin", chunk: 1, holder: flippedHolder)
        let original = try #require(FileManager.default.contents(atPath: flipped))
        Self.flipByte(flipped, at: 4096)
        let removedHolder = try Self.holders(ring, "docs/b.bin", chunk: 0)[1]
        let removed = try Self.copyPath(ring, "docs/b.bin", chunk: 0, holder: removedHolder)
        #expect(unlink(removed) == 0)

        let repaired = try Self.verify(ring)
        #expect(repaired.status == .exited(0), "\(repaired.output)")
        #expect(repaired.output.contains("docs/a.bin: chunk 2/3") && repaired.output.contains("on \(ring.address(flippedHolder)): corrupt, repairing"),
                "\(repaired.output)")
        #expect(repaired.output.contains("repaired (was corrupt)"), "\(repaired.output)")
        // The holder's own repair loop may have restored the removed copy before verify asked (it scans now and
        // then); if not, verify found it missing and waited for it.
        if repaired.output.contains("missing, repairing") {
            #expect(repaired.output.contains("docs/b.bin: chunk 1/3") && repaired.output.contains("repaired (was missing)"), "\(repaired.output)")
            #expect(repaired.output.contains("16 good, 1 corrupt, 1 missing, 2 repaired"), "\(repaired.output)")
        } else {
            #expect(repaired.output.contains("17 good, 1 corrupt, 1 repaired"), "\(repaired.output)")
        }
        // The copies on disk are good again, byte for byte; every file reads back from every node.
        #expect(FileManager.default.contents(atPath: flipped) == original)
        #expect(FileManager.default.fileExists(atPath: removed))
        for (name, bytes) in files {
            for node in 0..<3 { #expect(try ring.pull(node, name: name) == bytes, "\(name) from node \(node)") }
        }
        let again = try Self.verify(ring)
        #expect(again.status == .exited(0) && again.output.contains("18 good"), "\(again.output)")

        // Only the files under a path; a path that names nothing fails.
        let some = try Self.verify(ring, "docs")
        #expect(some.status == .exited(0) && some.output.contains("verified 2 files: 12 chunk copies"), "\(some.output)")
        let missing = try Self.verify(ring, "docs/nope.bin")
        #expect(missing.status != .exited(0) && missing.output.contains("not found: docs/nope.bin"), "\(missing.output)")
    }

    @Test func failsWhenNoGoodCopyIsLeftOrAHolderIsDown() throws {
        let ring = try Ring(nodes: 3, label: "verify-fail")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("verify-fail"))
        #expect(try ring.push(0, name: "lost.bin", bytes: generator.bytes(600_000)).last == "OK")
        #expect(try ring.push(0, name: "fine.bin", bytes: generator.bytes(600_000)).last == "OK")
        // Both copies of lost.bin's third chunk corrupted: nothing to repair from.
        for holder in try Self.holders(ring, "lost.bin", chunk: 2) {
            Self.flipByte(try Self.copyPath(ring, "lost.bin", chunk: 2, holder: holder), at: 10)
        }
        let lost = try Self.verify(ring, "lost.bin")
        #expect(lost.status == .exited(1), "\(lost.output)")
        #expect(lost.output.contains("no good copy of this chunk is left: cannot repair"), "\(lost.output)")
        #expect(lost.output.contains("NOT VERIFIED"), "\(lost.output)")

        // A holder down: its copies cannot be checked, so fine.bin is not proven either.
        ring.kill(2)
        let down = try Self.verify(ring, "fine.bin")
        #expect(down.status == .exited(1), "\(down.output)")
        #expect(down.output.contains("on \(ring.address(2)): not checked, holder unreachable"), "\(down.output)")
    }
}
