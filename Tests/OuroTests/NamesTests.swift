import Foundation
import OuroClient
import OuroCore
import Testing

/// File names (`PathName`), node addresses (`NodeAddress`), and the CSV of `FILE LIST`.
@Suite struct NamesTests {
    // MARK: PathName

    struct GoodPath: CustomTestStringConvertible, Sendable {
        var text: String
        var components: [String]
        var testDescription: String { text }
    }

    @Test(arguments: [
        GoodPath(text: "a", components: ["a"]),
        GoodPath(text: "photo.jpg", components: ["photo.jpg"]),
        GoodPath(text: "dir/sub/file.txt", components: ["dir", "sub", "file.txt"]),
        GoodPath(text: "dir/", components: ["dir"]),
        GoodPath(text: "my holiday photo.jpg", components: ["my holiday photo.jpg"]),
        GoodPath(text: " spaced ", components: [" spaced "]),
        GoodPath(text: "...", components: ["..."]),
        GoodPath(text: "..hidden", components: ["..hidden"]),
        GoodPath(text: ".profile", components: [".profile"]),
        GoodPath(text: "a,b\"c", components: ["a,b\"c"]),
        GoodPath(text: "tab\there", components: ["tab\there"]),
        GoodPath(text: "ünïcødé/✓", components: ["ünïcødé", "✓"]),
        GoodPath(text: String(repeating: "n", count: 255), components: [String(repeating: "n", count: 255)]),
        GoodPath(text: "é" + String(repeating: "n", count: 253), components: ["é" + String(repeating: "n", count: 253)]),
    ])
    func validNames(_ row: GoodPath) throws {
        let name = try PathName(row.text)
        #expect(name.components == row.components)
        #expect(name.description == row.components.joined(separator: "/"))
        #expect(name.lastComponent == row.components.last)
        #expect(Array(name.parentComponents) == Array(row.components.dropLast()))
        #expect(try PathName(components: row.components) == name)
    }

    struct BadPath: CustomTestStringConvertible, Sendable {
        var text: String
        var code: ErrorCode
        var testDescription: String { String(text.prefix(40).map { $0 == "\0" ? "␀" : $0 == "\n" ? "␊" : $0 == "\r" ? "␍" : $0 }) }
    }

    @Test(arguments: [
        BadPath(text: "", code: .badRequest),
        BadPath(text: "/", code: .badRequest),
        BadPath(text: "/abs", code: .badRequest),
        BadPath(text: "//double", code: .badRequest),
        BadPath(text: ".", code: .badRequest),
        BadPath(text: "..", code: .badRequest),
        BadPath(text: "../x", code: .badRequest),
        BadPath(text: "a/..", code: .badRequest),
        BadPath(text: "a/./b", code: .badRequest),
        BadPath(text: "a\0b", code: .badRequest),
        BadPath(text: "a\nb", code: .badRequest),
        BadPath(text: "a\rb", code: .badRequest),
        BadPath(text: "a\r\nb", code: .badRequest),
        BadPath(text: String(repeating: "n", count: 256), code: .tooLarge),
        BadPath(text: "é" + String(repeating: "n", count: 254), code: .tooLarge),  // 256 bytes, 255 characters
        BadPath(text: String(repeating: "abcdefgh/", count: 460), code: .tooLarge),
    ])
    func invalidNames(_ row: BadPath) {
        do {
            let name = try PathName(row.text)
            Issue.record("accepted as \(name.components)")
        } catch {
            #expect(error.code == row.code)
        }
    }

    /// The documentation of `PathName` says empty inner components are rejected (only a trailing slash is
    /// tolerated): `a//b` must not become a second spelling of `a/b`.
    @Test func emptyInnerComponentIsRejected() {
        #expect(throws: OuroError.self) { try PathName("a//b") }
    }

    @Test func componentsInitializerValidates() {
        #expect(throws: OuroError.self) { try PathName(components: []) }
        #expect(throws: OuroError.self) { try PathName(components: ["a/b"]) }
        #expect(throws: OuroError.self) { try PathName(components: [".."]) }
        #expect(throws: OuroError.self) { try PathName(components: [""]) }
    }

    // MARK: NodeAddress

    struct AddressCase: CustomTestStringConvertible, Sendable {
        var text: String
        var host: String?
        var port: UInt16 = 0
        var description: String? = nil
        var testDescription: String { text.isEmpty ? "(empty)" : text }
    }

    @Test(arguments: [
        AddressCase(text: "127.0.0.1:7000", host: "127.0.0.1", port: 7000),
        AddressCase(text: "localhost:1", host: "localhost", port: 1),
        AddressCase(text: "node-b.example.org:65535", host: "node-b.example.org", port: 65535),
        AddressCase(text: "[::1]:7000", host: "::1", port: 7000),
        AddressCase(text: "[fe80::1%eth0]:7001", host: "fe80::1%eth0", port: 7001),
        AddressCase(text: "[2001:db8::2]:80", host: "2001:db8::2", port: 80),
        AddressCase(text: "7000", host: "127.0.0.1", port: 7000, description: "127.0.0.1:7000"),
        AddressCase(text: "", host: nil),
        AddressCase(text: "host", host: nil),
        AddressCase(text: "host:", host: nil),
        AddressCase(text: ":7000", host: nil),
        AddressCase(text: "host:0", host: nil),
        AddressCase(text: "host:65536", host: nil),
        AddressCase(text: "host:-1", host: nil),
        AddressCase(text: "host:7x", host: nil),
        AddressCase(text: "::1:7000", host: nil),
        AddressCase(text: "::1", host: nil),
        AddressCase(text: "[::1]", host: nil),
        AddressCase(text: "[::1]:", host: nil),
        AddressCase(text: "[::1]7000", host: nil),
        AddressCase(text: "[]:7000", host: nil),
        AddressCase(text: "a b:7000", host: nil),
        AddressCase(text: "a,b:7000", host: nil),
        AddressCase(text: "a=b:7000", host: nil),
    ])
    func addresses(_ row: AddressCase) throws {
        let address = NodeAddress(row.text)
        guard let host = row.host else {
            #expect(address == nil)
            return
        }
        let parsed = try #require(address)
        #expect(parsed.host == host)
        #expect(parsed.port == row.port)
        #expect(parsed.description == (row.description ?? row.text))
        #expect(NodeAddress(parsed.description) == parsed, "description parses back")
        let json = try JSONEncoder().encode([parsed])
        #expect(try JSONDecoder().decode([NodeAddress].self, from: json) == [parsed])
    }

    @Test func addressJSONRejectsGarbage() {
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([NodeAddress].self, from: Data("[\"nope\"]".utf8)) }
    }

    // MARK: CSV

    @Test(arguments: [
        ("plain", "plain"),
        ("", ""),
        ("with space", "with space"),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("\"", "\"\"\"\""),
        ("line\nbreak", "\"line\nbreak\""),
        ("carriage\rreturn", "\"carriage\rreturn\""),
        ("crlf\r\nbreak", "\"crlf\r\nbreak\""),
        ("dir/sub,1/x", "\"dir/sub,1/x\""),
    ])
    func csvField(_ text: String, _ encoded: String) {
        #expect(CSV.field(text) == encoded)
        #expect(CSV.parseRow(encoded) == [text])
    }

    @Test func csvRows() {
        #expect(CSV.parseRow("name,start,size") == ["name", "start", "size"])
        #expect(CSV.parseRow("\"a,b\",127.0.0.1:7000,10") == ["a,b", "127.0.0.1:7000", "10"])
        #expect(CSV.parseRow("\"say \"\"hi\"\"\",[::1]:7000,0") == ["say \"hi\"", "[::1]:7000", "0"])
        #expect(CSV.parseRow(",,") == ["", "", ""])
        #expect(CSV.parseRow("\"\",x") == ["", "x"])
        #expect(CSV.parseRow("\"open,127.0.0.1:7000,1") == nil, "an open quote continues on the next line")
        #expect(CSV.parseRow("\"two\nlines\",127.0.0.1:7000,1") == ["two\nlines", "127.0.0.1:7000", "1"])
    }

    /// Random rows of awkward fields survive `field` → join → `parseRow`.
    @Test func csvRoundTrip() {
        var generator = PseudoRandomBytes(seed: TestSeed.derived("csvRoundTrip"))
        let alphabet: [Character] = ["a", "b", " ", ",", "\"", "\n", "\r", "é", "✓", "/", "x"]
        for _ in 0..<500 {
            let fields = (0..<3).map { _ in
                let length = Int(generator.bytes(1)[0] % 12)
                return String(generator.bytes(length).map { alphabet[Int($0) % alphabet.count] })
            }
            let row = fields.map(CSV.field).joined(separator: ",")
            #expect(CSV.parseRow(row) == fields, "row \(row.debugDescription)")
        }
    }
}
