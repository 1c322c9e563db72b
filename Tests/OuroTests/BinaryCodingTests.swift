import Foundation
import OuroCore
import Testing

/// The binary encoding of catalog records and metadata calls: every field survives a round trip, and damaged input
/// is an error, never a crash or a huge allocation.
@Suite struct BinaryCodingTests {
    static let holders = [NodeAddress(host: "127.0.0.1", port: 7000), NodeAddress(host: "::1", port: 7001)]

    static var fullInode: Inode {
        var inode = Inode(id: 0xDEAD_BEEF_0000_0001, version: Version(clock: 1_795_000_000_000_000_001, origin: "10.0.0.7:7002"),
                          kind: .file, permissions: 0o4755, uid: 1000, gid: 100, rdev: 7, timeNs: -5)
        inode.mtimeNs = 1_700_000_000_123_456_789
        inode.atimeNs = 42
        inode.content = FileContent(id: ContentID.random(), sizeBytes: 10, start: holders[0], copies: 2,
                                    chunks: [ChunkPlacement(lengthBytes: 4, crc32c: 0xFFFF_FFFF, holders: holders),
                                             ChunkPlacement(lengthBytes: 3, crc32c: 1, holders: [holders[1]]),
                                             ChunkPlacement(lengthBytes: 3, crc32c: 0, holders: [])])
        inode.xattrs = ["user.a": Data([0, 1, 2]), "user.ü name": Data(), "trusted.x": Data(repeating: 9, count: 300)]
        return inode
    }

    @Test func hexRoundTripsAndRefusesWhatIsNotHex() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa0, 0xff, 0x5c]
        #expect(Hex.encode(bytes) == "000fa0ff5c")
        #expect(Hex.decode("000fa0ff5c") == bytes)
        #expect(Hex.decode("000FA0FF5C") == bytes)
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("0g") == nil)
    }

    /// A content's SHA-256 rides in the last field's tag (3, 4, 5): with no segments, with segments, with slices;
    /// a record written before hashes (tags 0, 1, 2) reads as before, with no hash.
    @Test func contentHashesRoundTripInEveryForm() throws {
        let hash = String(repeating: "0123456789abcdef", count: 4)
        var plain = Self.fullInode.content!
        plain.sha256 = hash
        var piece = FileContent(id: ContentID.random(), inline: [1, 2, 3], start: Self.holders[0])
        piece.sha256 = String(repeating: "f", count: 64)
        var segmented = FileContent(id: ContentID.random(), segments: [plain, Self.fullInode.content!])
        segmented.sha256 = hash
        var layered = FileContent(id: ContentID.random(), sizeBytes: 3, slices: [ContentSlice(fileOffset: 0, lengthBytes: 3, source: piece, sourceOffset: 0)],
                                  start: Self.holders[1])
        layered.sha256 = hash
        for content in [plain, piece, segmented, layered] {
            let bytes = WireBinary.encode(content)
            #expect(try WireBinary.decode(FileContent.self, from: bytes) == content)
            #expect(try JSONDecoder().decode(FileContent.self, from: JSONEncoder().encode(content)) == content)
            var unhashed = content
            unhashed.sha256 = nil
            // The same record without a hash is 32 bytes and a tag shorter, and reads without one.
            let old = WireBinary.encode(unhashed)
            #expect(old.count == bytes.count - 32)
            #expect(try WireBinary.decode(FileContent.self, from: old) == unhashed)
        }
        // A tag past 5 is refused; a hash cut short is refused.
        var damaged = WireBinary.encode(plain)
        damaged[damaged.count - 33] = 6
        #expect(throws: OuroError.self) { try WireBinary.decode(FileContent.self, from: damaged) }
        #expect(throws: OuroError.self) { try WireBinary.decode(FileContent.self, from: Array(WireBinary.encode(plain).dropLast(5))) }
    }

    @Test func catalogRecordsRoundTrip() throws {
        var symlink = Inode(id: 5, version: Version(clock: 9, origin: ""), kind: .symlink, permissions: 0o777, uid: 0, gid: 0, timeNs: 1)
        symlink.symlinkTarget = "../a b/ü"
        symlink.deleted = true
        let small = FileContent(id: ContentID.random(), inline: Array("hello, inline".utf8), start: Self.holders[1])
        var inlined = Self.fullInode
        inlined.content = small
        let records = [
            CatalogRecord(Self.fullInode), CatalogRecord(symlink), CatalogRecord(inlined),
            CatalogRecord(Dirent(parent: 1, name: "a file name with spaces ✓", version: Version(clock: 3, origin: "n"), inode: 77)),
            CatalogRecord(Dirent(parent: 1, name: "gone", version: Version(clock: 4, origin: "n"), inode: nil)),
            CatalogRecord(PlacementRecord(content: ContentID.random(), chunk: 2, holders: Self.holders, version: Version(clock: 5, origin: "m"))),
        ]
        let decoded = try WireBinary.decode([CatalogRecord].self, from: WireBinary.encode(records))
        #expect(decoded == records)
        #expect(try decoded[2].inode?.content?.checkedInlineBytes() == Array("hello, inline".utf8))
    }

    /// Records encoded once keep each record's own bytes: the log, the journal and the peers get exactly what
    /// encoding each record (or the array) would give, and bytes as they arrived decode back to the same.
    @Test func encodedRecordsAreTheirOwnEncoding() throws {
        let records = [
            CatalogRecord(Self.fullInode),
            CatalogRecord(Dirent(parent: 1, name: "kept", version: Version(clock: 3, origin: "n"), inode: 77)),
            CatalogRecord(Dirent(parent: 1, name: "dropped", version: Version(clock: 4, origin: "n"), inode: nil)),
            CatalogRecord(PlacementRecord(content: ContentID.random(), chunk: 2, holders: Self.holders, version: Version(clock: 5, origin: "m"))),
        ]
        let encoded = EncodedRecords(records)
        #expect(encoded.arrayBytes == WireBinary.encode(records))
        #expect(encoded.encoded == records.map { WireBinary.encode($0) })
        let arrived = try EncodedRecords.decode(encoded.arrayBytes)
        #expect(arrived.records == records)
        #expect(arrived.encoded == encoded.encoded)
        let kept = arrived.filter { $0.dirent?.name != "dropped" }
        #expect(kept.records == records.filter { $0.dirent?.name != "dropped" })
        #expect(kept.arrayBytes == WireBinary.encode(kept.records))
        #expect(EncodedRecords([]).arrayBytes == WireBinary.encode([CatalogRecord]()))
        #expect(throws: OuroError.self) { try EncodedRecords.decode(encoded.arrayBytes + [0]) }
        #expect(throws: OuroError.self) { try EncodedRecords.decode(Array(encoded.arrayBytes.dropLast())) }
        #expect(throws: OuroError.self) { try EncodedRecords.decode([0xFF, 0xFF, 0xFF, 0x7F]) }
    }

    @Test func metadataCallsRoundTrip() throws {
        var request = FSRequest()
        request.parent = 1
        request.name = "x"
        request.kind = .blockDevice
        request.mtimeNs = -1
        request.xattrValue = Data([1, 2, 3])
        #expect(try WireBinary.decode(FSRequest.self, from: WireBinary.encode(request)) == request)
        #expect(try WireBinary.decode(FSRequest.self, from: WireBinary.encode(FSRequest())) == FSRequest())
        // Every field set: one the binary coding forgets fails here (`cuts` was once left out).
        let piece = FileContent(id: ContentID.random(), inline: [9, 8, 7], start: Self.holders[0])
        var full = FSRequest()
        full.parent = 1; full.name = "n"; full.newParent = 2; full.newName = "m"; full.inode = 3; full.path = "a/b"
        full.kind = .file; full.mode = 0o644; full.uid = 4; full.gid = 5; full.rdev = 6; full.target = "t"
        full.sizeBytes = 7; full.mtimeNs = 8; full.atimeNs = 9; full.flags = 10; full.xattrName = "user.x"
        full.xattrValue = Data([1]); full.content = piece; full.data = Data([2, 3]); full.truncatedTo = 11
        full.offset = 12; full.slices = [ContentSlice(fileOffset: 1, lengthBytes: 2, source: piece, sourceOffset: 1)]; full.cuts = 13
        full.after = "k"; full.limit = 14; full.namesOnly = true
        let unset = Mirror(reflecting: full).children.filter { child in
            if case Optional<Any>.none = child.value as Any? { return true }
            return "\(child.value)" == "nil"
        }.map { $0.label ?? "?" }
        #expect(unset.isEmpty, "fields left unset in the test: \(unset)")
        #expect(try WireBinary.decode(FSRequest.self, from: WireBinary.encode(full)) == full)

        var reply = FSReply()
        reply.stat = InodeStat(inode: Self.fullInode, linkCount: 3)
        reply.entries = [.init(name: "a", stat: InodeStat(inode: Self.fullInode, linkCount: 1))]
        reply.xattrNames = ["user.a", "user.b"]
        reply.usage = RingUsage(totalBytes: 1 << 40, freeBytes: 2, availableBytes: 1, files: 9)
        reply.more = true
        reply.names = [.init(name: "d ü", inode: 1 << 41, kind: .directory), .init(name: "s", inode: 2, kind: .symlink)]
        #expect(try WireBinary.decode(FSReply.self, from: WireBinary.encode(reply)) == reply)
        // Garbage collection's rows and answers.
        let rows = [CatalogRowVersion(.inode(7), Version(clock: 1, origin: "a")),
                    CatalogRowVersion(.dirent(parent: 1, name: "é x"), Version(clock: 2, origin: "b")),
                    CatalogRowVersion(.placement(piece.id, chunk: 3), Version(clock: 3, origin: "c"))]
        #expect(try WireBinary.decode([CatalogRowVersion].self, from: WireBinary.encode(rows)) == rows)
        let answers: [RowAnswer] = [.absent, .older, .sameOrNewer, .inUse]
        #expect(try WireBinary.decode([RowAnswer].self, from: WireBinary.encode(answers)) == answers)
        #expect(throws: OuroError.self) { try WireBinary.decode([RowAnswer].self, from: [1, 0, 0, 0, 9]) }  // one answer, unknown
    }

    /// A plain listing reads an inode's kind from the start of its encoded record: right for every kind and
    /// origin length, nil for other records and for bytes cut short before the kind.
    @Test func inodeKindReadInPlace() throws {
        for kind in [InodeKind.file, .directory, .symlink, .fifo, .socket, .characterDevice, .blockDevice] {
            for origin in ["", "n", "10.0.0.7:7002", String(repeating: "h", count: 253) + ":65535"] {
                var inode = Self.fullInode
                inode.kind = kind
                inode.version = Version(clock: 77, origin: origin)
                let bytes = WireBinary.encode(CatalogRecord(inode))
                #expect(bytes.withUnsafeBytes { CatalogRecord.inodeKind(inEncoded: $0) } == kind, "\(kind), origin of \(origin.utf8.count) bytes")
                let cut = Array(bytes.prefix(1 + 8 + 8 + 4 + origin.utf8.count))
                #expect(cut.withUnsafeBytes { CatalogRecord.inodeKind(inEncoded: $0) } == nil)
            }
        }
        let dirent = WireBinary.encode(CatalogRecord(Dirent(parent: 1, name: "x", version: Version(clock: 3, origin: "n"), inode: 77)))
        #expect(dirent.withUnsafeBytes { CatalogRecord.inodeKind(inEncoded: $0) } == nil)
        #expect([UInt8]().withUnsafeBytes { CatalogRecord.inodeKind(inEncoded: $0) } == nil)
    }

    @Test func damagedInputIsAnError() throws {
        let bytes = WireBinary.encode([CatalogRecord(Self.fullInode)])
        // Every truncation fails cleanly.
        for length in 0..<bytes.count {
            #expect(throws: OuroError.self) { try WireBinary.decode([CatalogRecord].self, from: Array(bytes[..<length])) }
        }
        #expect(throws: OuroError.self) { try WireBinary.decode([CatalogRecord].self, from: bytes + [0]) }
        // A count of four billion elements in a short payload is refused, not allocated.
        #expect(throws: OuroError.self) { try WireBinary.decode([CatalogRecord].self, from: [0xFF, 0xFF, 0xFF, 0xFF, 1]) }
        // Inline bytes that do not match their checksum are reported as corrupt.
        var content = FileContent(id: ContentID.random(), inline: [1, 2, 3], start: Self.holders[0])
        content.inlineData = Data([1, 2, 4])
        #expect(throws: OuroError.self) { try content.checkedInlineBytes() }
    }
}
