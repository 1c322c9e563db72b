import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// Files by name through the protocol: delete, name clashes with directories, and many pushes at once.
@Suite struct FileOperationsTests {
    @Test func deleteAndNameClashes() throws {
        let ring = try Ring(nodes: 2, label: "fileops")
        defer { ring.shutdown() }
        #expect(try ring.push(0, name: "a", bytes: Array("file a".utf8)).last == "OK")
        #expect(try ring.push(1, name: "dir/b", bytes: Array("file b".utf8)).last == "OK")

        // A file cannot be a directory, nor a directory a file; the refused bytes are consumed, never run.
        #expect(try ring.push(1, name: "a/b", bytes: Array("NODE PING\n".utf8)) == ["ERR NOT_DIR a is not a directory"])
        #expect(try ring.push(0, name: "dir", bytes: Array("NODE PING\n".utf8)) == ["ERR IS_DIR dir exists and is not a regular file"])
        #expect(try ring.list(1).map(\.name) == ["a", "dir/b"])
        #expect(try ring.pull(0, name: "a") == Array("file a".utf8), "the refused push left the file alone")

        #expect(try ring.request(0, "FILE STAT nothing") == ["ERR NOT_FOUND nothing not found"])
        #expect(try ring.request(1, "FILE DELETE nothing") == ["ERR NOT_FOUND nothing not found"])
        #expect(try ring.request(1, "FILE DELETE a") == ["OK"])
        for node in 0..<2 {
            #expect(try ring.list(node).map(\.name) == ["dir/b"], "node \(node) after the delete")
            #expect(try ring.pull(node, name: "a") == Array("ERR file not found\n".utf8))
        }
        // The name is free again.
        #expect(try ring.push(1, name: "a", bytes: [7]).last == "OK")
        #expect(try ring.pull(0, name: "a") == [7])
    }

    /// A change is answered once it is on disk on `copies` nodes and applied on every live one; the nodes asked to
    /// fsync it a little later (`CATALOG APPLY … DEFER`) hand it out by `CATALOG SYNC` once they have.
    @Test func catalogChangesReachEveryNode() throws {
        let ring = try Ring(nodes: 4, label: "deferred")  // copies 2: node 1 fsyncs before the answer, 2 and 3 after
        defer { ring.shutdown() }
        let name = "on-every-node"
        #expect(try ring.push(0, name: name, bytes: Array("x".utf8)).last == "OK")
        for node in 1..<4 {
            #expect(try ring.list(node).map(\.name) == [name], "node \(node) right after the answer")
        }
        for node in 1..<4 {
            try waitUntil("node \(node) serves the change by CATALOG SYNC", timeoutSeconds: 5) {
                let socket = try ring.connect(node)
                defer { socket.close() }
                try socket.send("CATALOG SYNC - 0\n")
                socket.shutdownWrite()
                guard let header = try socket.readLine(), header.hasPrefix("OK ") else { return false }
                let batch = try socket.readToEnd()
                return batch.count == Int(header.dropFirst(3)) && batch.firstRange(of: Array(name.utf8)) != nil
            }
        }
    }

    /// Twelve pushes to three nodes at the same moment: every one lands whole, with its own placement.
    @Test func concurrentPushes() throws {
        let ring = try Ring(nodes: 3, label: "concpush")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("concurrentPushes"))
        let files = (0..<12).map { (name: "parallel-\($0).bin", start: $0 % 3, bytes: generator.bytes(50_000 + 9_973 * $0)) }
        let results = parallelMap(files, width: files.count) { file in
            (try? ring.push(file.start, name: file.name, bytes: file.bytes)) ?? ["(connection failed)"]
        }
        for (file, reply) in zip(files, results) {
            #expect(reply == ["FILE \(file.bytes.count) bytes split into 3 chunks and distributed", "OK"], "\(file.name)")
        }
        let names = files.map(\.name).sorted()
        for node in 0..<3 {
            let listed = try ring.list(node).map(\.name).sorted()
            #expect(listed == names, "FILE LIST on node \(node) misses \(Set(names).subtracting(listed).sorted())")
        }
        for file in files {
            try ring.expectPlacement(of: file.name, start: file.start, sizeBytes: UInt64(file.bytes.count), original: file.bytes)
            #expect(try ring.pull((file.start + 1) % 3, name: file.name) == file.bytes)
        }
    }

    /// Pushes to different nodes at the same moment into a directory that does not exist yet (`ouro push` of a
    /// batch of photos into `album/`): every acknowledged file must stay listed and readable. Each node creates
    /// the missing directory itself; when the catalogs merge, only one `album` can win the name, and files put
    /// into the other one must not vanish.
    @Test func concurrentPushesIntoANewDirectory() throws {
        let ring = try Ring(nodes: 3, label: "concdir")
        defer { ring.shutdown() }
        var acknowledged: [String] = []
        for round in 0..<4 {
            let files = (0..<3).map { (name: "album-\(round)/photo-\($0).jpg", start: $0, bytes: Array("photo \($0)".utf8)) }
            let replies = parallelMap(files, width: files.count) { file in
                (try? ring.push(file.start, name: file.name, bytes: file.bytes)) ?? ["(connection failed)"]
            }
            for (file, reply) in zip(files, replies) where reply.last == "OK" { acknowledged.append(file.name) }
        }
        #expect(acknowledged.count == 12)
        var missing: [Int: [String]] = [:]
        do {
            try waitUntil("every node to list every acknowledged file", timeoutSeconds: 3, describe: { "missing \(missing)" }) {
                for node in 0..<3 { missing[node] = Set(acknowledged).subtracting(try ring.list(node).map(\.name)).sorted() }
                return missing.values.allSatisfy(\.isEmpty)
            }
        } catch {
            Issue.record("acknowledged pushes were lost: \(missing)")
        }
    }

    /// Pushes of one name racing each other: one of them wins everywhere, whole, and the name is listed once.
    @Test func concurrentPushesOfOneName() throws {
        let ring = try Ring(nodes: 3, label: "samename")
        defer { ring.shutdown() }
        let versions = (0..<6).map { version in [UInt8](repeating: UInt8(65 + version), count: 30_000 + version) }
        let results = parallelMap(Array(versions.enumerated()), width: versions.count) { version, bytes in
            (try? ring.push(version % 3, name: "contested.txt", bytes: bytes)) ?? ["(connection failed)"]
        }
        for reply in results { #expect(reply.last == "OK", "\(reply)") }
        var pulled: [[UInt8]] = []
        try waitUntil("every node to agree on the winner", timeoutSeconds: 10) {
            pulled = try (0..<3).map { try ring.pull($0, name: "contested.txt") }
            return Set(pulled).count == 1
        }
        #expect(versions.contains(pulled[0]), "the winner is one of the pushed versions, whole")
        for node in 0..<3 {
            let rows = try ring.list(node)
            #expect(rows.count == 1 && rows.first?.sizeBytes == UInt64(pulled[0].count), "node \(node): \(rows)")
        }
    }
}
