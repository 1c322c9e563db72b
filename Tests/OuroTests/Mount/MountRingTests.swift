import Foundation
import Glibc
import OuroClient
import OuroCore
import Testing

/// The mount as part of the ring: two mounts through different nodes, nodes killed in the middle of a read, and
/// what an unmount leaves behind.
@Suite("Mount: ring behaviour")
struct MountRingTests {
    @Test("two mounts through different nodes see each other's writes after close")
    func twoMounts() throws {
        try MountedRing.with(mountOn: [0, 2], label: "twomounts") { ring in
            // $M is through node 0, $M1 through node 2: two driver processes.
            #expect(ring.mounts.count == 2 && ring.mounts[0].process.pid != ring.mounts[1].process.pid)
            try ring.ok(#"printf 'from A\n' > "$M/shared.txt""#)
            #expect(try ring.ok(#"cat "$M1/shared.txt""#) == "from A\n")

            try ring.ok(#"mkdir "$M1/fromB" && printf 'from B' > "$M1/fromB/x""#)
            #expect(try ring.ok(#"ls "$M" && cat "$M/fromB/x""#) == "fromB\nshared.txt\nfrom B")

            // Close-to-open: B has the old version cached (attributes, pages); A replaces it; B's next open sees it.
            #expect(try ring.ok(#"cat "$M1/shared.txt" && stat -c %s "$M1/shared.txt""#) == "from A\n7\n")
            try ring.ok(#"printf 'a much longer second version from A\n' > "$M/shared.txt""#)
            #expect(try ring.ok(#"cat "$M1/shared.txt""#) == "a much longer second version from A\n")
            try ring.ok(#"printf 'short\n' > "$M/shared.txt""#)
            #expect(try ring.ok(#"cat "$M1/shared.txt""#) == "short\n")

            // A file spread over the whole ring, written in B, read in A.
            let written = try ring.ok(#"head -c 7000000 /dev/urandom > "$W/r" && cp "$W/r" "$M1/r" && sha256sum < "$W/r""#)
            #expect(try ring.ok(#"sha256sum < "$M/r""#) == written)

            // Removal and rename in A show in B's listings.
            try ring.ok(#"rm "$M/fromB/x" && mv "$M/r" "$M/renamed""#)
            #expect(try ring.ok(#"ls -A "$M1/fromB" && ls "$M1""#) == "fromB\nrenamed\nshared.txt\n")

            // A file replaced in A (a new file renamed over it, or removed and made again) while B still has its
            // name cached: B reads the new file at once, never "No such file or directory".
            let replaced = try ring.ok(#"""
                printf v0 > "$M/cfg" && cat "$M1/cfg" && echo
                for v in 1 2 3; do
                    cat "$M1/cfg" > /dev/null; stat "$M1/cfg" > /dev/null
                    printf v$v > "$M/cfg.tmp" && mv "$M/cfg.tmp" "$M/cfg"
                    cat "$M1/cfg"; stat -c ' %s' "$M1/cfg"
                done
                cat "$M1/cfg" > /dev/null; rm "$M/cfg"; printf again > "$M/cfg"; cat "$M1/cfg"; echo
                """#)
            #expect(replaced == "v0\nv1 2\nv2 2\nv3 2\nagain\n")
        }
    }

    @Test("files created with O_TRUNC are named on their first close; everything that could see them names them first")
    func createdFilesNamedOnClose() throws {
        try MountedRing.with(mountOn: [0, 1], label: "named-on-close") { ring in
            // Each sequence runs on a local directory and in the mount: the same output and the same files.
            try ring.expectSameAsLocal("pending", #"""
                exec 3>a; printf one >&3; mv a b; exec 3>&-; cat b; echo
                exec 3>c; printf two >&3; ln c d; exec 3>&-; cat d; echo
                exec 3>f; exec 3>&-; wc -c < f
                exec 3>g; printf four >&3; chmod 600 g; exec 3>&-; stat -c %a g; cat g; echo
                mkdir h; exec 3>h/i; printf five >&3; rmdir h 2>/dev/null || echo not empty; exec 3>&-; cat h/i; echo
                exec 3>j; printf six >&3; ls; exec 3>&-
                exec 3>k; head -c 100000 /dev/zero >&3; exec 3>&-; wc -c < k
                exec 3>m; printf seven >&3; setfattr -n user.k -v v m; exec 3>&-; getfattr --only-values -n user.k m; echo
                printf eight > l; printf nine > l; cat l; echo
                exec 3>n; printf ten >&3; exec 4<n; cat <&4; exec 4<&-; exec 3>&-; echo
                exec 3>o; printf eleven >&3; mkdir o 2>/dev/null || echo exists; exec 3>&-
                mkdir q; { printf twelve; sleep 1; } > q/r & sleep 0.3; rmdir q 2>/dev/null || echo not empty; wait; cat q/r; echo
                """#)
            // Closed in one mount: the other sees it. A name created in the second mount while the first still has
            // its own create open is replaced at the first's close: the last close wins, in both mounts.
            try ring.ok(#"printf 'from A' > "$M/x""#)
            #expect(try ring.ok(#"cat "$M1/x""#) == "from A")
            // (The writer keeps its only descriptor open across the other mount's create: no close of a copy of it,
            // which would flush and name the file early, as `printf >&3` in a shell does.)
            let during = try ring.ok(#"{ printf mine; sleep 1.5; } > "$M/y" & sleep 0.3; printf theirs > "$M1/y"; cat "$M1/y"; wait"#)
            #expect(during == "theirs")
            let both = try ring.ok(#"cat "$M/y"; echo; cat "$M1/y""#)
            #expect(both == "mine\nmine")
            // A name found missing is remembered for the entry timeout (1 s): this mount's own create shows at once,
            // another mount's within the timeout.
            let missing = try ring.ok(#"""
                stat "$M1/z" 2>/dev/null || echo missing; printf own > "$M1/z"; cat "$M1/z"; echo
                stat "$M/w" 2>/dev/null || echo missing; printf other > "$M1/w"
                for i in $(seq 60); do [ -e "$M/w" ] && break; sleep 0.05; done; cat "$M/w"
                """#)
            #expect(missing == "missing\nown\nmissing\nother")
        }
    }

    /// The first file chunk at or beyond `offset` whose primary holder is not `excluded` (the mount's own node,
    /// which also answers its metadata), with that holder's ring index.
    static func chunkHolder(in content: FileContent, atOrBeyond offset: UInt64, excluding excluded: Int,
                            ring: MountedRing) -> (chunk: Int, node: Int)? {
        for chunk in 0..<content.parts where content.layout.offset(ofChunk: chunk) >= offset {
            guard let holder = content.chunks[chunk].holders.first, let node = ring.nodeIndex(of: holder),
                  node != excluded else { continue }
            return (chunk, node)
        }
        return nil
    }

    /// Starts a reader that opens `$M/victim.bin`, reads its first 8 MiB, then waits for `$W/go` before reading the
    /// rest through the same descriptor into `$W/out`. Returns once the first part is read.
    static func startPausedReader(_ ring: MountedRing) throws -> BackgroundShell {
        let reader = try ring.spawn(#"""
            exec 3< "$M/victim.bin" || exit 90
            dd bs=1M count=8 iflag=fullblock <&3 > "$W/out" 2>/dev/null || exit 91
            : > "$W/started"
            while [ ! -e "$W/go" ]; do sleep 0.02; done
            cat <&3 >> "$W/out"
            """#)
        let deadline = Deadline(seconds: 60)
        while !FileManager.default.fileExists(atPath: ring.workDirectory + "/started") {
            if let ended = reader.process.termination {
                throw TestFailure("the reader \(ended) before it was paused:\n\(reader.output)\n\(ring.diagnostics())")
            }
            if deadline.passed {
                ProcessTable.killTree(reader.process)
                throw TestFailure("the reader did not read its first 8 MiB within 60 s\n\(ring.diagnostics())")
            }
            usleep(10_000)
        }
        return reader
    }

    static let victimBytes = 48 << 20

    @Test("a node killed with SIGKILL during a read: the copies give the right bytes (3 nodes, --copies 2)")
    func nodeKilledMidReadWithCopies() throws {
        try MountedRing.with(nodes: 3, copies: 2, label: "kill2") { ring in
            let expected = try ring.ok(#"head -c \#(Self.victimBytes) /dev/urandom > "$W/src" && cp "$W/src" "$M/victim.bin" && sha256sum < "$W/src""#)
            let content = try ring.content(of: "victim.bin")
            #expect(content.parts == 3 && content.chunks.allSatisfy { $0.holders.count == 2 }, "placement: \(content.chunks)")
            // A chunk well past what the reader and the read-ahead have fetched when the node dies.
            let target = try #require(Self.chunkHolder(in: content, atOrBeyond: 24 << 20, excluding: 0, ring: ring),
                                      "no chunk beyond 24 MiB held by another node: \(content.chunks)")
            let reader = try Self.startPausedReader(ring)
            ring.ring.kill(target.node)
            let killedAt = Deadline.now
            try #require(FileManager.default.createFile(atPath: ring.workDirectory + "/go", contents: nil))
            guard let ended = reader.process.wait(seconds: 90) else {
                ProcessTable.killTree(reader.process)
                Issue.record("the read did not finish within 90 s of killing node \(target.node)\n\(ring.diagnostics())")
                return
            }
            #expect(ended == .exited(0), "reader: \(reader.output)\n\(ring.diagnostics())")
            #expect(Deadline.now - killedAt < 60)
            #expect(try ring.ok(#"wc -c < "$W/out" && sha256sum < "$W/out""#) == "\(Self.victimBytes)\n" + expected)
            // A fresh open after the death reads the whole file from the copies too.
            #expect(try ring.ok(#"sha256sum < "$M/victim.bin""#) == expected)
        }
    }

    @Test("a node killed with SIGKILL during a read with --copies 1: EIO within a bounded time, no hang")
    func nodeKilledMidReadWithoutCopies() throws {
        try MountedRing.with(nodes: 3, copies: 1, label: "kill1") { ring in
            try ring.ok(#"head -c \#(Self.victimBytes) /dev/urandom > "$W/src" && cp "$W/src" "$M/victim.bin""#)
            let content = try ring.content(of: "victim.bin")
            #expect(content.parts == 3 && content.chunks.allSatisfy { $0.holders.count == 1 }, "placement: \(content.chunks)")
            let target = try #require(Self.chunkHolder(in: content, atOrBeyond: 24 << 20, excluding: 0, ring: ring),
                                      "no chunk beyond 24 MiB held by another node: \(content.chunks)")
            let reader = try Self.startPausedReader(ring)
            ring.ring.kill(target.node)
            let killedAt = Deadline.now
            try #require(FileManager.default.createFile(atPath: ring.workDirectory + "/go", contents: nil))
            guard let ended = reader.process.wait(seconds: 90) else {
                ProcessTable.killTree(reader.process)
                Issue.record("the read still hangs 90 s after node \(target.node) was killed\n\(ring.diagnostics())")
                return
            }
            let seconds = Deadline.now - killedAt
            #expect(ended != .exited(0), "the read succeeded without the only copy of chunk \(target.chunk + 1)")
            #expect(reader.output.contains("Input/output error"), "reader: \(reader.output)")
            #expect(seconds < 45, "the error took \(seconds) s")
            // Whatever was delivered before the error is the file's true prefix: nothing made up.
            let delivered = try ring.ok(#"wc -c < "$W/out""#)
            let count = Int(delivered.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            #expect(count >= 8 << 20 && count < Self.victimBytes, "delivered \(count) bytes")
            if count > 0 {
                #expect(try ring.sh(#"cmp -n \#(count) "$W/out" "$W/src""#).status == .exited(0))
            }
            // A fresh open fails the same way, in bounded time.
            let again = try ring.sh(#"cat "$M/victim.bin" > /dev/null"#, timeoutSeconds: 90)
            #expect(again.status != .exited(0) && again.output.contains("Input/output error"), "\(again)")
            #expect(again.seconds < 45)
        }
    }

    @Test("unmount leaves no process and no mount behind, and the files stay in the ring")
    func unmountLeavesNothing() throws {
        try MountedRing.with(label: "umount") { ring in
            let mount = ring.mounts[0]
            try ring.ok(#"mkdir "$M/kept" && head -c 3000000 /dev/urandom > "$M/kept/data" && sha256sum < "$M/kept/data" > "$W/sum""#)
            let outcome = ring.unmount(mount, withOuro: true)
            #expect(outcome.termination == .exited(0), "driver: \(outcome.log)")
            #expect(outcome.problems.isEmpty, "\(outcome.problems)")
            #expect(!MountTable.isMounted(mount.mountpoint))
            #expect(ProcessTable.processes(mentioning: [mount.mountpoint]).isEmpty)
            // The mount point is a plain empty directory again, and the spool directory holds nothing.
            #expect(try ring.ok(#"ls -A "$M" | wc -l"#) == "0\n")
            let spools = (try? FileManager.default.contentsOfDirectory(atPath: mount.cacheDirectory)) ?? []
            #expect(spools.isEmpty, "spool files left: \(spools)")
            #expect(outcome.log.contains("unmounted"), "driver log: \(outcome.log)")

            try ring.remount(mount, onNode: 2)
            #expect(try ring.ok(#"sha256sum < "$M/kept/data""#) == ring.ok(#"cat "$W/sum""#))
        }
    }

    @Test("a driver killed with SIGKILL leaves a stale mount that the next mount clears")
    func killedDriverStaleMount() throws {
        try MountedRing.with(label: "stale") { ring in
            let mount = ring.mounts[0]
            try ring.ok(#"printf 'survives the driver\n' > "$M/f""#)
            #expect(ring.killDriver(mount) == .signaled(SIGKILL))
            #expect(MountTable.isMounted(mount.mountpoint), "a killed driver's mount stays until detached")
            let stale = try ring.sh(#"ls "$M""#, timeoutSeconds: 30)
            #expect(stale.status != .exited(0) && stale.output.contains("Transport endpoint is not connected"), "\(stale)")

            try ring.remount(mount)
            #expect(try ring.ok(#"cat "$M/f" && grep -c " $M " /proc/self/mountinfo"#) == "survives the driver\n1\n")
        }
    }
}
