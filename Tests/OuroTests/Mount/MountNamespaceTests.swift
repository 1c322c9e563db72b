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

    @Test("a directory of more entries than a page of READDIR lists whole, each name once")
    func bigDirectory() throws {
        try MountedRing.with(label: "big-directory") { ring in
            // 5,000 names: two pages of 4,096. Listed by ls (getdents in 32 KiB buffers, many per page) and by
            // Python (its own buffer size), removed with rm, and listed again.
            let output = try ring.ok(#"""
                cd "$M" && mkdir big && python3 -c '
                import os
                made = [f"n{i:05d}-" + "x" * (i % 40) for i in range(5000)]
                for name in made: os.close(os.open("big/" + name, os.O_CREAT | os.O_WRONLY))
                names = os.listdir("big")
                print(len(names), len(set(names)), sorted(names) == sorted(made))
                '
                ls -f big | wc -l
                ls big | sort -u | wc -l
                """#, timeoutSeconds: 120)
            #expect(output == "5000 5000 True\n5002\n5000\n", "\(output)")
            // d_ino and d_type from readdir(3) itself (Python's scandir would stat where d_type were unknown),
            // for directories, symlinks and a fifo on both pages, while stats in between make the kernel switch
            // between plain readdir (names only) and readdirplus within a page.
            let kinds = try ring.ok(#"""
                cd "$M/big" && for i in 00007 04500 04999; do rm n$i-*; mkdir n$i-d; ln -s target n$i-l; done && mkfifo n04600-f
                python3 -c '
                import ctypes, os, stat
                class Dirent(ctypes.Structure):
                    _fields_ = [("ino", ctypes.c_uint64), ("off", ctypes.c_int64), ("reclen", ctypes.c_ushort),
                                ("type", ctypes.c_ubyte), ("name", ctypes.c_char * 256)]
                libc = ctypes.CDLL(None, use_errno=True)
                libc.opendir.restype = ctypes.c_void_p
                libc.readdir.restype = ctypes.POINTER(Dirent)
                libc.readdir.argtypes = [ctypes.c_void_p]
                libc.closedir.argtypes = [ctypes.c_void_p]
                for interleave in (False, True):
                    d = libc.opendir(b".")
                    listed = []
                    while True:
                        e = libc.readdir(d)
                        if not e: break
                        name = e.contents.name.decode()
                        if name in (".", ".."): continue
                        listed.append((name, e.contents.type, e.contents.ino))
                        if interleave and len(listed) % 700 == 0: os.stat("n04999-d")
                    libc.closedir(d)
                    wrong = []
                    for name, kind, ino in listed:
                        st = os.lstat(name)
                        want = {stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFIFO: 1, stat.S_IFREG: 8}[stat.S_IFMT(st.st_mode)]
                        if kind != want or ino != st.st_ino: wrong.append(name)
                    seen = [name for name, _, _ in listed]
                    print(len(seen), len(set(seen)), wrong, sum(n.endswith("-d") for n in seen), sum(n.endswith("-l") for n in seen))
                '
                """#, timeoutSeconds: 120)
            #expect(kinds == "5004 5004 [] 3 3\n5004 5004 [] 3 3\n", "\(kinds)")
            #expect(try ring.ok(#"cd "$M" && rm -r big/n0* && ls -f big | wc -l"#, timeoutSeconds: 120) == "2\n")
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

    /// Namespace changes are written before the answer and fsynced lazily (docs/design.md, Catalog model): the
    /// nodes' deferred fsync is stretched to 10 minutes here, so what is durable is what `fsync` made durable.
    @Test("names: kept through kill -9 before any fsync; fsync of a directory, of a clean file and of written bytes makes them durable")
    func namespaceDurability() throws {
        try MountedRing.with(nodes: 3, copies: 2, nodeEnvironment: ["OURO_CATALOG_SYNC_DELAY_MS": "600000"],
                             label: "namesync") { ring in
            func unsynced(_ node: Int) throws -> Int { try ring.ring.info(node).catalogUnsyncedRecords ?? -1 }
            func fsyncPath(_ path: String) throws {
                try ring.ok("python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.close(fd)' \"$M\"/\(path)")
            }
            try ring.ok(#"head -c 3000000 /dev/urandom > "$M/big" && mkdir "$M/d""#)
            #expect(try unsynced(0) > 0, "mkdir is answered before it is fsynced")
            #expect(try (1..<3).allSatisfy { try unsynced($0) > 0 }, "and applied on every peer before the answer")
            try fsyncPath("d")
            #expect(try unsynced(0) == 0, "fsync of the directory fsyncs the coordinator's log")

            try ring.ok(#"touch "$M/d/clean""#)
            #expect(try unsynced(0) > 0)
            try fsyncPath("d/clean")
            #expect(try unsynced(0) == 0, "fsync of a file with nothing to push syncs the names")

            // A commit of bytes through the piece journal fsyncs the catalog log too when names are pending.
            try ring.ok(#"mkdir "$M/e" && python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, b"x" * 4096, 8192); os.fsync(fd); os.close(fd)' "$M/big""#)
            #expect(try unsynced(0) == 0, "a content fsync makes the names before it durable")
            // The piece journal's checkpoint (about a second later) fsyncs the catalog log too: let it pass first,
            // so that what follows stays unsynced.
            let deadline = Date().addingTimeInterval(20)
            while try ring.ring.info(0).pieceJournalBytes != 0, Date() < deadline { usleep(50_000) }
            #expect(try ring.ring.info(0).pieceJournalBytes == 0, "the piece journal is checkpointed within seconds")

            // Never fsynced, but written before the answers: kill -9 of the whole ring loses none of it.
            try ring.ok(#"cd "$M" && touch d/a d/b && rm d/clean && mv d/a e/a2 && chmod 700 e"#)
            #expect(try unsynced(0) > 0)
            for node in 0..<3 { ring.ring.kill(node) }
            for node in 0..<3 { try ring.ring.start(node) }
            try ring.mount(onNode: 1)
            let listing = try ring.ok(#"cd "$M1" && ls -A d e && stat -c %a e"#, timeoutSeconds: 60)
            #expect(listing == "d:\nb\n\ne:\na2\n700\n", "\(listing)")
        }
    }

    /// Namespace changes are answered once sent to the peers, before their answers (docs/design.md): an `fsync`
    /// after them waits for those answers, so the names it depends on are on the other nodes when it returns.
    @Test("fsync of a file in new directories: names and bytes read back through another node after kill -9 of the mount's node")
    func fsyncedNamesSurviveCoordinatorKill() throws {
        try MountedRing.with(nodes: 3, copies: 2, label: "coordkill") { ring in
            let expected = try ring.ok(#"""
                cd "$M" && mkdir -p a/b/c && mkdir x && mv x a/b/y && chmod 711 a/b && head -c 300000 /dev/urandom > "$W/big" &&
                for i in 1 2 3 4 5 6 7 8; do mkdir a/b/c/d$i; done &&
                python3 -c 'import os, sys
                fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600); os.write(fd, open(sys.argv[2], "rb").read()); os.fsync(fd); os.close(fd)' a/b/c/d8/f "$W/big" &&
                sha256sum < a/b/c/d8/f
                """#)
            ring.ring.kill(0)
            try ring.mount(onNode: 1)
            let listing = try ring.ok(#"cd "$M1" && ls a/b a/b/c && stat -c %a a/b && sha256sum < a/b/c/d8/f"#, timeoutSeconds: 60)
            #expect(listing == "a/b:\nc\ny\n\na/b/c:\nd1\nd2\nd3\nd4\nd5\nd6\nd7\nd8\n711\n" + expected, "\(listing)")
        }
    }
}
