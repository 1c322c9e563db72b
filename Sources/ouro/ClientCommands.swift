import ArgumentParser
import COuroSupport
import Glibc
import OuroClient
import OuroCore

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show every node of the ring and its health.")
    @OptionGroup var options: NodeOption

    func run() throws {
        do {
            let (map, infos) = try RingReport.fetch(from: options.node, pool: ConnectionPool())
            print(RingReport.status(netmap: map, infos: infos), terminator: "")
        } catch {
            throw fail("\(options.node): \(error)")
        }
    }
}

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List every file in the ring.")
    @OptionGroup var options: NodeOption

    func run() throws {
        do {
            try NodeClient(options.node).list { row in print(RingReport.pad(RingReport.bytes(row.sizeBytes), 12) + RingReport.pad(row.start, 24) + row.name) }
        } catch {
            throw fail("\(options.node): \(error)")
        }
    }
}

struct HealCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "heal", abstract: "Check every node around the ring and route around dead ones.")
    @OptionGroup var options: NodeOption

    func run() throws {
        do { print(try NodeClient(options.node).heal()) } catch { throw fail("\(options.node): \(error)") }
    }
}

struct LeaveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "leave", abstract: "Take a node out of the ring for good: it hands its chunks to the others first, then stops.")
    @OptionGroup var options: NodeOption

    /// Shows the plan (`ouro plan leave`), then follows the node's `MOVED done/total bytes/totalBytes` lines with a
    /// progress bar. Interrupted (Ctrl-C, a lost connection), the node stops after the chunk it is on; every
    /// chunk handed over stays handed over, and running this again resumes.
    func run() throws {
        let pool = ConnectionPool()
        do {
            let plan = try NodeClient(options.node, pool: pool).plan(.leave, options.node)
            print(PlanCommand.report(plan, rate: nil).split(separator: "\n").dropLast().joined(separator: "\n"))
            let progress = Progress(label: "leave", totalBytes: plan.bytesCopied)
            var moved = (done: 0, total: plan.moves.count)
            let reply: String = try pool.with(options.node) { connection in
                connection.socket.setTimeouts(seconds: 3600)
                try connection.send("NODE LEAVE")
                while true {
                    let line = try connection.readReply()
                    guard line.hasPrefix("MOVED ") else { return line }
                    let fields = line.dropFirst(6).split(separator: " ").map { $0.split(separator: "/").compactMap { UInt64($0) } }
                    guard fields.count == 2, fields[0].count == 2, fields[1].count == 2 else { continue }
                    moved = (Int(fields[0][0]), Int(fields[0][1]))
                    progress.update(fields[1][0])
                }
            }
            progress.finish()
            print("\(reply) (\(moved.done) of \(moved.total) chunk copies given up)")
        } catch {
            throw fail("\(options.node): \(error) (run `ouro leave` again to resume: every chunk handed over so far stays so)")
        }
    }
}

struct PushCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "push", abstract: "Store a local file in the ring.")
    @OptionGroup var options: NodeOption
    @Argument(help: "The local file.") var file: String
    @Argument(help: "Its name in the ring (default: the file's name).") var name: String?

    func run() throws {
        let fd = open(file, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail("cannot open \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw fail("\(file) is not a regular file") }
        let size = UInt64(info.st_size)
        let target = name ?? String(file.split(separator: "/").last ?? Substring(file))
        do { _ = try PathName(target) } catch { throw fail("bad name \(target): \(error)") }
        let progress = Progress(label: target, totalBytes: size)
        do {
            let lines = try NodeClient(options.node).push(name: target, file: fd, sizeBytes: size, progress: progress.update)
            progress.finish()
            lines.forEach { print($0) }
        } catch {
            progress.finish()
            throw fail("push failed: \(error)")
        }
    }
}

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pull", abstract: "Fetch a file from the ring (chunks in parallel).")
    @OptionGroup var options: NodeOption
    @Argument(help: "The file's name in the ring.") var name: String
    @Argument(help: "Where to write it (default: its last name component; - for standard output).") var destination: String?
    @Option(help: "Chunk pieces fetched at once.") var parallel = 6

    func run() throws {
        let pool = ConnectionPool()
        let stat: InodeStat
        do { stat = try NodeClient(options.node, pool: pool).stat(name) } catch { throw fail("\(name): \(error)") }
        guard stat.inode.kind == .file else { throw fail("\(name) is not a regular file") }
        let target = destination ?? String(name.split(separator: "/").last!)
        let toStdout = target == "-"
        let temp = toStdout ? "" : "\(target).ouro-partial"
        let fd = toStdout ? 1 : open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(temp): \(String(cString: strerror(errno)))") }
        let size = stat.inode.sizeBytes
        let progress = Progress(label: name, totalBytes: size)
        var written: UInt64 = 0
        do {
            let local = LocalChunkFiles(pool: pool)
            if let content = stat.inode.content, !toStdout, Self.copyLocally(content, local: local, to: fd, progress: progress) {
                written = size
            } else if let content = stat.inode.content {
                if !toStdout { guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else { throw OuroError(.internal, "rewinding \(temp)") } }
                // Chunks held by nodes on this machine are read from their files (short-circuit), the rest over TCP.
                try ContentReader(content: content, pool: pool, local: local).stream(parallelism: parallel) { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let count = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                        guard count > 0 else {
                            if errno == EINTR { continue }
                            throw OuroError(.internal, "writing \(target): \(String(cString: strerror(errno)))")
                        }
                        offset += count
                    }
                    written += UInt64(bytes.count)
                    progress.update(written)
                }
            }
            progress.finish()
            guard written == size else { throw OuroError(.corrupt, "got \(written) of \(size) bytes") }
            if !toStdout {
                guard fsync(fd) == 0, close(fd) == 0, rename(temp, target) == 0 else {
                    throw OuroError(.internal, "finishing \(target): \(String(cString: strerror(errno)))")
                }
            }
        } catch {
            progress.finish()
            if !toStdout { close(fd); unlink(temp) }
            throw fail("pull failed: \(error)")
        }
    }
}

extension PullCommand {
    /// When every chunk has a holder on this machine: the chunk files copied into `fd` in order by the kernel
    /// (`copy_file_range`, as `cp` does), with no copy through this process. False when any chunk is elsewhere or
    /// the kernel cannot copy; the caller then starts over with the usual fetch.
    static func copyLocally(_ content: FileContent, local: LocalChunkFiles, to fd: Int32, progress: Progress) -> Bool {
        guard !content.isInline else { return false }
        var sources: [(fd: Int32, at: UInt64, length: UInt64)] = []
        defer { for source in sources { close(source.fd) } }
        var position: UInt64 = 0
        for piece in content.pieces {
            for (index, placement) in piece.chunks.enumerated() {
                guard let chunk = local.openChunk(piece.chunkID(index), holders: placement.holders) else { return false }
                sources.append((chunk, position, placement.lengthBytes))
                position += placement.lengthBytes
            }
        }
        // Every chunk at once, each into its place (the disk reads several files faster than one after the other:
        // ~1.0 against ~0.65 GB/s here).
        let copied = AtomicBytes()
        let step: Int64 = 64 << 20
        let results = parallelMap(sources, width: min(8, max(1, sources.count))) { source -> Bool in
            var offset: Int64 = 0
            var target = Int64(source.at)
            while UInt64(offset) < source.length {
                // The next step is read from disk while this one is copied (the copy reads on demand).
                _ = posix_fadvise(source.fd, off_t(offset + step), off_t(step), POSIX_FADV_WILLNEED)
                let count = ouro_copy_file_range(source.fd, &offset, fd, &target, Int(min(source.length - UInt64(offset), UInt64(step))))
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { return false }
                progress.update(copied.add(UInt64(count)))
            }
            return true
        }
        return results.allSatisfy { $0 }
    }
}

/// A byte count shared by threads.
final class AtomicBytes: @unchecked Sendable {
    private let lock = Lock()
    private var total: UInt64 = 0
    func add(_ count: UInt64) -> UInt64 { lock.withLock { total += count; return total } }
}

