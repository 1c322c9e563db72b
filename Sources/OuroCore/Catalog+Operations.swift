import Foundation

/// The metadata operations, as pure functions from the current catalog to the records that carry them out.
/// The node applies the records, stores them, and sends them to every other node.
extension Catalog {
    /// What one mutation produces: records to apply, and the inode whose attributes the caller gets back.
    public struct Change: Sendable {
        public var records: [CatalogRecord]
        public var resultInode: UInt64?
    }

    public enum RenameFlags {
        public static let noReplace: UInt32 = 1
        public static let exchange: UInt32 = 2
    }

    public enum XattrFlags {
        public static let create: UInt32 = 1
        public static let replace: UInt32 = 2
    }

    static func derivedDirectoryID(parent: UInt64, name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(parent)/\(name)".utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return 2 + hash % ((UInt64(1) << 62) - 2)
    }

    /// Group and permissions of an inode made in `directory`: in a set-group-ID directory it takes the directory's
    /// group, and a new directory keeps the bit, as on Linux file systems (shared project directories rely on it).
    static func inherited(from directory: Inode, kind: InodeKind, permissions: UInt32, gid: UInt32) -> (permissions: UInt32, gid: UInt32) {
        let setGroupID: UInt32 = 0o2000
        guard directory.permissions & setGroupID != 0 else { return (permissions, gid) }
        return (kind == .directory ? permissions | setGroupID : permissions, directory.gid)
    }
}

/// The operations read the catalog through `CatalogView` only, so that they run on the in-memory catalog and on a
/// store alike.
extension CatalogView {
    /// The live inode `id`; GONE if this catalog holds its removal, NOT_FOUND if it never heard of it (a node
    /// that has not caught up may not know a new inode yet: only GONE says that the file was removed).
    public func existing(_ id: UInt64?) throws(OuroError) -> Inode {
        guard let id else { throw .notFound("no such inode") }
        guard let inode = baseInode(id) else {
            if storedInode(id)?.deleted == true { throw OuroError(.gone, "inode \(id) was removed") }
            throw .notFound("no such inode")
        }
        return inode
    }

    /// The live inode `id` with all its bytes (its regions' slices on top of its content): what a reader gets.
    public func existingWithContent(_ id: UInt64?) throws(OuroError) -> Inode {
        let base = try existing(id)
        return inode(base.id) ?? base
    }

    func directory(_ id: UInt64?) throws(OuroError) -> Inode {
        let inode = try existing(id)
        guard inode.kind == .directory else { throw OuroError(.notDir, "not a directory") }
        return inode
    }

    /// A parent directory with its times bumped, because an entry in it changed.
    func touched(_ directory: Inode, _ version: Version, _ nowNs: Int64) -> CatalogRecord {
        var changed = directory
        changed.version = version
        changed.mtimeNs = nowNs
        changed.ctimeNs = nowNs
        return CatalogRecord(changed)
    }

    /// The inode number for a new directory: derived from its parent and name, so that two nodes creating the same
    /// directory at the same time create the same inode and their entries merge instead of one orphaning the
    /// other's files. If that number is taken by a live inode (the directory was moved away), a random one, unless
    /// `unnamedDirectory` says it is this very directory whose name has not arrived yet.
    public func directoryID(parent: UInt64, name: String, otherwise random: () -> UInt64) -> UInt64 {
        let id = Catalog.derivedDirectoryID(parent: parent, name: name)
        return inode(id) == nil || unnamedDirectory(parent: parent, name: name) != nil ? id : random()
    }

    /// The directory another node created as `parent`/`name`, when this node has heard of changes inside it (a file
    /// put into it touches it) but not yet of its name: a live directory with the number derived from that parent
    /// and name, named nowhere, and no record at all of that name here (not even a removal: a directory renamed
    /// away whose new name has not arrived must not be taken for it). Creating that name again means this directory.
    func unnamedDirectory(parent: UInt64, name: String) -> Inode? {
        let id = Catalog.derivedDirectoryID(parent: parent, name: name)
        guard let existing = inode(id), existing.kind == .directory, !isNamed(id),
              storedDirent(DirentKey(parent: parent, name: name)) == nil else { return nil }
        return existing
    }

    /// Creates a new name for a new inode (mkdir, mknod, create, symlink).
    public func planCreate(parent: UInt64?, name: String?, kind: InodeKind, permissions: UInt32, uid: UInt32, gid: UInt32,
                           rdev: UInt32 = 0, symlinkTarget: String? = nil, version: Version, nowNs: Int64,
                           newID: UInt64) throws(OuroError) -> Catalog.Change {
        let directory = try directory(parent)
        let name = try PathName.validComponent(name ?? "")
        guard lookup(parent: directory.id, name: name) == nil else { throw OuroError(.exists, "\(name) exists") }
        let id = kind == .directory ? directoryID(parent: directory.id, name: name, otherwise: { newID }) : newID
        let (permissions, gid) = Catalog.inherited(from: directory, kind: kind, permissions: permissions, gid: gid)
        let inode = Inode(id: id, version: version, kind: kind, permissions: permissions, uid: uid, gid: gid,
                          rdev: rdev, timeNs: nowNs, symlinkTarget: symlinkTarget)
        return Catalog.Change(records: [CatalogRecord(inode),
                                CatalogRecord(Dirent(parent: directory.id, name: name, version: version, inode: id)),
                                touched(directory, version, nowNs)],
                      resultInode: id)
    }

    /// A regular file a mount created on its side and names only at its first close (`FS CREATE`), with the inode
    /// number the mount gave it and, for a small file, its bytes: create, write and close in one commit. A name
    /// that another client created meanwhile is replaced, as its concurrent `open(O_CREAT|O_TRUNC)` and write would
    /// have been: the last close wins. Repeating the call (a retry after a lost answer) changes nothing more.
    public func planCreateFile(parent: UInt64?, name: String?, id: UInt64?, permissions: UInt32, uid: UInt32, gid: UInt32,
                               content: FileContent?, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        let directory = try directory(parent)
        let name = try PathName.validComponent(name ?? "")
        guard let id, id >= 2 else { throw .badRequest("CREATE needs the new inode number") }
        let current = lookup(parent: directory.id, name: name)
        if storedInode(id) != nil {
            guard current?.id == id else { throw OuroError(.exists, "inode \(id) is taken") }
            return Catalog.Change(records: [], resultInode: id)
        }
        var records: [CatalogRecord] = []
        if let current {
            guard current.kind != .directory else { throw OuroError(.isDir, "\(name) is a directory") }
            // The replaced file loses this name (and is gone if it was its last); the entry itself is rewritten below.
            var replaced = current
            replaced.version = version
            replaced.ctimeNs = nowNs
            if linkCount(of: current) <= 1 { replaced = Self.tombstone(of: replaced) }
            records.append(CatalogRecord(replaced))
        }
        let (permissions, gid) = Catalog.inherited(from: directory, kind: .file, permissions: permissions, gid: gid)
        var inode = Inode(id: id, version: version, kind: .file, permissions: permissions, uid: uid, gid: gid, timeNs: nowNs)
        inode.content = content
        records += [CatalogRecord(inode), CatalogRecord(Dirent(parent: directory.id, name: name, version: version, inode: id)),
                    touched(directory, version, nowNs)]
        return Catalog.Change(records: records, resultInode: id)
    }

    /// Adds a name for an existing non-directory inode (a hard link).
    public func planLink(inode id: UInt64?, newParent: UInt64?, newName: String?, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(id)
        guard inode.kind != .directory else { throw OuroError(.denied, "hard links to directories are not allowed") }
        let directory = try directory(newParent)
        let name = try PathName.validComponent(newName ?? "")
        guard lookup(parent: directory.id, name: name) == nil else { throw OuroError(.exists, "\(name) exists") }
        inode.version = version
        inode.ctimeNs = nowNs
        return Catalog.Change(records: [CatalogRecord(inode),
                                CatalogRecord(Dirent(parent: directory.id, name: name, version: version, inode: inode.id)),
                                touched(directory, version, nowNs)],
                      resultInode: inode.id)
    }

    /// Records that drop one name of `inode`, and the inode itself when that was its last name.
    func planDropName(_ key: DirentKey, of inode: Inode, version: Version, nowNs: Int64) -> [CatalogRecord] {
        var records = [CatalogRecord(Dirent(parent: key.parent, name: key.name, version: version, inode: nil))]
        var changed = inode
        changed.version = version
        changed.ctimeNs = nowNs
        if inode.kind == .directory || linkCount(of: inode) <= 1 { changed = Self.tombstone(of: changed) }
        records.append(CatalogRecord(changed))
        return records
    }

    /// A removed inode as kept for merging: its bytes are not (nothing reads a removed inode's content, and a
    /// tombstone of a small file would otherwise carry its inline bytes on every node for good).
    public static func tombstone(of inode: Inode) -> Inode {
        var tombstone = inode
        tombstone.deleted = true
        tombstone.content = nil
        return tombstone
    }

    public func planUnlink(parent: UInt64?, name: String?, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        let directory = try directory(parent)
        let name = try PathName.validComponent(name ?? "")
        guard let inode = lookup(parent: directory.id, name: name) else { throw .notFound("\(name) not found") }
        guard inode.kind != .directory else { throw OuroError(.isDir, "\(name) is a directory") }
        return Catalog.Change(records: planDropName(DirentKey(parent: directory.id, name: name), of: inode, version: version, nowNs: nowNs)
                          + [touched(directory, version, nowNs)],
                      resultInode: nil)
    }

    public func planRmdir(parent: UInt64?, name: String?, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        let directory = try directory(parent)
        let name = try PathName.validComponent(name ?? "")
        guard let inode = lookup(parent: directory.id, name: name) else { throw .notFound("\(name) not found") }
        guard inode.kind == .directory else { throw OuroError(.notDir, "\(name) is not a directory") }
        guard !hasEntries(inode.id) else { throw OuroError(.notEmpty, "\(name) is not empty") }
        return Catalog.Change(records: planDropName(DirentKey(parent: directory.id, name: name), of: inode, version: version, nowNs: nowNs)
                          + [touched(directory, version, nowNs)],
                      resultInode: nil)
    }

    /// rename(2)/renameat2: one batch of records, so every node switches over at once.
    public func planRename(parent: UInt64?, name: String?, newParent: UInt64?, newName: String?, flags: UInt32,
                           version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        let from = try directory(parent)
        let to = try directory(newParent)
        let name = try PathName.validComponent(name ?? "")
        let newName = try PathName.validComponent(newName ?? "")
        guard var source = lookup(parent: from.id, name: name) else { throw .notFound("\(name) not found") }
        let target = lookup(parent: to.id, name: newName)
        if let target, target.id == source.id { return Catalog.Change(records: [], resultInode: source.id) }
        if source.kind == .directory, isAncestor(source.id, of: to.id) {
            throw .badRequest("cannot move a directory into itself")
        }
        source.version = version
        source.ctimeNs = nowNs
        var records: [CatalogRecord] = []
        if flags & Catalog.RenameFlags.exchange != 0 {
            guard var other = target else { throw .notFound("\(newName) not found") }
            if other.kind == .directory, isAncestor(other.id, of: from.id) { throw .badRequest("cannot move a directory into itself") }
            other.version = version
            other.ctimeNs = nowNs
            records += [CatalogRecord(Dirent(parent: from.id, name: name, version: version, inode: other.id)),
                        CatalogRecord(Dirent(parent: to.id, name: newName, version: version, inode: source.id)),
                        CatalogRecord(other)]
        } else {
            if let target {
                guard flags & Catalog.RenameFlags.noReplace == 0 else { throw OuroError(.exists, "\(newName) exists") }
                if source.kind == .directory {
                    guard target.kind == .directory else { throw OuroError(.notDir, "\(newName) is not a directory") }
                    guard !hasEntries(target.id) else { throw OuroError(.notEmpty, "\(newName) is not empty") }
                } else if target.kind == .directory {
                    throw OuroError(.isDir, "\(newName) is a directory")
                }
                // The replaced inode loses this name; the new dirent below supersedes the dropped one.
                records += planDropName(DirentKey(parent: to.id, name: newName), of: target, version: version, nowNs: nowNs)
                    .filter { $0.inode != nil }
            }
            records += [CatalogRecord(Dirent(parent: from.id, name: name, version: version, inode: nil)),
                        CatalogRecord(Dirent(parent: to.id, name: newName, version: version, inode: source.id))]
        }
        records.append(CatalogRecord(source))
        records.append(touched(from, version, nowNs))
        if to.id != from.id { records.append(touched(to, version, nowNs)) }
        return Catalog.Change(records: records, resultInode: source.id)
    }

    /// chmod/chown/utimens, and truncation to zero (other sizes are rewritten through a push).
    public func planSetattr(_ request: FSRequest, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(request.inode)
        var regionsRemoved: [CatalogRecord] = []
        if let mode = request.mode { inode.permissions = mode & 0o7777 }
        if let uid = request.uid { inode.uid = uid }
        if let gid = request.gid { inode.gid = gid }
        if let size = request.sizeBytes, size != inode.sizeBytes {
            guard inode.kind == .file else { throw OuroError(.isDir, "only regular files have a settable size") }
            guard size == 0 else { throw OuroError(.notSupported, "truncate to a non-zero size goes through a write") }
            inode.content = nil
            inode.mtimeNs = nowNs
            regionsRemoved = regionTombstones(inode.id, version)
        }
        if let mtime = request.mtimeNs { inode.mtimeNs = mtime }
        if let atime = request.atimeNs { inode.atimeNs = atime }
        inode.ctimeNs = nowNs
        inode.version = version
        return Catalog.Change(records: [CatalogRecord(inode)] + regionsRemoved, resultInode: inode.id)
    }

    public func planSetxattr(_ request: FSRequest, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(request.inode)
        guard let name = request.xattrName, !name.isEmpty, name.utf8.count <= Limits.nameComponentBytes else {
            throw .badRequest("bad attribute name")
        }
        let value = request.xattrValue ?? Data()
        guard value.count <= Limits.xattrValueBytes else { throw OuroError(.tooLarge, "attribute value too large") }
        let flags = request.flags ?? 0
        if flags & Catalog.XattrFlags.create != 0, inode.xattrs[name] != nil { throw OuroError(.exists, "attribute exists") }
        if flags & Catalog.XattrFlags.replace != 0, inode.xattrs[name] == nil { throw .notFound("no such attribute") }
        inode.xattrs[name] = value
        inode.ctimeNs = nowNs
        inode.version = version
        return Catalog.Change(records: [CatalogRecord(inode)], resultInode: inode.id)
    }

    public func planRemovexattr(_ request: FSRequest, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(request.inode)
        guard let name = request.xattrName, inode.xattrs[name] != nil else { throw .notFound("no such attribute") }
        inode.xattrs[name] = nil
        inode.ctimeNs = nowNs
        inode.version = version
        return Catalog.Change(records: [CatalogRecord(inode)], resultInode: inode.id)
    }

    /// Records where one chunk's copies live now (after re-replication or a hand-over).
    public func planPlacement(content: ContentID, chunk: Int, holders: [NodeAddress], version: Version) -> Catalog.Change {
        Catalog.Change(records: [CatalogRecord(PlacementRecord(content: content, chunk: chunk, holders: holders, version: version))],
               resultInode: nil)
    }

    /// Points an existing regular file at new content (a write through the mount).
    public func planWriteContent(inode id: UInt64?, content: FileContent, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(id)
        guard inode.kind == .file else { throw OuroError(.isDir, "not a regular file") }
        inode.content = content
        inode.mtimeNs = nowNs
        inode.ctimeNs = nowNs
        inode.version = version
        return Catalog.Change(records: [CatalogRecord(inode)] + regionTombstones(inode.id, version), resultInode: inode.id)
    }

    /// Removals of every region record of an inode whose content is replaced whole.
    func regionTombstones(_ id: UInt64, _ version: Version) -> [CatalogRecord] {
        liveRegions(of: id).map { CatalogRecord(RegionRecord(inode: id, region: $0.region, slices: [], version: version, cuts: $0.cuts + 1)) }
    }

    /// A write in place through the mount: `slices` (pieces already stored) on top of the file's bytes, after a
    /// truncation to `truncatedTo` if there was one, at the new size. The inode's own content is only cut and
    /// resized; the slices go to the records of the regions they fall in, so the change costs what it wrote.
    public func planWriteSlices(inode id: UInt64?, slices: [ContentSlice], truncatedTo: UInt64?, sizeBytes: UInt64,
                                contentID: ContentID, start: NodeAddress, version: Version, nowNs: Int64) throws(OuroError) -> Catalog.Change {
        var inode = try existing(id)
        guard inode.kind == .file else { throw OuroError(.isDir, "not a regular file") }
        guard slices.allSatisfy({ $0.isWellFormed }) else { throw .badRequest("malformed slice") }
        // A smaller size is a truncation too, said or not.
        let truncatedTo = sizeBytes < inode.sizeBytes ? min(truncatedTo ?? sizeBytes, sizeBytes) : truncatedTo
        if truncatedTo != nil || sizeBytes != inode.sizeBytes {
            inode.content = ContentSlices.writing([], onto: inode.content, truncatedTo: truncatedTo, sizeBytes: sizeBytes,
                                                  id: contentID, start: start)
        }
        let regionBytes = Limits.regionBytes
        var touched: [UInt64: (slices: [ContentSlice], cuts: UInt64)] = [:]
        let cut = min(truncatedTo ?? .max, sizeBytes)
        // Only a truncation reaches into regions the write did not touch; it changes the bytes under their slices.
        for record in truncatedTo == nil ? [] : liveRegions(of: inode.id) where record.region &* regionBytes &+ regionBytes > cut {
            touched[record.region] = (record.slices.compactMap { $0.clipped(from: 0, to: cut) }, record.cuts + 1)
        }
        for slice in slices {
            var from = slice.fileOffset
            while from < slice.fileEnd {
                let region = from / regionBytes
                let part = slice.clipped(from: from, to: min(slice.fileEnd, (region + 1) * regionBytes))!
                let existing = regionRecord(of: inode.id, region: region)
                touched[region, default: (existing?.slices ?? [], existing?.cuts ?? 0)].slices.append(part)
                from = part.fileEnd
            }
        }
        var records = [CatalogRecord]()
        for (region, list) in touched.sorted(by: { $0.key < $1.key }) {
            let kept = ContentSlices.withoutHidden(list.slices.compactMap { $0.clipped(from: 0, to: sizeBytes) })
            guard kept.count <= Limits.maxRegionSlices else {
                throw OuroError(.tooLarge, "region \(region) would have more than \(Limits.maxRegionSlices) slices: compact it first")
            }
            records.append(CatalogRecord(RegionRecord(inode: inode.id, region: region, slices: kept, version: version, cuts: list.cuts)))
        }
        inode.mtimeNs = nowNs
        inode.ctimeNs = nowNs
        inode.version = version
        return Catalog.Change(records: [CatalogRecord(inode)] + records, resultInode: inode.id)
    }

    /// A compaction of one region: its first slices `seen` (as the compactor read them, with the region's `cuts`)
    /// replaced by `merged`, the region's bytes as they showed, from `offset` (the region's start). EXISTS when the
    /// region changed under it otherwise than by new writes on top (a compaction, a rewrite, or a truncation that
    /// reached into it: the merged bytes would bring back what it cut off); the compactor then drops its work.
    /// Times stay: no byte changed.
    public func planCompactRegion(inode id: UInt64?, offset: UInt64, seen: [ContentSlice], cuts seenCuts: UInt64,
                                  merged: FileContent, version: Version) throws(OuroError) -> Catalog.Change {
        let inode = try existing(id)
        let regionBytes = Limits.regionBytes
        guard inode.kind == .file, offset % regionBytes == 0, merged.sizeBytes <= regionBytes, !seen.isEmpty,
              ContentSlice(fileOffset: offset, lengthBytes: merged.sizeBytes, source: merged).isWellFormed else {
            throw .badRequest("malformed compaction")
        }
        let region = offset / regionBytes
        let record = regionRecord(of: inode.id, region: region)
        let current = record?.slices ?? []
        guard let record, record.cuts == seenCuts, current.count >= seen.count, zip(current, seen).allSatisfy({ $0.isSame(as: $1) }) else {
            throw OuroError(.exists, "the region changed since the compaction read it")
        }
        let slices = [ContentSlice(fileOffset: offset, lengthBytes: merged.sizeBytes, source: merged)] + current.dropFirst(seen.count)
        let kept = ContentSlices.withoutHidden(slices.compactMap { $0.clipped(from: 0, to: inode.sizeBytes) })
        return Catalog.Change(records: [CatalogRecord(RegionRecord(inode: inode.id, region: region, slices: kept, version: version, cuts: record.cuts))],
                      resultInode: inode.id)
    }

    /// `FILE PUSH` by path: creates missing parent directories, then creates the file or replaces its content.
    public func planPutFile(path: PathName, content: FileContent, version: Version, nowNs: Int64,
                            newID: () -> UInt64) throws(OuroError) -> Catalog.Change {
        var records: [CatalogRecord] = []
        var parent = storedInode(Inode.rootID)!
        var parentIsNew = false
        for component in path.parentComponents {
            if !parentIsNew, let next = lookup(parent: parent.id, name: component) {
                guard next.kind == .directory else { throw OuroError(.notDir, "\(component) is not a directory") }
                parent = next
                continue
            }
            if !parentIsNew { records.append(touched(parent, version, nowNs)) }
            if !parentIsNew, let unnamed = unnamedDirectory(parent: parent.id, name: component) {
                // Made elsewhere, its name not here yet: name it, keep its attributes, and go on looking inside it.
                records += [touched(unnamed, version, nowNs),
                            CatalogRecord(Dirent(parent: parent.id, name: component, version: version, inode: unnamed.id))]
                parent = unnamed
                continue
            }
            let directory = Inode(id: directoryID(parent: parent.id, name: component, otherwise: newID), version: version, kind: .directory, permissions: 0o755, uid: 0, gid: 0, timeNs: nowNs)
            records += [CatalogRecord(directory),
                        CatalogRecord(Dirent(parent: parent.id, name: component, version: version, inode: directory.id))]
            parent = directory
            parentIsNew = true
        }
        let name = path.lastComponent
        if !parentIsNew, let existing = lookup(parent: parent.id, name: name) {
            guard existing.kind == .file else { throw OuroError(.isDir, "\(path) exists and is not a regular file") }
            let change = try planWriteContent(inode: existing.id, content: content, version: version, nowNs: nowNs)
            return Catalog.Change(records: records + change.records, resultInode: existing.id)
        }
        let id = newID()
        let inode = Inode(id: id, version: version, kind: .file, permissions: 0o644, uid: 0, gid: 0, timeNs: nowNs, content: content)
        records += [CatalogRecord(inode), CatalogRecord(Dirent(parent: parent.id, name: name, version: version, inode: id))]
        if !parentIsNew { records.append(touched(parent, version, nowNs)) }
        return Catalog.Change(records: records, resultInode: id)
    }
}
