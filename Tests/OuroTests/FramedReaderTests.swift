import OuroCore
import Testing

/// `FramedReader`: header lines and exact-length payloads, fed by a scripted source one byte at a time and all at
/// once (the same input must frame the same way however the network cuts it).
@Suite struct FramedReaderTests {
    /// One byte per read, a few bytes, and as much as asked for.
    static let pieces = [1, 3, 4096, Int.max]

    static func error(_ body: () throws -> Void) -> OuroError? {
        do {
            try body()
            return nil
        } catch let error as OuroError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test(arguments: pieces)
    func linesLFAndCRLF(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("NODE PING\nNODE STATUS\r\n\nFILE LIST\r\nbare\rcr\n", piece: piece))
        #expect(try reader.readLine() == "NODE PING")
        #expect(try reader.readLine() == "NODE STATUS", "CRLF is accepted")
        #expect(try reader.readLine() == "", "an empty line is a line")
        #expect(try reader.readLine() == "FILE LIST")
        #expect(try reader.readLine() == "bare\rcr", "only a CR right before the LF is dropped")
        #expect(try reader.readLine() == nil, "clean end of stream")
        #expect(try reader.readLine() == nil, "and it stays ended")
    }

    @Test(arguments: pieces)
    func headerThenPayloadThenHeader(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("FILE PUSH 5 x\nhelloNODE PING\nFILE PUSH 3 y\r\n\n\nzNODE PING\n", piece: piece))
        #expect(try reader.readLine() == "FILE PUSH 5 x")
        #expect(try reader.readBytes(5) == Array("hello".utf8), "the payload is the next 5 bytes, newline or not")
        #expect(try reader.readLine() == "NODE PING")
        #expect(try reader.readLine() == "FILE PUSH 3 y")
        #expect(try reader.readBytes(3) == Array("\n\nz".utf8), "newlines inside a payload are payload")
        #expect(try reader.readLine() == "NODE PING")
        #expect(try reader.readLine() == nil)
    }

    /// A payload far larger than the reader's buffer passes through in pieces, and framing resumes after it.
    @Test(arguments: pieces)
    func largePayload(piece: Int) throws {
        var generator = PseudoRandomBytes(seed: TestSeed.derived("largePayload"))
        let payload = generator.bytes(300_000)
        let input = Array("CHUNK PUT x\n".utf8) + payload + Array("NODE PING\n".utf8)
        let reader = FramedReader(source: ScriptedSource(input, piece: piece == 1 ? 7919 : piece), bufferBytes: 8192)
        #expect(try reader.readLine() == "CHUNK PUT x")
        var received: [UInt8] = []
        var scratch = [UInt8](repeating: 0, count: 10_000)
        while received.count < payload.count {
            let want = min(scratch.count, payload.count - received.count)
            let count = try scratch.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[..<want])) }
            #expect(count > 0)
            received += scratch[..<count]
        }
        #expect(received == payload)
        #expect(try reader.readLine() == "NODE PING")
    }

    @Test(arguments: pieces)
    func discardSkipsExactlyThePayload(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("FILE PUSH 10 x\nNODE PING\nNODE PING\nNODE STATUS\n", piece: piece))
        #expect(try reader.readLine() == "FILE PUSH 10 x")
        try reader.discard(20)
        #expect(try reader.readLine() == "NODE STATUS", "the discarded body was never read as commands")
    }

    @Test(arguments: pieces)
    func payloadCutShort(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("FILE PUSH 10 x\nhalf", piece: piece))
        #expect(try reader.readLine() == "FILE PUSH 10 x")
        var target = [UInt8](repeating: 0, count: 10)
        let error = Self.error { try target.withUnsafeMutableBytes { try reader.readExactly(into: $0) } }
        #expect(error?.code == .unavailable)
        let discardError = Self.error { try FramedReader(source: ScriptedSource("abc", piece: piece)).discard(10) }
        #expect(discardError?.code == .unavailable)
    }

    @Test(arguments: pieces)
    func tornLineAtEndOfStream(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("NODE PING\nNODE PI", piece: piece))
        #expect(try reader.readLine() == "NODE PING")
        let error = Self.error { _ = try reader.readLine() }
        #expect(error == OuroError(.badRequest, "connection closed in the middle of a line"))
    }

    @Test(arguments: pieces)
    func emptyStream(piece: Int) throws {
        #expect(try FramedReader(source: ScriptedSource("", piece: piece)).readLine() == nil)
    }

    /// The limit counts the terminator: 8191 bytes + LF (or 8190 + CRLF) fit; one byte more does not.
    @Test(arguments: pieces)
    func lineLengthBoundary(piece: Int) throws {
        let limit = Limits.headerLineBytes
        let fits = String(repeating: "a", count: limit - 1)
        let fitsCRLF = String(repeating: "b", count: limit - 2)
        let reader = FramedReader(source: ScriptedSource(fits + "\n" + fitsCRLF + "\r\n", piece: piece))
        #expect(try reader.readLine() == fits)
        #expect(try reader.readLine() == fitsCRLF)
        let over = FramedReader(source: ScriptedSource(String(repeating: "c", count: limit) + "\nNODE PING\n", piece: piece))
        #expect(Self.error { _ = try over.readLine() }?.code == .tooLarge)
    }

    /// An over-long line fails with TOO_LARGE as soon as the limit is passed: the reader does not go on reading
    /// the line (1 MiB without a newline here) looking for its end.
    @Test(arguments: pieces)
    func overLongLineStopsReading(piece: Int) throws {
        let source = ScriptedSource(String(repeating: "x", count: 1 << 20) + "\n", piece: piece)
        let reader = FramedReader(source: source)
        let error = Self.error { _ = try reader.readLine() }
        #expect(error == OuroError(.tooLarge, "line longer than \(Limits.headerLineBytes) bytes"))
        // At most one buffer's worth (64 KiB by default) was taken from the source.
        #expect(source.consumed <= 64 * 1024, "read \(source.consumed) bytes of an over-long line")
        if piece == 1 { #expect(source.consumed == Limits.headerLineBytes) }
    }

    @Test(arguments: pieces)
    func customLineLimit(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource("OK 1 2 3\nOK 123456789\n", piece: piece))
        #expect(try reader.readLine(maxBytes: 9) == "OK 1 2 3")
        #expect(Self.error { _ = try reader.readLine(maxBytes: 9) }?.code == .tooLarge)
    }

    /// A caller may allow lines longer than the reader's buffer (the relay reads its hop's answer with
    /// `maxBytes: 1 MiB` through a 64 KiB buffer): such a line must come back whole, not as a torn line.
    @Test(arguments: pieces)
    func lineLongerThanTheBufferButWithinTheLimit(piece: Int) throws {
        let long = "OK " + String(repeating: "1.2.3456789 ", count: 1500)  // 18 003 bytes
        let reader = FramedReader(source: ScriptedSource(long + "\nNODE PING\n", piece: piece), bufferBytes: 8192)
        #expect(try reader.readLine(maxBytes: 1 << 20) == long)
        #expect(try reader.readLine() == "NODE PING")
    }

    @Test(arguments: pieces)
    func invalidUTF8IsRefused(piece: Int) throws {
        let reader = FramedReader(source: ScriptedSource([0x4E, 0xFF, 0xFE, 0x0A] + Array("NODE PING\n".utf8), piece: piece))
        #expect(Self.error { _ = try reader.readLine() } == OuroError.badRequest("line is not UTF-8"))
    }

    /// Many short lines through a small buffer: the partial line is slid to the front again and again.
    @Test(arguments: pieces)
    func manyLinesThroughSmallBuffer(piece: Int) throws {
        let lines = (0..<3000).map { "LINE \($0) " + String(repeating: "z", count: $0 % 97) }
        let reader = FramedReader(source: ScriptedSource(lines.joined(separator: "\n") + "\n", piece: piece), bufferBytes: 8192)
        for line in lines {
            let read = try reader.readLine()
            #expect(read == line)
            if read != line { return }
        }
        #expect(try reader.readLine() == nil)
    }
}
