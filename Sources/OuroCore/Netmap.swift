/// The ring as one node knows it: members in ring order, each alive or dead, with an epoch so that an older
/// broadcast never overwrites a newer one.
public struct Netmap: Sendable, Equatable, Codable {
    public struct Member: Sendable, Equatable, Codable {
        public var address: NodeAddress
        public var alive: Bool
        public init(address: NodeAddress, alive: Bool) {
            self.address = address
            self.alive = alive
        }
    }

    public var epoch: UInt64
    public var members: [Member]

    public init(epoch: UInt64 = 0, members: [Member] = []) {
        self.epoch = epoch
        self.members = members
    }

    /// Parses `addr=Alive,addr=Dead,…` (or `-` for none).
    public init(epoch: UInt64, wire: some StringProtocol) throws(OuroError) {
        self.epoch = epoch
        members = []
        if wire == "-" { return }
        for item in wire.split(separator: ",") {
            let pair = item.split(separator: "=")
            guard pair.count == 2, let address = NodeAddress(pair[0]), pair[1] == "Alive" || pair[1] == "Dead" else {
                throw .badRequest("bad netmap entry: \(item.prefix(64))")
            }
            guard !members.contains(where: { $0.address == address }) else { throw .badRequest("duplicate netmap entry") }
            members.append(Member(address: address, alive: pair[1] == "Alive"))
        }
    }

    public var wire: String {
        members.isEmpty ? "-" : members.map { "\($0.address)=\($0.alive ? "Alive" : "Dead")" }.joined(separator: ",")
    }

    public var liveAddresses: [NodeAddress] { members.filter(\.alive).map(\.address) }

    public func isAlive(_ address: NodeAddress) -> Bool {
        members.first(where: { $0.address == address })?.alive ?? false
    }

    public func contains(_ address: NodeAddress) -> Bool { members.contains { $0.address == address } }

    /// Live members in ring order starting at `start` (which comes first even if the map does not know it).
    public func liveRing(from start: NodeAddress) -> [NodeAddress] {
        guard let index = members.firstIndex(where: { $0.address == start }) else { return [start] }
        let rotated = members[index...] + members[..<index]
        return [start] + rotated.dropFirst().filter(\.alive).map(\.address)
    }

    /// The next live member after `address` in ring order (nil if none other is alive).
    public func liveSuccessor(of address: NodeAddress) -> NodeAddress? {
        liveRing(from: address).dropFirst().first
    }

    /// The previous live member before `address` in ring order.
    public func livePredecessor(of address: NodeAddress) -> NodeAddress? {
        liveRing(from: address).dropFirst().last
    }
}
