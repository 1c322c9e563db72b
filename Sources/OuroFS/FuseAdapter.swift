import CFuse
import Glibc
import Logging
import OuroClient
import Synchronization

/// Translates libfuse low-level requests into `FileSystemOperations` calls; the file-system semantics live there.
///
/// Every request is answered exactly once, on the libfuse worker thread that received it: with the success reply,
/// or with `fuse_reply_err` carrying the errno of a thrown `FileSystemError` (EIO for any other error).
/// Operations missing from the table (lseek, fallocate, copy_file_range, ioctl, bmap, locks, access, poll,
/// ...) are answered ENOSYS by libfuse, and the kernel then falls back to its generic behaviour.
///
/// Lookup counts: the kernel counts one lookup for every entry reply (lookup, mknod, mkdir, symlink, link, create)
/// and for every readdirplus entry except "." and "..", and hands them all back with `forget`. Readdirplus entries
/// are built from `readdir`'s listing, without a `lookup` call per entry (that would cost a round trip per entry),
/// so `forget` counts include references the file system never saw individually: it must not expect them to match
/// its own `lookup` replies. An entry reply the kernel never received (its request was interrupted) is undone with
/// `forget` / `release`.
final class FuseAdapter {
    /// `OURO_WRITE_DIRECT_IO=0` turns direct I/O for write-only handles off (to compare).
    private let directIOForWriteOnly = getenv("OURO_WRITE_DIRECT_IO").map { String(cString: $0) != "0" } ?? true

    let fileSystem: FileSystemOperations
    private let operationMetrics = OperationMetrics()
    /// How long the kernel may cache attributes and names (attr_timeout and entry_timeout), in seconds.
    private let timeoutSeconds: Double
    /// Written as the mount's read-ahead window during INIT; 0 keeps the kernel's default.
    private let readAheadKB: Int
    /// Canonical path, as /proc/self/mountinfo shows it.
    private let mountpoint: String
    private let logger: Logger

    init(fileSystem: FileSystemOperations, timeoutSeconds: Double, readAheadKB: Int, mountpoint: String,
         logger: Logger) {
        self.fileSystem = fileSystem
        self.timeoutSeconds = timeoutSeconds
        self.readAheadKB = readAheadKB
        self.mountpoint = mountpoint
        self.logger = logger
    }

    /// The table for fuse_session_new; the session's userdata must be this adapter (unretained).
    /// The closures capture nothing (they are C function pointers) and find the adapter through the userdata.
    /// They are built here, in a library function: in `main.swift` top-level code they would be inferred
    /// `@MainActor` and crash when called on a libfuse thread.
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in adapter(userdata).initialize(conn!) }
        ops.destroy = { userdata in adapter(userdata).fileSystem.unmounting() }
        ops.lookup = { req, parent, name in adapter(req).lookup(req!, parent, name!) }
        ops.forget = { req, inode, count in adapter(req).forget(req!, inode, count) }
        ops.getattr = { req, inode, _ in adapter(req).getattr(req!, inode) }
        ops.setattr = { req, inode, attr, toSet, fi in adapter(req).setattr(req!, inode, attr!.pointee, toSet, fi) }
        ops.readlink = { req, inode in adapter(req).readlink(req!, inode) }
        ops.mknod = { req, parent, name, mode, rdev in adapter(req).mknod(req!, parent, name!, mode, rdev) }
        ops.mkdir = { req, parent, name, mode in adapter(req).mkdir(req!, parent, name!, mode) }
        ops.unlink = { req, parent, name in adapter(req).unlink(req!, parent, name!) }
        ops.rmdir = { req, parent, name in adapter(req).rmdir(req!, parent, name!) }
        ops.symlink = { req, target, parent, name in adapter(req).symlink(req!, target!, parent, name!) }
        ops.rename = { req, parent, name, newParent, newName, flags in
            adapter(req).rename(req!, parent, name!, newParent, newName!, flags)
        }
        ops.link = { req, inode, newParent, newName in adapter(req).link(req!, inode, newParent, newName!) }
        ops.open = { req, inode, fi in adapter(req).open(req!, inode, fi!) }
        ops.read = { req, _, size, offset, fi in adapter(req).read(req!, size, offset, fi!.pointee.fh) }
        ops.write = { req, _, buffer, size, offset, fi in
            adapter(req).write(req!, UnsafeRawBufferPointer(start: buffer, count: size), offset, fi!.pointee.fh)
        }
        ops.flush = { req, _, fi in adapter(req).flush(req!, fi!.pointee.fh) }
        ops.release = { req, _, fi in adapter(req).release(req!, fi!.pointee.fh) }
        ops.fsync = { req, _, dataOnly, fi in adapter(req).fsync(req!, dataOnly != 0, fi!.pointee.fh) }
        ops.opendir = { req, inode, fi in adapter(req).opendir(req!, inode, fi!) }
        ops.readdir = { req, _, size, offset, fi in
            adapter(req).readdir(req!, size, offset, DirectoryStream.of(fi!), plus: false)
        }
        ops.readdirplus = { req, _, size, offset, fi in
            adapter(req).readdir(req!, size, offset, DirectoryStream.of(fi!), plus: true)
        }
        ops.releasedir = { req, _, fi in adapter(req).releasedir(req!, fi!) }
        ops.fsyncdir = { req, inode, _, _ in adapter(req).fsyncdir(req!, inode) }
        ops.statfs = { req, _ in adapter(req).statfs(req!) }
        ops.setxattr = { req, inode, name, value, size, flags in
            adapter(req).setxattr(req!, inode, name!, UnsafeRawBufferPointer(start: value, count: size), flags)
        }
        ops.getxattr = { req, inode, name, size in adapter(req).getxattr(req!, inode, name!, size) }
        ops.listxattr = { req, inode, size in adapter(req).listxattr(req!, inode, size) }
        ops.removexattr = { req, inode, name in adapter(req).removexattr(req!, inode, name!) }
        ops.create = { req, parent, name, mode, fi in adapter(req).create(req!, parent, name!, mode, fi!) }
        ops.lseek = { req, _, offset, whence, fi in adapter(req).lseek(req!, offset, whence, fi!.pointee.fh) }
        ops.fallocate = { req, _, mode, offset, length, fi in adapter(req).fallocate(req!, mode, offset, length, fi!.pointee.fh) }
        return ops
    }

    // MARK: - Session

    private func initialize(_ conn: UnsafeMutablePointer<fuse_conn_info>) {
        // Readahead and async direct I/O are "background" requests; the kernel's default of 12 in flight starves
        // a file system whose reads wait on the network. Past the congestion threshold the kernel drops readahead.
        conn.pointee.max_background = max(conn.pointee.max_background, 64)
        conn.pointee.congestion_threshold = conn.pointee.max_background * 3 / 4
        conn.pointee.max_write = min(conn.pointee.max_write, 1 << 20)
        // libfuse's defaults are kept (async reads, parallel directory operations, readdirplus, O_TRUNC handled by
        // `open`, ...) except: no HANDLE_KILLPRIV (v1: CFuse negotiates v2, where the kernel says per request when
        // setuid/setgid must go, or else the kernel clears them itself); no writeback cache (it slows 1 MiB
        // writers); and no spliced reads, so that CFuse's watch sees every request.
        conn.pointee.want &= ~UInt32(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ)
        if readAheadKB > 0 {
            // The kernel keeps the smaller of the mount's current window and the INIT reply's max_readahead, so
            // raise both. The mount (and its bdi) already exists: INIT is the first request the kernel sends.
            conn.pointee.max_readahead = UInt32(readAheadKB * 1024)
            let result = cfuse_set_read_ahead_kb(mountpoint, UInt32(readAheadKB))
            if result != 0 {
                logger.warning("could not set the mount's read-ahead window", metadata: [
                    "mountpoint": "\(mountpoint)", "readAheadKB": "\(readAheadKB)",
                    "error": "\(String(cString: strerror(-result)))",
                ])
            }
        }
        fileSystem.mounted()
    }

    // MARK: - Names and attributes

    private func lookup(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>) {
        answer(req) {
            do {
                replyEntry(req, try fileSystem.lookup(parent: parent, name: try string(name)))
            } catch let error as FileSystemError where error.errno == ENOENT {
                // A name found missing is remembered as long as a found one (a negative dentry: inode 0), so a
                // compiler probing the same include paths for every file asks once. This mount's own creates
                // replace it at once; another mount's show here within the timeout, as its removals do.
                var entry = fuse_entry_param()
                entry.entry_timeout = timeoutSeconds
                fuse_reply_entry(req, &entry)
            }
        }
    }

    private func forget(_ req: fuse_req_t, _ inode: UInt64, _ count: UInt64) {
        fileSystem.forget(inode: inode, count: count)
        fuse_reply_none(req)
    }

    private func getattr(_ req: fuse_req_t, _ inode: UInt64) {
        answer(req) { replyAttributes(req, try fileSystem.getattr(inode: inode)) }
    }

    private func setattr(_ req: fuse_req_t, _ inode: UInt64, _ attr: stat, _ toSet: Int32,
                         _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        answer(req) {
            var changes = AttributeChanges()
            // The kernel sends the full st_mode: file type bits included.
            if toSet & FUSE_SET_ATTR_MODE != 0 { changes.mode = attr.st_mode }
            if toSet & FUSE_SET_ATTR_UID != 0 { changes.uid = attr.st_uid }
            if toSet & FUSE_SET_ATTR_GID != 0 { changes.gid = attr.st_gid }
            if toSet & FUSE_SET_ATTR_SIZE != 0 { changes.sizeBytes = UInt64(attr.st_size) }
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 {
                changes.atime = .now
            } else if toSet & FUSE_SET_ATTR_ATIME != 0 {
                changes.atime = .set(attr.st_atim)
            }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
                changes.mtime = .now
            } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
                changes.mtime = .set(attr.st_mtim)
            }
            let attributes = try fileSystem.setattr(inode: inode, changes: changes, handle: fi?.pointee.fh,
                                                    context: context(req))
            replyAttributes(req, attributes)
        }
    }

    private func readlink(_ req: fuse_req_t, _ inode: UInt64) {
        answer(req) { fuse_reply_readlink(req, try fileSystem.readlink(inode: inode)) }
    }

    private func mknod(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>, _ mode: mode_t,
                       _ rdev: dev_t) {
        answer(req) {
            // The protocol carries a 32-bit device number; libfuse widens it to dev_t.
            replyEntry(req, try fileSystem.mknod(parent: parent, name: try string(name), mode: mode,
                                                 rdev: UInt32(truncatingIfNeeded: rdev), context: context(req)))
        }
    }

    private func mkdir(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>, _ mode: mode_t) {
        answer(req) {
            // mkdir(2) passes permission bits only; add the type so `mode` is a full st_mode as in mknod/create.
            replyEntry(req, try fileSystem.mkdir(parent: parent, name: try string(name), mode: mode | S_IFDIR,
                                                 context: context(req)))
        }
    }

    private func unlink(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>) {
        answer(req) {
            try fileSystem.unlink(parent: parent, name: try string(name))
            fuse_reply_err(req, 0)
        }
    }

    private func rmdir(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>) {
        answer(req) {
            try fileSystem.rmdir(parent: parent, name: try string(name))
            fuse_reply_err(req, 0)
        }
    }

    private func symlink(_ req: fuse_req_t, _ target: UnsafePointer<CChar>, _ parent: UInt64,
                         _ name: UnsafePointer<CChar>) {
        answer(req) {
            replyEntry(req, try fileSystem.symlink(target: try string(target), parent: parent, name: try string(name),
                                                   context: context(req)))
        }
    }

    private func rename(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>, _ newParent: UInt64,
                        _ newName: UnsafePointer<CChar>, _ flags: UInt32) {
        answer(req) {
            try fileSystem.rename(parent: parent, name: try string(name), newParent: newParent,
                                  newName: try string(newName), flags: flags)
            fuse_reply_err(req, 0)
        }
    }

    private func link(_ req: fuse_req_t, _ inode: UInt64, _ newParent: UInt64, _ newName: UnsafePointer<CChar>) {
        answer(req) {
            replyEntry(req, try fileSystem.link(inode: inode, newParent: newParent, newName: try string(newName)))
        }
    }

    // MARK: - Files

    private func open(_ req: fuse_req_t, _ inode: UInt64, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        answer(req) {
            let handle = try fileSystem.open(inode: inode, flags: fi.pointee.flags, context: context(req))
            setFileHandle(fi, handle)
            if fuse_reply_open(req, fi) == -ENOENT {
                // The open was interrupted: the kernel will never release this handle. Nobody to tell of an error.
                try? fileSystem.release(handle: handle)
            }
        }
    }

    private func create(_ req: fuse_req_t, _ parent: UInt64, _ name: UnsafePointer<CChar>, _ mode: mode_t,
                        _ fi: UnsafeMutablePointer<fuse_file_info>) {
        answer(req) {
            let (attributes, handle) = try fileSystem.create(parent: parent, name: try string(name), mode: mode,
                                                             flags: fi.pointee.flags, context: context(req))
            setFileHandle(fi, handle)
            var entry = entryParameters(attributes)
            if fuse_reply_create(req, &entry, fi) == -ENOENT {
                // Interrupted: the kernel neither counted the lookup nor holds the handle.
                fileSystem.forget(inode: attributes.inode, count: 1)
                try? fileSystem.release(handle: handle)
            }
        }
    }

    private func read(_ req: fuse_req_t, _ size: Int, _ offset: off_t, _ handle: UInt64) {
        answer(req) {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
            defer { buffer.deallocate() }
            let count = try fileSystem.read(handle: handle, offset: UInt64(offset), size: size, into: buffer)
            precondition(count >= 0 && count <= size, "read returned \(count) bytes for a \(size)-byte request")
            operationMetrics.bytesRead.increment(by: Int64(count))
            fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), count)
        }
    }

    private func write(_ req: fuse_req_t, _ data: UnsafeRawBufferPointer, _ offset: off_t, _ handle: UInt64) {
        answer(req) {
            let count = try fileSystem.write(handle: handle, offset: UInt64(offset), data: data, context: context(req))
            operationMetrics.bytesWritten.increment(by: Int64(count))
            fuse_reply_write(req, count)
        }
    }

    private func flush(_ req: fuse_req_t, _ handle: UInt64) {
        answer(req) {
            try fileSystem.flush(handle: handle)
            fuse_reply_err(req, 0)
        }
    }

    private func release(_ req: fuse_req_t, _ handle: UInt64) {
        answer(req) {
            try fileSystem.release(handle: handle)
            fuse_reply_err(req, 0)
        }
    }

    private func fsync(_ req: fuse_req_t, _ dataOnly: Bool, _ handle: UInt64) {
        answer(req) {
            try fileSystem.fsync(handle: handle, dataOnly: dataOnly)
            fuse_reply_err(req, 0)
        }
    }

    /// The kernel asks only for SEEK_DATA and SEEK_HOLE; it answers the other whences itself.
    private func lseek(_ req: fuse_req_t, _ offset: off_t, _ whence: Int32, _ handle: UInt64) {
        answer(req) {
            let (seekData, seekHole): (Int32, Int32) = (3, 4)  // unistd.h, behind _GNU_SOURCE
            guard offset >= 0, whence == seekData || whence == seekHole else { throw FileSystemError(EINVAL) }
            let found = try fileSystem.seek(handle: handle, offset: UInt64(offset), data: whence == seekData)
            fuse_reply_lseek(req, off_t(found))
        }
    }

    private func fallocate(_ req: fuse_req_t, _ mode: Int32, _ offset: off_t, _ length: off_t, _ handle: UInt64) {
        answer(req) {
            guard offset >= 0, length > 0 else { throw FileSystemError(EINVAL) }
            try fileSystem.fallocate(handle: handle, mode: mode, offset: UInt64(offset), length: UInt64(length))
            fuse_reply_err(req, 0)
        }
    }

    // MARK: - Directories

    private func opendir(_ req: fuse_req_t, _ inode: UInt64, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        answer(req) {
            let stream = DirectoryStream(inode: inode, handle: try fileSystem.opendir(inode: inode))
            setFileHandle(fi, stream.retainedFileHandle())
            fi.pointee.cache_readdir = 0
            if fuse_reply_open(req, fi) == -ENOENT {
                // Interrupted: the kernel will never send releasedir.
                releaseStream(fi)
            }
        }
    }

    private func releasedir(_ req: fuse_req_t, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        releaseStream(fi)
        fuse_reply_err(req, 0)
    }

    private func fsyncdir(_ req: fuse_req_t, _ inode: UInt64) {
        answer(req) {
            try fileSystem.fsyncdir(inode: inode)
            fuse_reply_err(req, 0)
        }
    }

    private func releaseStream(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        fileSystem.releasedir(handle: DirectoryStream.release(fi).handle)
    }

    /// Sends the entries from position `offset` on that fit in `size` bytes. Positions count ".", "..", then the
    /// file system's entries; each entry carries the position after it, which the kernel passes back as the next
    /// `offset`. The entries come a page at a time (`DirectoryStream`): the listing starts again when the kernel
    /// starts at 0 (first call, rewinddir), and each next page follows the last name of the one before, so
    /// entries created or removed in between are neither repeated nor skipped, and memory holds one page whatever
    /// the directory's size. Readdirplus entries carry the listing's attributes, which the kernel caches like a
    /// lookup's.
    private func readdir(_ req: fuse_req_t, _ size: Int, _ offset: off_t, _ stream: DirectoryStream, plus: Bool) {
        answer(req) {
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
            defer { buffer.deallocate() }
            var used = 0
            try stream.page.withLock { page in
                // A plain readdir takes names only (the kernel asks for readdirplus at the start of a listing and
                // after lookups in the directory, plain readdir otherwise): no attributes fetched for `ls -f`,
                // `find` or `rm -r`.
                func load(after: String?, start: Int) throws {
                    let (entries, more) = try fileSystem.readdir(inode: stream.inode, handle: stream.handle, after: after, namesOnly: !plus)
                    page = DirectoryStream.Page(start: start, after: after, entries: entries, more: more, namesOnly: !plus)
                }
                if offset == 0 || page == nil { try load(after: nil, start: 2) }
                var position = max(0, Int(offset))
                if position >= 2, position < page!.start {
                    // Back before this page (a seekdir to an old telldir): the listing again from the start.
                    try load(after: nil, start: 2)
                }
                if plus, page!.namesOnly, position >= page!.start {
                    // Readdirplus in a page of names: the rest of it again, with attributes.
                    let index = min(position - page!.start, page!.entries.count)
                    try load(after: index == 0 ? page!.after : page!.entries[index - 1].name, start: page!.start + index)
                    position = page!.start
                }
                while true {
                    let name: String
                    var entry = fuse_entry_param()
                    if position < 2 {
                        // Node id 0: the kernel takes no attributes and counts no lookup for these.
                        name = position == 0 ? "." : ".."
                        entry.attr.st_ino = ino_t(position == 0 ? stream.inode : Self.unknownInode)
                        entry.attr.st_mode = S_IFDIR
                    } else {
                        let index = position - page!.start
                        if index >= page!.entries.count {
                            guard page!.more, let last = page!.entries.last?.name else { break }
                            try load(after: last, start: page!.start + page!.entries.count)
                            continue
                        }
                        name = page!.entries[index].name
                        entry = entryParameters(page!.entries[index].attributes)
                    }
                    let free = size - used
                    let next = off_t(position + 1)
                    // Both return the size the entry needs, and add it only if that fits.
                    let length = plus
                        ? fuse_add_direntry_plus(req, buffer + used, free, name, &entry, next)
                        : fuse_add_direntry(req, buffer + used, free, name, &entry.attr, next)
                    guard length <= free else { break }
                    used += length
                    position += 1
                }
            }
            fuse_reply_buf(req, buffer, used)
        }
    }

    /// The inode number reported for "..", whose inode the adapter does not know (libfuse's high-level API
    /// reports unknown inodes the same way).
    private static let unknownInode: UInt64 = 0xffff_ffff

    // MARK: - File system and extended attributes

    private func statfs(_ req: fuse_req_t) {
        answer(req) {
            let stats = try fileSystem.statfs()
            var result = statvfs()
            result.f_bsize = numericCast(stats.blockSize)
            result.f_frsize = numericCast(stats.blockSize)
            result.f_blocks = numericCast(stats.totalBlocks)
            result.f_bfree = numericCast(stats.freeBlocks)
            result.f_bavail = numericCast(stats.availableBlocks)
            result.f_files = numericCast(stats.files)
            result.f_ffree = numericCast(stats.freeFiles)
            result.f_favail = numericCast(stats.freeFiles)
            result.f_namemax = numericCast(stats.maxNameLength)
            fuse_reply_statfs(req, &result)
        }
    }

    private func setxattr(_ req: fuse_req_t, _ inode: UInt64, _ name: UnsafePointer<CChar>,
                          _ value: UnsafeRawBufferPointer, _ flags: Int32) {
        answer(req) {
            try fileSystem.setxattr(inode: inode, name: try string(name), value: Array(value), flags: flags)
            fuse_reply_err(req, 0)
        }
    }

    private func getxattr(_ req: fuse_req_t, _ inode: UInt64, _ name: UnsafePointer<CChar>, _ size: Int) {
        answer(req) { replyXattr(req, try fileSystem.getxattr(inode: inode, name: try string(name)), size) }
    }

    private func listxattr(_ req: fuse_req_t, _ inode: UInt64, _ size: Int) {
        answer(req) {
            // The list is the names, each terminated by a NUL byte.
            let names = try fileSystem.listxattr(inode: inode).flatMap { Array($0.utf8) + [UInt8(0)] }
            replyXattr(req, names, size)
        }
    }

    private func removexattr(_ req: fuse_req_t, _ inode: UInt64, _ name: UnsafePointer<CChar>) {
        answer(req) {
            try fileSystem.removexattr(inode: inode, name: try string(name))
            fuse_reply_err(req, 0)
        }
    }

    /// `size` 0 asks for the length only; a value longer than `size` is ERANGE (getxattr(2), listxattr(2)).
    private func replyXattr(_ req: fuse_req_t, _ value: [UInt8], _ size: Int) {
        if size == 0 {
            fuse_reply_xattr(req, value.count)
        } else if value.count > size {
            fuse_reply_err(req, ERANGE)
        } else {
            _ = value.withUnsafeBytes { bytes in
                fuse_reply_buf(req, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }
    }

    // MARK: - Replies and conversions

    /// Runs `body`, which sends the success reply; if it throws instead, answers with the error's errno.
    /// Runs an operation and answers the kernel with its error, if any; counts it for `/metrics` under the name of
    /// the adapter function that called (`lookup`, `read`…).
    private func answer(_ req: fuse_req_t, operation: String = #function, _ body: () throws -> Void) {
        let started = monotonicNanoseconds()
        var failed = true
        defer { operationMetrics.record(operation, nanoseconds: monotonicNanoseconds() - started, failed: failed) }
        do {
            try body()
            failed = false
        } catch let error as FileSystemError where error.errno > 0 {
            fuse_reply_err(req, error.errno)
        } catch {
            fuse_reply_err(req, EIO)
        }
    }

    private func replyEntry(_ req: fuse_req_t, _ attributes: FileAttributes) {
        var entry = entryParameters(attributes)
        if fuse_reply_entry(req, &entry) == -ENOENT {
            fileSystem.forget(inode: attributes.inode, count: 1)  // interrupted: the kernel did not count it
        }
    }

    private func replyAttributes(_ req: fuse_req_t, _ attributes: FileAttributes) {
        var attr = Self.makeStat(attributes)
        fuse_reply_attr(req, &attr, timeoutSeconds)
    }

    private func entryParameters(_ attributes: FileAttributes) -> fuse_entry_param {
        var entry = fuse_entry_param()
        entry.ino = attributes.inode
        entry.attr = Self.makeStat(attributes)
        entry.attr_timeout = timeoutSeconds
        entry.entry_timeout = timeoutSeconds
        return entry
    }

    /// Page cache kept across opens only while the attributes say the file is unchanged (no keep_cache). A handle
    /// opened write-only (`cp`'s destination) uses direct I/O: its writes go from the application's buffer to us
    /// without a copy into the kernel's page cache, which only this handle would have filled (it cannot read or
    /// map shared-writable). Other handles read and write through the page cache and kernel readahead.
    private func setFileHandle(_ fi: UnsafeMutablePointer<fuse_file_info>, _ handle: UInt64) {
        fi.pointee.fh = handle
        fi.pointee.keep_cache = 0
        fi.pointee.direct_io = (directIOForWriteOnly && fi.pointee.flags & O_ACCMODE == O_WRONLY)
            || fileSystem.usesDirectIO(handle: handle) ? 1 : 0
    }

    private static func makeStat(_ attributes: FileAttributes) -> stat {
        var attr = stat()
        attr.st_ino = ino_t(attributes.inode)
        attr.st_mode = attributes.mode
        attr.st_nlink = numericCast(attributes.linkCount)
        attr.st_uid = attributes.uid
        attr.st_gid = attributes.gid
        attr.st_rdev = numericCast(attributes.rdev)
        attr.st_size = off_t(attributes.sizeBytes)
        attr.st_blocks = blkcnt_t(((attributes.storedBytes ?? attributes.sizeBytes) + 511) / 512)  // du(1) counts 512-byte blocks
        attr.st_atim = attributes.atime
        attr.st_mtim = attributes.mtime
        attr.st_ctim = attributes.ctime
        return attr
    }

    private func context(_ req: fuse_req_t) -> RequestContext {
        let caller = fuse_req_ctx(req)!.pointee
        var context = RequestContext(uid: caller.uid, gid: caller.gid, pid: caller.pid, umask: caller.umask)
        context.killsSetID = cfuse_killpriv_v2_active() != 0 ? cfuse_request_kills_suidgid() != 0 : nil
        return context
    }

    /// Names are bytes to the kernel but `String`s to the file system: refuse what is not UTF-8 rather than
    /// let two different names decode to the same string.
    private func string(_ name: UnsafePointer<CChar>) throws -> String {
        guard let string = String(validatingCString: name) else { throw FileSystemError(EILSEQ) }
        return string
    }
}

// Free functions rather than static methods: a closure calling a static method implicitly captures the
// metatype, and a C function pointer cannot capture anything.
private func adapter(_ req: fuse_req_t?) -> FuseAdapter {
    adapter(fuse_req_userdata(req))
}

private func adapter(_ userdata: UnsafeMutableRawPointer?) -> FuseAdapter {
    Unmanaged<FuseAdapter>.fromOpaque(userdata!).takeUnretainedValue()
}

/// One open directory: the file system's handle and the listing the kernel pages through (see `readdir`).
/// Its retained reference travels in `fuse_file_info.fh` from opendir to releasedir.
private final class DirectoryStream {
    let inode: UInt64
    let handle: UInt64
    /// The page of entries the kernel is reading: its first entry's position, the entries, whether more follow.
    struct Page {
        var start: Int
        /// The name the page follows (nil: the first page).
        var after: String?
        var entries: [DirectoryEntry]
        var more: Bool
        /// Entries with only their inode numbers and file types (loaded for a plain readdir).
        var namesOnly: Bool
    }
    let page = Mutex<Page?>(nil)

    init(inode: UInt64, handle: UInt64) {
        self.inode = inode
        self.handle = handle
    }

    func retainedFileHandle() -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passRetained(self).toOpaque()))
    }

    static func of(_ fi: UnsafeMutablePointer<fuse_file_info>) -> DirectoryStream {
        unmanaged(fi).takeUnretainedValue()
    }

    /// Takes back the reference `retainedFileHandle` gave away.
    static func release(_ fi: UnsafeMutablePointer<fuse_file_info>) -> DirectoryStream {
        unmanaged(fi).takeRetainedValue()
    }

    private static func unmanaged(_ fi: UnsafeMutablePointer<fuse_file_info>) -> Unmanaged<DirectoryStream> {
        Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!)
    }
}
