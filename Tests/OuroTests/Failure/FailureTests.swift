import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// Fault tests: real node processes killed with SIGKILL, real disks, real mounts. One at a time (`.serialized`):
/// failure detection runs on 200 ms gossip, and tests that fight each other for two cores would measure the
/// machine instead of the ring. The other topics are in `FailureTests+*.swift`.
@Suite("Failure handling", .serialized)
struct FailureTests {
    enum Victim: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// A node the mount does not talk to for metadata (it holds chunks and relays pushes).
        case otherNode
        /// The node the mount was started on (its metadata calls must fail over).
        case mountNode

        var testDescription: String { rawValue }
    }

    /// What the writer script logged: one line per write (`W n exit start end`) and read (`R n r exit start end`).
    struct WriterLog {
        struct Write { var file: Int; var exit: Int; var start: Double; var end: Double }
        struct Read { var after: Int; var file: Int; var exit: Int; var start: Double; var end: Double }
        var writes: [Int: Write] = [:]
        var reads: [Read] = []
        var done = false

        init(_ text: String) {
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields == ["DONE"] { done = true }
                if fields.first == "W", fields.count == 5, let n = Int(fields[1]), let exit = Int(fields[2]),
                   let start = Double(fields[3]), let end = Double(fields[4]) {
                    writes[n] = Write(file: n, exit: exit, start: start, end: end)
                }
                if fields.first == "R", fields.count == 6, let after = Int(fields[1]), let file = Int(fields[2]),
                   let exit = Int(fields[3]), let start = Double(fields[4]), let end = Double(fields[5]) {
                    reads.append(Read(after: after, file: file, exit: exit, start: start, end: end))
                }
            }
        }
    }

    static func wallClock() -> Double { Date().timeIntervalSince1970 }

    /// Sizes of the writer's files: 0 and 1 byte, exactly 3 MiB, 16 MiB at a third (where the node is killed), and
    /// the rest random in 0…3 MiB (seeded).
    static func writerSizes(count: Int, label: String) -> [Int] {
        var generator = PseudoRandomBytes(seed: TestSeed.derived(label))
        return (0..<count).map { index in
            switch index {
            case 0: return 0
            case 1: return 1
            case 2: return 3 << 20
            case count / 3: return 16 << 20
            default:
                let word = generator.bytes(8).withUnsafeBytes { $0.load(as: UInt64.self) }
                return Int(word % UInt64((3 << 20) + 1))
            }
        }
    }

    @Test("1. mount, 3 nodes, --copies 2: a writer streams files while a node is killed with SIGKILL",
          arguments: Victim.allCases)
    func writerWhileNodeKilled(_ victimKind: Victim) throws {
        let fileCount = 40
        let sizes = Self.writerSizes(count: fileCount, label: "writer-\(victimKind.rawValue)")
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-writer-\(victimKind.rawValue)") { ring in
            let victim = victimKind == .mountNode ? 0 : 1
            let survivors = (0..<3).filter { $0 != victim }
            // Each file: generated locally, copied into the mount by cp (which checks every write and the close),
            // then it and an older one are read back. Every outcome is logged with wall-clock times.
            let specs = sizes.enumerated().map { "\($0.offset):\($0.element)" }.joined(separator: " ")
            let writer = try ring.spawn(#"""
                now() { date +%s.%N; }
                for spec in \#(specs); do
                  n=${spec%%:*}; size=${spec#*:}
                  head -c "$size" /dev/urandom > "$W/src-$n" || exit 97
                  start=$(now)
                  cp "$W/src-$n" "$M/f-$n" 2>>"$W/errors"; rc=$?
                  echo "W $n $rc $start $(now)" >> "$W/log"
                  for r in $n $((n / 2)); do
                    start=$(now)
                    cat "$M/f-$r" > "$W/read-$n-$r" 2>>"$W/errors"; rc=$?
                    echo "R $n $r $rc $start $(now)" >> "$W/log"
                  done
                done
                echo DONE >> "$W/log"
                """#)
            defer { if writer.process.isRunning { writer.process.forceKill() } }
            let logPath = ring.workDirectory + "/log"
            func log() -> WriterLog { WriterLog((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "") }

            // Mid-way (a third of the files written), and in the middle of a push: the victim has a chunk of it
            // in a temp file (it is receiving the bytes; the next file is a big one, so this lasts a while).
            try waitUntil("the writer to write \(fileCount / 3) files", timeoutSeconds: 90, intervalSeconds: 0.01,
                          describe: { "\(log().writes.count) written; \(writer.output)" }) {
                log().writes.count >= fileCount / 3 || writer.process.termination != nil
            }
            var inFlight: [String] = []
            try waitUntil("a push through node \(victim)", timeoutSeconds: 60, intervalSeconds: 0.001) {
                inFlight = ring.ring.chunkFiles(victim).keys.filter { $0.contains(".tmp-") }
                return !inFlight.isEmpty || writer.process.termination != nil
            }
            try #require(writer.process.isRunning, "the writer ended before the kill: \(writer.output)\n\(ring.diagnostics())")
            ring.ring.kill(victim)
            print("FailureTests: killed node \(victim) while it was writing \(inFlight), \(log().writes.count) files written")
            let killedAt = Self.wallClock()
            try ring.ring.waitForNetmap(ring.ring.expectedNetmap(dead: [victim]), on: survivors, timeoutSeconds: 15)
            let declaredDeadAt = Self.wallClock()
            print("FailureTests: node \(victim) killed after \(log().writes.count) writes; declared dead after "
                  + String(format: "%.2f s", declaredDeadAt - killedAt))

            guard let ended = writer.process.wait(seconds: 150) else {
                writer.process.forceKill()
                Issue.record("the writer did not finish within 150 s of the kill\n\(ring.diagnostics())")
                return
            }
            #expect(ended == .exited(0), "writer: \(writer.output)")
            let result = log()
            #expect(result.done, "the writer did not log DONE")
            #expect(result.writes.count == fileCount, "\(result.writes.count) writes logged")
            let errors = (try? String(contentsOfFile: ring.workDirectory + "/errors", encoding: .utf8)) ?? ""

            // A failure is allowed only for a write in flight around the kill, before the ring routed around it.
            let window = (killedAt - 0.5)...(declaredDeadAt + 1.0)
            var source: [Int: [UInt8]] = [:]
            for n in 0..<fileCount { source[n] = readLocalFile("\(ring.workDirectory)/src-\(n)") }
            let failed = result.writes.values.filter { $0.exit != 0 }.map(\.file).sorted()
            print("FailureTests: \(fileCount - failed.count) writes acknowledged, failed: \(failed)")
            for write in result.writes.values where write.exit != 0 {
                let when = "\(write.start)…\(write.end)"
                #expect(write.end >= window.lowerBound && write.start <= window.upperBound,
                        "write of f-\(write.file) failed (exit \(write.exit)) outside the kill window \(window): \(when)\n\(errors)")
            }

            // Reads during the stream: correct bytes, or an error with a true prefix delivered; never wrong bytes.
            for read in result.reads {
                let got = readLocalFile("\(ring.workDirectory)/read-\(read.after)-\(read.file)") ?? []
                let want = source[read.file] ?? []
                let acknowledged = result.writes[read.file]?.exit == 0
                if read.exit == 0 {
                    if acknowledged {
                        expectBytes(got, want, "read of f-\(read.file) after write \(read.after)")
                    } else {
                        let emptyOrWhole = got.isEmpty || got == want
                        #expect(emptyOrWhole,
                                "read of unacknowledged f-\(read.file): \(describeDifference(got, want)) — a partial file")
                    }
                } else {
                    let truePrefix = got.count <= want.count && Array(want.prefix(got.count)) == got
                    #expect(truePrefix,
                            "failed read of f-\(read.file) delivered wrong bytes: \(describeDifference(got, want))")
                    // Once the ring has routed around the dead node, acknowledged files read without error.
                    #expect(!(acknowledged && read.start > window.upperBound),
                            "read of acknowledged f-\(read.file) failed (exit \(read.exit)) after the node was declared dead\n\(errors)")
                }
            }

            // Afterwards: every acknowledged file byte-identical, through a fresh mount (cold) and by FILE PULL;
            // an unacknowledged one is absent, empty or whole.
            let fresh = try ring.mount(onNode: survivors[0])
            let freshIndex = ring.mounts.count - 1
            let compared = try ring.ok("""
                for n in \((0..<fileCount).map(String.init).joined(separator: " ")); do
                  if [ ! -e "$M\(freshIndex)/f-$n" ]; then echo "$n absent"
                  elif cmp -s "$W/src-$n" "$M\(freshIndex)/f-$n"; then echo "$n same"
                  elif [ ! -s "$M\(freshIndex)/f-$n" ]; then echo "$n empty"
                  else echo "$n different"; fi
                done
                """, timeoutSeconds: 120)
            var seen: [Int: String] = [:]
            for line in compared.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count == 2, let n = Int(fields[0]) { seen[n] = String(fields[1]) }
            }
            let listing = try Wire.list(ring.ring.address(survivors[0]))
            for n in 0..<fileCount {
                let want = source[n] ?? []
                if result.writes[n]?.exit == 0 {
                    #expect(seen[n] == "same", "f-\(n) (\(want.count) bytes, acknowledged) through \(fresh.mountpoint): \(seen[n] ?? "?")")
                    let pulled = try Wire.pull(ring.ring.address(survivors[1]), name: "f-\(n)")
                    expectBytes(pulled, want, "FILE PULL f-\(n)")
                } else {
                    #expect(seen[n] == "same" || seen[n] == "empty" || seen[n] == "absent",
                            "unacknowledged f-\(n) is \(seen[n] ?? "?")")
                    #expect(listing["f-\(n)"] == nil || listing["f-\(n)"] == 0 || listing["f-\(n)"] == UInt64(want.count),
                            "unacknowledged f-\(n) is listed with \(listing["f-\(n)"] ?? 0) bytes of \(want.count)")
                }
            }
            if seen.values.contains(where: { $0 != "same" }) || !failed.isEmpty { print(ring.diagnostics()) }
        }
    }

    @Test("1b. mount, 3 nodes, --copies 2: a node killed with SIGKILL while a large file is pushed in segments; cp succeeds and every byte is right")
    func segmentedWriteWhileNodeKilled() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0], label: "fault-segments") { ring in
            let source = try ring.ok(#"head -c 200M /dev/urandom > "$W/big" && sha256sum < "$W/big""#, timeoutSeconds: 120)
            let writer = try ring.spawn(#"cp "$W/big" "$M/big" 2>"$W/cp-errors"; echo "cp $?" > "$W/cp-done""#)
            defer { if writer.process.isRunning { writer.process.forceKill() } }
            // Node 1 is storing a segment (it has a chunk temp file) while cp still writes: kill it then.
            try waitUntil("a segment push through node 1", timeoutSeconds: 60, intervalSeconds: 0.001) {
                !ring.ring.chunkFiles(1).keys.filter { $0.contains(".tmp-") }.isEmpty || writer.process.termination != nil
            }
            try #require(writer.process.isRunning, "cp ended before the kill\n\(ring.diagnostics())")
            ring.ring.kill(1)
            guard writer.process.wait(seconds: 150) != nil else {
                writer.process.forceKill()
                Issue.record("cp did not finish within 150 s of the kill\n\(ring.diagnostics())")
                return
            }
            #expect(try ring.ok(#"cat "$W/cp-done" "$W/cp-errors""#) == "cp 0\n", "\(ring.diagnostics())")
            #expect(try ring.ok(#"sha256sum < "$M/big""#, timeoutSeconds: 120) == source)
            // The same bytes from the other survivor, which holds every chunk now or with its copy.
            let pulled = try Wire.pull(ring.ring.address(2), name: "big")
            let expected = try #require(readLocalFile(ring.workDirectory + "/big"))
            #expect(pulled == expected, "FILE PULL from node 2")
        }
    }

    @Test("2. 5 nodes, --copies 3: two nodes killed at once, every file still readable by ouro pull and through a mount")
    func twoNodesKilledAtOnce() throws {
        try MountedRing.with(nodes: 5, copies: 3, mountOn: [0], label: "fault-two") { ring in
            var generator = PseudoRandomBytes(seed: TestSeed.derived("twoNodesKilledAtOnce"))
            let files: [(name: String, bytes: [UInt8])] = [
                ("empty", []), ("one byte", generator.bytes(1)), ("tiny/four", generator.bytes(4)),
                ("odd/4099.bin", generator.bytes(4099)), ("mib.bin", generator.bytes(1 << 20)),
                ("dir with space/five.bin", generator.bytes((5 << 20) + 3)), ("big.bin", generator.bytes((17 << 20) + 1)),
            ]
            for (index, file) in files.enumerated() {
                try writeLocalFile("\(ring.workDirectory)/src-\(index)", file.bytes)
                let pushed = try OuroTool.run(["push", "--node", ring.ring.address(index % 5).description, "src-\(index)", file.name],
                                              in: ring.workDirectory)
                try #require(pushed.status == .exited(0) && pushed.output.contains("OK"), "ouro push \(file.name): \(pushed)")
            }
            for file in files where !file.bytes.isEmpty {
                let content = try ring.content(of: file.name)
                #expect(content.chunks.allSatisfy { $0.holders.count == 3 }, "\(file.name): \(content.chunks)")
            }

            // Two neighbours die together: every chunk loses up to two of its three copies.
            let victims = [2, 3]
            for victim in victims { ring.ring.members[victim].process?.send(SIGKILL) }
            for victim in victims { ring.ring.kill(victim) }

            // At once, before the ring has noticed: `ouro pull` from each survivor, and cold reads through the mount.
            func readEverything(_ when: String) throws {
                for survivor in [0, 1, 4] {
                    for (index, file) in files.enumerated() {
                        let target = "out-\(survivor)-\(index)"
                        unlink("\(ring.workDirectory)/\(target)")
                        let pulled = try OuroTool.run(["pull", "--node", ring.ring.address(survivor).description, file.name, target],
                                                      in: ring.workDirectory, timeoutSeconds: 90)
                        #expect(pulled.status == .exited(0), "\(when): ouro pull \(file.name) from node \(survivor): \(pulled)")
                        let got = readLocalFile("\(ring.workDirectory)/\(target)")
                        expectBytes(got, file.bytes, "\(when): ouro pull \(file.name) from node \(survivor)")
                    }
                }
                let script = files.indices.map { index in
                    "if cmp \"$W/src-\(index)\" \"$M/\(files[index].name)\"; then echo ok; else echo bad; fi"
                }.joined(separator: "\n")
                let compared = try ring.sh(script, timeoutSeconds: 120)
                #expect(compared.output.split(separator: "\n").filter { $0 == "ok" }.count == files.count,
                        "\(when): through the mount: \(compared)\n\(ring.diagnostics())")
            }
            try readEverything("right after the kill")
            try ring.ring.waitForNetmap(ring.ring.expectedNetmap(dead: Set(victims)), timeoutSeconds: 15)
            // Remount so that the reads are cold again, now that the ring routes around the dead.
            ring.unmount(ring.mounts[0])
            try ring.remount(ring.mounts[0], onNode: 4)
            try readEverything("after the ring declared them dead")
        }
    }
}
