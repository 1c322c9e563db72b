import Foundation
import Glibc
import OuroCore
import Testing

/// A flood of 10,000 connections that never prove the cluster secret, from a host of its own (127.0.0.2), at a node
/// that a mount writes through: the flood is refused beyond its share, the mount's writes and the ring's own traffic
/// (over TCP here) go on, and nothing is lost.
@Suite struct FloodTests {
    /// `bench/flood.py` (this file is `Tests/OuroTests/FloodTests.swift`).
    static let floodScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("bench/flood.py").path

    @Test func unprovedConnectionsCannotCrowdOutTheRing() throws {
        try MountedRing.with(mountOn: [], nodeEnvironment: ["OURO_LOCAL_ROUTES": "0"], secret: "flood-secret", label: "flood") { ring in
            // The mount on TCP too, as one on another machine would be.
            try ring.mount(onNode: 0, environment: ["OURO_LOCAL_ROUTES": "0"])
            let ready = ring.workDirectory + "/flood-ready"
            let flood = try ChildProcess(executable: "/usr/bin/env", arguments: [
                "python3", Self.floodScript, "--port", "\(ring.ring.address(0).port)", "--source", "127.0.0.2",
                "--count", "10000", "--seconds", "25", "--ready", ready], outputPath: ring.workDirectory + "/flood.log")
            defer { ProcessTable.killTree(flood) }
            func floodLog() -> String { (try? String(contentsOfFile: ring.workDirectory + "/flood.log", encoding: .utf8)) ?? "" }
            try waitUntil("10,000 connections opened", timeoutSeconds: 30) { access(ready, F_OK) == 0 || !flood.isRunning }
            try #require(access(ready, F_OK) == 0, "\(floodLog())")

            // Meanwhile the mount writes, syncs and reads back; node 0 relays to its peers and broadcasts the catalog.
            let started = Deadline.now
            let script = #"""
                mkdir -p "$M/during" && for i in $(seq 1 20); do
                    head -c $((100000 + i * 997)) /dev/urandom > "$W/f$i" && cp "$W/f$i" "$M/during/f$i" || exit 1
                    printf 'small %s\n' "$i" > "$M/during/s$i" || exit 1
                done
                sync "$M/during/f20" && for i in $(seq 1 20); do cmp "$W/f$i" "$M/during/f$i" || exit 1; done
                ls "$M/during" | wc -l
                """#
            #expect(try ring.ok(script, timeoutSeconds: 120) == "40\n")
            print("FloodTests: 40 files written and read back through the mount in \(String(format: "%.1f", Deadline.now - started)) s during the flood")
            #expect(flood.isRunning, "the flood ended before the writes did: \(floodLog())")
            _ = flood.wait(seconds: 40)
            let log = floodLog()
            print(log)
            // Most were refused at once; at most its host's share was ever held.
            let summary = try #require(log.split(separator: "\n").last { $0.contains("refused at once") }.map(String.init), "\(log)")
            func number(after label: String) -> Int? {
                guard let range = summary.range(of: label) else { return nil }
                return Int(summary[range.upperBound...].prefix { $0.isNumber })
            }
            let refused = try #require(number(after: "refused at once "))
            let held = try #require(number(after: "held at the end "))
            // From outside, a connection the kernel completed but the node has not accepted yet (its listen backlog
            // holds 512; under a loaded machine the accept loop lags) also looks held: the exact per-host cap is
            // ConnectionBudgetTests' to check.
            #expect(refused >= 9_000 && held <= Limits.maxUnauthenticatedPerPeer + 512, "\(summary)")
            // The ring is whole and every file reads back from another node.
            try ring.ring.waitForNetmap(ring.ring.expectedNetmap(dead: []), timeoutSeconds: 20)
            #expect(try ring.ring.list(2).filter { $0.name.hasPrefix("during/") }.count == 40)
        }
    }
}
