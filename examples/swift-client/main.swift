// A small program on the client library (OuroClient), the one `ouro` and the mount use: it stores a local file in
// the ring, finds it in the catalog, reads it back chunk by chunk from the nodes that hold it, and checks that the
// bytes are the same. Built with the package (`swift build` makes `.build/debug/ouro-example-client`):
//
//   ouro-example-client 127.0.0.1:7000 ./report.pdf docs/report.pdf
//
// Any node of the ring will do. Exit status 0: the file came back byte for byte.
import Glibc
import OuroClient
import OuroCore

func fail(_ message: String) -> Never {
    fputs("ouro-example-client: \(message)\n", stderr)
    exit(1)
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let node = NodeAddress(arguments[1]) else {
    fail("usage: ouro-example-client <node host:port> <local file> <name in the ring>")
}
let (localPath, name) = (arguments[2], arguments[3])

// 1. Push: the node cuts the file into one chunk per live node and sends each around the ring; it answers once
//    every chunk and its copies are on disk.
let fd = open(localPath, O_RDONLY | O_CLOEXEC)
guard fd >= 0 else { fail("cannot open \(localPath): \(String(cString: strerror(errno)))") }
defer { close(fd) }
var info = stat()
guard fstat(fd, &info) == 0 else { fail("cannot stat \(localPath)") }
let pool = ConnectionPool()
let client = NodeClient(node, pool: pool)
do {
    for line in try client.push(name: name, file: fd, sizeBytes: UInt64(info.st_size)) { print("pushed: \(line)") }
} catch {
    fail("push failed: \(error)")
}

// 2. The catalog: every node holds it, so any node knows where the chunks are.
let found: InodeStat
do { found = try client.stat(name) } catch { fail("\(name): \(error)") }
guard let content = found.inode.content else { fail("\(name) has no content") }
print("catalog: \(name) is \(found.inode.sizeBytes) bytes")
if content.isInline {
    print("  small enough to live inline in the catalog itself")
}
for (number, piece) in content.pieces.enumerated() where !piece.isInline {
    for (index, chunk) in piece.chunks.enumerated() {
        let holders = chunk.holders.map(\.description).joined(separator: ", ")
        print("  piece \(number + 1), chunk \(index + 1) of \(piece.parts): \(chunk.lengthBytes) bytes on \(holders)")
    }
}

// 3. Pull: pieces of the chunks are fetched in parallel and handed over in order; each is compared with the same
//    bytes of the local file as it arrives (nothing is held whole in memory).
var offset = 0
var local = [UInt8](repeating: 0, count: 4 << 20)
do {
    try ContentReader(content: content, pool: pool).stream(parallelism: 4) { bytes in
        let count = local.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, bytes.count, offset) }
        guard count == bytes.count, memcmp(local, bytes.baseAddress!, bytes.count) == 0 else {
            fail("the ring's bytes differ from \(localPath) at or after offset \(offset)")
        }
        offset += count
    }
} catch {
    fail("pull failed: \(error)")
}
guard offset == Int(info.st_size) else { fail("got \(offset) of \(info.st_size) bytes") }
print("pulled: \(offset) bytes, the same as \(localPath)")
