import Glibc
import Logging
import OuroClient
import OuroCore

/// Garbage collection of the catalog (docs/design.md, "Garbage collection"; the rules are `CatalogGC`'s). Every
/// round, this node takes its oldest tombstones, asks every other member what it holds of each (`CATALOG HAVE`),
/// drops those no member holds an older version of, and tells the members to drop them too (`CATALOG COLLECT`).
/// A member away longer than the horizon does not hold the round back; it is asked to sweep when it returns
/// (`CATALOG RESYNC`).
extension Node {
    private static func milliseconds(_ name: String, _ fallback: Int64) -> Int64 {
        getenv(name).flatMap { Int64(String(cString: $0)) }.map { max(1, $0) } ?? fallback
    }

    /// How often a round runs (`OURO_GC_INTERVAL_MS`).
    static let gcIntervalMilliseconds = milliseconds("OURO_GC_INTERVAL_MS", 30_000)
    /// How old a tombstone must be before this node, its origin, tries to collect it (`OURO_GC_MIN_AGE_MS`): changes
    /// still travelling between nodes are far younger.
    static let gcMinimumAgeMilliseconds = milliseconds("OURO_GC_MIN_AGE_MS", 60_000)
    /// How long a member may be away before collection goes on without it (`OURO_GC_AWAY_MS`).
    static let gcAwayMilliseconds = milliseconds("OURO_GC_AWAY_MS", 3_600_000)
    /// Rows a returning member keeps, whatever a peer says, from this long before it lost contact: changes made
    /// around then may not have reached the peer yet (`OURO_GC_SWEEP_MARGIN_MS`; at least 10 s, or ten gossip
    /// intervals, by default).
    var sweepMarginNanoseconds: Int64 {
        Self.milliseconds("OURO_GC_SWEEP_MARGIN_MS", max(10_000, 10 * Int64(configuration.gossipIntervalMilliseconds))) * 1_000_000
    }
    static let gcBatchRows = 2000

    func gcLoop() {
        var deadSince: [NodeAddress: Int64] = [:]
        while pause(seconds: Double(Self.gcIntervalMilliseconds) / 1000) {
            let map = netmap
            guard map.contains(address), hasCaughtUp else { continue }
            let now = wallClockNanoseconds()
            for member in map.members {
                if member.alive { deadSince[member.address] = nil } else if deadSince[member.address] == nil { deadSince[member.address] = now }
            }
            runSweeps()
            askReturnedMembersToSweep(map)
            // A full batch: more are waiting (a million files removed), so the next goes at once.
            while !isStopping {
                let round = collectRound(map, deadSince: deadSince, now: now)
                guard round.candidates >= Self.gcBatchRows, round.dropped > 0 else { break }
            }
        }
    }

    /// One round over at most `gcBatchRows` candidates of each kind; returns how many there were, and how many
    /// records went here.
    @discardableResult
    func collectRound(_ map: Netmap, deadSince: [NodeAddress: Int64], now: Int64) -> (candidates: Int, dropped: Int) {
        guard let (ask, excluded) = CatalogGC.confirmers(members: map.members, me: address, deadSince: deadSince, now: now,
                                                         awayNanoseconds: Self.gcAwayMilliseconds * 1_000_000) else { return (0, 0) }
        var rows = catalog.collectionCandidates(minimumAge: Self.gcMinimumAgeMilliseconds * 1_000_000, limit: Self.gcBatchRows)
        let candidates = rows.count
        for peer in ask where !rows.isEmpty {
            guard let answers = try? askHave(peer, rows) else { return (0, 0) }  // unreachable: next round
            rows = zip(rows, answers).filter { CatalogGC.collectible([$0.1]) }.map(\.0)
        }
        guard !rows.isEmpty else { return (0, 0) }
        var noted = false
        for peer in excluded {
            // Rows from before the member left may now be stale on it: it sweeps them when it returns.
            let cut = (deadSince[peer] ?? now) - sweepMarginNanoseconds
            let known = catalog.meta("resync " + peer.description).flatMap { Int64($0) }
            if known.map({ $0 > cut }) ?? true {
                guard (try? catalog.setMeta("resync " + peer.description, String(cut))) != nil else { return (0, 0) }
                noted = true
            }
        }
        // The note is committed before anything is dropped (the members drop what they are told at once): a crash
        // must not lose it while the ring has collected.
        if noted { guard (try? catalog.checkpoint()) != nil else { return (0, 0) } }
        let dropped: Int
        do { dropped = try catalog.collect(rows) } catch {
            logger.warning("catalog garbage collection failed", metadata: ["error": "\(error)"])
            return (0, 0)
        }
        let body = WireBinary.encode(rows)
        for peer in ask {
            // Best effort: a member that misses it collects the rows itself later (others' tombstones are
            // candidates too, after a longer wait).
            _ = try? pool.with(peer, retry: true) { connection in
                try connection.socket.write(line: "CATALOG COLLECT \(body.count)", then: body)
                try connection.expectOK()
            }
        }
        logger.debug("collected catalog garbage", metadata: ["records": "\(dropped)", "excluded": "\(excluded.count)"])
        return (candidates, dropped)
    }

    /// `CATALOG HAVE` to one peer: its answer for each row.
    func askHave(_ peer: NodeAddress, _ rows: [CatalogRowVersion]) throws -> [RowAnswer] {
        let body = WireBinary.encode(rows)
        let answers: [RowAnswer] = try pool.with(peer, retry: true) { connection in
            try connection.socket.write(line: "CATALOG HAVE \(body.count)", then: body)
            return try connection.readBinary([RowAnswer].self)
        }
        guard answers.count == rows.count else { throw OuroError(.internal, "\(peer) answered \(answers.count) of \(rows.count) rows") }
        return answers
    }

    /// Members this node collected without that are alive again are told to sweep (until one confirms).
    func askReturnedMembersToSweep(_ map: Netmap) {
        for (name, value) in catalog.metaEntries(prefix: "resync ") {
            guard let peer = NodeAddress(name), map.isAlive(peer), let cut = Int64(value) else { continue }
            do {
                try pool.with(peer, retry: true) { connection in
                    try connection.send("CATALOG RESYNC \(max(0, cut)) \(address)")
                    try connection.expectOK()
                }
                try catalog.setMeta("resync " + name, nil)
                logger.notice("asked a returning member to sweep out what the ring collected while it was away", metadata: ["peer": "\(peer)"])
            } catch {
                logger.debug("cannot ask a returning member to sweep yet", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }

    /// `CATALOG RESYNC`: remembered (the earliest cut, durably), and run by the next round.
    func noteSweep(against peer: NodeAddress, cutClock: UInt64) throws {
        let name = "sweep " + peer.description
        let known = catalog.meta(name).flatMap { UInt64($0) }
        try catalog.setMeta(name, String(min(known ?? .max, cutClock)))
        try catalog.checkpoint()  // committed before the answer: the peer forgets it then
    }

    /// Sweeps asked for: every live row older than the cut (and than this node's own last contact with the ring) that
    /// the peer no longer has is replaced by a tombstone, as the ring removed it meanwhile.
    func runSweeps() {
        let lastContact = catalog.meta("lastContact").flatMap { Int64($0) } ?? 0
        for (name, value) in catalog.metaEntries(prefix: "sweep ") {
            guard let peer = NodeAddress(name), let asked = UInt64(value) else { continue }
            let cut = min(asked, UInt64(clamping: max(0, lastContact - sweepMarginNanoseconds)))
            do {
                var cursor: CatalogKey?
                var removed = 0
                repeat {
                    let (rows, next) = catalog.liveRows(olderThan: cut, after: cursor, limit: Self.gcBatchRows)
                    if !rows.isEmpty {
                        let answers = try askHave(peer, rows)
                        let stale = zip(rows, answers).filter { CatalogGC.isStale($0.1) }.map(\.0)
                        let applied = try catalog.merge(catalog.sweepTombstones(for: stale))
                        removed += applied.count
                    }
                    cursor = next
                } while cursor != nil && !isStopping
                guard !isStopping else { return }
                try catalog.setMeta("sweep " + name, nil)
                sweptRecords.add(removed)
                logger.notice("swept out what the ring removed while this node was away",
                              metadata: ["peer": "\(peer)", "records": "\(removed)"])
            } catch {
                logger.warning("sweep against a peer failed; retried next round", metadata: ["peer": "\(peer)", "error": "\(error)"])
            }
        }
    }
}
