import Foundation
import Glibc
import OuroCore
import Testing

/// The ring's health inside the mount: the hidden `.ouro/` directory and the `user.ouro.*` attributes, read with
/// `cat`, `ls` and `getfattr` while a node is alive, dead and back; and that nothing of it can be written, moved or
/// copied by accident.
@Suite("Mount: health files")
struct MountHealthTests {
    @Test(".ouro/ and user.ouro.* show copies, placement and dead nodes, and follow the ring")
    func healthFollowsTheRing() throws {
        try MountedRing.with(label: "health") { ring in
            let nodes = (0..<3).map { ring.ring.address($0).description }
            try ring.ok(#"""
                head -c 3000000 /dev/urandom > "$M/big.bin"
                mkdir "$M/dir" && printf small > "$M/dir/small.txt"
                """#)
            // All alive: every chunk on two live nodes; the small file lives in the catalog.
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.copies "$M/big.bin""#) == "2/2")
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.copies "$M/dir/small.txt""#) == "3/3")
            let placement = try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.placement "$M/big.bin""#)
            let lines = placement.split(separator: "\n")
            #expect(lines.count == 3, "\(placement)")
            for (index, line) in lines.enumerated() {
                #expect(line.hasPrefix("piece 1 chunk \(index + 1)/3 1000000 bytes: "), "\(placement)")
                #expect(line.components(separatedBy: " alive").count - 1 == 2, "\(placement)")
            }
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.placement "$M/dir/small.txt""#)
                    == "inline: 5 bytes in the catalog of every node\n")
            // Not on directories; not listed (so cp -a and rsync -X leave them); not writable.
            #expect(try ring.sh(#"getfattr --absolute-names -n user.ouro.copies "$M/dir""#).status != .exited(0))
            #expect(try ring.ok(#"getfattr --absolute-names -d -m - "$M/big.bin"; echo end"#) == "end\n")
            let refused = try ring.sh(#"setfattr -n user.ouro.copies -v 9/9 "$M/big.bin""#)
            #expect(refused.status != .exited(0) && refused.output.contains("Operation not permitted"), "\(refused)")
            try ring.ok(#"cp -a "$M/big.bin" "$M/dir/copy.bin" && cmp "$M/big.bin" "$M/dir/copy.bin""#)

            // The directory is found by name but not listed; its files read like any other.
            #expect(try ring.ok(#"ls -A "$M""#) == "big.bin\ndir\n")
            #expect(try ring.ok(#"ls "$M/.ouro""#) == "files-short-of-copies\nnetmap\nstatus\n")
            #expect(try ring.ok(#"cat "$M/.ouro/netmap""#) == nodes.map { "\($0)=Alive\n" }.joined())
            #expect(try ring.ok(#"cat "$M/.ouro/files-short-of-copies""#) == "name,copies,wanted\n")
            let status = try ring.ok(#"cat "$M/.ouro/status""#)
            #expect(status.hasPrefix("NODE ") && status.components(separatedBy: " alive ").count - 1 == 3, "\(status)")
            // Size 0, as in /proc; copied and read whole all the same.
            #expect(try ring.ok(#"stat -c %s "$M/.ouro/netmap" && cp "$M/.ouro/netmap" "$W/netmap" && cat "$W/netmap""#)
                    == "0\n" + nodes.map { "\($0)=Alive\n" }.joined())
            #expect(try ring.ok(#"python3 -c 'import sys; print(open(sys.argv[1]).read(), end="")' "$M/.ouro/netmap""#)
                    == nodes.map { "\($0)=Alive\n" }.joined())

            // Node 2 dies: the mount shows it dead, big.bin and its copy short (a chunk had a copy there).
            ring.ring.kill(2)
            try ring.ring.waitForNetmap(ring.ring.expectedNetmap(dead: [2]), on: [0, 1], timeoutSeconds: 20)
            #expect(try ring.ok(#"cat "$M/.ouro/netmap""#) == "\(nodes[0])=Alive\n\(nodes[1])=Alive\n\(nodes[2])=Dead\n")
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.copies "$M/big.bin""#) == "1/2")
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.placement "$M/big.bin""#).contains("\(nodes[2]) dead"))
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.copies "$M/dir/small.txt""#) == "2/2")
            #expect(try ring.ok(#"cat "$M/.ouro/files-short-of-copies""#) == "name,copies,wanted\nbig.bin,1,2\ndir/copy.bin,1,2\n")
            let deadStatus = try ring.ok(#"cat "$M/.ouro/status""#)
            #expect(deadStatus.split(separator: "\n").contains { $0.split(separator: " ").map(String.init) == [nodes[2], "dead"] },
                    "\(deadStatus)")

            // Back: whole again.
            try ring.ring.start(2)
            try ring.ring.waitForNetmap(ring.ring.expectedNetmap(dead: []), timeoutSeconds: 20)
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.copies "$M/big.bin""#) == "2/2")
            #expect(try ring.ok(#"cat "$M/.ouro/files-short-of-copies""#) == "name,copies,wanted\n")
        }
    }

    @Test("user.ouro.hash is the file's SHA-256 where the ring saw its bytes in order, and only then")
    func hashesMatchSha256sum() throws {
        try MountedRing.with(label: "health-hash") { ring in
            // Inline (small), pushed whole at close (3 MB), empty: each hash is what sha256sum says.
            let script = #"""
                printf 'a small file\n' > "$M/small" && head -c 3000000 /dev/urandom > "$W/big" && cp "$W/big" "$M/big" && : > "$M/empty"
                for f in small big empty; do
                    [ "$(getfattr --absolute-names --only-values -n user.ouro.hash "$M/$f")" = "$(sha256sum < "$M/$f" | cut -d' ' -f1)" ] || echo "$f differs"
                done
                echo checked
                """#
            #expect(try ring.ok(script) == "checked\n")
            // Changed in place: the ring got the change as a piece, not every byte in order: no hash (ENODATA), not a
            // stale one.
            try ring.ok(#"printf XYZ | dd of="$M/big" bs=1 seek=1000 conv=notrunc status=none"#)
            let stale = try ring.sh(#"getfattr --absolute-names --only-values -n user.ouro.hash "$M/big""#)
            #expect(stale.status != .exited(0) && stale.output.contains("No such attribute"), "\(stale)")
            // Written whole again: a hash again, the new one.
            try ring.ok(#"cp "$W/big" "$M/big""#)
            let hashes = try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.hash "$M/big"; echo; sha256sum < "$W/big" | cut -d' ' -f1"#)
                .split(separator: "\n")
            #expect(hashes.count == 2 && hashes[0] == hashes[1], "\(hashes)")
        }
    }

    @Test("user.ouro.verified: never until the holders read the copies back, then the oldest time")
    func verifiedFollowsReadBack() throws {
        try MountedRing.with(label: "health-verified") { ring in
            try ring.ok(#"head -c 3000000 /dev/urandom > "$W/big" && cp "$W/big" "$M/big" && printf small > "$M/small""#)
            let verified = #"getfattr --absolute-names --only-values -n user.ouro.verified "$M/big""#
            // Copies are checked as they arrive, which is not reading them back from disk.
            let fresh = try ring.ok(verified)
            #expect(fresh.hasPrefix("never"), "\(fresh)")
            #expect(try ring.ok(#"getfattr --absolute-names --only-values -n user.ouro.verified "$M/small""#).hasPrefix("inline"))
            for node in 0..<3 { #expect(try ring.ring.request(node, "NODE SCRUB") == ["OK scrub requested"]) }
            var shown = ""
            try waitUntil("every copy read back", timeoutSeconds: 30, describe: { shown }) {
                shown = try ring.ok(verified)
                return shown.range(of: #"^20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"#, options: .regularExpression) != nil
            }
            let formatter = ISO8601DateFormatter()
            let when = try #require(formatter.date(from: shown))
            #expect(abs(when.timeIntervalSinceNow) < 120, "\(shown)")
        }
    }

    @Test(".ouro/ cannot be written, removed, renamed over or replaced")
    func healthFilesAreReadOnly() throws {
        try MountedRing.with(label: "health-ro") { ring in
            try ring.ok(#"printf x > "$M/file""#)
            // Each must fail, and leave everything as it was.
            for script in [
                #"printf x > "$M/.ouro/status""#, #"printf x >> "$M/.ouro/netmap""#, #"touch "$M/.ouro/new""#,
                #"mkdir "$M/.ouro/d""#, #"rm "$M/.ouro/status""#, #"rm -r "$M/.ouro""#, #"rmdir "$M/.ouro""#,
                #"mkdir "$M/.ouro""#, #"printf x > "$M/.ouro""#, #"mv "$M/file" "$M/.ouro""#, #"mv "$M/.ouro" "$M/x""#,
                #"mv "$M/file" "$M/.ouro/file""#, #"ln "$M/file" "$M/.ouro/link""#, #"ln -s file "$M/.ouro""#,
                #"chmod 777 "$M/.ouro/status""#, #"touch "$M/.ouro/status""#, #"truncate -s 0 "$M/.ouro/status""#,
                #"setfattr -n user.x -v 1 "$M/.ouro/status""#,
            ] {
                let result = try ring.sh(script)
                #expect(result.status != .exited(0), "succeeded: \(script)")
            }
            #expect(try ring.ok(#"ls -A "$M"; ls "$M/.ouro"; cat "$M/file""#) == "file\nfiles-short-of-copies\nnetmap\nstatus\nx")
            #expect(try ring.ok(#"cat "$M/.ouro/nothing" 2>&1 || true"#).contains("No such file or directory"))
            // find and du walk the tree without it (not listed), and the ring's own listing does not have it.
            #expect(try ring.ok(#"cd "$M" && find . | sort"#) == ".\n./file\n")
            #expect(try ring.ring.list(0).map(\.name) == ["file"])
        }
    }
}
