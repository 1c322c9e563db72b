import Glibc
import OuroCore

/// The ring's state as text, the same for `ouro status` and the mount's `.ouro/status`: one line per member (state,
/// successor, chunks, bytes stored, disk free, chunks short of copies, repair), then the file count and the epoch.
public enum RingReport {
    /// Asks `node` for the netmap, then every member for its NODE INFO (in parallel).
    public static func fetch(from node: NodeAddress, pool: ConnectionPool) throws -> (netmap: Netmap, infos: [NodeInfo?]) {
        let map = try NodeClient(node, pool: pool).netmap()
        let members = map.members.isEmpty ? [Netmap.Member(address: node, alive: true)] : map.members
        let infos = parallelMap(members, width: 16) { try? NodeClient($0.address, pool: pool).info() }
        return (Netmap(epoch: map.epoch, members: members), infos)
    }

    /// The table: `infos[i]` is member i's answer (nil: it did not answer).
    public static func status(netmap: Netmap, infos: [NodeInfo?]) -> String {
        var text = pad("NODE", 24) + pad("STATE", 7) + pad("NEXT", 24) + pad("CHUNKS", 8) + pad("STORED", 12)
            + pad("DISK FREE", 12) + pad("SHORT", 7) + "REPAIR\n"
        for (member, info) in zip(netmap.members, infos) {
            guard let info else {
                text += pad(member.address.description, 24) + pad(member.alive ? "noreply" : "dead", 7) + "\n"
                continue
            }
            text += pad(member.address.description, 24) + pad(member.alive ? "alive" : "dead", 7)
                + pad(info.next?.description ?? "<unset>", 24) + pad("\(info.chunkFiles)", 8)
                + pad(bytes(info.chunkBytes), 12) + pad(bytes(info.usage.availableBytes), 12)
                + pad("\(info.underReplicatedChunks)", 7) + info.repair + "\n"
        }
        if let first = infos.compactMap({ $0 }).first { text += "files: \(first.usage.files)   netmap epoch: \(first.netmap.epoch)\n" }
        return text
    }

    /// `NETMAP GET`'s lines: `host:port=Alive` or `=Dead` per member, in ring order.
    public static func netmap(_ map: Netmap) -> String {
        map.members.isEmpty ? "(empty)\n" : map.members.map { "\($0.address)=\($0.alive ? "Alive" : "Dead")\n" }.joined()
    }

    /// `text` padded with spaces to `width` (and one space after it when it is as long or longer).
    public static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    /// A byte count for people: `512 B`, `1.5 KiB`, `12.0 MiB`.
    public static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        guard unit > 0 else { return "\(count) B" }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}
