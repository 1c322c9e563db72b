/// Garbage collection of the catalog (see docs/design.md, "Garbage collection"): the rules, with no I/O.
///
/// A tombstone (a removed name, a removed inode) or the placement of a content no file holds any more is kept only
/// so that a merge cannot bring back what it replaced. Once no member holds an older version of its key, nothing
/// can: the row is dropped everywhere. A member that has been away longer than the horizon does not hold the ring
/// back; when it returns it sweeps out what the ring dropped meanwhile (rows older than its absence that a peer no
/// longer has).

/// A catalog row by its key.
public enum CatalogKey: Hashable, Sendable {
    case inode(UInt64)
    case dirent(parent: UInt64, name: String)
    case placement(ContentID, chunk: Int)
}

/// A row asked about or dropped: its key and the version it holds.
public struct CatalogRowVersion: Hashable, Sendable {
    public var key: CatalogKey
    public var version: Version

    public init(_ key: CatalogKey, _ version: Version) {
        self.key = key
        self.version = version
    }
}

/// What a node holds of a row another node asked about (`CATALOG HAVE`).
public enum RowAnswer: UInt8, Sendable {
    /// No row with this key (for a placement: no live file holds its content here).
    case absent = 0
    /// A row with an older version: dropping the asker's would let this one come back.
    case older = 1
    /// The same version or a newer one.
    case sameOrNewer = 2
    /// A placement whose content a live file here still holds.
    case inUse = 3
}

public enum CatalogGC {
    /// What a node holding `mine` (its version, nil: no row) answers about `asked`.
    public static func answer(holding mine: Version?, asked: Version) -> RowAnswer {
        guard let mine else { return .absent }
        return mine < asked ? .older : .sameOrNewer
    }

    /// A row may be dropped once every member that counts has answered and none holds an older version (or, for a
    /// placement, a live file using it).
    public static func collectible(_ answers: [RowAnswer]) -> Bool {
        answers.allSatisfy { $0 == .absent || $0 == .sameOrNewer }
    }

    /// A returning member's row (older than its absence) that the peer it sweeps against no longer has: the ring
    /// removed it and dropped the tombstone while the member was away.
    public static func isStale(_ answer: RowAnswer) -> Bool { answer == .absent }

    /// Who must confirm a collection: every other member, except those away (dead as this node has seen them) for
    /// longer than `awayNanoseconds`, which are `excluded` and sweep when they return. Nil while a member has been
    /// away for less: the round waits for it.
    public static func confirmers(members: [Netmap.Member], me: NodeAddress, deadSince: [NodeAddress: Int64], now: Int64,
                                  awayNanoseconds: Int64) -> (ask: [NodeAddress], excluded: [NodeAddress])? {
        var ask: [NodeAddress] = []
        var excluded: [NodeAddress] = []
        for member in members where member.address != me {
            if member.alive {
                ask.append(member.address)
            } else if let since = deadSince[member.address], now - since > awayNanoseconds {
                excluded.append(member.address)
            } else {
                return nil
            }
        }
        return (ask, excluded)
    }

    /// Whether a tombstone is old enough to be a candidate: this node's own after `minimumAge`, others' after four
    /// times as long (their origin normally collects them first and says so; this catches what it left).
    public static func isCandidate(_ version: Version, me origin: String, now: Int64, minimumAge: Int64) -> Bool {
        let age = now - Int64(clamping: version.clock)
        return age > (version.origin == origin ? minimumAge : 4 * minimumAge)
    }

    /// The version a sweep gives the tombstone that replaces a stale row: just after the row's own, so that any
    /// later change of the same key still wins.
    public static func sweepVersion(after version: Version) -> Version {
        Version(clock: version.clock + 1, origin: version.origin)
    }
}

extension CatalogKey: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        switch self {
        case .inode(let id):
            writer.u8(0)
            writer.u64(id)
        case .dirent(let parent, let name):
            writer.u8(1)
            writer.u64(parent)
            writer.string(name)
        case .placement(let content, let chunk):
            writer.u8(2)
            content.encode(to: &writer)
            writer.u64(UInt64(chunk))
        }
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        switch try reader.u8() {
        case 0: self = .inode(try reader.u64())
        case 1: self = .dirent(parent: try reader.u64(), name: try reader.string())
        case 2:
            let content = try ContentID(from: &reader)
            let chunk = try reader.u64()
            guard chunk < 1 << 20 else { throw .badRequest("malformed binary payload: chunk index") }
            self = .placement(content, chunk: Int(chunk))
        default: throw .badRequest("malformed binary payload: catalog key")
        }
    }
}

extension CatalogRowVersion: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) {
        key.encode(to: &writer)
        version.encode(to: &writer)
    }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        self.init(try CatalogKey(from: &reader), try Version(from: &reader))
    }
}

extension RowAnswer: BinaryCodable {
    public func encode(to writer: inout BinaryWriter) { writer.u8(rawValue) }

    public init(from reader: inout BinaryReader) throws(OuroError) {
        guard let answer = RowAnswer(rawValue: try reader.u8()) else { throw .badRequest("malformed binary payload: row answer") }
        self = answer
    }
}
