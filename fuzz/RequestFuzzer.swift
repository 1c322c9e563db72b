// libFuzzer target: what a node does with bytes from a connection before any request runs, fed anything.
// The first byte picks the path: header lines through `FramedReader` into `Request(line:)` (and a refusal's
// `ERR` line), or a payload through the binary and JSON decoders a node applies to what peers and mounts send.
// Built and run by fuzz/run.sh; every input of fuzz/corpus/ is replayed by FuzzCorpusTests.
import Foundation

/// An input as a connection's byte stream, handed out in small reads (as TCP may).
final class BytesSource: ByteSource {
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

public func fuzzOne(_ data: [UInt8]) {
    guard let mode = data.first else { return }
    let rest = Array(data.dropFirst())
    switch mode % 4 {
    case 0, 1:
        let reader = FramedReader(source: BytesSource(rest))
        for _ in 0..<64 {
            guard let line = try? reader.readLine(maxBytes: mode % 4 == 0 ? Limits.headerLineBytes : 300) else { return }
            do {
                let request = try Request(line: line, maxFileSizeBytes: 1 << 30)
                _ = request.payloadBytes
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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
