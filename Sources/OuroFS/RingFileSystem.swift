import Glibc
import Logging
import OuroClient
import OuroCore

/// Settings of the mount's file-system layer.
public struct RingFileSystemOptions: Sendable {
    /// Where write spools live (local files holding what applications write until it is pushed).
    public var cacheDirectory: String
    /// Most bytes all spools may hold together; a write beyond it fails with ENOSPC.
    public var spoolLimitBytes: UInt64
    /// Size of one read-ahead piece.
    public var pieceBytes = 2 << 20
    /// Pieces fetched ahead of a sequential reader.
    public var readAheadPieces = 4
    /// Read-ahead pieces in memory across the whole mount (the read cache's bound).
    public var cachedPieces = 8
    /// A file written in order is pushed to the ring in segments of this size while it is being written, so its
    /// close waits only for the last one. Smaller files are pushed whole on close.
    public var segmentBytes: UInt64 = 64 << 20
    /// Segment pushes running at once across the mount.
    public var segmentPushes = 2
    /// How long the kernel may cache attributes (`--attr-timeout`); a directory's attributes returned by our own
    /// change of it are reused for as long.
    public var attributeSeconds = 1.0

    public init(cacheDirectory: String, spoolLimitBytes: UInt64) {
        self.cacheDirectory = cacheDirectory
        self.spoolLimitBytes = spoolLimitBytes
    }
}

/// The file-system semantics of the mount, over the ring: metadata calls go to a live node, writes are spooled
/// locally and pushed as one new content on flush/fsync/close, reads fetch chunk ranges from their holders with
/// read-ahead. FUSE-free: the adapter only translates.
public final class RingFileSystem: FileSystemOperations, @unchecked Sendable {
    let ring: RingClient
    let logger: Logger
    let options: RingFileSystemOptions
    let budget: PieceBudget
    /// Chunk files of nodes on this machine, read directly (short-circuit reads).
    let localChunks: LocalChunkFiles
    /// Free slots for segment pushes (`options.segmentPushes`).
    let segmentSlots: OuroClient.Semaphore
    /// Region compactions running at once across the mount (background work: two keep up with any writer).
    let compactionSlots = OuroClient.Semaphore(2)
    private let lock = Lock()
    /// Files open through at least one handle, by inode: all handles of one inode share its spool.
    private var openFiles: [UInt64: OpenFile] = [:]
    private var handles: [UInt64: Handle] = [:]
    private var nextHandle: UInt64 = 1
    private var spooledBytes: UInt64 = 0
    /// Directories whose attributes came back with a change we made, and when: the kernel asks for them at once
    /// (the change made its copy stale), and this answers without a round trip for `attributeSeconds`.
    private var freshDirectories: [UInt64: (stat: InodeStat, at: Double)] = [:]
    /// Files created here (`open` with O_CREAT|O_TRUNC, not O_EXCL) that the catalog does not name yet: the first
    /// close names them, with their bytes when small, in one commit (`FS CREATE`). Anything else that could see or
    /// change such a name (a listing of its directory, a rename, a link, a chmod, another open…) names it first.
    /// Until then other mounts do not see it, which close-to-open allows. By inode number.
    private var pendingCreates: [UInt64: PendingCreate] = [:]
    /// Held while naming a pending file, so that it is named once.
    private let namingLock = Lock()
    /// Set-group-ID directories seen in replies, with their group: a file made here and named only at its first
    /// close shows at once the group the ring gives it then (`Catalog.inherited`).
    private var setGroupIDDirectories: [UInt64: UInt32] = [:]
    /// The newest attributes of files whose content this mount pushed (or truncated) lately, with the push's serial
    /// number, without inline bytes and xattrs. An open asks the ring for attributes without holding our lock; if
    /// another handle's close pushes the file meanwhile, the answer may predate that push, and a file opened from it
    /// would later push older bytes over the newer ones.
    private var recentPushes: [UInt64: (stat: InodeStat, serial: UInt64)] = [:]
    private var pushSerial: UInt64 = 0
    /// Pushes with a smaller serial may have been forgotten (only the newest `recentPushLimit / 2` are kept for sure).
    private var pushesForgottenBelow: UInt64 = 0
    private static let recentPushLimit = 2048

    /// One open file description: its file, and whether it was opened for writing. Only a writer's close pushes:
    /// a reader's close would push another handle's half-written bytes.
    struct Handle {
        var file: OpenFile
        var writes: Bool
    }

    struct PendingCreate {
        var parent: UInt64
        var name: String
        var stat: InodeStat
        /// The creator's group: the ring decides the file's group when it names it (`stat` shows its guess).
        var callerGroup: UInt32
    }

    public init(ring: RingClient, options: RingFileSystemOptions, logger: Logger) throws {
        self.ring = ring
        self.options = options
        self.logger = logger
        budget = PieceBudget(pieces: options.cachedPieces, pieceBytes: options.pieceBytes)
        segmentSlots = OuroClient.Semaphore(options.segmentPushes)
        localChunks = LocalChunkFiles(pool: ring.pool)
        guard Glibc.mkdir(options.cacheDirectory, 0o700) == 0 || errno == EEXIST else {
            throw FileSystemError(errno)
        }
    }

    // MARK: Attributes

    func attributes(_ given: InodeStat) -> FileAttributes {
        var stat = given
        if stat.inode.kind == .directory {
            let setGroupID = stat.inode.permissions & UInt32(S_ISGID) != 0
            lock.withLock { setGroupIDDirectories[stat.inode.id] = setGroupID ? stat.inode.gid : nil }
        }
        var local: (sizeBytes: UInt64, mtimeNs: Int64?, ctimeNs: Int64?)?
        var open: OpenFile?
        if stat.inode.kind == .file {
            // Unpushed writes here: the writer's size and time. (This waits for a push in progress.)
            open = lock.withLock({ openFiles[stat.inode.id] })
            local = open?.localAttributes()
            // A push of ours that landed while `given` was on its way (a close while the ring was asked) is newer.
            if let pushed = lock.withLock({ recentPushes[stat.inode.id]?.stat }), pushed.inode.version > stat.inode.version {
                stat = InodeStat(inode: pushed.inode, linkCount: stat.linkCount)
            }
        }
        let inode = stat.inode
        let size = local?.sizeBytes ?? inode.sizeBytes
        let mtime = local?.mtimeNs ?? inode.mtimeNs
        // What `du` shows: a sparse file's holes take no space.
        let committedStored = inode.kind == .file ? stat.storedBytes ?? inode.content?.storedBytes ?? 0 : inode.sizeBytes
        let stored = open?.localStoredBytes(committed: committedStored) ?? min(committedStored, size)
        var attributes = FileAttributes(inode: inode.id, mode: inode.kind.modeBits | inode.permissions, linkCount: UInt32(stat.linkCount),
                                        uid: inode.uid, gid: inode.gid, rdev: inode.rdev, sizeBytes: size,
                                        atime: timespec(nanoseconds: inode.atimeNs), mtime: timespec(nanoseconds: mtime),
                                        ctime: timespec(nanoseconds: max(inode.ctimeNs, local?.ctimeNs ?? .min)))
        attributes.storedBytes = stored
        return attributes
    }

    func fs(_ operation: FSOperation, idempotent: Bool = false, xattr: Bool = false, _ build: (inout FSRequest) -> Void) throws -> FSReply {
        var request = FSRequest()
        build(&request)
        do {
            let reply = try ring.fs(operation, request, idempotent: idempotent)
            if let directories = reply.directories {
                let now = monotonicSeconds()
                lock.withLock {
                    for stat in directories where (freshDirectories[stat.inode.id]?.stat.inode.version ?? .zero) < stat.inode.version {
                        freshDirectories[stat.inode.id] = (stat, now)
                    }
                }
            } else if let inode = request.inode, !idempotent {
                lock.withLock { _ = freshDirectories.removeValue(forKey: inode) }  // SETATTR, xattrs: ask next time
            }
            return reply
        } catch {
            throw FileSystemError(error, xattr: xattr)
        }
    }

    func stat(_ inode: UInt64) throws -> InodeStat {
        guard let stat = try byNumber({ try fs(.getattr, idempotent: true, { $0.inode = inode }).stat }) else { throw FileSystemError(EIO) }
        return stat
    }

    /// Runs a call addressed by inode number, where "not found" means the number is stale: the kernel reached it
    /// through a name it cached, and the file was removed or replaced (through another mount, say). ESTALE makes
    /// the kernel look the name up again (ENOENT would fail the call, though the name may well exist).
    func byNumber<T>(_ call: () throws -> T) throws -> T {
        do {
            return try call()
        } catch let error as FileSystemError where error.errno == ENOENT {
            throw FileSystemError(ESTALE)
        }
    }

    static func checkName(_ name: String) throws {
        guard name.utf8.count <= Limits.nameComponentBytes else { throw FileSystemError(ENAMETOOLONG) }
        guard !name.isEmpty, name != ".", name != "..", !name.utf8.contains(0x2F), !name.utf8.contains(0) else {
            throw FileSystemError(EINVAL)
        }
    }

    // MARK: Names

    public func lookup(parent: UInt64, name: String) throws -> FileAttributes {
        try Self.checkName(name)
        if let pending = lock.withLock({ pendingCreates.values.first { $0.parent == parent && $0.name == name } }) {
            return attributes(pending.stat)
        }
        let reply = try fs(.lookup, idempotent: true) { $0.parent = parent; $0.name = name }
        return attributes(reply.stat!)
    }

    public func forget(inode: UInt64, count: UInt64) {}

    public func getattr(inode: UInt64) throws -> FileAttributes {
        let now = monotonicSeconds()
        let fresh: InodeStat? = lock.withLock {
            guard let entry = freshDirectories.removeValue(forKey: inode) else { return nil }
            return now - entry.at < options.attributeSeconds ? entry.stat : nil
        }
        if let fresh { return attributes(fresh) }
        if let pending = lock.withLock({ pendingCreates[inode] }) { return attributes(pending.stat) }
        do {
            return try attributes(stat(inode))
        } catch let error as FileSystemError where error.errno == ESTALE {
            // Deleted while open here: as an unlinked local file, it lives on for its handles, with no links.
            guard let open = lock.withLock({ openFiles[inode] }) else { throw error }
            return attributes(InodeStat(inode: open.currentStat.inode, linkCount: 0))
        }
    }

    // MARK: Files named on their first close

    func isPending(_ inode: UInt64) -> Bool { lock.withLock { pendingCreates[inode] != nil } }

    /// Names a pending file in the catalog, with `data` as its content if given; nil if it was named already.
    func nameCreated(_ inode: UInt64, data: [UInt8]?) throws -> InodeStat? {
        try namingLock.withLock {
            guard let pending = lock.withLock({ pendingCreates[inode] }) else { return nil }
            let reply = try fs(.create, idempotent: true) {
                $0.parent = pending.parent; $0.name = pending.name; $0.inode = inode
                $0.mode = pending.stat.inode.permissions; $0.uid = pending.stat.inode.uid; $0.gid = pending.callerGroup
                $0.data = data.map { .init($0) }
            }
            lock.withLock { _ = pendingCreates.removeValue(forKey: inode) }
            return reply.stat
        }
    }

    /// Names every pending file in these directories, and `inodes`, before an operation that could see them.
    /// A file that cannot be named (another client made a directory of that name) fails only operations on
    /// itself; its close reports the error.
    func nameCreated(inDirectories directories: [UInt64], inodes: [UInt64] = []) throws {
        let waiting = lock.withLock {
            pendingCreates.filter { directories.contains($0.value.parent) || inodes.contains($0.key) }.map(\.key)
        }
        for inode in waiting {
            do {
                _ = try nameCreated(inode, data: nil)
            } catch {
                if inodes.contains(inode) { throw error }
                logger.warning("a new file could not be named yet", metadata: ["inode": "\(inode)", "error": "\(error)"])
            }
        }
    }

    func nameAllCreated() throws {
        let directories = lock.withLock { pendingCreates.values.map(\.parent) }
        try nameCreated(inDirectories: directories)
    }

    /// The last handle of a file that was never named closed (its close failed): nothing will name it now.
    func dropPending(_ inode: UInt64) {
        lock.withLock { _ = pendingCreates.removeValue(forKey: inode) }
    }

    public func mknod(parent: UInt64, name: String, mode: UInt32, rdev: UInt32, context: RequestContext) throws -> FileAttributes {
        try Self.checkName(name)
        guard let kind = InodeKind(modeBits: mode) else { throw FileSystemError(EINVAL) }
        try nameCreated(inDirectories: [parent])
        let reply = try fs(.mknod) {
            $0.parent = parent; $0.name = name; $0.kind = kind; $0.mode = mode & 0o7777; $0.rdev = rdev
            $0.uid = context.uid; $0.gid = context.gid
        }
        return attributes(reply.stat!)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32, context: RequestContext) throws -> FileAttributes {
        try Self.checkName(name)
        try nameCreated(inDirectories: [parent])
        let reply = try fs(.mkdir) {
            $0.parent = parent; $0.name = name; $0.mode = mode & 0o7777; $0.uid = context.uid; $0.gid = context.gid
        }
        return attributes(reply.stat!)
    }

    public func symlink(target: String, parent: UInt64, name: String, context: RequestContext) throws -> FileAttributes {
        try Self.checkName(name)
        try nameCreated(inDirectories: [parent])
        let reply = try fs(.symlink) {
            $0.parent = parent; $0.name = name; $0.target = target; $0.mode = 0o777; $0.uid = context.uid; $0.gid = context.gid
        }
        return attributes(reply.stat!)
    }

    public func readlink(inode: UInt64) throws -> String {
        let inode = try stat(inode).inode
        guard inode.kind == .symlink, let target = inode.symlinkTarget else { throw FileSystemError(EINVAL) }
        return target
    }

    public func unlink(parent: UInt64, name: String) throws {
        try nameCreated(inDirectories: [parent])
        _ = try fs(.unlink) { $0.parent = parent; $0.name = name }
    }

    public func rmdir(parent: UInt64, name: String) throws {
        try nameAllCreated()  // the directory removed may hold some: they make it not empty
        _ = try fs(.rmdir) { $0.parent = parent; $0.name = name }
    }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32) throws {
        try Self.checkName(newName)
        try nameAllCreated()  // a directory replaced by the rename may hold some
        _ = try fs(.rename) { $0.parent = parent; $0.name = name; $0.newParent = newParent; $0.newName = newName; $0.flags = flags }
    }

    public func link(inode: UInt64, newParent: UInt64, newName: String) throws -> FileAttributes {
        try Self.checkName(newName)
        try nameCreated(inDirectories: [newParent], inodes: [inode])
        let reply = try fs(.link) { $0.inode = inode; $0.newParent = newParent; $0.newName = newName }
        return attributes(reply.stat!)
    }

    // MARK: Attributes changes

    public func setattr(inode: UInt64, changes: AttributeChanges, handle: UInt64?, context: RequestContext) throws -> FileAttributes {
        try nameCreated(inDirectories: [], inodes: [inode])
        let open = lock.withLock { handle.flatMap { handles[$0]?.file } ?? openFiles[inode] }
        var sizeHandled = false
        if let size = changes.sizeBytes {
            if let open {
                try open.truncate(to: size)
                // truncate(2) by name: no handle of the caller's will push it, and it must not wait for the others.
                if handle == nil { try open.flush() }
                sizeHandled = true
            } else if size != 0 {
                // A truncate of a file nobody has open: rewrite it through a temporary spool.
                let file = try openFile(inode: inode, fresh: true)
                defer { close(file) }
                try file.truncate(to: size)
                try file.flush()
                sizeHandled = true
            }
        }
        let mtime: Int64? = changes.mtime.map { if case .set(let time) = $0 { nanoseconds(time) } else { nowNanoseconds() } }
        let atime: Int64? = changes.atime.map { if case .set(let time) = $0 { nanoseconds(time) } else { nowNanoseconds() } }
        if let open, let mtime { open.setPendingMtime(mtime) }
        var changes = changes
        if context.killsSetID == true, changes.mode == nil {
            // A chown, or a truncate by a caller without CAP_FSETID: the kernel leaves setuid/setgid to us.
            let current = try open.map { $0.permissions } ?? getattr(inode: inode).mode & 0o7777
            let kept = Self.withoutSetID(current)
            if kept != current { changes.mode = kept }
        }
        let needsCall = changes.mode != nil || changes.uid != nil || changes.gid != nil || mtime != nil || atime != nil
            || (changes.sizeBytes != nil && !sizeHandled)
        guard needsCall else { return try getattr(inode: inode) }
        let reply = try byNumber { try fs(.setattr) {
            $0.inode = inode
            $0.mode = changes.mode.map { $0 & 0o7777 }
            $0.uid = changes.uid
            $0.gid = changes.gid
            $0.sizeBytes = sizeHandled ? nil : changes.sizeBytes
            $0.mtimeNs = mtime
            $0.atimeNs = atime
        } }
        // A truncate (or any change) an open racing with it must not undo with older bytes.
        if let stat = reply.stat, stat.inode.kind == .file { notePushed(stat) }
        return attributes(reply.stat!)
    }

    // MARK: Open files

    /// The shared open state of `inode`, created from fresh attributes (close-to-open: every open asks the ring).
    func openFile(inode: UInt64, fresh: Bool) throws -> OpenFile {
        for attempt in 0..<100 {
            if let pending = lock.withLock({ pendingCreates[inode] }) { return try openFile(created: pending.stat) }
            let serialBefore = lock.withLock { pushSerial }
            if let file = try openFile(current: stat(inode), fetchedAfterPush: serialBefore) { return file }
            // The answer predates a push of ours (or may, and that push is forgotten): ask again. A node still
            // catching up could answer the older state for a while: not faster than every 20 ms, for 2 s at most.
            if attempt > 0 { usleep(20_000) }
        }
        logger.error("the ring keeps answering attributes older than this mount's last push", metadata: ["inode": "\(inode)"])
        throw FileSystemError(EIO)
    }

    /// The open state of a file just created here: its attributes cannot be older than a push of ours.
    func openFile(created stat: InodeStat) throws -> OpenFile {
        try openFile(current: stat, fetchedAfterPush: nil)!  // nil only when asked to check staleness
    }

    /// The shared open state for `current`, made from it if the file is not open. `fetchedAfterPush`: the push serial
    /// when `current` was asked for, or nil not to check. Returns nil if `current` may be older than a push of ours
    /// that is no longer remembered.
    func openFile(current: InodeStat, fetchedAfterPush: UInt64?) throws -> OpenFile? {
        let inode = current.inode.id
        guard current.inode.kind == .file else { throw FileSystemError(current.inode.kind == .directory ? EISDIR : EINVAL) }
        let opened: (file: OpenFile, shared: Bool, stat: InodeStat)? = lock.withLock {
            if let serialBefore = fetchedAfterPush {
                if let known = recentPushes[inode]?.stat {
                    if known.inode.version > current.inode.version { return nil }  // older than our push: ask again
                } else if pushesForgottenBelow > serialBefore {
                    return nil
                }
            }
            if let existing = openFiles[inode] {
                existing.references += 1
                return (existing, true, current)
            }
            let file = OpenFile(stat: current, fileSystem: self)
            file.references = 1
            openFiles[inode] = file
            return (file, false, current)
        }
        guard let opened else { return nil }
        // Outside our lock: an open file's lock is always taken first (flush and write take ours inside theirs).
        if opened.shared { opened.file.refresh(opened.stat) }
        return opened.file
    }

    /// A push by this mount made `stat` the file's state (called with the open file's lock held, or none).
    func notePushed(_ stat: InodeStat) {
        var stat = stat
        stat.inode.xattrs = [:]
        stat.inode.content?.inlineData = nil
        lock.withLock {
            pushSerial += 1
            if let known = recentPushes[stat.inode.id], known.stat.inode.version > stat.inode.version { return }
            recentPushes[stat.inode.id] = (stat, pushSerial)
            if recentPushes.count > Self.recentPushLimit {
                pushesForgottenBelow = pushSerial - UInt64(Self.recentPushLimit / 2)
                recentPushes = recentPushes.filter { $0.value.serial >= pushesForgottenBelow }
            }
        }
    }

    func close(_ file: OpenFile) {
        let last: Bool = lock.withLock {
            file.references -= 1
            guard file.references == 0 else { return false }
            openFiles[file.inode] = nil
            return true
        }
        if last {
            file.discard()
            dropPending(file.inode)
        }
    }

    private func register(_ file: OpenFile, writes: Bool) -> UInt64 {
        lock.withLock {
            let handle = nextHandle
            nextHandle += 1
            handles[handle] = Handle(file: file, writes: writes)
            if writes { file.writers += 1 }
            return handle
        }
    }

    private func file(_ handle: UInt64) throws -> OpenFile {
        try self.handle(handle).file
    }

    private func handle(_ handle: UInt64) throws -> Handle {
        guard let found = lock.withLock({ handles[handle] }) else { throw FileSystemError(EBADF) }
        return found
    }

    public func open(inode: UInt64, flags: Int32, context: RequestContext) throws -> UInt64 {
        let file = try openFile(inode: inode, fresh: true)
        let writes = flags & O_ACCMODE != O_RDONLY
        if flags & O_TRUNC != 0 && writes {
            do {
                try file.truncate(to: 0)
                if context.killsSetID == true { try dropSetID(file) }
            } catch { close(file); throw error }
        }
        return register(file, writes: writes)
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, context: RequestContext) throws -> (FileAttributes, UInt64) {
        try Self.checkName(name)
        if flags & O_TRUNC != 0 && flags & O_EXCL == 0 {
            // Named on its first close: the kernel saw no such name, and O_EXCL is not asked for.
            let now = nowNanoseconds()
            let gid = lock.withLock { setGroupIDDirectories[parent] } ?? context.gid
            let inode = Inode(id: UInt64.random(in: 2...(UInt64(1) << 62)), version: .zero, kind: .file,
                              permissions: mode & 0o7777, uid: context.uid, gid: gid, timeNs: now)
            let stat = InodeStat(inode: inode, linkCount: 1)
            lock.withLock { pendingCreates[inode.id] = PendingCreate(parent: parent, name: name, stat: stat, callerGroup: context.gid) }
            let file = try openFile(created: stat)
            return (attributes(stat), register(file, writes: true))
        }
        try nameCreated(inDirectories: [parent])
        let reply = try fs(.mknod) {
            $0.parent = parent; $0.name = name; $0.kind = .file; $0.mode = mode & 0o7777
            $0.uid = context.uid; $0.gid = context.gid
        }
        // The new inode's attributes came back with it: no second call to open it.
        let file = try openFile(created: reply.stat!)
        return (attributes(reply.stat!), register(file, writes: true))
    }

    public func read(handle: UInt64, offset: UInt64, size: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try file(handle).read(offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<size]))
    }

    public func write(handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, context: RequestContext) throws -> Int {
        let file = try file(handle)
        if context.killsSetID ?? (context.uid != 0) { try dropSetID(file) }
        return try file.write(offset: offset, data: data)
    }

    /// A write by a caller without CAP_FSETID clears setuid, and setgid where the group may execute, as Linux file
    /// systems do (the kernel says so per write, or leaves it to the file system for the mount's direct writes:
    /// then root stands in for CAP_FSETID).
    private func dropSetID(_ file: OpenFile) throws {
        let permissions = file.permissions  // on every write: the mode bits only, not a copy of the attributes
        let kept = Self.withoutSetID(permissions)
        guard kept != permissions, !isPending(file.inode) else { return }
        let reply = try byNumber { try fs(.setattr) { $0.inode = file.inode; $0.mode = kept } }
        if let stat = reply.stat { notePushed(stat) }
        file.permissions = kept
    }

    /// Permissions without setuid, and without setgid where the group may execute (a group-ID bit without group
    /// execute marks mandatory locking, and stays).
    static func withoutSetID(_ permissions: UInt32) -> UInt32 {
        var kept = permissions & ~UInt32(S_ISUID)
        if kept & UInt32(S_IXGRP) != 0 { kept &= ~UInt32(S_ISGID) }
        return kept
    }

    public func flush(handle: UInt64) throws {
        let handle = try self.handle(handle)
        if handle.writes { try handle.file.flush() }
    }

    public func fsync(handle: UInt64, dataOnly: Bool) throws {
        // A commit of bytes makes the names before it durable too; with nothing to push, they are synced alone
        // (the file's own name, its attributes).
        if try !file(handle).flush() { try syncNames() }
    }

    public func fsyncdir(inode: UInt64) throws {
        try syncNames()
    }

    /// Namespace changes are durable within a few milliseconds of their answer; `FS SYNC` makes them durable now.
    func syncNames() throws {
        _ = try fs(.sync, idempotent: true) { _ in }
    }

    public func seek(handle: UInt64, offset: UInt64, data: Bool) throws -> UInt64 {
        try file(handle).seek(from: offset, data: data)
    }

    public func fallocate(handle: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws {
        let handle = try self.handle(handle)
        guard handle.writes else { throw FileSystemError(EBADF) }
        try handle.file.allocate(offset: offset, length: length, mode: mode)
    }

    public func release(handle: UInt64) throws {
        let released: (handle: Handle, writersLeft: Int)? = lock.withLock {
            guard let found = handles.removeValue(forKey: handle) else { return nil }
            if found.writes { found.file.writers -= 1 }
            return (found, found.file.writers)
        }
        guard let released else { throw FileSystemError(EBADF) }
        let file = released.handle.file
        defer { close(file) }
        // close() already returned flush's result; this only retries a push that failed then. A reader's release
        // pushes only when no writer is left (writes left unpushed would otherwise be dropped); on a clean file
        // that costs nothing.
        guard released.handle.writes || released.writersLeft == 0 else { return }
        do { try file.flush() } catch { logger.error("write lost at release", metadata: ["inode": "\(file.inode)", "error": "\(error)"]) }
    }

    // MARK: Spool accounting

    func reserveSpool(_ bytes: UInt64) throws {
        try lock.withLock {
            guard spooledBytes + bytes <= options.spoolLimitBytes else { throw FileSystemError(ENOSPC) }
            spooledBytes += bytes
        }
    }

    func releaseSpool(_ bytes: UInt64) {
        lock.withLock { spooledBytes -= min(bytes, spooledBytes) }
    }

    // MARK: Directories

    public func opendir(inode: UInt64) throws -> UInt64 { 0 }

    public func readdir(inode: UInt64, handle: UInt64, after: String?, namesOnly: Bool) throws -> (entries: [DirectoryEntry], more: Bool) {
        if after == nil { try nameCreated(inDirectories: [inode]) }
        let reply = try byNumber {
            try fs(.readdir, idempotent: true) {
                $0.inode = inode
                $0.after = after
                $0.limit = UInt32(Limits.readdirPageEntries)
                $0.namesOnly = namesOnly ? true : nil
            }
        }
        if let names = reply.names {
            let none = timespec()
            return (names.map {
                DirectoryEntry(name: $0.name, attributes: FileAttributes(inode: $0.inode, mode: $0.kind.modeBits, linkCount: 0, uid: 0, gid: 0,
                                                                         rdev: 0, sizeBytes: 0, atime: none, mtime: none, ctime: none))
            }, reply.more ?? false)
        }
        return ((reply.entries ?? []).map { DirectoryEntry(name: $0.name, attributes: attributes($0.stat)) }, reply.more ?? false)
    }

    public func releasedir(handle: UInt64) {}

    public func statfs() throws -> FileSystemStats {
        guard let usage = try fs(.statfs, idempotent: true, { _ in }).usage else { throw FileSystemError(EIO) }
        let block: UInt64 = 4096
        // No fixed inode table: plenty free, and the total is used plus free (`df -i` shows what is used).
        let freeFiles = UInt64(1) << 40
        return FileSystemStats(blockSize: block, totalBlocks: usage.totalBytes / block, freeBlocks: usage.freeBytes / block,
                               availableBlocks: usage.availableBytes / block, files: usage.files + freeFiles,
                               freeFiles: freeFiles, maxNameLength: UInt64(Limits.nameComponentBytes))
    }

    // MARK: Extended attributes (the user namespace; others are not stored)

    private static func isStored(_ name: String) -> Bool { name.hasPrefix("user.") || name.hasPrefix("trusted.") }

    public func setxattr(inode: UInt64, name: String, value: [UInt8], flags: Int32) throws {
        guard Self.isStored(name) else { throw FileSystemError(ENOTSUP) }
        guard value.count <= Limits.xattrValueBytes else { throw FileSystemError(E2BIG) }
        try nameCreated(inDirectories: [], inodes: [inode])
        _ = try fs(.setxattr, xattr: true) {
            $0.inode = inode; $0.xattrName = name; $0.xattrValue = .init(value); $0.flags = UInt32(bitPattern: flags)
        }
    }

    public func getxattr(inode: UInt64, name: String) throws -> [UInt8] {
        // Other namespaces (security.*, POSIX ACLs in system.*) are not supported: answered without a round trip, and
        // ENOTSUP (not ENODATA) lets `ls -l` stop asking for SELinux labels and ACLs on this mount after one file.
        guard Self.isStored(name) else { throw FileSystemError(ENOTSUP) }
        try nameCreated(inDirectories: [], inodes: [inode])
        let reply = try fs(.getxattr, idempotent: true, xattr: true) { $0.inode = inode; $0.xattrName = name }
        return Array(reply.xattrValue ?? .init())
    }

    public func listxattr(inode: UInt64) throws -> [String] {
        try nameCreated(inDirectories: [], inodes: [inode])
        return try fs(.listxattr, idempotent: true, xattr: true) { $0.inode = inode }.xattrNames ?? []
    }

    public func removexattr(inode: UInt64, name: String) throws {
        guard Self.isStored(name) else { throw FileSystemError(ENOTSUP) }
        try nameCreated(inDirectories: [], inodes: [inode])
        _ = try fs(.removexattr, xattr: true) { $0.inode = inode; $0.xattrName = name }
    }

    /// Open files, open handles, spooled bytes and files not named yet, for `/metrics`.
    func metricsSnapshot() -> (Int, Int, UInt64, Int) {
        lock.withLock { (openFiles.count, handles.count, spooledBytes, pendingCreates.count) }
    }

    // MARK: Lifecycle

    public func mounted() {
        logger.info("mounted", metadata: ["node": "\(ring.currentNode)"])
    }

    public func unmounting() {
        let remaining = lock.withLock { Array(openFiles.values) }
        for file in remaining {
            do { try file.flush() } catch { logger.error("write lost at unmount", metadata: ["inode": "\(file.inode)", "error": "\(error)"]) }
            file.discard()
        }
        _ = Glibc.rmdir(options.cacheDirectory)
    }
}
