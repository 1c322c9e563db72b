import Glibc

/// Attributes of one inode as the kernel sees them (mirrors `struct stat`).
public struct FileAttributes: Sendable, Equatable {
    public var inode: UInt64
    /// Full `st_mode`: file type bits (S_IFREG, S_IFDIR, ...) | permission bits.
    public var mode: UInt32
    public var linkCount: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt32
    public var sizeBytes: UInt64
    /// Bytes the file takes (`st_blocks`): less than its size when it has holes. Nil: its size.
    public var storedBytes: UInt64?
    public var atime: timespec
    public var mtime: timespec
    public var ctime: timespec

    public init(inode: UInt64, mode: UInt32, linkCount: UInt32, uid: UInt32, gid: UInt32, rdev: UInt32,
                sizeBytes: UInt64, atime: timespec, mtime: timespec, ctime: timespec) {
        self.inode = inode; self.mode = mode; self.linkCount = linkCount; self.uid = uid; self.gid = gid
        self.rdev = rdev; self.sizeBytes = sizeBytes; self.atime = atime; self.mtime = mtime; self.ctime = ctime
    }

    public static func == (a: FileAttributes, b: FileAttributes) -> Bool {
        a.inode == b.inode && a.mode == b.mode && a.linkCount == b.linkCount && a.uid == b.uid && a.gid == b.gid
            && a.rdev == b.rdev && a.sizeBytes == b.sizeBytes && a.mtime.tv_sec == b.mtime.tv_sec
            && a.mtime.tv_nsec == b.mtime.tv_nsec
    }
}

/// Which attributes a `setattr` changes (nil = unchanged).
public struct AttributeChanges: Sendable {
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var sizeBytes: UInt64?
    public enum TimeChange: Sendable { case now; case set(timespec) }
    public var atime: TimeChange?
    public var mtime: TimeChange?
    public init() {}
}

public struct DirectoryEntry: Sendable {
    public var name: String
    public var attributes: FileAttributes
    public init(name: String, attributes: FileAttributes) { self.name = name; self.attributes = attributes }
}

public struct FileSystemStats: Sendable {
    public var blockSize: UInt64
    public var totalBlocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var files: UInt64
    public var freeFiles: UInt64
    public var maxNameLength: UInt64
    public init(blockSize: UInt64, totalBlocks: UInt64, freeBlocks: UInt64, availableBlocks: UInt64,
                files: UInt64, freeFiles: UInt64, maxNameLength: UInt64) {
        self.blockSize = blockSize; self.totalBlocks = totalBlocks; self.freeBlocks = freeBlocks
        self.availableBlocks = availableBlocks; self.files = files; self.freeFiles = freeFiles
        self.maxNameLength = maxNameLength
    }
}

/// The caller of a request (from `fuse_req_ctx`).
public struct RequestContext: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public var umask: UInt32
    /// Whether this write, truncate, chown or O_TRUNC open must clear setuid (and setgid where the group may
    /// execute), as the kernel said (FUSE_HANDLE_KILLPRIV_V2); nil where the kernel does not say (it then clears
    /// them itself, except for writes the file system must judge: root's keep them).
    public var killsSetID: Bool?
    public init(uid: UInt32, gid: UInt32, pid: Int32, umask: UInt32) {
        self.uid = uid; self.gid = gid; self.pid = pid; self.umask = umask
    }
}

/// An errno to answer the kernel with. Every failure at the FUSE boundary is one of these.
public struct FileSystemError: Error, Sendable, Equatable {
    public var errno: Int32
    public init(_ errno: Int32) { self.errno = errno }
}

/// The file-system semantics the FUSE adapter translates to. FUSE-free, so it can be tested without a mount.
/// Inode 1 is the root. Every method may block (network I/O); the adapter calls them from libfuse worker threads.
/// All throw `FileSystemError`.
public protocol FileSystemOperations: AnyObject, Sendable {
    func lookup(parent: UInt64, name: String) throws -> FileAttributes
    func forget(inode: UInt64, count: UInt64)
    func getattr(inode: UInt64) throws -> FileAttributes
    func setattr(inode: UInt64, changes: AttributeChanges, handle: UInt64?, context: RequestContext) throws -> FileAttributes
    func readlink(inode: UInt64) throws -> String
    func mknod(parent: UInt64, name: String, mode: UInt32, rdev: UInt32, context: RequestContext) throws -> FileAttributes
    func mkdir(parent: UInt64, name: String, mode: UInt32, context: RequestContext) throws -> FileAttributes
    func unlink(parent: UInt64, name: String) throws
    func rmdir(parent: UInt64, name: String) throws
    func symlink(target: String, parent: UInt64, name: String, context: RequestContext) throws -> FileAttributes
    /// `flags`: RENAME_NOREPLACE / RENAME_EXCHANGE from renameat2 (0 for plain rename).
    func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, flags: UInt32) throws
    func link(inode: UInt64, newParent: UInt64, newName: String) throws -> FileAttributes
    /// Returns a file handle.
    func open(inode: UInt64, flags: Int32, context: RequestContext) throws -> UInt64
    /// Reads up to `size` bytes at `offset` into `buffer` (capacity >= size); returns the byte count (short only at EOF).
    func read(handle: UInt64, offset: UInt64, size: Int, into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    func write(handle: UInt64, offset: UInt64, data: UnsafeRawBufferPointer, context: RequestContext) throws -> Int
    func flush(handle: UInt64) throws
    func release(handle: UInt64) throws
    func fsync(handle: UInt64, dataOnly: Bool) throws
    /// `SEEK_DATA` (`data`) or `SEEK_HOLE` from `offset`: the offset found; ENXIO when there is none.
    func seek(handle: UInt64, offset: UInt64, data: Bool) throws -> UInt64
    /// `fallocate(2)` with its `mode` flags (linux/falloc.h).
    func fallocate(handle: UInt64, mode: Int32, offset: UInt64, length: UInt64) throws
    func opendir(inode: UInt64) throws -> UInt64
    /// A page of entries (not "." and "..", which the adapter adds): those after the name `after` (nil: from the
    /// start) in the file system's order, and whether more follow. The adapter pages through them by offset.
    /// `namesOnly` (a plain readdir): the entries' attributes need hold only the inode number and the file type.
    func readdir(inode: UInt64, handle: UInt64, after: String?, namesOnly: Bool) throws -> (entries: [DirectoryEntry], more: Bool)
    func releasedir(handle: UInt64)
    /// `fsync` of a directory: the changes of names made so far are durable when it returns.
    func fsyncdir(inode: UInt64) throws
    func statfs() throws -> FileSystemStats
    func setxattr(inode: UInt64, name: String, value: [UInt8], flags: Int32) throws
    func getxattr(inode: UInt64, name: String) throws -> [UInt8]
    func listxattr(inode: UInt64) throws -> [String]
    func removexattr(inode: UInt64, name: String) throws
    /// Creates and opens a regular file: returns its attributes and a handle.
    func create(parent: UInt64, name: String, mode: UInt32, flags: Int32, context: RequestContext) throws -> (FileAttributes, UInt64)
    /// Called once the session is initialised (after FUSE INIT), before any other request is answered.
    func mounted()
    /// Called when the session is about to be destroyed.
    func unmounting()
    /// Whether reads and writes of this handle bypass the page cache (files whose size is not known up front).
    func usesDirectIO(handle: UInt64) -> Bool
}

extension FileSystemOperations {
    public func usesDirectIO(handle: UInt64) -> Bool { false }
}
