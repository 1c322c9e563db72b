import Glibc
import OuroClient
import OuroCore

/// The ring's health seen from inside the mount, over the file system it wraps:
/// - a hidden directory `.ouro/` at the root (not listed, found by name) of read-only text files, made afresh at
///   each open: `status` (`ouro status`'s table), `netmap` (`NETMAP GET`), `files-short-of-copies` (`FILE SHORT`:
///   the files with a chunk on fewer live nodes than it should be);
/// - read-only extended attributes on every regular file: `user.ouro.copies` (`2/2`: the live copies of its
///   least-kept chunk / the copies it should have), `user.ouro.hash` (the SHA-256 of its bytes, as `sha256sum`
///   prints it, where the ring recorded one), `user.ouro.placement` (every chunk and its holders) and
///   `user.ouro.verified` (when the holders last read its copies back from disk and found them good). They
///   are not listed by `listxattr`, so `cp -a` and `rsync -X` do not copy them; `getfattr -n` reads them.
/// Everything else passes through unchanged.
public final class HealthFiles: FileSystemOperations, @unchecked Sendable {
    let base: FileSystemOperations
    let source: RingHealthSource

    /// Inode numbers above any the ring gives (those are at most 2^62).
    static let directoryInode: UInt64 = 0x7fff_ffff_ffff_ff00
    static let directoryName = ".ouro"
    static let files = ["files-short-of-copies", "netmap", "status"]
    static let attributePrefix = "user.ouro."
    static let attributes = ["user.ouro.copies", "user.ouro.hash", "user.ouro.placement", "user.ouro.verified"]
    /// SHA-256 of no bytes: an empty file's hash.
    static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    /// Rows of `files-short-of-copies` at most (a bounded snapshot; `FILE SHORT` lists them all).
    static let shortRowsLimit = 10_000
    /// Handles of our files: high bit set (the wrapped file system numbers its handles from 1).
    static let handleBit: UInt64 = 1 << 63

    private let lock = Lock()
    private var snapshots: [UInt64: [UInt8]] = [:]
    private var nextHandle: UInt64 = 1

    public init(wrapping base: FileSystemOperations, source: RingHealthSource) {
        self.base = base
        self.source = source
    }

    static func isOurs(_ inode: UInt64) -> Bool { inode >= directoryInode && inode <= directoryInode + UInt64(files.count) }
    static func fileInode(_ name: String) -> UInt64? { files.firstIndex(of: name).map { directoryInode + 1 + UInt64($0) } }
    static func isOurName(parent: UInt64, name: String) -> Bool {
        parent == directoryInode || (parent == 1 && name == directoryName)
    }
    static func isOurHandle(_ handle: UInt64) -> Bool { handle & handleBit != 0 }

    /// What a file of ours holds now.
    func contents(of inode: UInt64) throws -> [UInt8] {
        let name = Self.files[Int(inode - Self.directoryInode - 1)]
        do {
            switch name {
            case "status": return Array(try source.statusReport().utf8)
            case "netmap": return Array(try source.netmapReport().utf8)
            default: return Array(try source.shortOfCopiesReport(limit: Self.shortRowsLimit).utf8)
            }
        } catch let error as FileSystemError {
            throw error
        } catch {
            throw FileSystemError(error)
        }
    }

    /// Our files say size 0, as /proc's do: what they hold is made only when one is opened (a stat or a listing
    /// must not scan the catalog), and their handles use direct I/O, so readers read until EOF, not up to a size.
    func attributes(of inode: UInt64) -> FileAttributes {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let directory = inode == Self.directoryInode
        return FileAttributes(inode: inode, mode: directory ? UInt32(S_IFDIR) | 0o555 : UInt32(S_IFREG) | 0o444,
                              linkCount: directory ? 2 : 1, uid: 0, gid: 0, rdev: 0, sizeBytes: 0,
                              atime: now, mtime: now, ctime: now)
    }

    static let readOnly = FileSystemError(EACCES)

    // MARK: Names and attributes

    public func lookup(parent: UInt64, name: String) throws -> FileAttributes {
        if parent == 1 && name == Self.directoryName { return attributes(of: Self.directoryInode) }
        guard parent == Self.directoryInode else { return try base.lookup(parent: parent, name: name) }
        guard let inode = Self.fileInode(name) else { throw FileSystemError(ENOENT) }
        return attributes(of: inode)
    }

    public func forget(inode: UInt64, count: UInt64) {
        if !Self.isOurs(inode) { base.forget(inode: inode, count: count) }
    }

    public func getattr(inode: UInt64) throws -> FileAttributes {
        Self.isOurs(inode) ? attributes(of: inode) : try base.getattr(inode: inode)
    }

    public func setattr(inode: UInt64, changes: AttributeChanges, handle: UInt64?, context: RequestContext) throws -> FileAttributes {
        guard !Self.isOurs(inode) else { throw Self.readOnly }
        return try base.setattr(inode: inode, changes: changes, handle: handle, context: context)
    }

    public func readlink(inode: UInt64) throws -> String {
        guard !Self.isOurs(inode) else { throw FileSystemError(EINVAL) }
        return try base.readlink(inode: inode)
    }

    /// A new name where ours is: the name `.ouro` in the root exists (it is ours), our directory takes no names.
    func refuseNew(parent: UInt64, name: String) throws {
        if parent == Self.directoryInode { throw Self.readOnly }
        if parent == 1 && name == Self.directoryName { throw FileSystemError(EEXIST) }
    }

    public func mknod(parent: UInt64, name: String, mode: UInt32, rdev: UInt32, context: RequestContext) throws -> FileAttributes {
        try refuseNew(parent: parent, name: name)
        return try base.mknod(parent: parent, name: name, mode: mode, rdev: rdev, context: context)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32, context: RequestContext) throws -> FileAttributes {
        try refuseNew(parent: parent, name: name)
        return try base.mkdir(parent: parent, name: name, mode: mode, context: context)
    }

    public func unlink(parent: UInt64, name: String) throws {
        guard !Self.isOurName(parent: parent, name: name) else { throw Self.readOnly }
        try base.unlink(parent: parent, name: name)
    }

    public func rmdir(parent: UInt64, name: String) throws {
        guard !Self.isOurName(parent: parent, name: name) else { throw Self.readOnly }
        try base.rmdir(parent: parent, name: name)
    }

    public func symlink(target: String, parent: UInt64, name: String, context: RequestContext) throws -> FileAttributes {
        try refuseNew(parent: parent, name: name)
        return try base.symlink(target: target, parent: parent, name: name, context: context)
    }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32) throws {
        guard !Self.isOurName(parent: parent, name: name), !Self.isOurName(parent: newParent, name: newName) else { throw Self.readOnly }
        try base.rename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags)
    }

    public func link(inode: UInt64, newParent: UInt64, newName: String) throws -> FileAttributes {
        guard !Self.isOurs(inode) else { throw FileSystemError(EPERM) }
        try refuseNew(parent: newParent, name: newName)
        return try base.link(inode: inode, newParent: newParent, newName: newName)
    }

    // MARK: Files

    public func open(inode: UInt64, flags: Int32, context: RequestContext) throws -> UInt64 {
        guard Self.isOurs(inode) else { return try base.open(inode: inode, flags: flags, context: context) }
        guard inode != Self.directoryInode else { throw FileSystemError(EISDIR) }
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw Self.readOnly }
        let snapshot = try contents(of: inode)
        return lock.withLock {
            defer { nextHandle += 1 }
            snapshots[nextHandle | Self.handleBit] = snapshot
            return nextHandle | Self.handleBit
        }
    }

    public func usesDirectIO(handle: UInt64) -> Bool { Self.isOurHandle(handle) || base.usesDirectIO(handle: handle) }

    public func read(handle: UInt64, offset: UInt64, size: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard Self.isOurHandle(handle) else { return try base.read(handle: handle, offset: offset, size: size, into: buffer) }
        guard let snapshot = lock.withLock({ snapshots[handle] }) else { throw FileSystemError(EBADF) }
        guard offset < UInt64(snapshot.count) else { return 0 }
        let count = min(size, buffer.count, snapshot.count - Int(offset))
        snapshot.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + Int(offset), byteCount: count) }
        return count
    }

    public func write(handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, context: RequestContext) throws -> Int {
        guard !Self.isOurHandle(handle) else { throw FileSystemError(EBADF) }
        return try base.write(handle: handle, offset: offset, data: data, context: context)
    }

    public func flush(handle: UInt64) throws {
        if !Self.isOurHandle(handle) { try base.flush(handle: handle) }
    }

    public func release(handle: UInt64) throws {
        guard Self.isOurHandle(handle) else { return try base.release(handle: handle) }
        lock.withLock { _ = snapshots.removeValue(forKey: handle) }
    }

    public func fsync(handle: UInt64, dataOnly: Bool) throws {
        if !Self.isOurHandle(handle) { try base.fsync(handle: handle, dataOnly: dataOnly) }
    }

    public func seek(handle: UInt64, offset: UInt64, data: Bool) throws -> UInt64 {
        guard Self.isOurHandle(handle) else { return try base.seek(handle: handle, offset: offset, data: data) }
        let size = UInt64(lock.withLock { snapshots[handle]?.count ?? 0 })
        guard offset < size else { throw FileSystemError(ENXIO) }
        return data ? offset : size
    }

    public func fallocate(handle: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
        guard !Self.isOurHandle(handle) else { throw FileSystemError(EBADF) }
        try base.fallocate(handle: handle, mode: mode, offset: offset, length: length)
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, context: RequestContext) throws -> (FileAttributes, UInt64) {
        try refuseNew(parent: parent, name: name)
        return try base.create(parent: parent, name: name, mode: mode, flags: flags, context: context)
    }

    // MARK: Directories

    public func opendir(inode: UInt64) throws -> UInt64 {
        guard Self.isOurs(inode) else { return try base.opendir(inode: inode) }
        guard inode == Self.directoryInode else { throw FileSystemError(ENOTDIR) }
        return Self.handleBit
    }

    public func readdir(inode: UInt64, handle: UInt64, after: String?, namesOnly: Bool) throws -> (entries: [DirectoryEntry], more: Bool) {
        if inode == Self.directoryInode {
            let names = Self.files.filter { after == nil || $0 > after! }
            return (names.map { DirectoryEntry(name: $0, attributes: attributes(of: Self.fileInode($0)!)) }, false)
        }
        let page = try base.readdir(inode: inode, handle: handle, after: after, namesOnly: namesOnly)
        guard inode == 1 else { return page }
        // A real `.ouro` in the root (made before the mount had one, say through `FILE PUSH`) is hidden by ours.
        return (page.entries.filter { $0.name != Self.directoryName }, page.more)
    }

    public func releasedir(handle: UInt64) {
        if !Self.isOurHandle(handle) { base.releasedir(handle: handle) }
    }

    public func fsyncdir(inode: UInt64) throws {
        if !Self.isOurs(inode) { try base.fsyncdir(inode: inode) }
    }

    public func statfs() throws -> FileSystemStats { try base.statfs() }

    // MARK: Extended attributes

    public func setxattr(inode: UInt64, name: String, value: [UInt8], flags: Int32) throws {
        guard !Self.isOurs(inode), !name.hasPrefix(Self.attributePrefix) else { throw FileSystemError(EPERM) }
        try base.setxattr(inode: inode, name: name, value: value, flags: flags)
    }

    public func getxattr(inode: UInt64, name: String) throws -> [UInt8] {
        guard !Self.isOurs(inode) else { throw FileSystemError(ENODATA) }
        guard name.hasPrefix(Self.attributePrefix) else { return try base.getxattr(inode: inode, name: name) }
        guard Self.attributes.contains(name), let (content, netmap) = try source.contentHealth(of: inode) else {
            throw FileSystemError(ENODATA)
        }
        switch name {
        case "user.ouro.copies": return Array(ContentHealth(content: content, netmap: netmap).text.utf8)
        case "user.ouro.hash":
            // Recorded when one node saw every byte in order; a file written in pieces has none (ENODATA).
            guard let hash = content == nil ? Self.emptyHash : content?.sha256 else { throw FileSystemError(ENODATA) }
            return Array(hash.utf8)
        case "user.ouro.verified": return Array(source.verification(of: content).text.utf8)
        default: return Array(ContentHealth.placement(of: content, netmap: netmap).utf8)
        }
    }

    public func listxattr(inode: UInt64) throws -> [String] {
        Self.isOurs(inode) ? [] : try base.listxattr(inode: inode)
    }

    public func removexattr(inode: UInt64, name: String) throws {
        guard !Self.isOurs(inode), !name.hasPrefix(Self.attributePrefix) else { throw FileSystemError(EPERM) }
        try base.removexattr(inode: inode, name: name)
    }

    // MARK: Lifecycle

    public func mounted() { base.mounted() }
    public func unmounting() { base.unmounting() }
}
