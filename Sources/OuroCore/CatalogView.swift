/// What a catalog answers from its records: the primitive reads that every derived read below and every operation
/// (`Catalog+Operations.swift`) is built on. The in-memory `Catalog` answers from its maps; a store on disk can
/// answer the same from its tables, so the operations stay pure functions over either.
public protocol CatalogView {
    /// The inode as recorded, a removed one (a tombstone) included.
    func storedInode(_ id: UInt64) -> Inode?
    /// The directory entry as recorded (a removed name is an entry with no inode).
    func storedDirent(_ key: DirentKey) -> Dirent?
    /// The inode a live name in `parent` points at.
    func childID(of parent: UInt64, named name: String) -> UInt64?
    /// The live names of a directory with their inodes, in any order.
    func childIDs(of directory: UInt64) -> [(name: String, inode: UInt64)]
    /// How many live directory entries name this inode.
    func nameCount(of id: UInt64) -> Int
    /// The directories holding a live entry that names this inode (one per entry).
    func parentIDs(of id: UInt64) -> [UInt64]
    /// How many live directories a directory holds (`st_nlink` is 2 + this).
    func subdirectoryCount(of directory: UInt64) -> Int
    /// An inode's region records by region index, tombstones (no slices) included.
    func regionRecords(of id: UInt64) -> [UInt64: RegionRecord]
    func regionRecord(of id: UInt64, region: UInt64) -> RegionRecord?
    /// The chunk placements recorded for a content after its push, by chunk index; nil if none.
    func placementRecords(of content: ContentID) -> [Int: PlacementRecord]?
    /// Whether any placement is recorded at all (most catalogs hold none: reads then skip the lookups).
    var holdsPlacements: Bool { get }
    /// The inode whose content (its own or a region's slice) is this content.
    func contentOwner(_ id: ContentID) -> UInt64?
    /// Live entries of a directory with their inodes (as `inode(_:)` gives them), in the byte order of their names
    /// (UTF-8), from the first name after `after` (nil: from the start), at most `limit`. Derived from the reads
    /// above (the default below); a store answers a page in a few queries.
    func entries(of directory: UInt64, after: String?, limit: Int) -> [(name: String, inode: Inode)]
    /// `entries(of:after:limit:)` with each entry's attributes (its link count).
    func listing(of directory: UInt64, after: String?, limit: Int) -> [(name: String, stat: InodeStat)]
    /// `entries(of:after:limit:)` with only each entry's inode number and kind (a plain `readdir`).
    func names(of directory: UInt64, after: String?, limit: Int) -> [FSReply.NameEntry]
}

extension CatalogView {
    /// Whether this catalog holds exactly this record now (nothing newer replaced it).
    public func holds(_ record: CatalogRecord) -> Bool {
        if let inode = record.inode { return storedInode(inode.id)?.version == inode.version }
        if let dirent = record.dirent { return storedDirent(dirent.key)?.version == dirent.version }
        if let placement = record.placement { return placementRecords(of: placement.content)?[placement.chunk]?.version == placement.version }
        if let region = record.region { return regionRecord(of: region.inode, region: region.region)?.version == region.version }
        return false
    }

    /// The live region records of an inode, in region order.
    public func liveRegions(of id: UInt64) -> [RegionRecord] {
        regionRecords(of: id).values.filter { !$0.slices.isEmpty }.sorted { $0.region < $1.region }
    }

    /// An inode's content with the slices of its regions on top: what its bytes are.
    public func assembled(_ content: FileContent?, regions records: [RegionRecord]) -> FileContent? {
        guard let content, !records.isEmpty else { return content }
        var slices = content.asSlices
        for record in records { slices += record.slices }
        return FileContent(id: content.id, sizeBytes: content.sizeBytes, slices: slices.compactMap { $0.clipped(from: 0, to: content.sizeBytes) },
                           start: content.start)
    }

    /// The live inode with all its bytes: its content, its regions' slices on top, current placements.
    public func inode(_ id: UInt64) -> Inode? {
        guard var inode = baseInode(id) else { return nil }
        let regions = liveRegions(of: id)
        if !regions.isEmpty { inode.content = assembled(inode.content, regions: regions).map(placed) }
        return inode
    }

    /// The inode as its own record holds it: its content without the slices its regions add (what a change of the
    /// inode writes back).
    public func baseInode(_ id: UInt64) -> Inode? {
        guard var inode = storedInode(id), !inode.deleted else { return nil }
        if let content = inode.content, holdsPlacements { inode.content = placed(content) }
        return inode
    }

    /// The content with its current placement (re-replicated chunks point at their new holders).
    public func placed(_ content: FileContent) -> FileContent {
        if let slices = content.slices {
            var content = content
            content.slices = slices.map { slice in
                var slice = slice
                slice.source = placed(slice.source)
                return slice
            }
            return content
        }
        if let segments = content.segments {
            var content = content
            content.segments = segments.map(placed)
            return content
        }
        guard let moved = placementRecords(of: content.id) else { return content }
        var content = content
        for (index, placement) in moved where index < content.chunks.count {
            content.chunks[index].holders = placement.holders
        }
        return content
    }

    /// The live content with this id, if any inode still uses it.
    public func content(_ id: ContentID) -> FileContent? {
        guard let whole = contentOwner(id).flatMap({ inode($0)?.content }) else { return nil }
        return whole.pieces.first(where: { $0.id == id }).map(placed)
    }

    public func lookup(parent: UInt64, name: String) -> Inode? {
        childID(of: parent, named: name).flatMap { inode($0) }
    }

    public func entries(of directory: UInt64, after: String?, limit: Int) -> [(name: String, inode: Inode)] {
        let sorted = childIDs(of: directory).filter { after == nil || Self.precedes(after!, $0.name) }
            .sorted { Self.precedes($0.name, $1.name) }
        return Array(sorted.lazy.compactMap { name, id in inode(id).map { (name, $0) } }.prefix(limit))
    }

    public func listing(of directory: UInt64, after: String?, limit: Int) -> [(name: String, stat: InodeStat)] {
        entries(of: directory, after: after, limit: limit).map { ($0.name, stat($0.inode)) }
    }

    public func names(of directory: UInt64, after: String?, limit: Int) -> [FSReply.NameEntry] {
        entries(of: directory, after: after, limit: limit).map { FSReply.NameEntry(name: $0.name, inode: $0.inode.id, kind: $0.inode.kind) }
    }

    /// Every live entry of a directory, in name order.
    public func entries(of directory: UInt64) -> [(name: String, inode: Inode)] { entries(of: directory, after: nil, limit: .max) }

    public func listing(of directory: UInt64) -> [(name: String, stat: InodeStat)] { listing(of: directory, after: nil, limit: .max) }

    /// The order of names in listings: their UTF-8 bytes (as SQLite compares text), so that a page's last name is a
    /// cursor any catalog understands.
    public static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    public func hasEntries(_ directory: UInt64) -> Bool {
        childIDs(of: directory).contains { baseInode($0.inode) != nil }
    }

    /// Whether any live directory entry names this inode.
    public func isNamed(_ id: UInt64) -> Bool { nameCount(of: id) > 0 }

    /// `st_nlink`: names for a file; 2 + subdirectories for a directory.
    public func linkCount(of inode: Inode) -> Int {
        inode.kind == .directory ? 2 + subdirectoryCount(of: inode.id) : nameCount(of: inode.id)
    }

    public func stat(_ inode: Inode) -> InodeStat { InodeStat(inode: inode, linkCount: linkCount(of: inode)) }

    /// Follows a path from the root (no symlinks).
    public func resolve(_ path: PathName) -> Inode? {
        guard var current = inode(Inode.rootID) else { return nil }
        for component in path.components {
            guard current.kind == .directory, let next = lookup(parent: current.id, name: component) else { return nil }
            current = next
        }
        return current
    }

    /// Every live regular file with its full path, depth first in name order (for `FILE LIST`).
    public func allFiles() -> [(path: String, inode: Inode)] {
        var result: [(String, Inode)] = []
        var visited = Set<UInt64>()
        func walk(_ directory: UInt64, prefix: String) {
            guard visited.insert(directory).inserted else { return }
            for (name, inode) in entries(of: directory) {
                let path = prefix.isEmpty ? name : prefix + "/" + name
                switch inode.kind {
                case .directory: walk(inode.id, prefix: path)
                case .file: result.append((path, inode))
                default: break
                }
            }
        }
        walk(Inode.rootID, prefix: "")
        return result
    }

    /// Is `ancestor` the directory `inode` or one of its ancestors? (A directory cannot move into itself.) Walks up
    /// through the directories naming each one: the depth, not the catalog. A directory has one name, but
    /// concurrent renames merged from two nodes can leave two for a while: every one is followed.
    public func isAncestor(_ ancestor: UInt64, of inode: UInt64) -> Bool {
        var pending = [inode]
        var seen = Set<UInt64>()
        while let node = pending.popLast(), seen.count < 100_000 {
            if node == ancestor { return true }
            guard seen.insert(node).inserted else { continue }
            pending += parentIDs(of: node)
        }
        return false
    }
}
