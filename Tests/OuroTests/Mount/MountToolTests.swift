import Foundation
import Testing

/// Everyday tools over whole trees through a real mount: cp -r and diff -r, tar, rsync.
@Suite("Mount: tools on trees")
struct MountToolTests {
    /// Type, permissions, size (files) and whole-second mtime of every entry under the current directory.
    static let attributeListing = #"""
        find . -mindepth 1 \( -type f -printf '%p file %m %U:%G %s %Ts\n' \) -o \( -type d -printf '%p dir %m %U:%G %Ts\n' \) \
          -o \( -type l -printf '%p link -> %l\n' \) -o \( -type p -printf '%p fifo %m %U:%G\n' \) | LC_ALL=C sort
        """#

    @Test("cp -r of about 2000 small files in nested directories, then diff -r")
    func copyTree() throws {
        try MountedRing.with(label: "cptree") { ring in
            // 50 directories × 40 files = 2000 files.
            try ring.ok(MountedRing.treeGenerator(at: #""$W"/src"#, directories: 50, filesPerDirectory: 40))
            #expect(try ring.ok(#"find "$W/src" -type f | wc -l"#) == "2000\n")
            try ring.ok(#"cp -r "$W/src" "$M/tree""#, timeoutSeconds: 400)
            let diff = try ring.sh(#"diff -r "$W/src" "$M/tree""#, timeoutSeconds: 120)
            #expect(diff.status == .exited(0), "\(diff)")
            #expect(diff.output.isEmpty, "\(diff)")
            #expect(try ring.ok(#"cd "$M/tree" && find . -type f | wc -l && find . -type d | wc -l"#)
                    == ring.ok(#"cd "$W/src" && find . -type f | wc -l && find . -type d | wc -l"#))
        }
    }

    @Test("tar c | tar x into the mount")
    func tarPipe() throws {
        try MountedRing.with(label: "tar") { ring in
            try ring.ok(MountedRing.treeGenerator(at: #""$W"/src"#, directories: 8, filesPerDirectory: 25, seed: 7)
                        + #" && cd "$W/src" && ln -s dir0/sub1/file-3.txt link && chmod 600 dir0/sub1/file-3.txt"#
                        + #" && chmod 750 dir1 && touch -d '2005-06-07 08:09:10' dir0/sub2/file-1.txt"#)
            try ring.ok(#"mkdir "$M/untar" && tar -C "$W/src" -cf - . | tar -C "$M/untar" -xpf -"#, timeoutSeconds: 120)
            let diff = try ring.sh(#"diff -r "$W/src" "$M/untar""#)
            #expect(diff.status == .exited(0) && diff.output.isEmpty, "\(diff)")
            // tar keeps modes and times (directory times too, set after their contents).
            let expected = try ring.ok(#"cd "$W/src" && "# + Self.attributeListing)
            let actual = try ring.ok(#"cd "$M/untar" && "# + Self.attributeListing)
            #expect(actual == expected)
        }
    }

    @Test("rsync -a, then a second rsync -a --itemize-changes has nothing to do")
    func rsyncTwice() throws {
        try MountedRing.with(label: "rsync") { ring in
            try ring.ok(MountedRing.treeGenerator(at: #""$W"/src"#, directories: 6, filesPerDirectory: 20, seed: 3) + #"""
                 && cd "$W/src" && chmod 750 dir0 && chmod 600 dir0/sub1/file-2.txt && chmod 755 dir1/sub0/file-5.txt &&
                chown 1234:5678 dir0/sub4/file-4.txt && ln -s dir0/sub1/file-2.txt link && mkfifo -m 600 pipe &&
                head -c 3000000 /dev/urandom > big && touch -d '2010-01-01 00:00:00' dir0/sub1 dir0 big . && touch -h -d '2011-01-01' link
                """#)
            let first = try ring.ok(#"rsync -a "$W/src/" "$M/dst/""#, timeoutSeconds: 120)
            #expect(first.isEmpty, "first rsync printed: \(first)")
            let second = try ring.sh(#"rsync -a --itemize-changes "$W/src/" "$M/dst/""#, timeoutSeconds: 120)
            #expect(second.status == .exited(0))
            #expect(second.output.isEmpty, "the second rsync found differences:\n\(second.output)")
            let diff = try ring.sh(#"diff -r --no-dereference -x pipe "$W/src" "$M/dst""#)
            #expect(diff.status == .exited(0) && diff.output.isEmpty, "\(diff)")
            let expected = try ring.ok(#"cd "$W/src" && "# + Self.attributeListing)
            let actual = try ring.ok(#"cd "$M/dst" && "# + Self.attributeListing)
            #expect(actual == expected)
        }
    }
}
