import Foundation
import OuroCore
import Testing

/// The client protocol as a person types it: `nc -N` (netcat-openbsd) with the exact lines of PROTOCOL.md.
@Suite struct NetcatTests {
    static func quote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// Runs a shell pipeline; returns its standard output (standard error goes to a separate file, shown on failure).
    static func sh(_ script: String, in directory: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
        let errors = directory + "/stderr-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(errors) }
        let (status, output) = try ChildProcess.shell("cd \(quote(directory)) && { \(script) ; } 2>\(quote(errors))", in: directory)
        let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
        #expect(status == .exited(0), "\(script) → \(status): \(stderr)", sourceLocation: sourceLocation)
        return output
    }

    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func protocolThroughNetcat() throws {
        let ring = try Ring(nodes: 3, label: "netcat")
        defer { ring.shutdown() }
        let directory = ring.directory
        let (a0, a1, a2) = (ring.address(0), ring.address(1), ring.address(2))
        func nc(_ node: Int) -> String { "nc -N 127.0.0.1 \(ring.address(node).port)" }

        #expect(Self.text(try Self.sh("printf 'NODE PING\\n' | \(nc(0))", in: directory)) == "PONG\n")
        #expect(Self.text(try Self.sh("printf 'NODE STATUS\\n' | \(nc(1))", in: directory)) == "PORT \(a1)\nNEXT \(a2)\nOK\n")
        #expect(Self.text(try Self.sh("printf 'NETMAP GET\\n' | \(nc(2))", in: directory))
                == "\(a0)=Alive\n\(a1)=Alive\n\(a2)=Alive\nOK\n")
        #expect(Self.text(try Self.sh("printf 'TOPOLOGY WALK\\n' | \(nc(0))", in: directory))
                == "\(a0)->\(a1)\n\(a1)->\(a2)\n\(a2)->\(a0)\nOK\n")
        // Several requests on one connection, CRLF accepted.
        #expect(Self.text(try Self.sh("printf 'NODE PING\\r\\nNODE PING\\n' | \(nc(2))", in: directory)) == "PONG\nPONG\n")

        var generator = PseudoRandomBytes(seed: TestSeed.derived("netcat"))
        let photo = generator.bytes(123_457)
        try Data(photo).write(to: URL(fileURLWithPath: directory + "/photo.jpg"))
        let pushed = try Self.sh("( printf 'FILE PUSH %s %s\\n' \"$(wc -c < photo.jpg)\" photo.jpg; cat photo.jpg ) | \(nc(1))",
                                 in: directory)
        #expect(Self.text(pushed) == "FILE 123457 bytes split into 3 chunks and distributed\nOK\n")
        try ring.expectPlacement(of: "photo.jpg", start: 1, sizeBytes: 123_457, original: photo)

        _ = try Self.sh("printf 'FILE PULL photo.jpg\\n' | \(nc(0)) > copy.jpg", in: directory)
        let compared = try Self.sh("cmp photo.jpg copy.jpg", in: directory)
        #expect(compared.isEmpty)
        let copy = try Data(contentsOf: URL(fileURLWithPath: directory + "/copy.jpg"))
        #expect([UInt8](copy) == photo)

        #expect(Self.text(try Self.sh("printf 'FILE LIST\\n' | \(nc(2))", in: directory)) == "name,start,size\nphoto.jpg,\(a1),123457\n")
        #expect(Self.text(try Self.sh("printf 'FILE PULL nothing.jpg\\n' | \(nc(2))", in: directory)) == "ERR file not found\n")

        // A name with a comma and a quote is quoted in the CSV, quotes doubled.
        let pushedOdd = try Self.sh("printf 'FILE PUSH 3 say \"hi\", bye.txt\\nabc' | \(nc(0))", in: directory)
        #expect(Self.text(pushedOdd) == "FILE 3 bytes split into 3 chunks and distributed\nOK\n")
        #expect(Self.text(try Self.sh("printf 'FILE LIST\\n' | \(nc(1))", in: directory))
                == "name,start,size\nphoto.jpg,\(a1),123457\n\"say \"\"hi\"\", bye.txt\",\(a0),3\n")
        #expect(Self.text(try Self.sh("printf 'FILE PULL say \"hi\", bye.txt\\n' | \(nc(2))", in: directory)) == "abc")
    }
}
