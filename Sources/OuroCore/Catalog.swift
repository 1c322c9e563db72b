/// The whole file-system catalog as one node holds it: inodes and directory entries, merged by version.
/// Pure state: persistence and locking belong to the node.
public struct Catalog: Sendable {
    public private(set) var inodes: [UInt64: Inode] = [Inode.rootID: .root]
    public private(set) var dirents: [DirentKey: Dirent] = [:]
    /// Live names per directory: parent → name → inode.
    private var children: [UInt64: [String: UInt64]] = [:]
    /// Live names per inode (hard links).
    private var names: [UInt64: Int] = [:]
    /// The directories whose live entries name each inode (kept so a directory's link count needs no scan).
    private var parents: [UInt64: [UInt64]] = [:]
    /// Live subdirectories per directory: `st_nlink` is 2 + this, asked on every stat of the directory.
    private var subdirectories: [UInt64: Int] = [:]
    /// Which inode holds each content (to check a chunk against its recorded checksum), and how many of its records
    /// (its own, its regions') refer to it: a content is live while any does.
    private var contentOwners: [ContentID: UInt64] = [:]
    private var contentReferences: [ContentID: Int] = [:]
    /// Slices written in place, by inode and region (see `RegionRecord`).
    public private(set) var regions: [UInt64: [UInt64: RegionRecord]] = [:]
    /// Chunk placements changed after their push, by content.
    public private(set) var placements: [ContentID: [Int: PlacementRecord]] = [:]

    public init() {}

    /// Merges one record; returns whether it changed anything (an older or equal version is ignored).
    @discardableResult
    public mutating func apply(_ record: CatalogRecord) -> Bool {
        if let placement = record.placement {
            if let current = placements[placement.content]?[placement.chunk], current.version >= placement.version { return false }
            placements[placement.content, default: [:]][placement.chunk] = placement
            return true
        }
        if let region = record.region {
            let current = regions[region.inode]?[region.region]
            if let current, current.version >= region.version { return false }
            // An inode not heard of yet counts as live (sync may bring its regions first); a removed one holds nothing.
            let live = inodes[region.inode].map { !$0.deleted } ?? true
            if let current, live { release(Self.sources(of: current.slices)) }
            regions[region.inode, default: [:]][region.region] = region  // no slices: a tombstone
            if live { retain(Self.sources(of: region.slices), by: region.inode) }
            return true
        }
        if let inode = record.inode {
            let current = inodes[inode.id]
            if let current, current.version >= inode.version { return false }
            let wasLive = current.map { !$0.deleted } ?? true
            if let current, !current.deleted { release(current.content?.pieces.map(\.id) ?? []) }
            if wasLive, inode.deleted {
                for region in (regions[inode.id] ?? [:]).values { release(Self.sources(of: region.slices)) }
            }
            let wasDirectory = isLiveDirectory(inode.id)
            inodes[inode.id] = inode
            let isDirectory = isLiveDirectory(inode.id)
            if wasDirectory != isDirectory {
                for parent in parents[inode.id] ?? [] { subdirectories[parent, default: 0] += isDirectory ? 1 : -1 }
            }
            if !inode.deleted { retain(inode.content?.pieces.map(\.id) ?? [], by: inode.id) }
            return true
        }
        guard let dirent = record.dirent else { return false }
        let key = dirent.key
        let previous = dirents[key]
        if let previous, previous.version >= dirent.version { return false }
        if let old = previous?.inode {
            children[key.parent]?[key.name] = nil
            names[old, default: 1] -= 1
            if let index = parents[old]?.firstIndex(of: key.parent) { parents[old]!.remove(at: index) }
            if parents[old]?.isEmpty == true { parents[old] = nil }
            if isLiveDirectory(old) { subdirectories[key.parent, default: 0] -= 1 }
        }
        dirents[key] = dirent
        if let new = dirent.inode {
            children[key.parent, default: [:]][key.name] = new
            names[new, default: 0] += 1
            parents[new, default: []].append(key.parent)
            if isLiveDirectory(new) { subdirectories[key.parent, default: 0] += 1 }
        }
        return true
    }

    static func sources(of slices: [ContentSlice]) -> [ContentID] {
        var seen = Set<ContentID>()
        return slices.compactMap { seen.insert($0.source.id).inserted ? $0.source.id : nil }
    }

    private mutating func retain(_ ids: [ContentID], by inode: UInt64) {
        for id in ids {
            contentOwners[id] = inode
            contentReferences[id, default: 0] += 1
        }
    }

    private mutating func release(_ ids: [ContentID]) {
        for id in ids {
            let count = (contentReferences[id] ?? 1) - 1
            if count <= 0 {
                contentReferences[id] = nil
                contentOwners[id] = nil
            } else {
                contentReferences[id] = count
            }
        }
    }

    /// Whether this catalog holds exactly this record now (nothing newer replaced it).
    public func holds(_ record: CatalogRecord) -> Bool {
        if let inode = record.inode { return inodes[inode.id]?.version == inode.version }
        if let dirent = record.dirent { return dirents[dirent.key]?.version == dirent.version }
        if let placement = record.placement { return placements[placement.content]?[placement.chunk]?.version == placement.version }
        if let region = record.region { return regions[region.inode]?[region.region]?.version == region.version }
        return false
    }

    /// The live region records of an inode, in region order.
    public func liveRegions(of id: UInt64) -> [RegionRecord] {
        guard let byRegion = regions[id] else { return [] }
        return byRegion.values.filter { !$0.slices.isEmpty }.sorted { $0.region < $1.region }
    }

    /// An inode's content with the slices of its regions on top: what its bytes are.
    func assembled(_ content: FileContent?, regions records: [RegionRecord]) -> FileContent? {
        guard let content, !records.isEmpty else { return content }
        var slices = content.asSlices
        for record in records { slices += record.slices }
        return FileContent(id: content.id, sizeBytes: content.sizeBytes, slices: slices.compactMap { $0.clipped(from: 0, to: content.sizeBytes) },
                           start: content.start)
    }

    private func isLiveDirectory(_ id: UInt64) -> Bool {
        guard let inode = inodes[id] else { return false }
        return inode.kind == .directory && !inode.deleted
    }

    public func inode(_ id: UInt64) -> Inode? {
        guard var inode = baseInode(id) else { return nil }
        if regions[id] != nil { inode.content = assembled(inode.content, regions: liveRegions(of: id)).map(placed) }
        return inode
    }

    /// The inode as its own record holds it: its content without the slices its regions add (what a change of the
    /// inode writes back).
    public func baseInode(_ id: UInt64) -> Inode? {
        guard var inode = inodes[id], !inode.deleted else { return nil }
        if let content = inode.content, !placements.isEmpty { inode.content = placed(content) }
        return inode
    }

    /// The content with its current placement (re-replicated chunks point at their new holders).
    func placed(_ content: FileContent) -> FileContent {
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
        guard let moved = placements[content.id] else { return content }
        var content = content
        for (index, placement) in moved where index < content.chunks.count {
            content.chunks[index].holders = placement.holders
        }
        return content
    }

    /// The live content with this id, if any inode still uses it.
    public func content(_ id: ContentID) -> FileContent? {
        guard let whole = contentOwners[id].flatMap({ inode($0)?.content }) else { return nil }
        return whole.pieces.first(where: { $0.id == id }).map(placed)
    }

    public func lookup(parent: UInt64, name: String) -> Inode? {
        children[parent]?[name].flatMap { inode($0) }
    }

    /// Live entries of a directory, sorted by name.
    public func entries(of directory: UInt64) -> [(name: String, inode: Inode)] {
        (children[directory] ?? [:]).compactMap { name, id in inode(id).map { (name, $0) } }.sorted { $0.name < $1.name }
    }

    public func hasEntries(_ directory: UInt64) -> Bool {
        (children[directory] ?? [:]).values.contains { inode($0) != nil }
    }

    /// Whether any live directory entry names this inode.
    public func isNamed(_ id: UInt64) -> Bool { (names[id] ?? 0) > 0 }

    /// `st_nlink`: names for a file; 2 + subdirectories for a directory.
    public func linkCount(of inode: Inode) -> Int {
        if inode.kind == .directory { return 2 + (subdirectories[inode.id] ?? 0) }
        return names[inode.id] ?? 0
    }

    public func stat(_ inode: Inode) -> InodeStat { InodeStat(inode: inode, linkCount: linkCount(of: inode)) }

    /// Follows a path from the root (no symlinks).
    public func resolve(_ path: PathName) -> Inode? {
        var current = inodes[Inode.rootID]!
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

    /// Is `ancestor` the directory `inode` or one of its ancestors? (A directory cannot move into itself.)
    public func isAncestor(_ ancestor: UInt64, of inode: UInt64) -> Bool {
        var parentOf: [UInt64: UInt64] = [:]
        for (key, dirent) in dirents {
            if let child = dirent.inode, self.inode(child)?.kind == .directory { parentOf[child] = key.parent }
        }
        var current: UInt64? = inode
        var steps = 0
        while let node = current, steps < 10_000 {
            if node == ancestor { return true }
            current = parentOf[node]
            steps += 1
        }
        return false
    }

    /// Content ids referenced by live inodes (chunks of anything else are garbage).
    public func liveContentIDs() -> Set<ContentID> { Set(contentOwners.keys) }

    /// Every live content (for repair and scrubbing).
    public func liveContents() -> [FileContent] {
        Set(contentOwners.values).compactMap { inode($0)?.content }.flatMap(\.pieces)
    }

    public var fileCount: Int { inodes.values.lazy.filter { !$0.deleted }.count }
}
