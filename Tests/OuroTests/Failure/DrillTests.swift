import Foundation
import Glibc
import OuroCore
import Testing

/// `ouro drill` on a real ring: it kills a node in the middle of writes, sees it declared dead and the ring whole
/// again, reads every file back, starts the node again, and says PASS; and it refuses what would lose data.
@Suite struct DrillTests {
    static func drill(_ ring: FaultRing, _ arguments: String) throws -> (status: ChildProcess.Termination, output: String) {
        let (status, output) = try ChildProcess.shell("\(TestEnvironment.ouroExecutable) drill \(arguments) 2>&1", in: ring.directory,
                                                      timeoutSeconds: 240)
        return (status, String(decoding: output, as: UTF8.self))
    }

    /// Kills whatever node process runs on `index`'s data directory (one the drill started again is not the ring's).
    static func killAny(_ ring: FaultRing, _ index: Int) {
        _ = try? ChildProcess.shell("pkill -KILL -f -- '--data \(ring.members[index].dataDirectory)( |$)'", in: ring.directory)
    }

    @Test func drillPassesOnAHealthyRing() throws {
        var settings = FaultRing.Settings()
        settings.gracePeriodSeconds = 2
        let ring = try FaultRing(nodes: 3, settings: settings, label: "drill")
        defer {
            Self.killAny(ring, 2)
            ring.shutdown()
        }
        let result = try Self.drill(ring, "--node \(ring.address(0)) --kill \(ring.address(2)) --files 4 --file-size 1000000")
        #expect(result.status == .exited(0), "\(result.output)")
        for line in ["killed \(ring.address(2)) after 2 files", "declared dead after", "every file whole again after",
                     "4 of 4 files read back the same", "started \(ring.address(2)) again", "\(ring.address(2)) alive again after", "PASS"] {
            #expect(result.output.contains(line), "missing \"\(line)\" in:\n\(result.output)")
        }
        // The node is back for good, in every netmap; the drill's files and mount are gone.
        try ring.waitForNetmap(ring.expectedNetmap(order: [0, 1, 2], dead: []), on: [0, 1], timeoutSeconds: 20)
        #expect(try Wire.list(ring.address(1)).keys.filter { $0.hasPrefix("ouro-drill-") }.isEmpty)
        #expect(!((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").contains("ouro-drill."))
    }

    @Test func drillRefusesWhatWouldLoseData() throws {
        var settings = FaultRing.Settings()
        settings.copies = 1
        let ring = try FaultRing(nodes: 2, settings: settings, label: "drill-refuse")
        defer { ring.shutdown() }
        let mounted = try Self.drill(ring, "--node \(ring.address(0)) --kill \(ring.address(0))")
        #expect(mounted.status == .exited(1) && mounted.output.contains("refusing: the drill mounts through"), "\(mounted.output)")
        let single = try Self.drill(ring, "--node \(ring.address(0)) --kill \(ring.address(1)) --files 2 --file-size 10000")
        #expect(single.status == .exited(1) && single.output.contains("refusing: the ring keeps 1 copy"), "\(single.output)")
        // Nothing was killed.
        #expect(ring.isRunning(1) && Wire.ping(ring.address(1)))
    }
}
