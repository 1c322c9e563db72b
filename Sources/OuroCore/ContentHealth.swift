/// How safely a file's bytes are kept, as the netmap sees the ring now: the copies of its least-kept chunk that are
/// on live nodes, against the copies it should have. Shown in the mount (`user.ouro.copies`, `user.ouro.placement`,
/// `.ouro/files-short-of-copies`) and by `FILE SHORT`.
///
/// A file asks for `copies` copies of every chunk, but never more than the ring has members (a ring of one keeps
/// one): so "short" means a node is dead or a copy is missing, not that the ring is small. Bytes kept inline in the
/// catalog (small files; an empty file has none) are on every live member, and never short: `n/n` for n live
/// members (the catalog needs no repair: a member that returns catches up).
public struct ContentHealth: Equatable, Sendable {
    public var liveCopies: Int
    public var wantedCopies: Int

    public init(liveCopies: Int, wantedCopies: Int) {
        self.liveCopies = liveCopies
        self.wantedCopies = wantedCopies
    }

    public init(content: FileContent?, netmap: Netmap) {
        let members = max(1, netmap.members.count)
        let pieces = (content?.pieces ?? []).filter { !$0.isInline && !$0.chunks.isEmpty }
        guard !pieces.isEmpty else {
            let live = netmap.members.isEmpty ? 1 : netmap.liveAddresses.count
            self.init(liveCopies: live, wantedCopies: live)
            return
        }
        let live = pieces.flatMap(\.chunks).map { $0.holders.filter { netmap.members.isEmpty || netmap.isAlive($0) }.count }
        self.init(liveCopies: live.min() ?? 0, wantedCopies: min(pieces.map(\.copies).min() ?? 1, members))
    }

    public var isShort: Bool { liveCopies < wantedCopies }

    /// `2/2`: live copies of the least-kept chunk / copies wanted.
    public var text: String { "\(liveCopies)/\(wantedCopies)" }

    /// Where every chunk of `content` is, one line each: `piece 1 chunk 2/3 1666667 bytes: 10.0.0.2:7000 alive,
    /// 10.0.0.3:7000 dead`.
    public static func placement(of content: FileContent?, netmap: Netmap) -> String {
        guard let content else { return "empty: no bytes to keep\n" }
        if content.isInline { return "inline: \(content.sizeBytes) bytes in the catalog of every node\n" }
        var lines = ""
        for (number, piece) in content.pieces.enumerated() {
            if piece.isInline {
                lines += "piece \(number + 1) inline: \(piece.sizeBytes) bytes in the catalog of every node\n"
                continue
            }
            for (index, chunk) in piece.chunks.enumerated() {
                let holders = chunk.holders.map { holder in
                    "\(holder) " + (netmap.members.isEmpty || netmap.isAlive(holder) ? "alive" : netmap.contains(holder) ? "dead" : "gone")
                }
                lines += "piece \(number + 1) chunk \(index + 1)/\(piece.parts) \(chunk.lengthBytes) bytes: \(holders.joined(separator: ", "))\n"
            }
        }
        return lines
    }
}
