/// Who may open one more connection to a node (pure: the node keeps one behind a lock). Connections that have not
/// proved the cluster secret yet are what a stranger can open, so they get a budget of their own, node-wide and per
/// peer address: a flood from one host uses up its own share and is refused at once, while the ring's nodes and
/// mounts, elsewhere or already proved, keep theirs. Without a secret every connection counts as proved.
public struct ConnectionBudget: Sendable, Equatable {
    public var maxConnections: Int
    public var maxUnproved: Int
    public var maxUnprovedPerPeer: Int
    public private(set) var open = 0
    public private(set) var unproved = 0
    public private(set) var unprovedByPeer: [String: Int] = [:]

    public init(maxConnections: Int = Limits.maxConnections, maxUnproved: Int = Limits.maxUnauthenticatedConnections,
                maxUnprovedPerPeer: Int = Limits.maxUnauthenticatedPerPeer) {
        self.maxConnections = maxConnections
        self.maxUnproved = maxUnproved
        self.maxUnprovedPerPeer = maxUnprovedPerPeer
    }

    /// Admits a connection from `peer` (its host, without the port), or says why not. `needsProof`: it must prove the
    /// secret before anything else (a TCP connection to a node that has one).
    public mutating func admit(peer: String, needsProof: Bool) -> String? {
        guard open < maxConnections else { return "too many connections" }
        if needsProof {
            guard unproved < maxUnproved else { return "too many connections that have not proved the cluster secret" }
            guard unprovedByPeer[peer, default: 0] < maxUnprovedPerPeer else {
                return "too many connections from \(peer) that have not proved the cluster secret"
            }
            unproved += 1
            unprovedByPeer[peer, default: 0] += 1
        }
        open += 1
        return nil
    }

    /// The connection proved the secret: it no longer counts against the unproved budget.
    public mutating func proved(peer: String) {
        releaseUnproved(peer)
    }

    /// The connection closed; `unproved`: it never proved the secret (though it had to).
    public mutating func closed(peer: String, unproved wasUnproved: Bool) {
        open -= 1
        if wasUnproved { releaseUnproved(peer) }
    }

    private mutating func releaseUnproved(_ peer: String) {
        unproved -= 1
        let left = unprovedByPeer[peer, default: 1] - 1
        unprovedByPeer[peer] = left > 0 ? left : nil
    }

    /// The host part of `host:port` or `[v6]:port` (what a budget is kept by).
    public static func host(of peer: String) -> String {
        guard let colon = peer.lastIndex(of: ":") else { return peer }
        return String(peer[..<colon])
    }
}
