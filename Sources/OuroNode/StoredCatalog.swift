import CSQLite
import OuroCore
import struct SystemPackage.FilePath
import struct SystemPackage.FileDescriptor

/// The node's catalog on disk (`<data>/catalog.sqlite`), read through `CatalogView` like the in-memory `Catalog`
/// and merged by the same rules (`apply` mirrors `Catalog.apply`; a property test holds them to the same answers).
/// Memory no longer grows with the file count: rows stay in SQLite's page cache (bounded), decoded inodes in a small
/// cache of their own.
///
/// Every change goes into one write transaction that stays open between checkpoints, so reads on this connection
/// see it at once while nothing is written to disk per change: the catalog log is the commit path, and
/// `checkpoint` commits the transaction (fsynced) now and then, after which the log can start over.
///
/// Tables: one per kind of record, keyed as the record is, with the record's version (for the merge), its local
/// sequence number (`CATALOG SYNC` reads `seq > cursor` through an index; no number yet: a record made durable
/// by the piece journal, not yet in the log) and its encoding. The derived facts `Catalog` keeps in maps are an
/// index (a dirent's target: link counts, parents) or rows kept in step by `apply` (subdirectory counts, content
/// owners and references).
final class StoredCatalog: CatalogView {
    private let database: SQLiteDatabase
    /// The first SQLite error met by a read since `takeFailure()`: a plan made over a failed read must not commit.
    private var readFailure: SQLiteError?
    /// Decoded inodes, most read first (GETATTR and LOOKUP read the same few again and again).
    private var inodeCache: [UInt64: Inode] = [:]
    private static let inodeCacheLimit = 4096
    /// Records held, and live inodes (root included), kept as counters: both are asked by `NODE INFO`.
    private(set) var recordCount = 0
    private(set) var liveInodeCount = 1
    private var placementCount = 0
    /// The WAL, opened after the first commit (see `syncWAL`).
    private var walFile: FileDescriptor?

    private let getInode, putInode, setInodeSeq: SQLiteStatement
    private let getDirent, putDirent, setDirentSeq, childrenOf, namesOf: SQLiteStatement
    private let getRegion, regionsOf, putRegion, setRegionSeq: SQLiteStatement
    private let getPlacement, placementsOf, putPlacement, setPlacementSeq: SQLiteStatement
    private let getSubdirectories, addSubdirectories: SQLiteStatement
    private let getOwner, retainContent, releaseContent, dropContent, chunkedOwners: SQLiteStatement
    private let inodesAfter, direntsAfter, regionsAfter, placementsAfter: SQLiteStatement
    private let getMeta, putMeta: SQLiteStatement
    private let savepoint, release, rollback: SQLiteStatement
    private let inodesIn, namesIn, regionsIn, nameCountsIn, subdirectoriesIn: SQLiteStatement
    private let removedInodes, removedDirents, unusedPlacements, inodeVersion: SQLiteStatement
    private let dropInode, dropRegionsOf, dropDirent, dropPlacement, metaRange, deleteMeta: SQLiteStatement
    private let liveInodesPage, liveDirentsPage: SQLiteStatement

    static let schema = """
        CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS inodes(id INTEGER PRIMARY KEY, seq INTEGER,
            clock INTEGER NOT NULL, origin TEXT NOT NULL, live_directory INTEGER NOT NULL, deleted INTEGER NOT NULL,
            record BLOB NOT NULL);
        CREATE INDEX IF NOT EXISTS inodes_seq ON inodes(seq) WHERE seq IS NOT NULL;
        CREATE INDEX IF NOT EXISTS inodes_removed ON inodes(clock) WHERE deleted = 1;
        CREATE TABLE IF NOT EXISTS dirents(parent INTEGER NOT NULL, name TEXT NOT NULL, target INTEGER,
            seq INTEGER, clock INTEGER NOT NULL, origin TEXT NOT NULL, PRIMARY KEY(parent, name)) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS dirents_target ON dirents(target, parent) WHERE target IS NOT NULL;
        CREATE INDEX IF NOT EXISTS dirents_seq ON dirents(seq) WHERE seq IS NOT NULL;
        CREATE INDEX IF NOT EXISTS dirents_removed ON dirents(clock) WHERE target IS NULL;
        CREATE TABLE IF NOT EXISTS regions(inode INTEGER NOT NULL, region INTEGER NOT NULL, seq INTEGER,
            clock INTEGER NOT NULL, origin TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(inode, region));
        CREATE INDEX IF NOT EXISTS regions_seq ON regions(seq) WHERE seq IS NOT NULL;
        CREATE TABLE IF NOT EXISTS placements(content TEXT NOT NULL, chunk INTEGER NOT NULL, seq INTEGER,
            clock INTEGER NOT NULL, origin TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(content, chunk));
        CREATE INDEX IF NOT EXISTS placements_seq ON placements(seq) WHERE seq IS NOT NULL;
        CREATE TABLE IF NOT EXISTS subdirectories(directory INTEGER PRIMARY KEY, count INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS contents(id TEXT PRIMARY KEY, owner INTEGER NOT NULL, refs INTEGER NOT NULL) WITHOUT ROWID;
        """

    /// Opens (or creates) the store and starts its write transaction. `cacheBytes` bounds SQLite's page cache.
    init(path: String, cacheBytes: Int = 32 << 20) throws {
        database = try SQLiteDatabase(path: path)
        // One process owns the data directory: an exclusive lock keeps the WAL index in memory (no -shm file).
        // Incremental auto-vacuum (it takes effect only in a new store): pages freed by garbage collection are given
        // back to the file system a batch at a time, so that a catalog that shrank is small on disk too.
        try database.execute("""
            PRAGMA auto_vacuum = INCREMENTAL;
            PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
            PRAGMA wal_autocheckpoint = 8192; PRAGMA cache_size = -\(cacheBytes / 1024); PRAGMA temp_store = MEMORY;
            PRAGMA journal_size_limit = 67108864;
            """)
        try database.execute("BEGIN IMMEDIATE; \(Self.schema) COMMIT;")
        let db = database
        getInode = try db.prepare("SELECT record FROM inodes WHERE id = ?")
        putInode = try db.prepare("""
            INSERT INTO inodes(id, seq, clock, origin, live_directory, deleted, record) VALUES(?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, clock = excluded.clock, origin = excluded.origin,
            live_directory = excluded.live_directory, deleted = excluded.deleted, record = excluded.record
            """)
        setInodeSeq = try db.prepare("UPDATE inodes SET seq = ? WHERE id = ? AND clock = ? AND origin = ? AND seq IS NULL")
        getDirent = try db.prepare("SELECT target, clock, origin FROM dirents WHERE parent = ? AND name = ?")
        putDirent = try db.prepare("""
            INSERT INTO dirents(parent, name, target, seq, clock, origin) VALUES(?, ?, ?, ?, ?, ?)
            ON CONFLICT(parent, name) DO UPDATE SET target = excluded.target, seq = excluded.seq,
            clock = excluded.clock, origin = excluded.origin
            """)
        setDirentSeq = try db.prepare("UPDATE dirents SET seq = ? WHERE parent = ? AND name = ? AND clock = ? AND origin = ? AND seq IS NULL")
        childrenOf = try db.prepare("SELECT name, target FROM dirents WHERE parent = ? AND target IS NOT NULL")
        namesOf = try db.prepare("SELECT parent FROM dirents WHERE target = ?")
        getRegion = try db.prepare("SELECT record FROM regions WHERE inode = ? AND region = ?")
        regionsOf = try db.prepare("SELECT record FROM regions WHERE inode = ?")
        putRegion = try db.prepare("""
            INSERT INTO regions(inode, region, seq, clock, origin, record) VALUES(?, ?, ?, ?, ?, ?)
            ON CONFLICT(inode, region) DO UPDATE SET seq = excluded.seq, clock = excluded.clock,
            origin = excluded.origin, record = excluded.record
            """)
        setRegionSeq = try db.prepare("UPDATE regions SET seq = ? WHERE inode = ? AND region = ? AND clock = ? AND origin = ? AND seq IS NULL")
        getPlacement = try db.prepare("SELECT record FROM placements WHERE content = ? AND chunk = ?")
        placementsOf = try db.prepare("SELECT record FROM placements WHERE content = ?")
        putPlacement = try db.prepare("""
            INSERT INTO placements(content, chunk, seq, clock, origin, record) VALUES(?, ?, ?, ?, ?, ?)
            ON CONFLICT(content, chunk) DO UPDATE SET seq = excluded.seq, clock = excluded.clock,
            origin = excluded.origin, record = excluded.record
            """)
        setPlacementSeq = try db.prepare("UPDATE placements SET seq = ? WHERE content = ? AND chunk = ? AND clock = ? AND origin = ? AND seq IS NULL")
        getSubdirectories = try db.prepare("SELECT count FROM subdirectories WHERE directory = ?")
        addSubdirectories = try db.prepare("""
            INSERT INTO subdirectories(directory, count) VALUES(?, ?)
            ON CONFLICT(directory) DO UPDATE SET count = count + excluded.count
            """)
        getOwner = try db.prepare("SELECT owner FROM contents WHERE id = ?")
        retainContent = try db.prepare("""
            INSERT INTO contents(id, owner, refs) VALUES(?, ?, 1)
            ON CONFLICT(id) DO UPDATE SET owner = excluded.owner, refs = refs + 1
            """)
        releaseContent = try db.prepare("UPDATE contents SET refs = refs - 1 WHERE id = ?")
        dropContent = try db.prepare("DELETE FROM contents WHERE id = ? AND refs <= 0")
        chunkedOwners = try db.prepare("SELECT DISTINCT owner FROM contents")
        inodesAfter = try db.prepare("SELECT seq, record FROM inodes WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?")
        direntsAfter = try db.prepare("""
            SELECT seq, parent, name, target, clock, origin FROM dirents WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?
            """)
        regionsAfter = try db.prepare("SELECT seq, record FROM regions WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?")
        placementsAfter = try db.prepare("SELECT seq, record FROM placements WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?")
        getMeta = try db.prepare("SELECT value FROM meta WHERE name = ?")
        putMeta = try db.prepare("INSERT OR REPLACE INTO meta(name, value) VALUES(?, ?)")
        // A page of a directory: names after ?2 in byte order, at most ?3; the other three queries cover the page's
        // names (up to ?3, inclusive; a blob bound is past every name).
        let livePage = """
            FROM dirents d LEFT JOIN inodes i ON i.id = d.target WHERE d.parent = ?1 AND d.name > ?2 AND d.target IS NOT NULL
            AND (i.deleted = 0 OR (i.id IS NULL AND d.target = \(Inode.rootID))) ORDER BY d.name LIMIT ?3
            """
        inodesIn = try db.prepare("SELECT d.name, d.target, i.record \(livePage)")
        // The same names with only the start of each inode record, where its kind is (a plain listing).
        namesIn = try db.prepare("SELECT d.name, d.target, substr(i.record, 1, \(Self.kindPrefixBytes)) \(livePage)")
        let pageTargets = "SELECT target FROM dirents WHERE parent = ?1 AND name > ?2 AND name <= ?3 AND target IS NOT NULL"
        regionsIn = try db.prepare("SELECT r.record FROM regions r WHERE r.inode IN (\(pageTargets))")
        nameCountsIn = try db.prepare("SELECT target, count(*) FROM dirents WHERE target IN (\(pageTargets)) GROUP BY target")
        subdirectoriesIn = try db.prepare("SELECT directory, count FROM subdirectories WHERE directory IN (\(pageTargets))")
        // A removed inode that still has a name (a merge in between) waits; the root is never removed.
        removedInodes = try db.prepare("""
            SELECT id, clock, origin FROM inodes WHERE deleted = 1 AND clock < ? AND id != \(Inode.rootID)
            AND NOT EXISTS (SELECT 1 FROM dirents d WHERE d.target = inodes.id) ORDER BY clock LIMIT ?
            """)
        removedDirents = try db.prepare("SELECT parent, name, clock, origin FROM dirents WHERE target IS NULL AND clock < ? ORDER BY clock LIMIT ?")
        unusedPlacements = try db.prepare("""
            SELECT content, chunk, clock, origin FROM placements p
            WHERE clock < ? AND NOT EXISTS (SELECT 1 FROM contents c WHERE c.id = p.content) LIMIT ?
            """)
        inodeVersion = try db.prepare("SELECT clock, origin FROM inodes WHERE id = ?")
        dropInode = try db.prepare("DELETE FROM inodes WHERE id = ? AND clock = ? AND origin = ? AND deleted = 1")
        dropRegionsOf = try db.prepare("DELETE FROM regions WHERE inode = ?")
        dropDirent = try db.prepare("DELETE FROM dirents WHERE parent = ? AND name = ? AND clock = ? AND origin = ? AND target IS NULL")
        dropPlacement = try db.prepare("""
            DELETE FROM placements WHERE content = ? AND chunk = ? AND clock = ? AND origin = ?
            AND NOT EXISTS (SELECT 1 FROM contents c WHERE c.id = placements.content)
            """)
        metaRange = try db.prepare("SELECT name, value FROM meta WHERE name >= ? AND name < ? ORDER BY name")
        deleteMeta = try db.prepare("DELETE FROM meta WHERE name = ?")
        liveInodesPage = try db.prepare("SELECT id, clock, origin FROM inodes WHERE deleted = 0 AND clock < ? AND id > ? ORDER BY id LIMIT ?")
        liveDirentsPage = try db.prepare("""
            SELECT parent, name, clock, origin FROM dirents WHERE target IS NOT NULL AND clock < ? AND (parent, name) > (?, ?)
            ORDER BY parent, name LIMIT ?
            """)
        savepoint = try db.prepare("SAVEPOINT batch")
        release = try db.prepare("RELEASE batch")
        rollback = try db.prepare("ROLLBACK TO batch")
        try database.execute("BEGIN IMMEDIATE")
        recordCount = meta("records").flatMap { Int($0) } ?? 0
        liveInodeCount = meta("liveInodes").flatMap { Int($0) } ?? 1
        placementCount = try count("SELECT count(*) FROM (SELECT 1 FROM placements LIMIT 1)")
    }

    deinit { try? walFile?.close() }

    private func count(_ sql: String) throws -> Int {
        let statement = try database.prepare(sql)
        guard try statement.step() else { return 0 }
        defer { statement.finish() }
        return Int(statement.int64(0))
    }

    // MARK: Transactions

    /// Commits everything applied so far, with these meta values in the same transaction, and opens the next
    /// transaction. Durable once `syncWAL` returns (`synchronous = NORMAL`: a commit writes the WAL, SQLite fsyncs
    /// only when it copies the WAL into the database, and then both).
    func commit(meta values: [String: String]) throws {
        var values = values
        values["records"] = String(recordCount)
        values["liveInodes"] = String(liveInodeCount)
        for (name, value) in values { try putMeta.bind(.text(name), .text(value)).run() }
        try database.execute("COMMIT")  // on failure, see `isRolledBack`
        if walFile == nil { walFile = try? FileDescriptor.open(FilePath(database.path + "-wal"), .readOnly, options: [.closeOnExec]) }
        try database.execute("BEGIN IMMEDIATE")
    }

    /// `commit` and `syncWAL` in one (tests, and where nothing else runs).
    func checkpoint(meta values: [String: String]) throws {
        try commit(meta: values)
        try syncWAL()
    }

    /// Makes the commits so far durable: fdatasync of the WAL, on a descriptor of its own, so that it can run
    /// outside the lock that serializes the connection (SQLite never replaces the file while it is open).
    func syncWAL() throws {
        guard let walFile else { throw OuroError(.internal, "the catalog store has no write-ahead log") }
        try walFile.syncData()
    }

    /// Whether a failed commit rolled the transaction back (what it held is gone from the store).
    var isRolledBack: Bool { database.isAutocommit }

    /// Opens a write transaction again after a commit that rolled back: what the caches and counters held of the
    /// lost transaction goes too (the caller replays it from the log).
    func begin() throws {
        inodeCache = [:]
        recordCount = meta("records").flatMap { Int($0) } ?? 0
        liveInodeCount = meta("liveInodes").flatMap { Int($0) } ?? 1
        placementCount = try count("SELECT count(*) FROM (SELECT 1 FROM placements LIMIT 1)")
        try database.execute("BEGIN IMMEDIATE")
    }

    /// Bytes of the store on disk, its write-ahead log included.
    var fileBytes: Int {
        [database.path, database.path + "-wal"].reduce(0) { $0 + (FileManagerLite.size(FilePath($1)) ?? 0) }
    }

    /// A batch of changes that applies whole or not at all (a full disk mid-way leaves no half of it).
    func batch<T>(_ body: () throws -> T) throws -> T {
        let counts = (recordCount, liveInodeCount, placementCount)
        try savepoint.bind().run()
        do {
            let result = try body()
            try release.bind().run()
            return result
        } catch {
            inodeCache = [:]
            try? rollback.bind().run()
            try? release.bind().run()
            (recordCount, liveInodeCount, placementCount) = counts
            throw error
        }
    }

    /// Reads the SQLite error a read met since the last call (reads answer "absent" on error; a change planned on
    /// one must fail instead).
    func takeFailure() -> SQLiteError? {
        defer { readFailure = nil }
        return readFailure
    }

    func meta(_ name: String) -> String? {
        read(getMeta.bind(.text(name))) { $0.text(0) }
    }

    func setMeta(_ name: String, _ value: String) throws {
        try putMeta.bind(.text(name), .text(value)).run()
    }

    /// The first row of a bound statement, read by `row`; nil (and the error kept) on failure.
    private func read<T>(_ statement: SQLiteStatement, _ row: (SQLiteStatement) throws -> T?) -> T? {
        defer { statement.finish() }
        do {
            guard try statement.step() else { return nil }
            return try row(statement)
        } catch let error as SQLiteError {
            if readFailure == nil { readFailure = error }
            return nil
        } catch {
            if readFailure == nil { readFailure = SQLiteError(code: SQLITE_CORRUPT, message: "\(error)") }
            return nil
        }
    }

    /// Every row of a bound statement.
    private func readAll<T>(_ statement: SQLiteStatement, _ row: (SQLiteStatement) throws -> T?) -> [T] {
        defer { statement.finish() }
        var rows: [T] = []
        do {
            while try statement.step() { if let value = try row(statement) { rows.append(value) } }
        } catch let error as SQLiteError {
            if readFailure == nil { readFailure = error }
        } catch {
            if readFailure == nil { readFailure = SQLiteError(code: SQLITE_CORRUPT, message: "\(error)") }
        }
        return rows
    }

    private static func record(_ bytes: [UInt8]) throws -> CatalogRecord {
        try WireBinary.decode(CatalogRecord.self, from: bytes)
    }

    // MARK: Merge (the rules of `Catalog.apply`)

    /// Merges one record (`encoded` is its encoding); returns whether it changed anything. `seq` is its sequence
    /// number, nil for a record not in the log yet (see `assignSequence`).
    func apply(_ record: CatalogRecord, encoded: [UInt8], seq: UInt64?) throws -> Bool {
        let seqValue: SQLiteValue = seq.map { .integer(Int64($0)) } ?? .null
        if let placement = record.placement {
            let current = read(getPlacement.bind(.text(placement.content.hex), .integer(Int64(placement.chunk)))) { try Self.record($0.blob(0)).placement }
            try checkRead()
            if let current, current.version >= placement.version { return false }
            try putPlacement.bind(.text(placement.content.hex), .integer(Int64(placement.chunk)), seqValue,
                                  .id(placement.version.clock), .text(placement.version.origin), .blob(encoded)).run()
            if current == nil { recordCount += 1; placementCount += 1 }
            return true
        }
        if let region = record.region {
            let current = regionRecord(of: region.inode, region: region.region)
            let owner = storedInode(region.inode)
            try checkRead()
            if let current, current.version >= region.version { return false }
            // An inode not heard of yet counts as live (sync may bring its regions first); a removed one holds nothing.
            let live = owner.map { !$0.deleted } ?? true
            if let current, live { try release(Catalog.sources(of: current.slices)) }
            try putRegion.bind(.id(region.inode), .id(region.region), seqValue, .id(region.version.clock),
                               .text(region.version.origin), .blob(encoded)).run()
            if current == nil { recordCount += 1 }
            if live { try retain(Catalog.sources(of: region.slices), by: region.inode) }
            return true
        }
        if let inode = record.inode {
            let current = storedInode(inode.id)
            let hasRow = current != nil && (inode.id != Inode.rootID || inodeRowExists(inode.id))
            try checkRead()
            if let current, current.version >= inode.version { return false }
            let wasLive = current.map { !$0.deleted } ?? true
            if let current, !current.deleted { try release(current.content?.pieces ?? []) }
            // A live inode holds its regions' slices: dropped with it, held again if a later change revives it.
            if wasLive, inode.deleted {
                for region in regionRecords(of: inode.id).values { try release(Catalog.sources(of: region.slices)) }
            } else if !wasLive, !inode.deleted {
                for region in regionRecords(of: inode.id).values { try retain(Catalog.sources(of: region.slices), by: inode.id) }
            }
            let wasDirectory = current.map { $0.kind == .directory && !$0.deleted } ?? false
            let isDirectory = inode.kind == .directory && !inode.deleted
            try putInode.bind(.id(inode.id), seqValue, .id(inode.version.clock), .text(inode.version.origin),
                              .integer(isDirectory ? 1 : 0), .integer(inode.deleted ? 1 : 0), .blob(encoded)).run()
            cache(inode)
            if !hasRow { recordCount += 1 }
            liveInodeCount += (inode.deleted ? 0 : 1) - (current.map { $0.deleted ? 0 : 1 } ?? 0)
            if wasDirectory != isDirectory {
                for parent in parentIDs(of: inode.id) { try addSubdirectories(parent, isDirectory ? 1 : -1) }
            }
            if !inode.deleted { try retain(inode.content?.pieces ?? [], by: inode.id) }
            try checkRead()
            return true
        }
        guard let dirent = record.dirent else { return false }
        let previous = storedDirent(dirent.key)
        try checkRead()
        if let previous, previous.version >= dirent.version { return false }
        if let old = previous?.inode, isLiveDirectory(old) { try addSubdirectories(dirent.parent, -1) }
        try putDirent.bind(.id(dirent.parent), .text(dirent.name), .optionalID(dirent.inode), seqValue,
                           .id(dirent.version.clock), .text(dirent.version.origin)).run()
        if previous == nil { recordCount += 1 }
        if let new = dirent.inode, isLiveDirectory(new) { try addSubdirectories(dirent.parent, 1) }
        try checkRead()
        return true
    }

    /// Gives a record applied without a number (journalled) its sequence number, if the store holds exactly it.
    func assignSequence(_ seq: UInt64, to record: CatalogRecord) throws {
        let number = SQLiteValue.integer(Int64(seq))
        if let inode = record.inode {
            try setInodeSeq.bind(number, .id(inode.id), .id(inode.version.clock), .text(inode.version.origin)).run()
        } else if let dirent = record.dirent {
            try setDirentSeq.bind(number, .id(dirent.parent), .text(dirent.name), .id(dirent.version.clock), .text(dirent.version.origin)).run()
        } else if let region = record.region {
            try setRegionSeq.bind(number, .id(region.inode), .id(region.region), .id(region.version.clock), .text(region.version.origin)).run()
        } else if let placement = record.placement {
            try setPlacementSeq.bind(number, .text(placement.content.hex), .integer(Int64(placement.chunk)),
                                     .id(placement.version.clock), .text(placement.version.origin)).run()
        }
    }

    private func checkRead() throws {
        if let failure = takeFailure() { throw failure }
    }

    private func inodeRowExists(_ id: UInt64) -> Bool {
        read(getInode.bind(.id(id))) { _ in true } ?? false
    }

    private func isLiveDirectory(_ id: UInt64) -> Bool {
        guard let inode = storedInode(id) else { return false }
        return inode.kind == .directory && !inode.deleted
    }

    private func addSubdirectories(_ directory: UInt64, _ change: Int) throws {
        try addSubdirectories.bind(.id(directory), .integer(Int64(change))).run()
    }

    private func retain(_ pieces: [FileContent], by inode: UInt64) throws {
        for piece in Catalog.tracked(pieces) {
            try retainContent.bind(.text(piece.id.hex), .id(inode)).run()
        }
    }

    private func release(_ pieces: [FileContent]) throws {
        for id in Catalog.tracked(pieces).map(\.id) {
            try releaseContent.bind(.text(id.hex)).run()
            try dropContent.bind(.text(id.hex)).run()
        }
    }

    private func cache(_ inode: Inode) {
        if inodeCache.count >= Self.inodeCacheLimit, inodeCache[inode.id] == nil {
            inodeCache.remove(at: inodeCache.startIndex)  // an arbitrary one: cheap, and bounded
        }
        inodeCache[inode.id] = inode
    }

    // MARK: CatalogView

    func storedInode(_ id: UInt64) -> Inode? {
        if let cached = inodeCache[id] { return cached }
        guard let inode = read(getInode.bind(.id(id)), { try Self.record($0.blob(0)).inode }) else {
            return id == Inode.rootID ? .root : nil
        }
        cache(inode)
        return inode
    }

    func storedDirent(_ key: DirentKey) -> Dirent? {
        read(getDirent.bind(.id(key.parent), .text(key.name))) { row in
            Dirent(parent: key.parent, name: key.name, version: Version(clock: row.uint64(1), origin: row.text(2)),
                   inode: row.isNull(0) ? nil : row.uint64(0))
        }
    }

    func childID(of parent: UInt64, named name: String) -> UInt64? {
        read(getDirent.bind(.id(parent), .text(name))) { $0.isNull(0) ? nil : $0.uint64(0) }
    }

    func childIDs(of directory: UInt64) -> [(name: String, inode: UInt64)] {
        readAll(childrenOf.bind(.id(directory))) { (name: $0.text(0), inode: $0.uint64(1)) }
    }

    func nameCount(of id: UInt64) -> Int { parentIDs(of: id).count }

    func parentIDs(of id: UInt64) -> [UInt64] {
        readAll(namesOf.bind(.id(id))) { $0.uint64(0) }
    }

    func subdirectoryCount(of directory: UInt64) -> Int {
        read(getSubdirectories.bind(.id(directory))) { Int($0.int64(0)) } ?? 0
    }

    func regionRecords(of id: UInt64) -> [UInt64: RegionRecord] {
        var regions: [UInt64: RegionRecord] = [:]
        for region in readAll(regionsOf.bind(.id(id)), { try Self.record($0.blob(0)).region }) { regions[region.region] = region }
        return regions
    }

    func regionRecord(of id: UInt64, region: UInt64) -> RegionRecord? {
        read(getRegion.bind(.id(id), .id(region))) { try Self.record($0.blob(0)).region }
    }

    func placementRecords(of content: ContentID) -> [Int: PlacementRecord]? {
        guard holdsPlacements else { return nil }
        let records = readAll(placementsOf.bind(.text(content.hex))) { try Self.record($0.blob(0)).placement }
        guard !records.isEmpty else { return nil }
        var byChunk: [Int: PlacementRecord] = [:]
        for record in records { byChunk[record.chunk] = record }
        return byChunk
    }

    var holdsPlacements: Bool { placementCount > 0 }

    func contentOwner(_ id: ContentID) -> UInt64? {
        read(getOwner.bind(.text(id.hex))) { $0.uint64(0) }
    }

    // MARK: Listings

    /// A page of a directory's entries in four queries (entries with inodes, their regions, their names, their
    /// subdirectories) rather than several per entry. Rows are not cached: a listing would push out the inodes in use.
    func entries(of directory: UInt64, after: String?, limit: Int) -> [(name: String, inode: Inode)] {
        pageOfEntries(directory, after: after, limit: limit).entries
    }

    private func pageOfEntries(_ directory: UInt64, after: String?, limit: Int) -> (entries: [(name: String, inode: Inode)], bounds: [SQLiteValue]) {
        let from = SQLiteValue.text(after ?? "")
        let rows = readAll(inodesIn.bind(.id(directory), from, .integer(Int64(limit)))) { row in
            // No row: the root, which every catalog starts with.
            row.isNull(2) ? (name: row.text(0), inode: Inode.root) : try Self.record(row.blob(2)).inode.map { (name: row.text(0), inode: $0) }
        }
        // The names of the whole page: up to its last one, or every name when it holds all that is left.
        let bounds: [SQLiteValue] = [.id(directory), from, rows.count < limit ? .blob([0xFF]) : .text(rows.last?.name ?? "")]
        var regions: [UInt64: [RegionRecord]] = [:]
        for region in readAll(regionsIn.bind(bounds[0], bounds[1], bounds[2]), { try Self.record($0.blob(0)).region }) where !region.slices.isEmpty {
            regions[region.inode, default: []].append(region)
        }
        let entries = rows.map { name, stored in
            var inode = stored
            if let content = inode.content, holdsPlacements { inode.content = placed(content) }
            if let records = regions[inode.id] {
                inode.content = assembled(inode.content, regions: records.sorted { $0.region < $1.region }).map(placed)
            }
            return (name, inode)
        }
        return (entries, bounds)
    }

    /// Enough of an inode record to reach its kind: tag, id, clock, an origin address of up to 256 bytes.
    static let kindPrefixBytes = 1 + 8 + 8 + 4 + 256 + 1

    /// A page of names in one query: no record is decoded (the kind is read in place), no link counted.
    func names(of directory: UInt64, after: String?, limit: Int) -> [FSReply.NameEntry] {
        readAll(namesIn.bind(.id(directory), .text(after ?? ""), .integer(Int64(limit)))) { row in
            let id = row.uint64(1)
            // No row: the root, which every catalog starts with.
            let kind = row.isNull(2) ? Inode.root.kind : try row.withBlob(2) { bytes in
                guard let kind = CatalogRecord.inodeKind(inEncoded: bytes) else { throw SQLiteError(code: SQLITE_CORRUPT, message: "inode \(id): no kind") }
                return kind
            }
            return FSReply.NameEntry(name: row.text(0), inode: id, kind: kind)
        }
    }

    func listing(of directory: UInt64, after: String?, limit: Int) -> [(name: String, stat: InodeStat)] {
        let (entries, bounds) = pageOfEntries(directory, after: after, limit: limit)
        var names: [UInt64: Int] = [:]
        for (id, count) in readAll(nameCountsIn.bind(bounds[0], bounds[1], bounds[2]), { (id: $0.uint64(0), count: Int($0.int64(1))) }) {
            names[id] = count
        }
        var subdirectories: [UInt64: Int] = [:]
        for (id, count) in readAll(subdirectoriesIn.bind(bounds[0], bounds[1], bounds[2]), { (id: $0.uint64(0), count: Int($0.int64(1))) }) {
            subdirectories[id] = count
        }
        return entries.map { name, inode in
            let links = inode.kind == .directory ? 2 + (subdirectories[inode.id] ?? 0) : names[inode.id] ?? 0
            return (name, InodeStat(inode: inode, linkCount: links))
        }
    }

    // MARK: Scans

    /// Every live content stored in chunks, with current placements (for repair, scrubbing and the janitor): the
    /// owners of the tracked contents, which are only those in chunks.
    func liveContents() -> [FileContent] {
        let owners = readAll(chunkedOwners.bind()) { $0.uint64(0) }
        return owners.compactMap { inode($0)?.content }.flatMap(\.pieces).filter { !$0.chunks.isEmpty }
    }

    var fileCount: Int { liveInodeCount }

    /// Records with sequence numbers after `after` and at most `upTo`, in order, at most `limit`, with their
    /// encodings.
    func records(after: UInt64, upTo: UInt64, limit: Int) -> [(seq: UInt64, record: CatalogRecord, encoded: [UInt8])] {
        guard upTo > after else { return [] }
        let bounds: [SQLiteValue] = [.integer(Int64(after)), .integer(Int64(upTo)), .integer(Int64(limit))]
        func rows(_ statement: SQLiteStatement) -> [(seq: UInt64, record: CatalogRecord, encoded: [UInt8])] {
            readAll(statement.bind(bounds[0], bounds[1], bounds[2])) { row in
                let bytes = row.blob(1)
                return (seq: row.uint64(0), record: try Self.record(bytes), encoded: bytes)
            }
        }
        var all = rows(inodesAfter) + rows(regionsAfter) + rows(placementsAfter)
        all += readAll(direntsAfter.bind(bounds[0], bounds[1], bounds[2])) { row in
            let record = CatalogRecord(Dirent(parent: row.uint64(1), name: row.text(2), version: Version(clock: row.uint64(4), origin: row.text(5)),
                                              inode: row.isNull(3) ? nil : row.uint64(3)))
            return (seq: row.uint64(0), record: record, encoded: WireBinary.encode(record))
        }
        all.sort { $0.seq < $1.seq }
        return Array(all.prefix(limit))
    }

    // MARK: Garbage collection (the rules are `CatalogGC`'s)

    /// Tombstones and placements of contents no live file holds, with versions older than `clock`: the
    /// candidates for collection, oldest first, at most `limit` of each kind.
    func collectionCandidates(olderThan clock: UInt64, limit: Int) -> [CatalogRowVersion] {
        let bound = SQLiteValue.id(clock)
        var rows = readAll(removedDirents.bind(bound, .integer(Int64(limit)))) { row in
            CatalogRowVersion(.dirent(parent: row.uint64(0), name: row.text(1)), Version(clock: row.uint64(2), origin: row.text(3)))
        }
        rows += readAll(removedInodes.bind(bound, .integer(Int64(limit)))) { row in
            CatalogRowVersion(.inode(row.uint64(0)), Version(clock: row.uint64(1), origin: row.text(2)))
        }
        if holdsPlacements {
            rows += readAll(unusedPlacements.bind(bound, .integer(Int64(limit)))) { row in
                ContentID(row.text(0)).map {
                    CatalogRowVersion(.placement($0, chunk: Int(row.int64(1))), Version(clock: row.uint64(2), origin: row.text(3)))
                }
            }
        }
        return rows
    }

    /// What this catalog holds of a row another node asks about.
    func answer(_ asked: CatalogRowVersion) -> RowAnswer {
        switch asked.key {
        case .inode(let id):
            let mine = read(inodeVersion.bind(.id(id))) { Version(clock: $0.uint64(0), origin: $0.text(1)) }
            return CatalogGC.answer(holding: mine, asked: asked.version)
        case .dirent(let parent, let name):
            return CatalogGC.answer(holding: storedDirent(DirentKey(parent: parent, name: name))?.version, asked: asked.version)
        case .placement(let content, _):
            return contentOwner(content) == nil ? .absent : .inUse
        }
    }

    /// Drops the rows that still hold exactly these versions (and are still tombstones, or placements of unused
    /// contents); a removed inode goes with its regions' records. Returns how many records went.
    func collect(_ rows: [CatalogRowVersion]) throws -> Int {
        var dropped = 0
        for row in rows {
            let clock = SQLiteValue.id(row.version.clock), origin = SQLiteValue.text(row.version.origin)
            switch row.key {
            case .dirent(let parent, let name):
                try dropDirent.bind(.id(parent), .text(name), clock, origin).run()
                dropped += database.changes
            case .inode(let id):
                guard id != Inode.rootID, parentIDs(of: id).isEmpty else { continue }
                try checkRead()
                try dropInode.bind(.id(id), clock, origin).run()
                guard database.changes > 0 else { continue }
                inodeCache[id] = nil
                try dropRegionsOf.bind(.id(id)).run()  // a removed inode's regions hold nothing (released with it)
                dropped += 1 + database.changes
            case .placement(let content, let chunk):
                try dropPlacement.bind(.text(content.hex), .integer(Int64(chunk)), clock, origin).run()
                let changed = database.changes
                dropped += changed
                placementCount -= changed
            }
        }
        recordCount -= dropped
        return dropped
    }

    /// One page of the live inodes and names with versions older than `clock`, in key order after `cursor` (nil:
    /// from the start): what a returning member checks against a peer. Returns the rows and the next cursor.
    func liveRows(olderThan clock: UInt64, after cursor: CatalogKey?, limit: Int) -> (rows: [CatalogRowVersion], next: CatalogKey?) {
        let bound = SQLiteValue.id(clock)
        let direntsStart = CatalogKey.dirent(parent: UInt64(bitPattern: Int64.min), name: "")
        if case .dirent = cursor {} else {
            var after = Int64.min
            if case .inode(let id) = cursor { after = Int64(bitPattern: id) }
            let rows = readAll(liveInodesPage.bind(bound, .integer(after), .integer(Int64(limit)))) { row in
                CatalogRowVersion(.inode(row.uint64(0)), Version(clock: row.uint64(1), origin: row.text(2)))
            }
            let next = rows.count == limit ? rows.last!.key : direntsStart
            let kept = rows.filter { $0.key != .inode(Inode.rootID) }  // the root is never removed
            if !kept.isEmpty || rows.count == limit { return (kept, next) }
        }
        var (parent, name) = (Int64.min, "")
        if case .dirent(let p, let n) = cursor { (parent, name) = (Int64(bitPattern: p), n) }
        let rows = readAll(liveDirentsPage.bind(bound, .integer(parent), .text(name), .integer(Int64(limit)))) { row in
            CatalogRowVersion(.dirent(parent: row.uint64(0), name: row.text(1)), Version(clock: row.uint64(2), origin: row.text(3)))
        }
        return (rows, rows.count == limit ? rows.last.map(\.key) : nil)
    }

    /// The tombstone that replaces a stale row (found by a sweep), if the row still holds that version.
    func sweepTombstone(for row: CatalogRowVersion) -> CatalogRecord? {
        let version = CatalogGC.sweepVersion(after: row.version)
        switch row.key {
        case .inode(let id):
            guard id != Inode.rootID, var inode = storedInode(id), inode.version == row.version, !inode.deleted else { return nil }
            inode = Self.tombstone(of: inode)
            inode.version = version
            return CatalogRecord(inode)
        case .dirent(let parent, let name):
            guard let dirent = storedDirent(DirentKey(parent: parent, name: name)), dirent.version == row.version, dirent.inode != nil else { return nil }
            return CatalogRecord(Dirent(parent: parent, name: name, version: version, inode: nil))
        case .placement:
            return nil
        }
    }

    /// The store's size as SQLite sees it (its pages, those still in the write-ahead log included) and the part of
    /// it that is free pages.
    var logicalBytes: (total: Int, free: Int) {
        let pageSize = (try? count("PRAGMA page_size")) ?? 4096
        return (((try? count("PRAGMA page_count")) ?? 0) * pageSize, ((try? count("PRAGMA freelist_count")) ?? 0) * pageSize)
    }

    /// Gives up to `pages` free pages back to the file system (incremental auto-vacuum; nothing in a store made
    /// before it was turned on).
    func reclaimFreePages(_ pages: Int) throws {
        try database.execute("PRAGMA incremental_vacuum(\(pages))")
    }

    /// Meta values whose names start with `prefix`, by name (the prefix cut off).
    func metaEntries(prefix: String) -> [(name: String, value: String)] {
        readAll(metaRange.bind(.text(prefix), .text(prefix + "\u{10FFFF}"))) { row in
            (name: String(row.text(0).dropFirst(prefix.count)), value: row.text(1))
        }
    }

    func removeMeta(_ name: String) throws {
        try deleteMeta.bind(.text(name)).run()
    }
}
