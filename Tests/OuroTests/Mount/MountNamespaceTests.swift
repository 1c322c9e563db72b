import Foundation
import Testing

/// Names and directories through a real mount: renames, mkdir -p, rmdir and rm -r, unusual names and the 255-byte
/// limit, hard links, symbolic links and FIFOs.
@Suite("Mount: names and directories")
struct MountNamespaceTests {
    @Test("rename a file, over an existing file, and a non-empty directory")
    func rename() throws {
        try MountedRing.with(label: "rename") { ring in
            let output = try ring.ok(#"""
                cd "$M" && printf 'first\n' > r1 && mv r1 r2 && cat r2 && ls
                echo ---
                printf 'new\n' > n && printf 'the old and longer content\n' > o && mv n o && cat o && wc -c < o && ls
                echo ---
                mkdir -p d/e/f && printf 'deep\n' > d/e/f/x && printf 'top\n' > d/y && mv d moved && cat moved/e/f/x moved/y
                ls && find moved | sort
                echo ---
                mkdir other && mv moved/e other/ && find other | sort && ls moved
                """#)
            #expect(output.components(separatedBy: "---\n") == [
                "first\nr2\n",
                "new\n4\no\nr2\n",
                "deep\ntop\nmoved\no\nr2\nmoved\nmoved/e\nmoved/e/f\nmoved/e/f/x\nmoved/y\n",
                "other\nother/e\nother/e/f\nother/e/f/x\ny\n",
            ])
            // The old names are gone for good, not just from this listing.
            let gone = try ring.sh(#"cd "$M" && cat r1 n d/y"#)
            #expect(gone.status != .exited(0))
            #expect(Lines.of(gone.output).count == 3 && Lines.of(gone.output).allSatisfy { $0.hasSuffix("No such file or directory") },
                    "\(gone)")
        }
    }

    @Test("mkdir -p, rmdir of a non-empty directory fails, rm -r")
    func directories() throws {
        try MountedRing.with(label: "dirs") { ring in
            let made = try ring.ok(#"""
                cd "$M" && mkdir -p a/b/c/d && mkdir -p a/b/c/d && mkdir -p a/b2 && stat -c %F a/b/c/d && ls a && ls -A a/b/c/d
                """#)
            #expect(made == "directory\nb\nb2\n")

            let refused = try ring.sh(#"cd "$M" && rmdir a"#)
            #expect(refused.status == .exited(1))
            #expect(refused.output.contains("Directory not empty"), "\(refused)")
            #expect(try ring.ok(#"cd "$M" && ls a && rmdir a/b2 && ls a"#) == "b\nb2\nb\n")

            let removed = try ring.ok(#"""
                cd "$M" && mkdir -p t/a/b t/c && printf 1 > t/a/b/f && printf 2 > t/c/g && : > t/h && ln -s h t/l &&
                head -c 3000000 /dev/zero > t/a/big && rm -r t && ls -A && test ! -e t && echo gone
                """#)
            #expect(removed == "a\ngone\n")
        }
    }

    /// 127 two-byte characters and one more byte: 255 bytes, the longest name component.
    static let name255 = String(repeating: "é", count: 127) + "a"

    @Test("names with spaces and UTF-8; a 255-byte component works, 256 bytes is too long")
    func names() throws {
        #expect(Self.name255.utf8.count == 255)
        try MountedRing.with(label: "names") { ring in
            let output = try ring.ok(#"""
                cd "$M" && mkdir 'dir with space ä' && printf 'spaced' > 'dir with space ä/file ünï 日本 🙂.txt' &&
                printf 'lead' > ' leading and trailing ' && printf 'q' > "quote'and\"dq" &&
                ls 'dir with space ä' && cat 'dir with space ä/file ünï 日本 🙂.txt' && echo && ls -1 && cat "quote'and\"dq"
                """#)
            #expect(output == "file ünï 日本 🙂.txt\nspaced\n leading and trailing \ndir with space ä\nquote'and\"dq\nq")

            let long = MountedRing.shellQuote(Self.name255)
            let tooLong = MountedRing.shellQuote(Self.name255 + "b")
            let accepted = try ring.ok("cd \"$M\" && printf ok > \(long) && cat \(long) && echo && ls | grep -cx \(long)"
                                       + " && mkdir d && mv \(long) d/ && ls d")
            #expect(accepted == "ok\n1\n\(Self.name255)\n")
            for command in ["printf no > \(tooLong)", "mkdir \(tooLong)", "mv d/\(long) \(tooLong)", "ln -s x \(tooLong)"] {
                let refused = try ring.sh("cd \"$M\" && \(command)")
                #expect(refused.status != .exited(0), "\(command) succeeded")
                #expect(refused.output.contains("File name too long"), "\(refused)")
            }
            #expect(try ring.ok(#"cd "$M" && ls d | wc -l && ls | wc -l"#) == "1\n4\n")
        }
    }

    @Test("a hard link is one more name of the same file")
    func hardLink() throws {
        try MountedRing.with(label: "link") { ring in
            let output = try ring.ok(#"""
                cd "$M" && printf 'linked\n' > h1 && ln h1 h2 && stat -c %h h1 && stat -c %h h2 &&
                test "$(stat -c %i h1)" = "$(stat -c %i h2)" && echo same-inode &&
                printf 'more\n' >> h2 && cat h1 && rm h1 && cat h2 && stat -c %h h2 && ls
                """#)
            #expect(output == "2\n2\nsame-inode\nlinked\nmore\nlinked\nmore\n1\nh2\n")
        }
    }

    @Test("ln -s and readlink")
    func symbolicLink() throws {
        try MountedRing.with(label: "symlink") { ring in
            let output = try ring.ok(#"""
                cd "$M" && ln -s target.txt sl && readlink sl && printf 'through the link' > target.txt && cat sl && echo &&
                stat -c %F sl && ln -s '../some/where else/ü' s2 && readlink s2 && mkdir d && ln -s ../target.txt d/up && cat d/up
                """#)
            #expect(output == "target.txt\nthrough the link\nsymbolic link\n../some/where else/ü\nthrough the link")
        }
    }

    @Test("mkfifo shows as a fifo")
    func fifo() throws {
        try MountedRing.with(label: "fifo") { ring in
            let output = try ring.ok(#"cd "$M" && mkfifo -m 640 ff && stat -c '%F %a' ff && ls -l ff | cut -c1"#)
            #expect(output == "fifo 640\np\n")
        }
    }
}
