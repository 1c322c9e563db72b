import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// Hostile and broken clients: each gets its exact `ERR` line, nothing of a refused request's body is executed,
/// and the node goes on serving (`NODE PING` → `PONG` on a new connection) afterwards.
@Suite struct BadInputTests {
    static let maxFileSizeBytes: UInt64 = 1 << 20

    static func ring(nodes: Int = 1, label: String) throws -> Ring {
        var settings = Ring.Settings()
        settings.maxFileSizeBytes = maxFileSizeBytes
        return try Ring(nodes: nodes, settings: settings, label: label)
    }

    struct Exchange: CustomTestStringConvertible, Sendable {
        var what: String
        var send: [UInt8]
        /// Every line the node sends before it closes the connection (we half-close after sending).
        var replies: [String]

        init(_ what: String, _ send: String, _ replies: [String]) {
            self.what = what
            self.send = Array(send.utf8)
            self.replies = replies
        }

        var testDescription: String { what }
    }

    static let pings = String(repeating: "NODE PING\n", count: 3)

    static func fsCall(_ operation: String, _ json: String) -> String { "FS \(operation) \(json.utf8.count)\n" + json }

    static let exchanges: [Exchange] = [
        Exchange("unknown command, then the connection still serves", "FOO BAR\nNODE PING\n",
                 ["ERR BAD_REQUEST unknown command: FOO BAR", "PONG"]),
        Exchange("unknown verb", "NODE DANCE\nNODE PING\n", ["ERR BAD_REQUEST unknown command: NODE DANCE", "PONG"]),
        Exchange("empty line", "\nNODE PING\n", ["ERR BAD_REQUEST empty request", "PONG"]),
        Exchange("arguments where none belong", "NODE PING now\nNODE PING\n", ["ERR BAD_REQUEST unexpected arguments: now", "PONG"]),
        Exchange("FILE PUSH without a size", "FILE PUSH\n" + pings, ["ERR BAD_REQUEST missing size"]),
        Exchange("FILE PUSH with a non-numeric size", "FILE PUSH abc x\n" + pings, ["ERR BAD_REQUEST bad size: abc"]),
        Exchange("FILE PUSH with a negative size", "FILE PUSH -5 x\n" + pings, ["ERR BAD_REQUEST bad size: -5"]),
        Exchange("FILE PUSH without a name", "FILE PUSH 30\n" + pings, ["ERR BAD_REQUEST missing argument"]),
        Exchange("FILE PUSH over --max-file-size, body of commands", "FILE PUSH 1000000000000000 big.bin\n" + pings,
                 ["ERR TOO_LARGE file of 1000000000000000 bytes exceeds the limit of 1048576 bytes"]),
        Exchange("FILE PUSH one byte over --max-file-size", "FILE PUSH 1048577 big.bin\n" + pings,
                 ["ERR TOO_LARGE file of 1048577 bytes exceeds the limit of 1048576 bytes"]),
        Exchange("FILE PUSH ../x", "FILE PUSH 30 ../x\n" + pings, ["ERR BAD_REQUEST '.' and '..' are not allowed in names"]),
        Exchange("FILE PUSH a/../../x", "FILE PUSH 30 a/../../x\n" + pings, ["ERR BAD_REQUEST '.' and '..' are not allowed in names"]),
        Exchange("FILE PUSH /abs", "FILE PUSH 30 /abs\n" + pings, ["ERR BAD_REQUEST absolute names are not allowed: /abs"]),
        Exchange("FILE PUSH with NUL in the name", "FILE PUSH 30 a\0b\n" + pings, ["ERR BAD_REQUEST NUL in header line"]),
        Exchange("FILE PUSH with a 256-byte name", "FILE PUSH 30 \(String(repeating: "n", count: 256))\n" + pings,
                 ["ERR TOO_LARGE name component longer than 255 bytes"]),
        Exchange("FILE PULL of an unknown file", "FILE PULL nothing-here.txt\nNODE PING\n", ["ERR file not found"]),
        Exchange("FILE PULL ../x", "FILE PULL ../x\nNODE PING\n", ["ERR BAD_REQUEST '.' and '..' are not allowed in names", "PONG"]),
        Exchange("header line over 8 KiB", "FILE PULL \(String(repeating: "a", count: 9000))\n" + pings,
                 ["ERR TOO_LARGE line longer than 8192 bytes"]),
        Exchange("CONTENT PUSH over --max-file-size", "CONTENT PUSH 1048577\n" + pings,
                 ["ERR TOO_LARGE content of 1048577 bytes exceeds the limit of 1048576 bytes"]),
        Exchange("FS SETCONTENT with a segment of no chunks", fsCall("SETCONTENT", #"{"inode":1,"content":{"id":"0123456789abcdef0123456789abcdef","sizeBytes":5,"start":"127.0.0.1:1","copies":1,"chunks":[],"segments":[{"id":"00000000000000000000000000000001","sizeBytes":5,"start":"127.0.0.1:1","copies":1,"chunks":[]}]}}"#) + "NODE PING\n",
                 ["ERR BAD_REQUEST malformed segment 00000000000000000000000000000001", "PONG"]),
        Exchange("FS SETCONTENT without segments", fsCall("SETCONTENT", #"{"inode":1}"#) + "NODE PING\n",
                 ["ERR BAD_REQUEST SETCONTENT needs segments", "PONG"]),
        Exchange("FS with a misspelt operation: its payload is never read as commands", fsCall("LOKUP", "NODE PING\n") + pings,
                 ["ERR BAD_REQUEST unknown FS operation LOKUP"]),
        Exchange("FS … BIN with a truncated binary payload", "FS GETATTR 3 BIN\n\u{1}\u{2}\u{3}NODE PING\n",
                 ["ERR BAD_REQUEST malformed binary payload", "PONG"]),
        Exchange("CHUNK RELAY that names another node", "CHUNK RELAY 0123456789abcdef0123456789abcdef 10 1 1 127.0.0.1:1,127.0.0.1:2\n" + pings,
                 ["ERR BAD_REQUEST this node is {self}, not position 1 of the chain"]),
    ]

    /// One ring takes every abuse in turn (so it also shows that none of them hurts the next client).
    @Test func refusedRequests() throws {
        let ring = try Self.ring(label: "bad")
        defer { ring.shutdown() }
        for exchange in Self.exchanges {
            let socket = try ring.connect(0, timeoutSeconds: 15)
            try socket.send(exchange.send)
            socket.shutdownWrite()
            let replies = try socket.readLinesToEnd()
            let expected = exchange.replies.map { $0.replacingOccurrences(of: "{self}", with: ring.address(0).description) }
            #expect(replies == expected, "\(exchange.what)")
            #expect(ring.ping(0), "the node serves after: \(exchange.what)")
        }
        #expect(try ring.list(0) == [], "nothing refused was stored")
        #expect(ring.chunkFiles(0).isEmpty, "no chunk files: \(ring.chunkFiles(0))")
    }

    /// Header bytes that are not UTF-8: refused, and the body is not read as commands.
    @Test func invalidUTF8Header() throws {
        let ring = try Self.ring(label: "utf8")
        defer { ring.shutdown() }
        let socket = try ring.connect(0, timeoutSeconds: 15)
        try socket.send(Array("FILE PUSH 30 ".utf8) + [0xFF, 0xFE] + Array("\n\(Self.pings)".utf8))
        socket.shutdownWrite()
        #expect(try socket.readLinesToEnd() == ["ERR BAD_REQUEST line is not UTF-8"])
        #expect(ring.ping(0))
    }

    /// The exact bytes of the original protocol's not-found reply, and the connection closes after it.
    @Test func pullOfUnknownFileIsExactlyFileNotFound() throws {
        let ring = try Self.ring(label: "notfound")
        defer { ring.shutdown() }
        let socket = try ring.connect(0, timeoutSeconds: 15)
        try socket.send("FILE PULL no such file.txt\n")
        // No half-close: the node must close by itself.
        #expect(try socket.readToEnd() == Array("ERR file not found\n".utf8))
    }

    /// A push refused for its size answers at once, without waiting for (or allocating) the announced bytes, and
    /// the node's memory stays small.
    @Test func hugeDeclaredSizeIsRefusedAtOnce() throws {
        let ring = try Self.ring(label: "huge")
        defer { ring.shutdown() }
        let socket = try ring.connect(0, timeoutSeconds: 10)
        try socket.send("FILE PUSH 1000000000000000 huge.bin\n")
        #expect(try socket.readLine() == "ERR TOO_LARGE file of 1000000000000000 bytes exceeds the limit of 1048576 bytes")
        // Whatever the client sends now is drained, never executed.
        try socket.send(Self.pings)
        socket.shutdownWrite()
        #expect(try socket.readLinesToEnd() == [])
        #expect(ring.ping(0))
        let peak = try #require(BigFileTests.peakResidentBytes(of: ring.members[0].process!.pid))
        #expect(peak < 64 << 20, "the node peaked at \(peak >> 20) MiB")
    }

    /// An over-long header is refused once the limit is passed, before the line ends (the client is still sending).
    @Test func overLongHeaderIsRefusedBeforeItEnds() throws {
        let ring = try Self.ring(label: "longline")
        defer { ring.shutdown() }
        let socket = try ring.connect(0, timeoutSeconds: 10)
        try socket.send("FILE PULL " + String(repeating: "a", count: 64 * 1024))
        #expect(try socket.readLine() == "ERR TOO_LARGE line longer than 8192 bytes")
        #expect(ring.ping(0))
        #expect(socket.waitForClose(seconds: 10), "the node closes the connection of an unframeable request")
    }

    /// A well-framed connection carries many requests in turn, payloads included.
    @Test func manyRequestsOnOneConnection() throws {
        let ring = try Self.ring(nodes: 2, label: "pipeline")
        defer { ring.shutdown() }
        let socket = try ring.connect(0, timeoutSeconds: 15)
        try socket.send("NODE PING\nFILE PUSH 10 one.txt\nNODE PING\nNODE PING\nFILE PUSH 9 two.txt\n012345678NODE PING\n")
        socket.shutdownWrite()
        #expect(try socket.readLinesToEnd() == [
            "PONG",
            "FILE 10 bytes split into 2 chunks and distributed", "OK",  // its 10 bytes are "NODE PING\n"
            "PONG",
            "FILE 9 bytes split into 2 chunks and distributed", "OK",
            "PONG",
        ])
        #expect(try ring.pull(1, name: "one.txt") == Array("NODE PING\n".utf8))
        #expect(try ring.pull(1, name: "two.txt") == Array("012345678".utf8))
    }

    /// A client that goes away in the middle of a push: nothing is listed, no temp or chunk file stays behind on any
    /// node, the previous version of the file stays readable, and the ring goes on working.
    @Test func disconnectMidPush() throws {
        let ring = try Self.ring(nodes: 3, label: "midpush")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("disconnectMidPush"))
        let previous = generator.bytes(4321)
        #expect(try ring.push(1, name: "kept.bin", bytes: previous).last == "OK")
        let keptID = try ring.expectPlacement(of: "kept.bin", start: 1, sizeBytes: 4321, original: previous)
        let filesBefore = (0..<3).map { ring.chunkFiles($0) }

        for (name, start) in [("half.bin", 0), ("kept.bin", 1), ("almost.bin", 2)] {
            let socket = try ring.connect(start)
            let size = 1_000_000
            try socket.send("FILE PUSH \(size) \(name)\n")
            try socket.send(generator.bytes(name == "almost.bin" ? size - 1 : size / 2))
            if name == "almost.bin" {
                // Half-close instead: the node sees the stream end early and says so.
                socket.shutdownWrite()
                #expect(try socket.readLinesToEnd() == ["ERR UNAVAILABLE the sender disconnected before the end of the data"])
            }
            socket.close()
        }
        var last = ""
        try waitUntilStable("the broken pushes to leave nothing behind", timeoutSeconds: 15, stableSeconds: 1.5, describe: { last }) {
            let listed = try (0..<3).map { try ring.list($0).map(\.name) }
            let files = (0..<3).map { ring.chunkFiles($0) }
            last = "lists \(listed), chunk files \(files)"
            return listed.allSatisfy { $0 == ["kept.bin"] } && files == filesBefore
        }
        #expect(ring.tempChunkFiles().isEmpty)
        for node in 0..<3 {
            #expect(ring.ping(node))
            #expect(try ring.pull(node, name: "kept.bin") == previous, "the previous version stays")
        }
        #expect(try ring.expectPlacement(of: "kept.bin", start: 1, sizeBytes: 4321, original: previous) == keptID)
        let after = generator.bytes(2000)
        #expect(try ring.push(2, name: "after.bin", bytes: after).last == "OK")
        #expect(try ring.pull(0, name: "after.bin") == after)
    }

    /// A node whose disk is full (a 24 MiB tmpfs): a push declared bigger than the free space is refused with
    /// NO_SPACE before anything is stored (and its bytes are never run as commands); pushes that each fit but not
    /// together run out of room part-way, fail the same way and leave nothing behind; the node serves throughout,
    /// and what fits still goes in.
    @Test func fullDisk() throws {
        let ring = try Ring(nodes: 1, settings: Ring.Settings(copies: 1, diskBytes: 24 << 20), label: "fulldisk")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("fullDisk"))
        let small = generator.bytes(100_000)
        #expect(try ring.push(0, name: "small.bin", bytes: small).last == "OK")

        let socket = try ring.connect(0)
        try socket.send("FILE PUSH \(40 << 20) huge.bin\n")
        try socket.send("NODE LEAVE\n")
        socket.shutdownWrite()
        let refused = try socket.readLinesToEnd()
        #expect(refused.count == 1 && refused[0].hasPrefix("ERR NO_SPACE"), "\(refused)")
        #expect(ring.ping(0) && ring.isRunning(0))

        // Three pushes of 8 MiB at once into ~15 MiB free: each fits alone, not all together.
        let sizes = [8 << 20, 8 << 20, 8 << 20]
        let contents = sizes.map { generator.bytes($0) }
        let replies = parallelMap(Array(contents.enumerated()), width: 3) { item in
            (try? ring.push(0, name: "part-\(item.offset).bin", bytes: item.element)) ?? ["(connection failed)"]
        }
        let stored = replies.enumerated().filter { $0.element.last == "OK" }.map(\.offset)
        let failed = replies.filter { $0.last != "OK" }
        #expect(!failed.isEmpty, "the disk should not hold all three: \(replies)")
        #expect(failed.allSatisfy { $0.count == 1 && $0[0].hasPrefix("ERR NO_SPACE") }, "\(failed)")
        #expect(ring.tempChunkFiles().isEmpty, "a failed push leaves no temp file")
        let listed = try ring.list(0).map(\.name).sorted()
        #expect(listed == (["small.bin"] + stored.map { "part-\($0).bin" }).sorted())
        for index in stored { #expect(try ring.pull(0, name: "part-\(index).bin") == contents[index]) }
        #expect(try ring.pull(0, name: "small.bin") == small)
        let after = generator.bytes(10_000)
        #expect(try ring.push(0, name: "after.bin", bytes: after).last == "OK")
        #expect(try ring.pull(0, name: "after.bin") == after)
    }

    /// 200 connections open at once, each doing NODE PING (twice, so each is served while all are open),
    /// then 200 threads connecting and pinging at the same moment.
    @Test func twoHundredConcurrentConnections() throws {
        let ring = try Self.ring(nodes: 1, label: "concurrent")
        defer { ring.shutdown() }
        let sockets = try (0..<200).map { _ in try ring.connect(0, timeoutSeconds: 20) }
        for round in 0..<2 {
            for socket in sockets { try socket.send("NODE PING\n") }
            var answered = 0
            for socket in sockets where try socket.readLine() == "PONG" { answered += 1 }
            #expect(answered == 200, "round \(round)")
        }
        sockets.forEach { $0.close() }

        let lock = NSLock()
        var answered = 0
        var failures: [String] = []
        let done = DispatchSemaphore(value: 0)
        let address = ring.address(0)
        for _ in 0..<200 {
            startThread {
                do {
                    let socket = try TestSocket(address, timeoutSeconds: 20)
                    try socket.send("NODE PING\n")
                    let reply = try socket.readLine()
                    lock.withLock { if reply == "PONG" { answered += 1 } else { failures.append("\(reply ?? "nil")") } }
                } catch {
                    lock.withLock { failures.append("\(error)") }
                }
                done.signal()
            }
        }
        for _ in 0..<200 { done.wait() }
        #expect(answered == 200, "failures: \(failures.prefix(5))")
        #expect(ring.ping(0))
    }
}
