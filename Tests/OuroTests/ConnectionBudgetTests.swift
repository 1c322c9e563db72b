import OuroCore
import Testing

/// `ConnectionBudget`: connections that still have to prove the secret are capped in all and per peer; proved ones
/// and those that need no proof only by the total.
@Suite struct ConnectionBudgetTests {
    @Test func aFloodFromOnePeerUsesUpOnlyItsOwnShare() {
        var budget = ConnectionBudget(maxConnections: 10, maxUnproved: 6, maxUnprovedPerPeer: 3)
        for _ in 0..<3 { #expect(budget.admit(peer: "10.0.0.66", needsProof: true) == nil) }
        #expect(budget.admit(peer: "10.0.0.66", needsProof: true) == "too many connections from 10.0.0.66 that have not proved the cluster secret")
        // Another host still gets in, and so does anything that needs no proof.
        for _ in 0..<3 { #expect(budget.admit(peer: "10.0.0.2", needsProof: true) == nil) }
        #expect(budget.admit(peer: "10.0.0.3", needsProof: true) == "too many connections that have not proved the cluster secret")
        #expect(budget.admit(peer: "local", needsProof: false) == nil)
        // A proof frees the unproved slot at once (the connection stays open).
        budget.proved(peer: "10.0.0.2")
        #expect(budget.unproved == 5 && budget.open == 7)
        #expect(budget.admit(peer: "10.0.0.3", needsProof: true) == nil)
        // Closing: an unproved one frees both counts, a proved one only the total.
        budget.closed(peer: "10.0.0.66", unproved: true)
        budget.closed(peer: "10.0.0.2", unproved: false)
        #expect(budget.open == 6 && budget.unproved == 5 && budget.unprovedByPeer["10.0.0.66"] == 2)
        #expect(budget.admit(peer: "10.0.0.66", needsProof: true) == nil)
        // The total caps everything.
        #expect(budget.admit(peer: "local", needsProof: false) == nil)
        #expect(budget.admit(peer: "local", needsProof: false) == nil)
        #expect(budget.admit(peer: "local", needsProof: false) == nil)
        #expect(budget.admit(peer: "local", needsProof: false) == "too many connections")
    }

    @Test func peersAreKeptByHost() {
        #expect(ConnectionBudget.host(of: "127.0.0.2:51234") == "127.0.0.2")
        #expect(ConnectionBudget.host(of: "[::1]:7000") == "[::1]")
        #expect(ConnectionBudget.host(of: "local") == "local")
    }
}
