import Foundation
import Glibc
import Logging
import OuroClient
@testable import OuroFS
import Testing

/// The mount's file-system layer without FUSE, against a real ring: the orderings the kernel cannot be made to
/// produce on demand.
@Suite struct FileSystemLayerTests {
    let context = RequestContext(uid: 0, gid: 0, pid: getpid(), umask: 0o022)

    func write(_ fs: RingFileSystem, _ handle: UInt64, _ text: String, at offset: UInt64) throws {
        let bytes = Array(text.utf8)
        _ = try bytes.withUnsafeBytes { try fs.write(handle: handle, offset: offset, data: $0, context: context) }
    }

    /// Attributes the ring sent before a push of ours landed (an open or `stat` racing another handle's close).
    @Test func attributesOlderThanOurPushLoseToIt() throws {
        let ring = try Ring(nodes: 2, label: "fs-layer")
        defer { ring.shutdown() }
        let cache = ring.directory + "/cache"
        let fs = try RingFileSystem(ring: RingClient(seed: ring.address(0), logger: Logger(label: "test")),
                                    options: RingFileSystemOptions(cacheDirectory: cache, spoolLimitBytes: 1 << 30),
                                    logger: Logger(label: "test"))
        let (created, first) = try fs.create(parent: 1, name: "f", mode: 0o644, flags: O_CREAT | O_TRUNC | O_WRONLY, context: context)
        try write(fs, first, "abc", at: 0)
        try fs.flush(handle: first)
        try fs.release(handle: first)
        let before = try fs.stat(created.inode)
        #expect(before.inode.sizeBytes == 3)

        let second = try fs.open(inode: created.inode, flags: O_WRONLY, context: context)
        try write(fs, second, "defg", at: 3)
        try fs.flush(handle: second)
        // `before` left the ring before that push landed: the push's attributes win, open or closed.
        #expect(fs.attributes(before).sizeBytes == 7)
        try fs.release(handle: second)
        #expect(fs.attributes(before).sizeBytes == 7)

        // An open that got `before` must not start from it: it asks again, and reads the pushed content.
        #expect(try fs.openFile(current: before, fetchedAfterPush: 0) == nil)
        let third = try fs.open(inode: created.inode, flags: O_RDONLY, context: context)
        defer { try? fs.release(handle: third) }
        var buffer = [UInt8](repeating: 0, count: 100)
        let count = try buffer.withUnsafeMutableBytes { try fs.read(handle: third, offset: 0, size: 100, into: $0) }
        #expect(String(decoding: buffer[..<count], as: UTF8.self) == "abcdefg")
    }
}
