import Foundation
import Testing

/// Ownership, permissions, extended attributes and `df` through a real mount.
@Suite("Mount: attributes")
struct MountAttributeTests {
    @Test("chmod and chown show in stat")
    func chmodChown() throws {
        try MountedRing.with(label: "chmod") { ring in
            let output = try ring.ok(#"""
                cd "$M" && printf x > f && mkdir d && chmod 640 f && chown 1234:5678 f && chmod 711 d && chown 42 d &&
                chmod u+s,g+s d && stat -c '%n %a %u %g %A' f d && chmod 600 f && stat -c '%a %U' f
                """#)
            #expect(output == "f 640 1234 5678 -rw-r-----\nd 6711 42 0 drws--s--x\n600 UNKNOWN\n")
            // A set-group-ID directory hands its group to what is made in it, and its bit to new directories.
            let inherited = try ring.expectSameAsLocal("setgid", #"""
                mkdir shared && chgrp 1234 shared && chmod 2775 shared
                printf x > shared/f && : > shared/g && mkdir shared/sub && ln -s f shared/l && mkfifo shared/p
                stat -c '%n %g %a' shared/f shared/g shared/sub shared/p && stat -c '%n %g' shared/l
                """#)
            #expect(inherited == "shared/f 1234 644\nshared/g 1234 644\nshared/sub 1234 2755\nshared/p 1234 644\nshared/l 1234\n")
            // A write by another user clears setuid, and setgid where the group may execute (not root's write).
            let cleared = try ring.ok(#"""
                cd "$M" && printf a > s && printf a > t && printf a > r && chmod 6777 s r && chmod 6767 t
                printf b >> r && setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf b >> s && printf b >> t'
                stat -c '%n %a %s' s t r
                """#)
            #expect(cleared == "s 777 2\nt 2767 2\nr 6777 2\n")
            // So do a truncate and an O_TRUNC open by another user, and any chown; root's truncate keeps them (the
            // kernel says which per request once it has agreed to leave them to the file system).
            let alsoCleared = try ring.ok(#"""
                cd "$M" && for f in u o c k; do printf a > $f; done && chmod 6777 u o k && chmod 6755 c
                setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'truncate -s 0 u && printf b > o'
                chown 1:1 c && truncate -s 0 k && stat -c '%n %a %s %u' u o c k
                """#)
            #expect(alsoCleared == "u 777 0 0\no 777 1 0\nc 755 1 1\nk 6777 0 0\n")
        }
    }

    @Test("setfattr and getfattr")
    func extendedAttributes() throws {
        try MountedRing.with(label: "xattr") { ring in
            let output = try ring.ok(#"""
                cd "$M" && printf x > f && mkdir d &&
                setfattr -n user.x -v y f && getfattr -n user.x --only-values f && echo &&
                setfattr -n user.other -v 'two words' f && setfattr -n user.x -v changed f &&
                getfattr -d f | LC_ALL=C sort && setfattr -x user.x f && getfattr -d f &&
                setfattr -n user.ondir -v 0x00ff10 d && getfattr -e hex -n user.ondir d
                """#)
            #expect(output == "y\n"
                    + "\n# file: f\nuser.other=\"two words\"\nuser.x=\"changed\"\n"  // sorted: the blank line first
                    + "# file: f\nuser.other=\"two words\"\n\n"
                    + "# file: d\nuser.ondir=0x00ff10\n\n")
            let missing = try ring.sh(#"cd "$M" && getfattr -n user.x f"#)
            #expect(missing.status != .exited(0))
            #expect(missing.output.contains("No such attribute"), "\(missing)")
            // Namespaces the ring does not store are "not supported" (so `ls -l` stops asking for labels and ACLs).
            let unsupported = try ring.sh(#"cd "$M" && getfattr -n security.selinux f; setfattr -n security.x -v 1 f"#)
            #expect(unsupported.status != .exited(0))
            #expect(unsupported.output.components(separatedBy: "Operation not supported").count == 3, "\(unsupported)")
        }
    }

    @Test("df shows the ring's capacity")
    func diskFree() throws {
        try MountedRing.with(label: "df") { ring in
            let output = try ring.ok(#"""
                df -B1 --output=size,used,avail "$M" | tail -n 1 && stat -f -c '%b %S %l' "$M" && df -P "$M" | tail -n 1 &&
                df -B1 --output=size "$W" | tail -n 1
                """#)
            let lines = Lines.of(output)
            try #require(lines.count == 4, "unexpected df output: \(output)")
            // The test ring's nodes all keep their data on the disk of $W: counted once, not once per node.
            let ringSize = lines[0].split(separator: " ").first.flatMap { UInt64($0) }
            #expect(ringSize != nil && ringSize == UInt64(lines[3].split(separator: " ").joined()), "ring vs its one disk: \(output)")
            let numbers = lines[0].split(separator: " ").compactMap { UInt64($0) }
            try #require(numbers.count == 3, "unexpected df line: \(lines[0])")
            let (size, used, available) = (numbers[0], numbers[1], numbers[2])
            #expect(size > 0)
            #expect(available > 0 && available <= size && used <= size)
            let statfs = lines[1].split(separator: " ")
            #expect(statfs.count == 3 && UInt64(statfs[0]).map { $0 > 0 } == true)
            #expect(statfs.count == 3 && statfs[2] == "255", "name length limit: \(lines[1])")
            #expect(lines[2].hasPrefix("ouro@"), "file system name: \(lines[2])")
            // `df -i`: the files in use, never a negative count.
            let inodes = try ring.ok(#"mkdir "$M/dfi" && touch "$M/dfi/a" "$M/dfi/b" && df --output=iused "$M" | tail -n 1"#)
            let inodesUsed = Int(inodes.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(inodesUsed != nil && inodesUsed! >= 3, "df -i IUsed: \(inodes)")
        }
    }
}
