import Foundation
import OuroCore
import Testing

/// Files pushed through real nodes come back byte for byte from every node, and each node's disk holds exactly
/// the chunks the placement prescribes.
@Suite struct RoundTripTests {
    struct RingShape: CustomTestStringConvertible, Sendable {
        var nodes: Int
        var copies: Int
        var testDescription: String { "\(nodes) nodes, copies \(copies)" }
    }

    static let files: [(name: String, sizeBytes: Int)] = [
        ("empty.bin", 0),
        ("one byte", 1),
        ("dir/ten bytes.txt", 10),
        ("a/b/c/mebibyte+7.bin", (1 << 20) + 7),
    ]

    @Test(arguments: [
        RingShape(nodes: 1, copies: 2),
        RingShape(nodes: 2, copies: 2),
        RingShape(nodes: 3, copies: 2),
        RingShape(nodes: 5, copies: 2),
        RingShape(nodes: 3, copies: 1),
        RingShape(nodes: 5, copies: 1),
    ])
    func pushPullAndPlacement(_ shape: RingShape) throws {
        var settings = Ring.Settings()
        settings.copies = shape.copies
        let ring = try Ring(nodes: shape.nodes, settings: settings, label: "roundtrip-\(shape.nodes)x\(shape.copies)")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("roundtrip-\(shape.nodes)-\(shape.copies)"))

        var stored: [(name: String, start: Int, bytes: [UInt8])] = []
        for (number, file) in Self.files.enumerated() {
            // Different start nodes: the last file starts on the last node.
            let start = number == Self.files.count - 1 ? shape.nodes - 1 : number % shape.nodes
            let bytes = generator.bytes(file.sizeBytes)
            let reply = try ring.push(start, name: file.name, bytes: bytes)
            #expect(reply == ["FILE \(file.sizeBytes) bytes split into \(shape.nodes) chunks and distributed", "OK"],
                    "push of \(file.name) to node \(start)")
            try ring.expectPlacement(of: file.name, start: start, sizeBytes: UInt64(file.sizeBytes), original: bytes)
            stored.append((file.name, start, bytes))
        }

        // Every node knows every file at once (the push answers after the catalog reached every live node).
        let expectedRows = stored.map { Ring.ListRow(name: $0.name, start: ring.address($0.start).description,
                                                     sizeBytes: UInt64($0.bytes.count)) }
        for node in 0..<shape.nodes {
            let rows = try ring.list(node)
            #expect(rows.sorted { $0.name < $1.name } == expectedRows.sorted { $0.name < $1.name }, "FILE LIST on node \(node)")
        }
        // And serves every file from wherever its chunks are.
        for node in 0..<shape.nodes {
            for file in stored {
                let pulled = try ring.pull(node, name: file.name)
                let same = pulled == file.bytes
                #expect(same, "\(file.name) pulled from node \(node): \(pulled.count) bytes, CRC \(CRC32C.checksum(pulled)), want \(file.bytes.count) bytes, CRC \(CRC32C.checksum(file.bytes))")
            }
        }
    }

    /// An overwrite replaces the content everywhere: the old chunks are no longer referenced and the new bytes
    /// come back; the file is listed once.
    @Test func overwrite() throws {
        let ring = try Ring(nodes: 3, label: "overwrite")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("overwrite"))
        let first = generator.bytes(1000)
        let second = generator.bytes(777)
        #expect(try ring.push(0, name: "notes.txt", bytes: first).last == "OK")
        let firstID = try ring.expectPlacement(of: "notes.txt", start: 0, sizeBytes: 1000, original: first)
        #expect(try ring.push(2, name: "notes.txt", bytes: second).last == "OK")
        let secondID = try ring.expectPlacement(of: "notes.txt", start: 2, sizeBytes: 777, original: second)
        #expect(firstID != secondID, "a new version gets a new content id")
        for node in 0..<3 {
            #expect(try ring.pull(node, name: "notes.txt") == second)
            #expect(try ring.list(node) == [Ring.ListRow(name: "notes.txt", start: ring.address(2).description, sizeBytes: 777)])
        }
    }

    /// Names with spaces, commas and quotes survive the wire and the CSV of `FILE LIST`.
    @Test func awkwardNames() throws {
        let ring = try Ring(nodes: 2, label: "names")
        defer { ring.shutdown() }
        let names = ["my holiday photo.jpg", "report, final.txt", "say \"cheese\".png", " leading space", "ünïcødé ✓",
                     "dir with space/file,with,commas"]
        for (number, name) in names.enumerated() {
            let bytes = Array("content of \(name)".utf8)
            #expect(try ring.push(number % 2, name: name, bytes: bytes).last == "OK", "push \(name)")
            #expect(try ring.pull((number + 1) % 2, name: name) == bytes, "pull \(name)")
        }
        let listed = try ring.list(1).map(\.name)
        #expect(listed.sorted() == names.sorted())
    }
}
