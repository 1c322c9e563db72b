import OuroCore
import Testing

/// `Request(line:)`: every command, and every way a header line is refused, with the exact `ERR` line.
@Suite struct RequestTests {
    static let cid = "0123456789abcdef0123456789abcdef"

    static func address(_ text: String) -> NodeAddress { NodeAddress(text)! }
    static func path(_ text: String) -> PathName { try! PathName(text) }
    static func chunk(_ index: Int, _ parts: Int) -> ChunkID { try! ChunkID(contentID: ContentID(cid)!, index: index, parts: parts) }

    static func parse(_ line: String, maxFileSizeBytes: UInt64 = Limits.defaultMaxFileSizeBytes) -> Result<Request, OuroError> {
        do throws(OuroError) {
            return .success(try Request(line: line, maxFileSizeBytes: maxFileSizeBytes))
        } catch {
            return .failure(error)
        }
    }

    struct Accepted: CustomTestStringConvertible, Sendable {
        var line: String
        var request: Request
        var payloadBytes: UInt64 = 0
        var testDescription: String { line.count > 60 ? String(line.prefix(60)) + "…" : line }
    }

    static let accepted: [Accepted] = [
        Accepted(line: "NODE PING", request: .nodePing),
        Accepted(line: "NODE AUTH s3cret!", request: .nodeAuth(secret: "s3cret!")),
        Accepted(line: "NODE STATUS", request: .nodeStatus),
        Accepted(line: "NODE NEXT 127.0.0.1:7001", request: .nodeNext(address("127.0.0.1:7001"))),
        Accepted(line: "NODE NEXT [::1]:7000", request: .nodeNext(NodeAddress(host: "::1", port: 7000))),
        Accepted(line: "NODE NEXT node-b.example.org:7002", request: .nodeNext(NodeAddress(host: "node-b.example.org", port: 7002))),
        Accepted(line: "NODE NEXT 7003", request: .nodeNext(NodeAddress(host: "127.0.0.1", port: 7003))),
        Accepted(line: "NODE HEAL", request: .nodeHeal),
        Accepted(line: "NODE SCRUB", request: .nodeScrub),
        Accepted(line: "NODE JOIN 10.0.0.2:7000", request: .nodeJoin(address("10.0.0.2:7000"))),
        Accepted(line: "NODE INFO", request: .nodeInfo),
        Accepted(line: "NODE USAGE", request: .nodeUsage),
        Accepted(line: "NODE LOCAL", request: .nodeLocal),
        Accepted(line: "NODE LEAVE", request: .nodeLeave),
        Accepted(line: "NETMAP DISCOVER", request: .netmapDiscover),
        Accepted(line: "NETMAP GET", request: .netmapGet),
        Accepted(line: "NETMAP SET 7 127.0.0.1:7000=Alive,[::1]:7001=Dead",
                 request: .netmapSet(Netmap(epoch: 7, members: [.init(address: address("127.0.0.1:7000"), alive: true),
                                                                .init(address: NodeAddress(host: "::1", port: 7001), alive: false)]))),
        Accepted(line: "NETMAP SET 0 -", request: .netmapSet(Netmap(epoch: 0, members: []))),
        Accepted(line: "TOPOLOGY WALK", request: .topologyWalk),
        Accepted(line: "FILE PUSH 10 photo.jpg", request: .filePush(sizeBytes: 10, name: path("photo.jpg")), payloadBytes: 10),
        Accepted(line: "FILE PUSH 0 empty", request: .filePush(sizeBytes: 0, name: path("empty"))),
        Accepted(line: "FILE PUSH 5 my holiday photo.jpg", request: .filePush(sizeBytes: 5, name: path("my holiday photo.jpg")),
                 payloadBytes: 5),
        Accepted(line: "FILE PUSH 5  leading space", request: .filePush(sizeBytes: 5, name: path(" leading space")), payloadBytes: 5),
        Accepted(line: "FILE PUSH 5 dir/sub/file.txt", request: .filePush(sizeBytes: 5, name: path("dir/sub/file.txt")), payloadBytes: 5),
        Accepted(line: "FILE PUSH 5 a,b \"c\"", request: .filePush(sizeBytes: 5, name: path("a,b \"c\"")), payloadBytes: 5),
        Accepted(line: "FILE PUSH 5 " + String(repeating: "n", count: 255),
                 request: .filePush(sizeBytes: 5, name: path(String(repeating: "n", count: 255))), payloadBytes: 5),
        Accepted(line: "FILE PUSH 5 ünïcødé ✓", request: .filePush(sizeBytes: 5, name: path("ünïcødé ✓")), payloadBytes: 5),
        Accepted(line: "FILE PUSH 1099511627776 huge", request: .filePush(sizeBytes: 1 << 40, name: path("huge")),
                 payloadBytes: 1 << 40),
        Accepted(line: "FILE PULL my file.txt", request: .filePull(name: path("my file.txt"))),
        Accepted(line: "FILE LIST", request: .fileList),
        Accepted(line: "FILE SHORT", request: .fileShort),
        Accepted(line: "FILE STAT a/b c", request: .fileStat(name: path("a/b c"))),
        Accepted(line: "FILE DELETE a b", request: .fileDelete(name: path("a b"))),
        Accepted(line: "INODE WRITE 42 100", request: .inodeWrite(inode: 42, sizeBytes: 100), payloadBytes: 100),
        Accepted(line: "CHUNK RELAY \(cid) 10 2 1 127.0.0.1:7000,127.0.0.1:7001,[::1]:7002",
                 request: .chunkRelay(RelayHeader(contentID: ContentID(cid)!, sizeBytes: 10, copies: 2, position: 1,
                                                  chain: [address("127.0.0.1:7000"), address("127.0.0.1:7001"),
                                                          NodeAddress(host: "::1", port: 7002)]))),
        Accepted(line: "CHUNK GET \(cid) 0 3 0 4", request: .chunkGet(chunk(0, 3), offset: 0, lengthBytes: 4)),
        Accepted(line: "CHUNK PUT \(cid) 2 3 3 4294967295", request: .chunkPut(chunk(2, 3), lengthBytes: 3, crc32c: .max),
                 payloadBytes: 3),
        Accepted(line: "CHUNK PUT \(cid) 0 1 3 7 DEFER", request: .chunkPut(chunk(0, 1), lengthBytes: 3, crc32c: 7, deferSync: true),
                 payloadBytes: 3),
        Accepted(line: "CHUNK CHECK \(cid) 1 3", request: .chunkCheck(chunk(1, 3))),
        Accepted(line: "CHUNK VERIFY \(cid) 2 3", request: .chunkVerify(chunk(2, 3))),
        Accepted(line: "CHUNK VERIFIED \(cid) 2 3", request: .chunkVerified(chunk(2, 3))),
        Accepted(line: "CHUNK KEEP \(cid) 2 3", request: .chunkKeep(chunk(2, 3))),
        Accepted(line: "CONTENT PUSH 77", request: .contentPush(sizeBytes: 77), payloadBytes: 77),
        Accepted(line: "CATALOG SYNC abc 12", request: .catalogSync(incarnation: "abc", afterSequence: 12)),
        Accepted(line: "CATALOG APPLY 123", request: .catalogApply(lengthBytes: 123), payloadBytes: 123),
        Accepted(line: "CATALOG APPLY 9 DEFER", request: .catalogApply(lengthBytes: 9, deferSync: true), payloadBytes: 9),
        Accepted(line: "FS LOOKUP 57", request: .fs(operation: .lookup, lengthBytes: 57), payloadBytes: 57),
        Accepted(line: "FS RENAME 0", request: .fs(operation: .rename, lengthBytes: 0)),
        Accepted(line: "FS GETATTR 9 BIN", request: .fs(operation: .getattr, lengthBytes: 9, binary: true), payloadBytes: 9),
        Accepted(line: "INODE WRITE 42 100 BIN", request: .inodeWrite(inode: 42, sizeBytes: 100, binary: true), payloadBytes: 100),
    ]

    @Test(arguments: accepted)
    func accepts(_ row: Accepted) throws {
        let request = try Self.parse(row.line).get()
        #expect(request == row.request)
        #expect(request.payloadBytes == row.payloadBytes)
    }

    struct Refused: CustomTestStringConvertible, Sendable {
        var line: String
        var reply: String
        var maxFileSizeBytes: UInt64 = Limits.defaultMaxFileSizeBytes
        var testDescription: String {
            let shown = line.map { $0 == "\0" ? "␀" : $0 == "\r" ? "␍" : $0 }
            return shown.count > 60 ? String(shown.prefix(60)) + "…" : String(shown)
        }
    }

    static let tooLongName = String(repeating: "n", count: 256)
    static let tooLongPath = String(repeating: "abcdefgh/", count: 460) + "x"  // 4141 bytes

    static let refused: [Refused] = [
        Refused(line: "", reply: "ERR BAD_REQUEST empty request"),
        Refused(line: "FOO BAR", reply: "ERR BAD_REQUEST unknown command: FOO BAR"),
        Refused(line: "HELLO", reply: "ERR BAD_REQUEST unknown command: HELLO"),
        Refused(line: "NODE", reply: "ERR BAD_REQUEST unknown command: NODE"),
        Refused(line: "NODE FLY", reply: "ERR BAD_REQUEST unknown command: NODE FLY"),
        Refused(line: "node ping", reply: "ERR BAD_REQUEST unknown command: node ping"),
        Refused(line: " NODE PING", reply: "ERR BAD_REQUEST unknown command:  NODE PING"),
        Refused(line: "FILE", reply: "ERR BAD_REQUEST unknown command: FILE"),
        Refused(line: "FILE COPY a b", reply: "ERR BAD_REQUEST unknown command: FILE COPY a b"),
        Refused(line: "FS 123 5", reply: "ERR BAD_REQUEST unknown command: FS 123 5"),
        Refused(line: "FS LOKUP 5", reply: "ERR BAD_REQUEST unknown FS operation LOKUP"),
        Refused(line: "FS lookup 5", reply: "ERR BAD_REQUEST unknown FS operation lookup"),
        Refused(line: "X" + String(repeating: "y", count: 100), reply: "ERR BAD_REQUEST unknown command: X" + String(repeating: "y", count: 63)),
        Refused(line: "NODE PING extra", reply: "ERR BAD_REQUEST unexpected arguments: extra"),
        Refused(line: "NODE AUTH", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "NODE AUTH two words", reply: "ERR BAD_REQUEST bad secret"),
        Refused(line: "NODE STATUS now", reply: "ERR BAD_REQUEST unexpected arguments: now"),
        Refused(line: "NODE HEAL x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "NODE INFO x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "NODE LEAVE now", reply: "ERR BAD_REQUEST unexpected arguments: now"),
        Refused(line: "NETMAP GET x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "NETMAP DISCOVER x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "TOPOLOGY WALK x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "FILE LIST x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "FILE SHORT x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "NODE NEXT", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NODE NEXT nonsense", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NODE NEXT 127.0.0.1:0", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NODE NEXT 127.0.0.1:70000", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NODE NEXT ::1:7000", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NODE NEXT 127.0.0.1:7000 x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "NODE JOIN", reply: "ERR BAD_REQUEST bad address, want host:port"),
        Refused(line: "NETMAP SET", reply: "ERR BAD_REQUEST missing epoch"),
        Refused(line: "NETMAP SET x -", reply: "ERR BAD_REQUEST bad epoch: x"),
        Refused(line: "NETMAP SET 1", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "NETMAP SET 1 127.0.0.1:7000=Maybe", reply: "ERR BAD_REQUEST bad netmap entry: 127.0.0.1:7000=Maybe"),
        Refused(line: "NETMAP SET 1 127.0.0.1:7000=Alive,127.0.0.1:7000=Dead", reply: "ERR BAD_REQUEST duplicate netmap entry"),
        Refused(line: "FILE PUSH", reply: "ERR BAD_REQUEST missing size"),
        Refused(line: "FILE PUSH abc x", reply: "ERR BAD_REQUEST bad size: abc"),
        Refused(line: "FILE PUSH -1 x", reply: "ERR BAD_REQUEST bad size: -1"),
        Refused(line: "FILE PUSH +1 x", reply: "ERR BAD_REQUEST bad size: +1"),
        Refused(line: "FILE PUSH 1e3 x", reply: "ERR BAD_REQUEST bad size: 1e3"),
        Refused(line: "FILE PUSH 0x10 x", reply: "ERR BAD_REQUEST bad size: 0x10"),
        Refused(line: "FILE PUSH ١٢ x", reply: "ERR BAD_REQUEST bad size: ١٢"),
        Refused(line: "FILE PUSH 18446744073709551616 x", reply: "ERR BAD_REQUEST bad size: 18446744073709551616"),
        Refused(line: "FILE PUSH 10", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "FILE PUSH 10 ", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "FILE PUSH 5 ../x", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "FILE PUSH 5 a/../../b", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "FILE PUSH 5 ./x", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "FILE PUSH 5 ..", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "FILE PUSH 5 /abs", reply: "ERR BAD_REQUEST absolute names are not allowed: /abs"),
        Refused(line: "FILE PUSH 5 /", reply: "ERR BAD_REQUEST absolute names are not allowed: /"),
        Refused(line: "FILE PUSH 5 a\0b", reply: "ERR BAD_REQUEST NUL in header line"),
        Refused(line: "FILE PUSH 5 a\rb", reply: "ERR BAD_REQUEST names may not contain NUL, '/', CR or LF"),
        Refused(line: "FILE PUSH 5 \(tooLongName)", reply: "ERR TOO_LARGE name component longer than 255 bytes"),
        Refused(line: "FILE PUSH 5 dir/\(tooLongName)/x", reply: "ERR TOO_LARGE name component longer than 255 bytes"),
        Refused(line: "FILE PUSH 5 \(tooLongPath)", reply: "ERR TOO_LARGE name longer than 4096 bytes"),
        Refused(line: "FILE PUSH 1099511627777 x", reply: "ERR TOO_LARGE file of 1099511627777 bytes exceeds the limit of 1099511627776 bytes"),
        Refused(line: "FILE PUSH 1000000000000000 big", reply: "ERR TOO_LARGE file of 1000000000000000 bytes exceeds the limit of 1048576 bytes",
                maxFileSizeBytes: 1 << 20),
        Refused(line: "FILE PUSH 1048577 big", reply: "ERR TOO_LARGE file of 1048577 bytes exceeds the limit of 1048576 bytes",
                maxFileSizeBytes: 1 << 20),
        Refused(line: "FILE PULL", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "FILE PULL ../etc/passwd", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "FILE PULL /etc/passwd", reply: "ERR BAD_REQUEST absolute names are not allowed: /etc/passwd"),
        Refused(line: "FILE STAT", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "FILE DELETE", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "FILE DELETE a/./b", reply: "ERR BAD_REQUEST '.' and '..' are not allowed in names"),
        Refused(line: "INODE WRITE", reply: "ERR BAD_REQUEST missing inode"),
        Refused(line: "INODE WRITE 1", reply: "ERR BAD_REQUEST missing size"),
        Refused(line: "INODE WRITE 1 2 3", reply: "ERR BAD_REQUEST unexpected arguments: 3"),
        Refused(line: "INODE WRITE 1 2000000", reply: "ERR TOO_LARGE file of 2000000 bytes exceeds the limit of 1048576 bytes",
                maxFileSizeBytes: 1 << 20),
        Refused(line: "CHUNK RELAY nothex 10 2 1 127.0.0.1:1,127.0.0.1:2", reply: "ERR BAD_REQUEST bad content id"),
        Refused(line: "CHUNK RELAY \(cid) 10 2 0 127.0.0.1:1,127.0.0.1:2", reply: "ERR BAD_REQUEST bad relay chain"),
        Refused(line: "CHUNK RELAY \(cid) 10 2 2 127.0.0.1:1,127.0.0.1:2", reply: "ERR BAD_REQUEST bad relay chain"),
        Refused(line: "CHUNK RELAY \(cid) 10 0 1 127.0.0.1:1,127.0.0.1:2", reply: "ERR BAD_REQUEST bad relay chain"),
        Refused(line: "CHUNK RELAY \(cid) 10 2 1 127.0.0.1:1,bad", reply: "ERR BAD_REQUEST bad address in chain: bad"),
        Refused(line: "CHUNK RELAY \(cid) 10 2 1", reply: "ERR BAD_REQUEST missing argument"),
        Refused(line: "CHUNK RELAY \(cid) 2000000 2 1 127.0.0.1:1,127.0.0.1:2",
                reply: "ERR TOO_LARGE content of 2000000 bytes exceeds the limit", maxFileSizeBytes: 1 << 20),
        Refused(line: "CHUNK GET \(cid) 3 3 0 1", reply: "ERR BAD_REQUEST chunk index 3 of 3 is out of range"),
        Refused(line: "CHUNK GET \(cid) 0 0 0 1", reply: "ERR BAD_REQUEST chunk index 0 of 0 is out of range"),
        Refused(line: "CHUNK GET \(cid) 0 3 0", reply: "ERR BAD_REQUEST missing length"),
        Refused(line: "CHUNK GET \(cid) 0 3 0 1 2", reply: "ERR BAD_REQUEST unexpected arguments: 2"),
        Refused(line: "CHUNK PUT \(cid) 0 3 10 4294967296", reply: "ERR BAD_REQUEST bad crc: 4294967296"),
        Refused(line: "CHUNK PUT \(cid) 0 1 10 5 LATER", reply: "ERR BAD_REQUEST unexpected arguments: LATER"),
        Refused(line: "CHUNK PUT \(cid) 0 1 10 5 DEFER x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "CHUNK PUT \(cid) 0 3 2000000 1", reply: "ERR TOO_LARGE chunk of 2000000 bytes exceeds the limit",
                maxFileSizeBytes: 1 << 20),
        Refused(line: "CHUNK CHECK \(cid) 0 3 x", reply: "ERR BAD_REQUEST unexpected arguments: x"),
        Refused(line: "CHUNK CHECK \(cid)", reply: "ERR BAD_REQUEST missing chunk index"),
        Refused(line: "CHUNK VERIFY \(cid) 0", reply: "ERR BAD_REQUEST missing parts"),
        Refused(line: "NODE SCRUB now", reply: "ERR BAD_REQUEST unexpected arguments: now"),
        Refused(line: "CATALOG SYNC", reply: "ERR BAD_REQUEST bad incarnation"),
        Refused(line: "CATALOG SYNC \(String(repeating: "i", count: 65)) 1", reply: "ERR BAD_REQUEST bad incarnation"),
        Refused(line: "CATALOG SYNC abc", reply: "ERR BAD_REQUEST missing sequence"),
        Refused(line: "CATALOG APPLY", reply: "ERR BAD_REQUEST missing length"),
        Refused(line: "CATALOG APPLY 9 LATER", reply: "ERR BAD_REQUEST unexpected arguments: LATER"),
        Refused(line: "CATALOG APPLY 67108865", reply: "ERR TOO_LARGE payload of 67108865 bytes exceeds 67108864"),
        Refused(line: "FS LOOKUP", reply: "ERR BAD_REQUEST missing length"),
        Refused(line: "FS LOOKUP 5 XML", reply: "ERR BAD_REQUEST unexpected arguments: XML"),
        Refused(line: "FS LOOKUP 5 BIN BIN", reply: "ERR BAD_REQUEST unexpected arguments: BIN"),
        Refused(line: "FS LOOKUP 67108865", reply: "ERR TOO_LARGE payload of 67108865 bytes exceeds 67108864"),
        Refused(line: "FILE PULL " + String(repeating: "a", count: 8200), reply: "ERR TOO_LARGE header line too long"),
    ]

    @Test(arguments: refused)
    func refuses(_ row: Refused) {
        switch Self.parse(row.line, maxFileSizeBytes: row.maxFileSizeBytes) {
        case .success(let request): Issue.record("accepted as \(request)")
        case .failure(let error): #expect(error.line == row.reply)
        }
    }

    /// The size limit is inclusive: exactly `--max-file-size` bytes are accepted.
    @Test func sizeLimitIsInclusive() throws {
        let request = try Self.parse("FILE PUSH 1048576 x", maxFileSizeBytes: 1 << 20).get()
        #expect(request == .filePush(sizeBytes: 1 << 20, name: Self.path("x")))
    }

    /// Error replies are one line whatever the message holds, and parse back to their code.
    @Test func errorLines() {
        let error = OuroError(.notFound, "two\nlines\r")
        #expect(error.line == "ERR NOT_FOUND two lines ")
        for code in ErrorCode.allCases {
            #expect(OuroError(errorLine: OuroError(code, "why").line) == OuroError(code, "why"))
        }
        #expect(OuroError(errorLine: "ERR file not found")?.code == .notFound, "the original protocol's reply")
        #expect(OuroError(errorLine: "ERR something odd")?.code == .internal)
        #expect(OuroError(errorLine: "PONG") == nil)
    }
}
