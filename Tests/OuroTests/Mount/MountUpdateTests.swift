import Foundation
import Testing

/// Files that change in place, through real mounts of real rings: seeded random `pwrite`/`ftruncate` + `fsync`
/// sequences against the same sequence on a local file (with a node killed in the middle and the whole ring killed
/// and restarted), SQLite surviving a node kill, sparse files, compaction under readers on another mount, and the
/// bugs ordinary tools found. The programs are Python scripts (in `$W`) so that one process keeps the file open.
@Suite("Mount: updates in place")
struct MountUpdateTests {
    /// Applies seeded random writes and truncations, each followed by `fsync`, to `target` (on the mount) and
    /// `reference` (local), in phases: after each phase it checks the whole file through its descriptor, writes
    /// `$W/phase-N.done`, and waits for `$W/go-N+1` (so the test can kill nodes while the file stays open).
    static let updater = #"""
        import os, random, sys, time
        seed, phases, target, reference = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
        work = os.environ["W"]
        rng = random.Random(seed)
        first = bytes(rng.getrandbits(8) for _ in range(1 << 16)) * 120  # 7.5 MiB over 8 regions
        for path in (target, reference):
            with open(path, "wb") as f:
                f.write(first)
                f.flush()
                os.fsync(f.fileno())
        t = os.open(target, os.O_RDWR)
        r = os.open(reference, os.O_RDWR)
        def check(where):
            size = os.fstat(r).st_size
            if os.fstat(t).st_size != size:
                sys.exit(f"{where}: size {os.fstat(t).st_size}, want {size}")
            offset = 0
            while offset < size:
                a, b = os.pread(t, 1 << 20, offset), os.pread(r, 1 << 20, offset)
                if a != b:
                    at = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
                    sys.exit(f"{where}: bytes differ at {offset + at} (read {len(a)}, want {len(b)})")
                offset += len(b)
        for phase in range(1, phases + 1):
            for step in range(40):
                size = os.fstat(r).st_size
                kind = rng.random()
                if kind < 0.08:
                    new = rng.randrange(0, size + (2 << 20))
                    for fd in (t, r): os.ftruncate(fd, new)
                    op = f"ftruncate {new}"
                else:
                    length = rng.choice([1, 100, 4096, 4096, 4096, 20000, 300000, 1 << 20]) + rng.randrange(0, 50)
                    offset = rng.randrange(0, size + 4096)
                    if rng.random() < 0.3:  # near a 1 MiB region boundary
                        offset = max(0, (rng.randrange(0, size + 1) >> 20 << 20) + rng.randrange(-3000, 3000))
                    data = bytes(rng.getrandbits(8) for _ in range(min(length, 4096))) * (length // 4096 + 1)
                    data = data[:length]
                    for fd in (t, r):
                        if os.pwrite(fd, data, offset) != length: sys.exit(f"short write at {offset}")
                    op = f"pwrite {length} at {offset}"
                # Most steps commit at once; the others let two or three writes go in one commit.
                if rng.random() < 0.7:
                    for fd in (t, r): os.fsync(fd)
                if step % 10 == 9: check(f"phase {phase} step {step} ({op})")
            for fd in (t, r): os.fsync(fd)
            check(f"end of phase {phase}")
            open(f"{work}/phase-{phase}.done", "w").close()
            if phase < phases:
                deadline = time.time() + 120
                while not os.path.exists(f"{work}/go-{phase + 1}"):
                    if time.time() > deadline: sys.exit(f"no go for phase {phase + 1}")
                    time.sleep(0.02)
        os.close(t)
        os.close(r)
        print("updated")
        """#

    @Test("seeded random pwrite/ftruncate + fsync read back like a local file, across a node kill and a whole-ring kill")
    func randomUpdatesSurviveKills() throws {
        let seed = TestSeed.derived("mount-updates")
        try MountedRing.with(nodes: 3, copies: 2, label: "updates") { ring in
            try Self.updater.write(toFile: ring.workDirectory + "/updater.py", atomically: true, encoding: .utf8)
            let updater = try ring.spawn(#"python3 "$W/updater.py" \#(seed) 3 "$M/db.bin" "$W/ref.bin""#)
            func waitForPhase(_ phase: Int) throws {
                try waitUntil("phase \(phase) of the updater (seed \(seed))", timeoutSeconds: 240, intervalSeconds: 0.05) {
                    if let ended = updater.process.termination {
                        throw TestFailure("the updater ended \(ended) (seed \(seed)):\n\(updater.output)\n\(ring.diagnostics())")
                    }
                    return FileManager.default.fileExists(atPath: ring.workDirectory + "/phase-\(phase).done")
                }
            }
            try waitForPhase(1)
            ring.ring.kill(1)  // phase 2 writes with a node of the ring dead, the file still open
            FileManager.default.createFile(atPath: ring.workDirectory + "/go-2", contents: nil)
            try waitForPhase(2)
            try ring.ring.start(1)  // and phase 3 with it back
            FileManager.default.createFile(atPath: ring.workDirectory + "/go-3", contents: nil)
            guard updater.process.wait(seconds: 240) == .exited(0) else {
                Issue.record("updater (seed \(seed)): \(String(describing: updater.process.termination))\n\(updater.output)\n\(ring.diagnostics())")
                return
            }
            try ring.ok(#"cmp "$M/db.bin" "$W/ref.bin""#)
            // Every fsync was acknowledged: the whole ring killed at once loses none of it.
            for node in 0..<3 { ring.ring.kill(node) }
            for node in 0..<3 { try ring.ring.start(node) }
            let fresh = try ring.mount(onNode: 2)
            #expect(fresh === ring.mounts[1])
            try ring.ok(#"cmp "$M1/db.bin" "$W/ref.bin" && cmp "$M/db.bin" "$W/ref.bin""#, timeoutSeconds: 120)
            // FILE PULL (the original protocol) reads the layered content the same.
            let reference = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ring.workDirectory + "/ref.bin")))
            #expect(try ring.ring.pull(1, name: "db.bin") == reference, "FILE PULL of db.bin (seed \(seed))")
        }
    }

    @Test("updates in place on nodes whose disks have no room for a piece journal: the same bytes, the ordinary way")
    func updatesWithoutAPieceJournal() throws {
        // 24 MiB disks: the two 16 MiB journals do not fit, so carried updates store their piece copies as files.
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0, 1], diskBytes: 24 << 20, label: "nojournal") { ring in
            let output = try ring.ok(#"""
                head -c 3000000 /dev/urandom > "$W/ref" && cp "$W/ref" "$M/f"
                python3 -c '
                import os, random, sys
                rng = random.Random(3)
                fds = [os.open(p, os.O_RDWR) for p in (os.environ["M"] + "/f", os.environ["W"] + "/ref")]
                for commit in range(30):
                    for _ in range(rng.randrange(1, 5)):  # a few pages per commit, as a database writes them
                        data, offset = os.urandom(4096), rng.randrange(0, 3000000)
                        for fd in fds: os.pwrite(fd, data, offset)
                    for fd in fds: os.fsync(fd)
                for fd in fds: os.close(fd)
                '
                cmp "$M/f" "$W/ref" && cmp "$M1/f" "$W/ref" && echo same
                """#, timeoutSeconds: 120)
            #expect(output == "same\n", "\(output)")
            let reference = try [UInt8](Data(contentsOf: URL(fileURLWithPath: ring.workDirectory + "/ref")))
            #expect(try ring.ring.pull(2, name: "f") == reference, "FILE PULL of f")
            let journalless = ring.ring.members.filter { member in
                (try? String(contentsOfFile: member.logPath, encoding: .utf8))?.contains("no room for the piece journal") == true
            }
            #expect(journalless.count == 3, "nodes without a piece journal: \(journalless.count) of 3")
        }
    }

    static let sqliteWork = #"""
        import os, sqlite3, sys
        path, part = sys.argv[1], sys.argv[2]
        con = sqlite3.connect(path, isolation_level=None)
        def rows(): return con.execute("select count(*), coalesce(sum(v), 0) from t").fetchone()
        if part == "1":
            con.execute("create table t (id integer primary key, k text unique, v integer, pad blob)")
            for batch in range(100):
                con.execute("begin")
                for i in range(100):
                    n = batch * 100 + i
                    con.execute("insert into t (k, v, pad) values (?, ?, ?)", (f"key{n}", n, os.urandom(200)))
                con.execute("commit")
            con.execute("begin")
            con.execute("update t set v = v * 2 where id % 3 = 0")
            con.execute("commit")
        elif part == "2":
            con.execute("pragma journal_mode=wal")
            for batch in range(50):
                con.execute("begin")
                con.execute("delete from t where id % 50 = ?", (batch,))
                con.execute("insert into t (k, v, pad) values (?, ?, ?)", (f"wal{batch}", 1, os.urandom(500)))
                con.execute("commit")
            con.execute("pragma wal_checkpoint(truncate)")
        check = con.execute("pragma integrity_check").fetchall()
        if check != [("ok",)]: sys.exit(f"integrity_check: {check[:5]}")
        print(*rows())
        con.close()
        """#

    @Test("SQLite (transactions, WAL mode, integrity_check) on the mount survives a node kill and a remount")
    func sqliteSurvivesANodeKill() throws {
        try MountedRing.with(nodes: 3, copies: 2, label: "sqlite") { ring in
            try Self.sqliteWork.write(toFile: ring.workDirectory + "/work.py", atomically: true, encoding: .utf8)
            // The same work on a local file gives the expected counts.
            let want1 = try ring.ok(#"python3 "$W/work.py" "$W/local.db" 1"#)
            let want2 = try ring.ok(#"python3 "$W/work.py" "$W/local.db" 2"#)
            #expect(Lines.of(want1).first?.hasPrefix("10000 ") == true, "\(want1)")
            #expect(try ring.ok(#"python3 "$W/work.py" "$M/app.db" 1"#, timeoutSeconds: 180) == want1)
            ring.ring.kill(1)
            #expect(try ring.ok(#"python3 "$W/work.py" "$M/app.db" 2"#, timeoutSeconds: 180) == want2)
            #expect(try ring.ok(#"python3 "$W/work.py" "$M/app.db" check"#) == want2)
            // Another mount, through another node, after the first is gone: the same database.
            ring.unmount(ring.mounts[0])
            try ring.remount(ring.mounts[0], onNode: 2)
            #expect(try ring.ok(#"python3 "$W/work.py" "$M/app.db" check"#, timeoutSeconds: 120) == want2)
        }
    }

    @Test("sparse files: truncate -s 1P, dd seek= far, du, SEEK_DATA/SEEK_HOLE, cp --sparse=always, fallocate")
    func sparseFiles() throws {
        try MountedRing.with(label: "sparse") { ring in
            let huge = try ring.ok(#"""
                cd "$M" && truncate -s 1P huge && stat -c '%s %b' huge && du -k huge | cut -f1
                printf 'hello' | dd of=huge bs=1 seek=$((1 << 40)) conv=notrunc status=none && stat -c '%s %b' huge
                python3 -c '
                import os
                fd = os.open("huge", os.O_RDONLY)
                print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, 1 << 40, os.SEEK_HOLE))
                print(os.pread(fd, 7, (1 << 40) - 1))
                for whence, at in ((os.SEEK_DATA, (1 << 40) + 5), (os.SEEK_DATA, 1 << 50), (os.SEEK_HOLE, 1 << 50)):
                    try: os.lseek(fd, at, whence); print("no error")
                    except OSError as e: print(e.errno)
                '
                truncate -s 999999999999999 nearly && stat -c %s nearly
                truncate -s 5E toobig; echo "rc $?"
                """#)
            #expect(Lines.of(huge) == ["1125899906842624 0", "0", "1125899906842624 1",
                                       "1099511627776 0 1099511627781", #"b'\x00hello\x00'"#, "6", "6", "6",
                                       "999999999999999"] + Lines.of(huge).suffix(2), "\(huge)")
            #expect(huge.contains("File too large") && huge.hasSuffix("rc 1\n"), "\(huge)")
            // Far past the end with dd, kept sparse by cp, read back as zeros where nothing was written.
            let copied = try ring.ok(#"""
                head -c 1048576 /dev/urandom > "$W/block"
                cd "$M" && dd if="$W/block" of=far bs=1M seek=300 status=none && stat -c '%s %b' far
                cp --sparse=always far far2 && stat -c '%s %b' far2 && cmp far far2
                dd if="$W/block" of="$W/far" bs=1M seek=300 status=none && cmp far "$W/far" && echo same
                python3 -c '
                import os
                fd = os.open("far2", os.O_RDONLY)
                print(os.lseek(fd, 0, os.SEEK_DATA) == 300 << 20, os.lseek(fd, 300 << 20, os.SEEK_HOLE) == 301 << 20)
                '
                """#, timeoutSeconds: 120)
            #expect(Lines.of(copied) == ["315621376 2048", "315621376 2048", "same", "True True"])
            // fallocate: a punched hole and a zeroed range read as zeros, the rest stays; plain allocation sets the size.
            let allocated = try ring.ok(#"""
                head -c 3000000 /dev/urandom > "$W/r" && cp "$W/r" "$W/r2" && cp "$W/r" "$M/r"
                fallocate -p -o 1000000 -l 500000 "$M/r" && fallocate -p -o 1000000 -l 500000 "$W/r2"
                fallocate -z -o 2900000 -l 200000 "$M/r" && fallocate -z -o 2900000 -l 200000 "$W/r2"
                cmp "$M/r" "$W/r2" && stat -c %s "$M/r"
                fallocate -l 5000000 "$M/a" && stat -c %s "$M/a" && tr -d '\0' < "$M/a" | wc -c
                fallocate -c -o 0 -l 4096 "$M/a"; echo "collapse rc $?"
                """#)
            #expect(Lines.of(allocated).prefix(3) == ["3100000", "5000000", "0"], "\(allocated)")
            #expect(allocated.contains("collapse rc 1"), "\(allocated)")
            // Another mount lists them (READDIR, no slices in the answer) with what they store, not their size.
            try ring.mount(onNode: 1)
            let listed = try ring.ok(#"cd "$M1" && ls -s | awk '$2 == "far" || $2 == "huge" || $2 == "a" { print $1, $2 }' && du -sk . | cut -f1"#)
            #expect(Array(Lines.of(listed).prefix(3)) == ["0 a", "1024 far", "1 huge"], "\(listed)")
            #expect(Int(Lines.of(listed).last ?? "") ?? .max < 20_000, "du of the whole mount: \(listed)")
        }
    }

    /// The writer: two passes over `blocks` blocks of 3000 bytes side by side from 1 MiB on (none hides another,
    /// so a region gathers far more slices than it may hold unless they are compacted), each block written whole in
    /// one `pwrite` + `fsync`. A block is its pass and index, then a byte pattern made of both.
    static let blockWriter = #"""
        import os, sys, struct
        path, blocks = sys.argv[1], int(sys.argv[2])
        def block(p, i):
            return struct.pack("<II", p, i) + bytes(((p * 31 + i * 7 + k) & 255) for k in range(3000 - 8))
        fd = os.open(path, os.O_RDWR)
        for p in (1, 2):
            for i in range(blocks):
                os.pwrite(fd, block(p, i), (1 << 20) + i * 3000)
                os.fsync(fd)
        os.close(fd)
        print("written")
        """#

    /// The reader: opens the file again and again until `$W/stop`, and checks that every block is zeros or one
    /// whole pass of it, never going back from what an earlier open showed.
    static let blockReader = #"""
        import os, sys, struct
        path, blocks, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        seen = [0] * blocks
        rounds = 0
        while True:
            last = os.path.exists(stop)
            fd = os.open(path, os.O_RDONLY)
            data = os.pread(fd, blocks * 3000, 1 << 20)
            os.close(fd)
            for i in range(blocks):
                b = data[i * 3000:(i + 1) * 3000]
                p, index = struct.unpack("<II", b[:8])
                if b == bytes(3000): p = 0
                elif b != struct.pack("<II", p, i) + bytes(((p * 31 + i * 7 + k) & 255) for k in range(3000 - 8)):
                    sys.exit(f"round {rounds}: block {i} torn (header pass {p} index {index})")
                if p < seen[i]: sys.exit(f"round {rounds}: block {i} went back from pass {seen[i]} to {p}")
                seen[i] = p
            rounds += 1
            if last: break
        print(rounds, min(seen), max(seen))
        """#

    @Test("compaction under readers on another mount: every block reads as one whole write, never torn or older")
    func compactionUnderConcurrentReaders() throws {
        try MountedRing.with(nodes: 3, copies: 2, mountOn: [0, 1], label: "compaction") { ring in
            try Self.blockWriter.write(toFile: ring.workDirectory + "/writer.py", atomically: true, encoding: .utf8)
            try Self.blockReader.write(toFile: ring.workDirectory + "/reader.py", atomically: true, encoding: .utf8)
            try ring.ok(#"head -c 4194304 /dev/zero > "$M/blocks" && cat "$M1/blocks" > /dev/null"#)
            let reader = try ring.spawn(#"python3 "$W/reader.py" "$M1/blocks" 600 "$W/stop""#)
            // 600 blocks: 350 in region 1 per pass, more than the 256 slices a region holds without compaction.
            try ring.ok(#"python3 "$W/writer.py" "$M/blocks" 600"#, timeoutSeconds: 300)
            FileManager.default.createFile(atPath: ring.workDirectory + "/stop", contents: nil)
            guard reader.process.wait(seconds: 120) == .exited(0) else {
                Issue.record("reader: \(String(describing: reader.process.termination))\n\(reader.output)\n\(ring.diagnostics())")
                return
            }
            let rounds = Lines.of(reader.output).last?.split(separator: " ").compactMap { Int($0) } ?? []
            #expect(rounds.count == 3 && rounds[0] >= 2 && rounds[1] == 2 && rounds[2] == 2, "reader: \(reader.output)")
            // Compacted: the file holds far fewer slices than were written into it.
            let slices = try ring.content(of: "blocks").slices?.count ?? 0
            #expect(slices < 200, "the file has \(slices) slices after 1200 writes of 3000 bytes")
            try ring.ok(#"python3 "$W/reader.py" "$M/blocks" 600 / && cmp "$M/blocks" "$M1/blocks""#)
        }
    }

    @Test("while a close pushes a big file (its ring stalled), stat, ls -l and reads of other files answer")
    func statAnswersDuringAPush() throws {
        try MountedRing.with(nodes: 3, copies: 2, attrTimeoutSeconds: 0, label: "pushing") { ring in
            try ring.ok(#"head -c 67108864 /dev/urandom > "$W/src" && printf 'small file\n' > "$M/small" && : > "$M/big" && cat "$M/small""#)
            let writer = try ring.spawn(#"""
                python3 -c '
                import os, shutil, sys, time
                w = os.environ["W"]
                with open(os.environ["M"] + "/big", "r+b") as f:  # named already: the close only pushes
                    with open(w + "/src", "rb") as src: shutil.copyfileobj(src, f, 1 << 20)
                    f.flush()
                    open(w + "/written", "w").close()
                    while not os.path.exists(w + "/go"): time.sleep(0.01)
                print("closed", flush=True)
                '
                """#)
            try waitUntil("the writer to have written", timeoutSeconds: 120) {
                if let ended = writer.process.termination { throw TestFailure("writer ended \(ended): \(writer.output)") }
                return FileManager.default.fileExists(atPath: ring.workDirectory + "/written")
            }
            // The other two nodes stop answering: the close's push stalls on them (node 0 still answers metadata).
            for node in [1, 2] { ring.ring.members[node].process?.send(SIGSTOP) }
            defer { for node in [1, 2] { ring.ring.members[node].process?.send(SIGCONT) } }
            FileManager.default.createFile(atPath: ring.workDirectory + "/go", contents: nil)
            usleep(300_000)
            let during = try ring.ok(#"""
                timeout 10 stat -c %s "$M/big" && timeout 10 ls -l "$M" | grep -c -e big -e small && timeout 10 cat "$M/small"
                """#, timeoutSeconds: 30)
            #expect(Lines.of(during) == ["67108864", "2", "small file"], "\(during)")
            #expect(writer.process.termination == nil && !writer.output.contains("closed"),
                    "the close did not wait for the stalled ring, so this showed nothing: \(writer.output)")
            for node in [1, 2] { ring.ring.members[node].process?.send(SIGCONT) }
            guard writer.process.wait(seconds: 120) == .exited(0) else {
                Issue.record("writer: \(String(describing: writer.process.termination))\n\(writer.output)\n\(ring.diagnostics())")
                return
            }
            try ring.ok(#"cmp "$M/big" "$W/src""#, timeoutSeconds: 60)
        }
    }

    @Test("bugs found with ordinary tools: rmdir after unlink of an open file, ftruncate times, tar right after make")
    func ordinaryToolBugs() throws {
        try MountedRing.with(label: "toolbugs") { ring in
            // open(O_RDWR), write, unlink, pread, then rmdir of its directory: 0 (it was EIO).
            let unlinked = try ring.ok(#"""
                cd "$M" && python3 -c '
                import os
                os.mkdir("d")
                fd = os.open("d/x", os.O_RDWR | os.O_CREAT, 0o644)
                os.write(fd, b"abc" * 2000)
                os.unlink("d/x")
                print(os.pread(fd, 6, 3))
                os.rmdir("d")
                print(os.path.exists("d"), os.pread(fd, 3, 5997))
                os.close(fd)
                '
                """#)
            #expect(Lines.of(unlinked) == ["b'abcabc'", "False b'abc'"])
            // A successful ftruncate(2) updates ctime and mtime, at once and after the close.
            let times = try ring.ok(#"""
                cd "$M" && python3 -c '
                import os, time
                fd = os.open("c", os.O_RDWR | os.O_CREAT, 0o644)
                os.write(fd, b"x" * 100000)
                os.fsync(fd)
                before = os.fstat(fd)
                time.sleep(0.05)
                os.ftruncate(fd, 500)
                during = os.fstat(fd)
                print(during.st_ctime_ns > before.st_ctime_ns, during.st_mtime_ns > before.st_mtime_ns, during.st_size)
                os.close(fd)
                after = os.stat("c")
                print(after.st_ctime_ns > before.st_ctime_ns, after.st_mtime_ns > before.st_mtime_ns, after.st_size)
                '
                """#)
            #expect(Lines.of(times) == ["True True 500", "True True 500"])
            // make in a fresh clone of a C project, then at once tar czf of its tree: no "file changed as we read it".
            try ring.ok(#"""
                mkdir -p "$W/proj/src" && cd "$W/proj" && for i in 1 2 3 4 5 6 7 8; do
                    printf 'int f%d(int x) { return x * %d + 1; }\n' $i $i > src/f$i.c
                done
                printf 'int f1(int);\nint main(void) { return f1(0) - 1; }\n' > src/main.c
                printf 'OBJS := $(patsubst src/%%.c,build/%%.o,$(wildcard src/*.c))\nbin/app: $(OBJS) | bin\n\tcc -o $@ $(OBJS)\nbuild/%%.o: src/%%.c | build\n\tcc -O1 -c $< -o $@\nbuild bin:\n\tmkdir -p $@\n' > Makefile
                git init -q && git add . && git -c user.name=t -c user.email=t@t commit -qm project
                """#)
            for run in 1...3 {
                let output = try ring.ok(#"""
                    cd "$M" && git clone -q "$W/proj" tree\#(run) && make -s -C tree\#(run) -j2 && tar czf "$W/tree\#(run).tgz" tree\#(run) && ./tree\#(run)/bin/app && echo built
                    """#, timeoutSeconds: 120)
                #expect(output == "built\n", "run \(run): \(output)")
            }
        }
    }
}
