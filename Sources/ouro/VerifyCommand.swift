import ArgumentParser
import Glibc
import OuroClient
import OuroCore

/// `ouro verify [PATH…]`: every copy of every chunk of the named files (default: every file) read by its holder and
/// compared with the catalog; a corrupt or missing copy is repaired from a good one, and the command waits for
/// that; then every file with a recorded SHA-256 is read back whole and must hash to it. Exit status 0 only when
/// every copy was checked and is good (or was repaired) and every hash matches.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every copy of every chunk of the files (default: all) and repair what is corrupt or missing.")
    @OptionGroup var options: NodeOption
    @Option(help: "Seconds to wait for repairs before giving up on them.") var wait = 60
    @Option(help: "Copies checked at once.") var parallel = 8
    @Argument(help: "Files or directories in the ring (default: every file).") var paths: [String] = []

    /// One copy to check: a chunk of a file and one of its holders.
    struct Copy {
        var file: String
        var chunk: ChunkID
        var holder: NodeAddress
        var lengthBytes: UInt64
        var description: String { "\(file): chunk \(chunk.index + 1)/\(chunk.parts) of \(chunk.contentID) on \(holder)" }
    }

    func run() throws {
        let pool = ConnectionPool()
        let node = NodeClient(options.node, pool: pool)
        let wanted = paths.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        var files: [String] = []
        var matched = Set<String>()
        do {
            try node.list { row in
                guard wanted.isEmpty || wanted.contains(where: { row.name == $0 || row.name.hasPrefix($0 + "/") || $0.isEmpty }) else { return }
                files.append(row.name)
                for path in wanted where row.name == path || row.name.hasPrefix(path + "/") { matched.insert(path) }
            }
        } catch {
            throw fail("\(options.node): \(error)")
        }
        var failures = 0
        for path in wanted where !matched.contains(path) {
            print("not found: \(path)")
            failures += 1
        }

        // The copies of every chunk, from the catalog; inline bytes are checked here against their checksum.
        var copies: [Copy] = []
        var inlineFiles = 0
        /// The files whose content has a recorded SHA-256, checked once their copies are.
        var hashedContents: [(file: String, content: FileContent)] = []
        for file in files {
            let stat: InodeStat
            do { stat = try node.stat(file) } catch {
                print("\(file): \(error)")
                failures += 1
                continue
            }
            guard let content = stat.inode.content else { continue }
            if content.sha256 != nil { hashedContents.append((file, content)) }
            for piece in content.pieces {
                if piece.isInline {
                    inlineFiles += 1
                    if (try? piece.checkedInlineBytes()) == nil {
                        print("\(file): its bytes in the catalog do not match their checksum")
                        failures += 1
                    }
                    continue
                }
                for (index, placement) in piece.chunks.enumerated() {
                    for holder in placement.holders {
                        copies.append(Copy(file: file, chunk: piece.chunkID(index), holder: holder, lengthBytes: placement.lengthBytes))
                    }
                }
            }
        }

        let totalBytes = copies.reduce(0) { $0 + $1.lengthBytes }
        let progress = Progress(label: "verify", totalBytes: totalBytes)
        let done = AtomicBytes()
        let results = parallelMap(copies, width: max(1, parallel)) { copy -> NodeClient.CopyCheck in
            let result = NodeClient(copy.holder, pool: pool).verifyChunk(copy.chunk)
            progress.update(done.add(copy.lengthBytes))
            return result
        }
        progress.finish()

        // Copies that the holders are repairing: wait until they read good, while another copy of the chunk is good.
        let goodChunks = Set(zip(copies, results).filter { $0.1 == .good }.map { $0.0.chunk })
        var counts: [String: Int] = [:]
        var repairing: [(Copy, String)] = []
        for (copy, result) in zip(copies, results) {
            switch result {
            case .good: counts["good", default: 0] += 1
            case .notPlaced: counts["moved", default: 0] += 1
            case .unreachable(let why):
                counts["not checked", default: 0] += 1
                print("\(copy.description): not checked, holder unreachable (\(why))")
                failures += 1
            case .corrupt, .missing:
                let what = result == .corrupt ? "corrupt" : "missing"
                counts[what, default: 0] += 1
                guard goodChunks.contains(copy.chunk) else {
                    print("\(copy.description): \(what), and no good copy of this chunk is left: cannot repair")
                    failures += 1
                    continue
                }
                print("\(copy.description): \(what), repairing from a good copy")
                repairing.append((copy, what))
            }
        }
        let started = monotonicSeconds()
        let deadline = started + Double(wait)
        while !repairing.isEmpty {
            repairing.removeAll { copy, what in
                guard NodeClient(copy.holder, pool: pool).verifyChunk(copy.chunk) == .good else { return false }
                print("\(copy.description): repaired (was \(what)) after \(String(format1: monotonicSeconds() - started)) s")
                counts["repaired", default: 0] += 1
                return true
            }
            if repairing.isEmpty || monotonicSeconds() > deadline { break }
            usleep(300_000)
        }
        for (copy, what) in repairing {
            print("\(copy.description): still \(what) after \(wait) s")
            failures += 1
        }

        // Files with a recorded SHA-256: their bytes read back whole (from any good copies) must hash to it.
        var hashed = 0
        for (file, content) in hashedContents {
            guard let recorded = content.sha256 else { continue }
            let hasher = SHA256Hasher()
            do {
                if let inline = try content.checkedInlineBytes() {
                    hasher.update(inline)
                } else {
                    try ContentReader(content: content, pool: pool).stream(parallelism: 4) { hasher.update($0) }
                }
            } catch {
                print("\(file): could not be read whole: \(error)")
                failures += 1
                continue
            }
            let actual = hasher.finish()
            guard actual == recorded else {
                print("\(file): its bytes hash to \(actual), not to the SHA-256 recorded when it was written (\(recorded))")
                failures += 1
                continue
            }
            hashed += 1
        }

        let order = ["good", "corrupt", "missing", "repaired", "not checked", "moved"]
        let summary = order.compactMap { key in counts[key].map { "\($0) \(key)" } }.joined(separator: ", ")
        print("verified \(files.count) file\(files.count == 1 ? "" : "s"): \(copies.count) chunk copies"
              + " (\(RingReport.bytes(totalBytes)))\(summary.isEmpty ? "" : ": " + summary)"
              + (inlineFiles > 0 ? "; \(inlineFiles) kept inline in the catalog" : "")
              + (hashed > 0 ? "; \(hashed) read back whole and match their SHA-256" : ""))
        if failures > 0 {
            print("NOT VERIFIED: \(failures) problem\(failures == 1 ? "" : "s") could not be repaired")
            throw ExitCode(1)
        }
        print("OK: every copy is good")
    }
}
