/// What a node does with bytes from a connection before any request runs, as one call for fuzzing: the fuzz target
/// (`fuzz/RequestFuzzer.swift`, built with libFuzzer over these sources) and the corpus replay in the tests feed it
/// anything. The first byte picks the path: header lines through `FramedReader` into `Request(line:)` (and a
/// refusal's `ERR` line), or a payload through the binary and JSON decoders nodes apply to what peers and mounts
/// send. It must return for every input: no trap, no hang.
public enum ParserExercise {
    public static func run(_ data: [UInt8]) {
        guard let mode = data.first else { return }
        let rest = Array(data.dropFirst())
        switch mode % 4 {
        case 0, 1:
            let reader = FramedReader(source: MemorySource(rest))
            for _ in 0..<64 {
                guard let line = try? reader.readLine(maxBytes: mode % 4 == 0 ? Limits.headerLineBytes : 300) else { return }
                do {
                    _ = try Request(line: line, maxFileSizeBytes: 1 << 30).payloadBytes
                } catch {
                    _ = error.line
                }
            }
        case 2:
            _ = try? WireBinary.decode(FSRequest.self, from: rest)
            _ = try? WireBinary.decode(FSReply.self, from: rest)
            _ = try? EncodedRecords.decode(rest)
        default:
            _ = try? WireJSON.decode(Netmap.self, from: rest)
            _ = try? WireJSON.decode(NodeInfo.self, from: rest)
            _ = try? WireJSON.decode(MovePlan.self, from: rest)
        }
    }

    /// Bytes as a connection's stream, handed out in reads of varying size (as TCP may).
    final class MemorySource: ByteSource {
        let bytes: [UInt8]
        var offset = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        func read(into target: UnsafeMutableRawBufferPointer) throws -> Int {
            let count = min(target.count, bytes.count - offset, 1 + (offset % 7) * 97)
            guard count > 0 else { return 0 }
            bytes.withUnsafeBytes { target.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: count) }
            offset += count
            return count
        }
    }
}
