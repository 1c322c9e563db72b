import COuroSupport
import Glibc
import OuroClient
import OuroCore
import SystemPackage

/// The chunk files of one node, under `<data>/chunks`. A chunk is written to a temp file, fsynced, then renamed
/// into place, so a chunk file that exists is always whole.
public final class ChunkStore: @unchecked Sendable {
    public let directory: FilePath
    private let directoryFD: FileDescriptor
    /// Small copies recorded there may not have their chunk file yet: every look at a chunk writes it first.
    weak var journal: PieceJournal?

    public init(directory: FilePath) throws {
        self.directory = directory
        try FileManagerLite.createDirectory(directory)
        directoryFD = try FileDescriptor.open(directory, .readOnly, options: [.directory, .closeOnExec])
        // Temp files are pushes that never finished: nothing references them.
        for name in try FileManagerLite.list(directory) where name.contains(".tmp-") {
            _ = unlink(directory.appending(name).string)
        }
    }

    deinit { try? directoryFD.close() }

    public func path(of chunk: ChunkID) -> FilePath { directory.appending(chunk.fileName) }

    /// Starts writing a chunk; nothing is visible under its name until `commit`.
    public func create(_ chunk: ChunkID) throws -> ChunkWriter {
        let temp = directory.appending("\(chunk.fileName).tmp-\(UInt32.random(in: 0...UInt32.max))")
        do {
            let fd = try FileDescriptor.open(temp, .writeOnly, options: [.create, .exclusiveCreate, .closeOnExec],
                                             permissions: [.ownerReadWrite, .groupRead, .otherRead])
            return ChunkWriter(store: self, chunk: chunk, tempPath: temp, fd: fd)
        } catch let error as Errno {
            throw ChunkStore.wireError(error, "creating \(chunk)")
        }
    }

    /// Makes renames into the directory durable.
    func syncDirectory() throws {
        try directoryFD.sync()
    }

    /// Makes every chunk file written so far durable, with their directory entries, in one flush of the file system
    /// (syncfs: the other files on it are written back too, so only for many small files at once).
    func syncFileSystem() throws {
        guard ouro_syncfs(directoryFD.rawValue) == 0 else { throw Errno(rawValue: errno) }
    }

    public func exists(_ chunk: ChunkID) -> Bool {
        journal?.materialize(chunk)
        return access(path(of: chunk).string, F_OK) == 0
    }

    /// Opens a stored chunk for reading.
    public func open(_ chunk: ChunkID) throws -> FileDescriptor {
        journal?.materialize(chunk)
        do {
            return try FileDescriptor.open(path(of: chunk), .readOnly, options: [.closeOnExec])
        } catch Errno.noSuchFileOrDirectory {
            throw OuroError.notFound("chunk \(chunk) is not stored here")
        } catch let error as Errno {
            throw ChunkStore.wireError(error, "opening \(chunk)")
        }
    }

    public func sizeBytes(of chunk: ChunkID) -> UInt64? {
        journal?.materialize(chunk)
        var info = stat()
        guard stat(path(of: chunk).string, &info) == 0 else { return nil }
        return UInt64(info.st_size)
    }

    /// Length and CRC-32C of the stored copy, read from disk.
    public func check(_ chunk: ChunkID) throws -> (lengthBytes: UInt64, crc32c: UInt32) {
        let fd = try open(chunk)
        defer { try? fd.close() }
        var crc = CRC32C()
        var total: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: Int(max(1, min(UInt64(Limits.streamBufferBytes), sizeBytes(of: chunk) ?? 0))))
        try buffer.withUnsafeMutableBytes { raw in
            while true {
                let count = try fd.read(into: raw, retryOnInterrupt: true)
                if count == 0 { break }
                crc.update(UnsafeRawBufferPointer(rebasing: raw[..<count]))
                total += UInt64(count)
            }
        }
        return (total, crc.value)
    }

    public func delete(_ chunk: ChunkID) {
        journal?.forget(chunk)
        _ = unlink(path(of: chunk).string)
    }

    /// Serialises `keep` with the janitor's deletions, so a chunk confirmed by `keep` is never removed under it.
    private let keepLock = Lock()

    /// Is the chunk stored? If so its modification time becomes now: the janitor leaves it alone for another grace
    /// period (a segment the mount pushed is named in the catalog only when the whole file is committed).
    public func keep(_ chunk: ChunkID) -> Bool {
        journal?.materialize(chunk)
        return keepLock.withLock { utimensat(AT_FDCWD, path(of: chunk).string, nil, 0) == 0 }
    }

    /// Deletes a garbage chunk unless it was modified (or kept) since `seconds` (the janitor's last look).
    public func deleteIfUnchanged(_ chunk: ChunkID, modifiedSeconds: Int) -> Bool {
        keepLock.withLock {
            var info = stat()
            guard stat(path(of: chunk).string, &info) == 0, info.st_mtim.tv_sec <= modifiedSeconds else { return false }
            journal?.forget(chunk)
            return unlink(path(of: chunk).string) == 0
        }
    }

    /// Every stored chunk with its size and modification time (seconds).
    public func list() throws -> [(chunk: ChunkID, sizeBytes: UInt64, modifiedSeconds: Int)] {
        journal?.materializeAll()
        return try FileManagerLite.list(directory).compactMap { name in
            guard let chunk = ChunkID(fileName: name) else { return nil }
            var info = stat()
            guard stat(directory.appending(name).string, &info) == 0 else { return nil }
            return (chunk, UInt64(info.st_size), info.st_mtim.tv_sec)
        }
    }

    /// The disk the chunks live on: total, free, and available bytes.
    public func diskUsage() -> (total: UInt64, free: UInt64, available: UInt64) {
        var info = statvfs()
        guard statvfs(directory.string, &info) == 0 else { return (0, 0, 0) }
        let block = UInt64(info.f_frsize)
        return (UInt64(info.f_blocks) * block, UInt64(info.f_bfree) * block, UInt64(info.f_bavail) * block)
    }

    static func wireError(_ error: Errno, _ doing: String) -> OuroError {
        switch error {
        case .noSpace, .diskQuotaExceeded: OuroError(.noSpace, "disk full while \(doing)")
        default: OuroError(.internal, "\(doing): \(error)")
        }
    }
}

/// One chunk being written: bytes go to a temp file with a running checksum; `commit` makes it durable.
public final class ChunkWriter {
    let store: ChunkStore
    public let chunk: ChunkID
    let tempPath: FilePath
    let fd: FileDescriptor
    public private(set) var crc = CRC32C()
    public private(set) var writtenBytes: UInt64 = 0
    private var finished = false
    /// Bytes already handed to the disk for writing back (see `write`).
    private var writebackStartedBytes: UInt64 = 0
    /// Bytes already on disk and dropped from the page cache.
    private var droppedBytes: UInt64 = 0
    private static let writebackStepBytes: UInt64 = 8 << 20

    init(store: ChunkStore, chunk: ChunkID, tempPath: FilePath, fd: FileDescriptor) {
        self.store = store
        self.chunk = chunk
        self.tempPath = tempPath
        self.fd = fd
    }

    deinit { abort() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        do {
            _ = try fd.writeAll(bytes)
        } catch let error as Errno {
            throw ChunkStore.wireError(error, "writing \(chunk)")
        }
        crc.update(bytes)
        writtenBytes += UInt64(bytes.count)
        // Start writing back behind the stream instead of leaving it all to the final fsync: the disk works while
        // the network does, and the fsync at the end has little left to do.
        if writtenBytes - writebackStartedBytes >= Self.writebackStepBytes {
            // Drop behind (as HDFS's DataNodes can): what was handed to the disk steps ago is written by now, and its
            // pages leave the cache. A stream of chunks then reuses a few steps of memory instead of filling the page
            // cache with bytes that are read, if ever, much later; readers get them from disk.
            // Two steps behind, so that the wait finds them written and does not hold up the stream.
            let dropUpTo = writebackStartedBytes >= 2 * Self.writebackStepBytes ? writebackStartedBytes - 2 * Self.writebackStepBytes : 0
            if dropUpTo > droppedBytes {
                _ = ouro_drop_behind(fd.rawValue, Int64(droppedBytes), Int64(dropUpTo - droppedBytes))
                droppedBytes = dropUpTo
            }
            _ = ouro_start_writeback(fd.rawValue, Int64(writebackStartedBytes), Int64(writtenBytes - writebackStartedBytes))
            writebackStartedBytes = writtenBytes
        }
    }

    /// fsync, rename into place. The caller syncs the directory once for a batch (`ChunkStore.syncDirectory`).
    public func commit() throws {
        precondition(!finished, "a chunk is committed once")
        do {
            try fd.syncData()
            _ = posix_fadvise(fd.rawValue, 0, 0, POSIX_FADV_DONTNEED)  // on disk now: the rest leaves the cache too
            try fd.close()
            finished = true
            try FileManagerLite.rename(tempPath, store.path(of: chunk))
        } catch let error as Errno {
            abort()
            throw ChunkStore.wireError(error, "storing \(chunk)")
        }
    }

    /// Drops the temp file (a failed or interrupted push).
    public func abort() {
        guard !finished else { return }
        finished = true
        try? fd.close()
        _ = unlink(tempPath.string)
    }
}

/// The few file-system calls the node needs, as throwing functions.
enum FileManagerLite {
    static func createDirectory(_ path: FilePath) throws {
        var partial = FilePath(path.root?.string ?? "")
        for component in path.components {
            partial.append(component)
            if mkdir(partial.string, 0o755) != 0 && errno != EEXIST {
                throw OuroError(.internal, "cannot create \(partial): \(String(cString: strerror(errno)))")
            }
        }
    }

    static func list(_ path: FilePath) throws -> [String] {
        guard let dir = opendir(path.string) else {
            throw OuroError(.internal, "cannot list \(path): \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func rename(_ from: FilePath, _ to: FilePath) throws {
        guard Glibc.rename(from.string, to.string) == 0 else { throw Errno(rawValue: errno) }
    }

    /// Writes a small file durably: temp file, fsync, rename, fsync the directory.
    static func writeAtomically(_ path: FilePath, _ bytes: [UInt8]) throws {
        let temp = FilePath(path.string + ".tmp")
        let fd = try FileDescriptor.open(temp, .writeOnly, options: [.create, .truncate, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        try fd.closeAfter {
            _ = try bytes.withUnsafeBytes { try fd.writeAll($0) }
            try fd.sync()
        }
        try rename(temp, path)
        let directory = try FileDescriptor.open(path.removingLastComponent(), .readOnly, options: [.directory])
        try directory.closeAfter { try directory.sync() }
    }

    static func size(_ path: FilePath) -> Int? {
        var info = stat()
        return stat(path.string, &info) == 0 ? Int(info.st_size) : nil
    }

    static func read(_ path: FilePath) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(path, .readOnly) else { return nil }
        defer { try? fd.close() }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while let count = try? buffer.withUnsafeMutableBytes({ try fd.read(into: $0) }), count > 0 {
            result += buffer[..<count]
        }
        return result
    }
}

extension FileDescriptor {
    /// fdatasync(2): the data and what is needed to read it back (the size) are on disk; times may lag. For logs
    /// and chunk files, whose names are made durable by a directory fsync.
    func syncData() throws {
        while fdatasync(rawValue) != 0 {
            if errno != EINTR { throw Errno(rawValue: errno) }
        }
    }

    /// fsync(2): the file's data and metadata are on disk when this returns.
    func sync() throws {
        while fsync(rawValue) != 0 {
            if errno != EINTR { throw Errno(rawValue: errno) }
        }
    }
}
