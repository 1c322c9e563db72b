import Foundation

/// A compact binary encoding for the catalog's records and the mount's metadata calls. JSON stays the format people
/// type and read (`nc`, `FS <OP>` by hand); between our own processes every catalog change is encoded and decoded
/// several times (log, peers, replies), and Foundation's JSON coders were most of a metadata call's CPU time.
/// Little-endian integers; strings and byte strings carry a 32-bit length; optionals a presence byte.
public struct BinaryWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }

    public mutating func string(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            u32(UInt32(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    public mutating func data(_ value: Data) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func optional<T>(_ value: T?, _ write: (inout BinaryWriter, T) -> Void) {
        guard let value else { return u8(0) }
        u8(1)
        write(&self, value)
    }

    public mutating func array<T>(_ values: [T], _ write: (inout BinaryWriter, T) -> Void) {
        u32(UInt32(values.count))
        for value in values { write(&self, value) }
    }

    public mutating func value<T: BinaryCodable>(_ value: T) { value.encode(to: &self) }

    /// Bytes another writer produced (a value encoded once, written in many places).
    public mutating func raw(_ encoded: [UInt8]) { bytes += encoded }
}

/// Reads what `BinaryWriter` wrote; anything short or out of range is a BAD_REQUEST, never a crash.
public struct BinaryReader {
    private let bytes: [UInt8]
    private var offset = 0

    /// Contents being decoded inside one another (a layered content's sources): bounded, so that a crafted payload
    /// cannot exhaust the stack.
    public var contentDepth = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var isAtEnd: Bool { offset == bytes.count }

    public var remainingCount: Int { bytes.count - offset }

    /// The bytes read since `start` (a position taken before), as they are.
    public func bytesRead(since start: Int) -> [UInt8] { Array(bytes[start..<offset]) }
    /// How many bytes have been read.
    public var position: Int { offset }

    mutating func take(_ count: Int) throws(OuroError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - offset else { throw .badRequest("malformed binary payload") }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(OuroError) -> T {
        let slice = try take(MemoryLayout<T>.size)
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: slice) }
        return T(littleEndian: value)
    }

    public mutating func u8() throws(OuroError) -> UInt8 { try take(1).first! }
    public mutating func bool() throws(OuroError) -> Bool { try u8() != 0 }
    public mutating func u16() throws(OuroError) -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws(OuroError) -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws(OuroError) -> UInt64 { try integer(UInt64.self) }
    public mutating func i64() throws(OuroError) -> Int64 { Int64(bitPattern: try u64()) }

    public mutating func string() throws(OuroError) -> String {
        let count = Int(try u32())
        return String(decoding: try take(count), as: UTF8.self)
    }

    public mutating func data() throws(OuroError) -> Data {
        let count = Int(try u32())
        return Data(try take(count))
    }

    public mutating func optional<T>(_ read: (inout BinaryReader) throws(OuroError) -> T) throws(OuroError) -> T? {
        switch try u8() {
        case 0: return nil
        case 1: return try read(&self)
        default: throw .badRequest("malformed binary payload")
        }
    }

    public mutating func array<T>(_ read: (inout BinaryReader) throws(OuroError) -> T) throws(OuroError) -> [T] {
        let count = Int(try u32())
        // Each element takes at least one byte: a count beyond what is left is malformed, not an allocation.
        guard count <= bytes.count - offset else { throw .badRequest("malformed binary payload") }
        var values: [T] = []
        values.reserveCapacity(min(count, 1024))  // elements may be large: grow as they actually arrive
        for _ in 0..<count { values.append(try read(&self)) }
        return values
    }

    public mutating func value<T: BinaryCodable>(_: T.Type = T.self) throws(OuroError) -> T { try T(from: &self) }
}

public protocol BinaryCodable {
    func encode(to writer: inout BinaryWriter)
    init(from reader: inout BinaryReader) throws(OuroError)
}

public enum WireBinary {
    public static func encode<T: BinaryCodable>(_ value: T) -> [UInt8] {
        var writer = BinaryWriter()
        value.encode(to: &writer)
        return writer.bytes
    }

    public static func decode<T: BinaryCodable>(_ type: T.Type, from bytes: [UInt8]) throws(OuroError) -> T {
        var reader = BinaryReader(bytes)
        let value = try T(from: &reader)
        guard reader.isAtEnd else { throw .badRequest("malformed binary payload: trailing bytes") }
        return value
    }
}

extension Array: BinaryCodable where Element: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) { writer.array(self) { $0.value($1) } }
    public init(from reader: inout BinaryReader) throws(OuroError) { self = try reader.array { reader throws(OuroError) in try reader.value() } }
}

// MARK: Catalog types

extension Version: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(clock)
        writer.string(origin)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(clock: try reader.u64(), origin: try reader.string())
    }
}

extension NodeAddress: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.string(host)
        writer.u16(port)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(host: try reader.string(), port: try reader.u16())
    }
}

extension ContentID: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) { writer.string(hex) }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        guard let id = ContentID(try reader.string()) else { throw .badRequest("malformed binary payload: content id") }
        self = id
    }
}

extension InodeKind {
    private static let all: [InodeKind] = [.file, .directory, .symlink, .fifo, .socket, .characterDevice, .blockDevice]

    var code: UInt8 { UInt8(Self.all.firstIndex(of: self)!) }

    init(code: UInt8) throws(OuroError) {
        guard Int(code) < Self.all.count else { throw .badRequest("malformed binary payload: kind") }
        self = Self.all[Int(code)]
    }
}

extension ChunkPlacement: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(lengthBytes)
        writer.u32(crc32c)
        writer.array(holders) { $0.value($1) }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(lengthBytes: try reader.u64(), crc32c: try reader.u32(),
                  holders: try reader.array { reader throws(OuroError) in try reader.value() })
    }
}

extension FileContent: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.value(id)
        writer.u64(sizeBytes)
        writer.value(start)
        writer.u32(UInt32(copies))
        writer.array(chunks) { $0.value($1) }
        writer.optional(inlineData) { $0.data($1) }
        writer.optional(inlineCRC32C) { $0.u32($1) }
        // The last field is a tag: 0 nothing more, 1 segments, 2 slices (logs written before slices existed still
        // read); 3, 4, 5 the same followed by the SHA-256 (32 bytes; logs written before hashes still read).
        let hash = sha256.flatMap(Hex.decode).flatMap { $0.count == 32 ? $0 : nil }
        let more: UInt8 = hash == nil ? 0 : 3
        if let slices {
            writer.u8(2 + more)
            writer.value(slices)
        } else if let segments {
            writer.u8(1 + more)
            writer.value(segments)
        } else {
            writer.u8(more)
        }
        if let hash { writer.raw(hash) }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        guard reader.contentDepth < 2 else { throw .badRequest("malformed binary payload: nested content") }
        reader.contentDepth += 1
        defer { reader.contentDepth -= 1 }
        self.init(id: try reader.value(), sizeBytes: try reader.u64(), start: try reader.value(), copies: Int(try reader.u32()),
                  chunks: try reader.array { reader throws(OuroError) in try reader.value() })
        inlineData = try reader.optional { reader throws(OuroError) in try reader.data() }
        inlineCRC32C = try reader.optional { reader throws(OuroError) in try reader.u32() }
        let tag = try reader.u8()
        guard tag <= 5 else { throw .badRequest("malformed binary payload") }
        switch tag % 3 {
        case 1: segments = try reader.value([FileContent].self)
        case 2: slices = try reader.value([ContentSlice].self)
        default: break
        }
        if tag >= 3 {
            let digest = try reader.take(32)
            sha256 = Hex.encode(digest)
        }
        // Segments and slices are one level deep; a nesting would only be a way to exhaust the decoder's stack.
        guard segments?.allSatisfy({ $0.segments == nil && $0.slices == nil }) ?? true,
              slices?.allSatisfy({ $0.source.segments == nil && $0.source.slices == nil }) ?? true else {
            throw .badRequest("malformed binary payload: nested content")
        }
    }
}

extension ContentSlice: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(fileOffset)
        writer.u64(lengthBytes)
        writer.u64(sourceOffset)
        writer.value(source)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        let (fileOffset, length, sourceOffset) = (try reader.u64(), try reader.u64(), try reader.u64())
        self.init(fileOffset: fileOffset, lengthBytes: length, source: try reader.value(), sourceOffset: sourceOffset)
    }
}

extension Inode: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(id)
        writer.value(version)
        writer.u8(kind.code)
        writer.u32(permissions)
        writer.u32(uid)
        writer.u32(gid)
        writer.u32(rdev)
        writer.i64(mtimeNs)
        writer.i64(ctimeNs)
        writer.i64(atimeNs)
        writer.optional(content) { $0.value($1) }
        writer.optional(symlinkTarget) { $0.string($1) }
        writer.array(xattrs.sorted { $0.key < $1.key }) { writer, entry in
            writer.string(entry.key)
            writer.data(entry.value)
        }
        writer.bool(deleted)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(id: try reader.u64(), version: try reader.value(), kind: try InodeKind(code: reader.u8()),
                  permissions: try reader.u32(), uid: try reader.u32(), gid: try reader.u32(), rdev: try reader.u32(), timeNs: 0)
        mtimeNs = try reader.i64()
        ctimeNs = try reader.i64()
        atimeNs = try reader.i64()
        content = try reader.optional { reader throws(OuroError) in try reader.value() }
        symlinkTarget = try reader.optional { reader throws(OuroError) in try reader.string() }
        let pairs = try reader.array { reader throws(OuroError) in (try reader.string(), try reader.data()) }
        xattrs = Dictionary(pairs, uniquingKeysWith: { _, last in last })
        deleted = try reader.bool()
    }
}

extension Dirent: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(parent)
        writer.string(name)
        writer.value(version)
        writer.optional(inode) { $0.u64($1) }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(parent: try reader.u64(), name: try reader.string(), version: try reader.value(),
                  inode: try reader.optional { reader throws(OuroError) in try reader.u64() })
    }
}

extension PlacementRecord: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.value(content)
        writer.u32(UInt32(chunk))
        writer.array(holders) { $0.value($1) }
        writer.value(version)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(content: try reader.value(), chunk: Int(try reader.u32()),
                  holders: try reader.array { reader throws(OuroError) in try reader.value() }, version: try reader.value())
    }
}

extension RegionRecord: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(inode)
        writer.u64(region)
        writer.value(slices)
        writer.value(version)
        writer.u64(cuts)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(inode: try reader.u64(), region: try reader.u64(), slices: try reader.value([ContentSlice].self),
                  version: try reader.value(), cuts: try reader.u64())
    }
}

extension CatalogRecord: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        if let inode {
            writer.u8(1)
            writer.value(inode)
        } else if let dirent {
            writer.u8(2)
            writer.value(dirent)
        } else if let placement {
            writer.u8(3)
            writer.value(placement)
        } else {
            writer.u8(4)
            writer.value(region!)
        }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        switch try reader.u8() {
        case 1: self.init(try reader.value(Inode.self))
        case 2: self.init(try reader.value(Dirent.self))
        case 3: self.init(try reader.value(PlacementRecord.self))
        case 4: self.init(try reader.value(RegionRecord.self))
        default: throw .badRequest("malformed binary payload: record")
        }
    }
}

extension CatalogRecord {
    /// The kind of the inode an encoded record holds, read from its first bytes without decoding the rest (a
    /// plain listing needs only that); nil if the bytes are not an inode record.
    public static func inodeKind(inEncoded bytes: UnsafeRawBufferPointer) -> InodeKind? {
        // tag (1), id (8), version: clock (8), origin (32-bit length, then UTF-8), then the kind (1).
        let originLengthAt = 1 + 8 + 8
        guard bytes.count >= originLengthAt + 4, bytes[0] == 1 else { return nil }
        var length: UInt32 = 0
        withUnsafeMutableBytes(of: &length) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[originLengthAt..<(originLengthAt + 4)])) }
        let kindAt = originLengthAt + 4 + Int(UInt32(littleEndian: length))
        guard kindAt < bytes.count else { return nil }
        return try? InodeKind(code: bytes[kindAt])
    }
}

extension InodeStat: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.value(inode)
        writer.u32(UInt32(linkCount))
        writer.optional(storedBytes) { $0.u64($1) }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(inode: try reader.value(), linkCount: Int(try reader.u32()),
                  storedBytes: try reader.optional { reader throws(OuroError) in try reader.u64() })
    }
}

// MARK: Metadata calls

extension RingUsage: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.u64(totalBytes)
        writer.u64(freeBytes)
        writer.u64(availableBytes)
        writer.u64(files)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(totalBytes: try reader.u64(), freeBytes: try reader.u64(), availableBytes: try reader.u64(), files: try reader.u64())
    }
}

extension FSRequest: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.optional(parent) { $0.u64($1) }
        writer.optional(name) { $0.string($1) }
        writer.optional(newParent) { $0.u64($1) }
        writer.optional(newName) { $0.string($1) }
        writer.optional(inode) { $0.u64($1) }
        writer.optional(path) { $0.string($1) }
        writer.optional(kind) { $0.u8($1.code) }
        writer.optional(mode) { $0.u32($1) }
        writer.optional(uid) { $0.u32($1) }
        writer.optional(gid) { $0.u32($1) }
        writer.optional(rdev) { $0.u32($1) }
        writer.optional(target) { $0.string($1) }
        writer.optional(sizeBytes) { $0.u64($1) }
        writer.optional(mtimeNs) { $0.i64($1) }
        writer.optional(atimeNs) { $0.i64($1) }
        writer.optional(flags) { $0.u32($1) }
        writer.optional(xattrName) { $0.string($1) }
        writer.optional(xattrValue) { $0.data($1) }
        writer.optional(content) { $0.value($1) }
        writer.optional(data) { $0.data($1) }
        writer.optional(truncatedTo) { $0.u64($1) }
        writer.optional(offset) { $0.u64($1) }
        writer.optional(slices) { $0.value($1) }
        writer.optional(cuts) { $0.u64($1) }
        writer.optional(after) { $0.string($1) }
        writer.optional(limit) { $0.u32($1) }
        writer.optional(namesOnly) { $0.bool($1) }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init()
        parent = try reader.optional { reader throws(OuroError) in try reader.u64() }
        name = try reader.optional { reader throws(OuroError) in try reader.string() }
        newParent = try reader.optional { reader throws(OuroError) in try reader.u64() }
        newName = try reader.optional { reader throws(OuroError) in try reader.string() }
        inode = try reader.optional { reader throws(OuroError) in try reader.u64() }
        path = try reader.optional { reader throws(OuroError) in try reader.string() }
        kind = try reader.optional { reader throws(OuroError) in try InodeKind(code: reader.u8()) }
        mode = try reader.optional { reader throws(OuroError) in try reader.u32() }
        uid = try reader.optional { reader throws(OuroError) in try reader.u32() }
        gid = try reader.optional { reader throws(OuroError) in try reader.u32() }
        rdev = try reader.optional { reader throws(OuroError) in try reader.u32() }
        target = try reader.optional { reader throws(OuroError) in try reader.string() }
        sizeBytes = try reader.optional { reader throws(OuroError) in try reader.u64() }
        mtimeNs = try reader.optional { reader throws(OuroError) in try reader.i64() }
        atimeNs = try reader.optional { reader throws(OuroError) in try reader.i64() }
        flags = try reader.optional { reader throws(OuroError) in try reader.u32() }
        xattrName = try reader.optional { reader throws(OuroError) in try reader.string() }
        xattrValue = try reader.optional { reader throws(OuroError) in try reader.data() }
        content = try reader.optional { reader throws(OuroError) in try reader.value() }
        data = try reader.optional { reader throws(OuroError) in try reader.data() }
        truncatedTo = try reader.optional { reader throws(OuroError) in try reader.u64() }
        offset = try reader.optional { reader throws(OuroError) in try reader.u64() }
        slices = try reader.optional { reader throws(OuroError) in try reader.value([ContentSlice].self) }
        cuts = try reader.optional { reader throws(OuroError) in try reader.u64() }
        after = try reader.optional { reader throws(OuroError) in try reader.string() }
        limit = try reader.optional { reader throws(OuroError) in try reader.u32() }
        namesOnly = try reader.optional { reader throws(OuroError) in try reader.bool() }
    }
}

extension FSReply: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        writer.optional(stat) { $0.value($1) }
        writer.optional(entries) { writer, entries in
            writer.array(entries) { writer, entry in
                writer.string(entry.name)
                writer.value(entry.stat)
            }
        }
        writer.optional(xattrValue) { $0.data($1) }
        writer.optional(xattrNames) { writer, names in writer.array(names) { $0.string($1) } }
        writer.optional(usage) { $0.value($1) }
        writer.optional(directories) { $0.value($1) }
        writer.optional(regions) { $0.value($1) }
        writer.optional(slices) { $0.value($1) }
        writer.optional(more) { $0.bool($1) }
        writer.optional(names) { writer, names in
            writer.array(names) { writer, entry in
                writer.string(entry.name)
                writer.u64(entry.inode)
                writer.u8(entry.kind.code)
            }
        }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init()
        stat = try reader.optional { reader throws(OuroError) in try reader.value() }
        entries = try reader.optional { reader throws(OuroError) in
            try reader.array { reader throws(OuroError) in Entry(name: try reader.string(), stat: try reader.value()) }
        }
        xattrValue = try reader.optional { reader throws(OuroError) in try reader.data() }
        xattrNames = try reader.optional { reader throws(OuroError) in try reader.array { reader throws(OuroError) in try reader.string() } }
        usage = try reader.optional { reader throws(OuroError) in try reader.value() }
        directories = try reader.optional { reader throws(OuroError) in try reader.value([InodeStat].self) }
        regions = try reader.optional { reader throws(OuroError) in try reader.value([RegionRecord].self) }
        slices = try reader.optional { reader throws(OuroError) in try reader.value([ContentSlice].self) }
        more = try reader.optional { reader throws(OuroError) in try reader.bool() }
        names = try reader.optional { reader throws(OuroError) in
            try reader.array { reader throws(OuroError) in
                NameEntry(name: try reader.string(), inode: try reader.u64(), kind: try InodeKind(code: reader.u8()))
            }
        }
    }
}

/// Catalog records with the bytes each one encodes to: encoded once (or kept as they arrived), then written as they
/// are to the catalog log, the piece journal and every peer. A commit of a file with many slices otherwise encodes
/// the same region record three times on its node and once more on every peer.
public struct EncodedRecords: Sendable {
    public private(set) var records: [CatalogRecord]
    public private(set) var encoded: [[UInt8]]

    public init(_ records: [CatalogRecord]) {
        self.records = records
        encoded = records.map { WireBinary.encode($0) }
    }

    public var isEmpty: Bool { records.isEmpty }

    /// The wire form of `[CatalogRecord]`: a count, then each record.
    public var arrayBytes: [UInt8] { Self.arrayBytes(of: encoded) }

    /// The wire form of `[CatalogRecord]` from records already encoded (one message of many changes' records).
    public static func arrayBytes(of encoded: [[UInt8]]) -> [UInt8] {
        var writer = BinaryWriter(capacity: encoded.reduce(4) { $0 + $1.count })
        writer.u32(UInt32(encoded.count))
        for bytes in encoded { writer.raw(bytes) }
        return writer.bytes
    }

    public func filter(_ keep: (CatalogRecord) throws -> Bool) rethrows -> EncodedRecords {
        var kept = EncodedRecords(records: [], encoded: [])
        for (record, bytes) in zip(records, encoded) where try keep(record) {
            kept.records.append(record)
            kept.encoded.append(bytes)
        }
        return kept
    }

    /// Records with the bytes they were stored as (each `encoded` is its record's encoding).
    public init(records: [CatalogRecord], encoded: [[UInt8]]) {
        precondition(records.count == encoded.count)
        self.records = records
        self.encoded = encoded
    }

    /// Decodes the wire form of `[CatalogRecord]`, keeping each record's bytes.
    public static func decode(_ payload: [UInt8]) throws(OuroError) -> EncodedRecords {
        var reader = BinaryReader(payload)
        let decoded = try read(from: &reader)
        guard reader.isAtEnd else { throw .badRequest("malformed binary payload: trailing bytes") }
        return decoded
    }

    /// Reads the wire form of `[CatalogRecord]` inside a larger payload, keeping each record's bytes.
    public static func read(from reader: inout BinaryReader) throws(OuroError) -> EncodedRecords {
        let count = Int(try reader.u32())
        guard count <= reader.remainingCount else { throw .badRequest("malformed binary payload") }
        var decoded = EncodedRecords(records: [], encoded: [])
        for _ in 0..<count {
            let start = reader.position
            decoded.records.append(try reader.value(CatalogRecord.self))
            decoded.encoded.append(reader.bytesRead(since: start))
        }
        return decoded
    }
}
