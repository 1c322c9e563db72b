/// The whole file-system catalog as one node holds it: inodes and directory entries, merged by version.
/// Pure state: persistence and locking belong to the node.
public struct Catalog: CatalogView, Sendable {
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
            if let current, !current.deleted { release(current.content?.pieces ?? []) }
            // A live inode holds its regions' slices: dropped with it, held again if a later change revives it.
            if wasLive, inode.deleted {
                for region in (regions[inode.id] ?? [:]).values { release(Self.sources(of: region.slices)) }
            } else if !wasLive, !inode.deleted {
                for region in (regions[inode.id] ?? [:]).values { retain(Self.sources(of: region.slices), by: inode.id) }
            }
            let wasDirectory = isLiveDirectory(inode.id)
            inodes[inode.id] = inode
            let isDirectory = isLiveDirectory(inode.id)
            if wasDirectory != isDirectory {
                for parent in parents[inode.id] ?? [] { subdirectories[parent, default: 0] += isDirectory ? 1 : -1 }
            }
            if !inode.deleted { retain(inode.content?.pieces ?? [], by: inode.id) }
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

    /// The contents a region's slices read from, each once.
    public static func sources(of slices: [ContentSlice]) -> [FileContent] {
        var seen = Set<ContentID>()
        return slices.compactMap { seen.insert($0.source.id).inserted ? $0.source : nil }
    }

    /// The pieces whose chunk files a record keeps alive: only contents stored in chunks are tracked (an inline
    /// content has no chunk to check or collect).
    public static func tracked(_ pieces: [FileContent]) -> [FileContent] { pieces.filter { !$0.chunks.isEmpty } }

    private mutating func retain(_ pieces: [FileContent], by inode: UInt64) {
        for id in Self.tracked(pieces).map(\.id) {
            contentOwners[id] = inode
            contentReferences[id, default: 0] += 1
        }
    }

    private mutating func release(_ pieces: [FileContent]) {
        for id in Self.tracked(pieces).map(\.id) {
            let count = (contentReferences[id] ?? 1) - 1
            if count <= 0 {
                contentReferences[id] = nil
                contentOwners[id] = nil
            } else {
                contentReferences[id] = count
            }
        }
    }

    private func isLiveDirectory(_ id: UInt64) -> Bool {
        guard let inode = inodes[id] else { return false }
        return inode.kind == .directory && !inode.deleted
    }

    // MARK: CatalogView: the primitive reads, from the maps

    public func storedInode(_ id: UInt64) -> Inode? { inodes[id] }
    public func storedDirent(_ key: DirentKey) -> Dirent? { dirents[key] }
    public func childID(of parent: UInt64, named name: String) -> UInt64? { children[parent]?[name] }
    public func childIDs(of directory: UInt64) -> [(name: String, inode: UInt64)] {
        (children[directory] ?? [:]).map { ($0.key, $0.value) }
    }
    public func nameCount(of id: UInt64) -> Int { names[id] ?? 0 }
    public func parentIDs(of id: UInt64) -> [UInt64] { parents[id] ?? [] }
    public func subdirectoryCount(of directory: UInt64) -> Int { subdirectories[directory] ?? 0 }
    public func regionRecords(of id: UInt64) -> [UInt64: RegionRecord] { regions[id] ?? [:] }
    public func regionRecord(of id: UInt64, region: UInt64) -> RegionRecord? { regions[id]?[region] }
    public func placementRecords(of content: ContentID) -> [Int: PlacementRecord]? { placements[content] }
    public var holdsPlacements: Bool { !placements.isEmpty }
    public func contentOwner(_ id: ContentID) -> UInt64? { contentOwners[id] }

    /// Content ids referenced by live inodes (chunks of anything else are garbage).
    public func liveContentIDs() -> Set<ContentID> { Set(contentOwners.keys) }

    /// Every live content (for repair and scrubbing).
    public func liveContents() -> [FileContent] {
        Set(contentOwners.values).compactMap { inode($0)?.content }.flatMap(\.pieces)
    }

    public var fileCount: Int { inodes.values.lazy.filter { !$0.deleted }.count }
}
