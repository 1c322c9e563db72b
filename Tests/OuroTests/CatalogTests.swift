import OuroCore
import Testing

/// The catalog: metadata operations as plans of records, and merging records by version (deletes too).
@Suite struct CatalogTests {
    /// One node's view: a catalog, a clock for versions, and the log of every record it produced.
    final class Book {
        var catalog = Catalog()
        var clock: UInt64 = 0
        var log: [CatalogRecord] = []
        var origin = "127.0.0.1:7000"
        var lastID: UInt64 = 100

        func version() -> Version {
            clock += 1
            return Version(clock: clock, origin: origin)
        }

        func newID() -> UInt64 {
            lastID += 1
            return lastID
        }

        @discardableResult
        func run(_ plan: (Catalog, Version, Int64) throws -> Catalog.Change) throws -> Catalog.Change {
            let version = version()
            let change = try plan(catalog, version, Int64(version.clock))
            for record in change.records { catalog.apply(record) }
            log += change.records
            return change
        }

        /// Creates an inode; directories get an id derived from (parent, name), so the result says which.
        func make(_ kind: InodeKind, _ name: String, in parent: UInt64 = Inode.rootID) throws -> UInt64 {
            let id = newID()
            let change = try run { catalog, version, now in
                try catalog.planCreate(parent: parent, name: name, kind: kind, permissions: 0o644, uid: 0, gid: 0,
                                       version: version, nowNs: now, newID: id)
            }
            return change.resultInode!
        }

        func put(_ path: String, sizeBytes: UInt64 = 10) throws -> (inode: UInt64, content: FileContent) {
            let content = CatalogTests.content(sizeBytes)
            let name = try PathName(path)
            var ids = lastID
            let change = try run { catalog, version, now in
                try catalog.planPutFile(path: name, content: content, version: version, nowNs: now, newID: { ids += 1; return ids })
            }
            lastID = ids
            return (change.resultInode!, content)
        }

        func unlink(_ name: String, in parent: UInt64 = Inode.rootID) throws {
            try run { catalog, version, now in try catalog.planUnlink(parent: parent, name: name, version: version, nowNs: now) }
        }

        func rmdir(_ name: String, in parent: UInt64 = Inode.rootID) throws {
            try run { catalog, version, now in try catalog.planRmdir(parent: parent, name: name, version: version, nowNs: now) }
        }

        func rename(_ name: String, in parent: UInt64 = Inode.rootID, to newName: String,
                             into newParent: UInt64 = Inode.rootID, flags: UInt32 = 0) throws {
            try run { catalog, version, now in
                try catalog.planRename(parent: parent, name: name, newParent: newParent, newName: newName, flags: flags,
                                       version: version, nowNs: now)
            }
        }

        func link(_ inode: UInt64, as name: String, in parent: UInt64 = Inode.rootID) throws {
            try run { catalog, version, now in
                try catalog.planLink(inode: inode, newParent: parent, newName: name, version: version, nowNs: now)
            }
        }

        func id(_ path: String) -> UInt64? { catalog.resolve(try! PathName(path))?.id }
        func links(_ id: UInt64) -> Int? { catalog.inode(id).map { catalog.linkCount(of: $0) } }
        var rootLinks: Int { catalog.linkCount(of: catalog.inode(Inode.rootID)!) }
        var files: [String] { catalog.allFiles().map(\.path) }
    }

    static func content(_ sizeBytes: UInt64) -> FileContent {
        FileContent(id: ContentID.random(), sizeBytes: sizeBytes, start: NodeAddress("127.0.0.1:7000")!, copies: 1,
                    chunks: [ChunkPlacement(lengthBytes: sizeBytes, crc32c: 0, holders: [NodeAddress("127.0.0.1:7000")!])])
    }

    static func code(_ body: () throws -> Void) -> ErrorCode? {
        do {
            try body()
            return nil
        } catch let error as OuroError {
            return error.code
        } catch {
            return .internal
        }
    }

    /// Three nodes put a file each into directories none of them has yet (`ouro push` of photos into `album/`). The
    /// second hears of the first's put before its own; the third hears of the second's put (its file and the
    /// directory it touched) before it hears of the directory's name. Then every node gets every record. Returns
    /// the three books, merged.
    static func overtakenPuts(_ first: String, _ second: String, _ third: String) throws -> [Book] {
        let books = [Book(), Book(), Book()]
        for (index, book) in books.enumerated() {
            book.origin = ["a", "b", "c"][index]
            book.clock = UInt64(index * 100)
            book.lastID = UInt64(100 + index * 1000)
        }
        try books[0].put(first)
        for record in books[0].log { books[1].catalog.apply(record) }
        let secondStart = books[1].log.count
        try books[1].put(second)
        for record in books[1].log[secondStart...] { books[2].catalog.apply(record) }
        try books[2].put(third)
        for book in books {
            for other in books where other !== book { for record in other.log { book.catalog.apply(record) } }
        }
        return books
    }

    /// The third must still make its own `album` the same inode, or the others' files would vanish when the names
    /// merge.
    @Test func directoryCreatedElsewhereArrivesAfterItsContents() throws {
        for book in try Self.overtakenPuts("album/one", "album/two", "album/three") {
            let album = try #require(book.catalog.lookup(parent: Inode.rootID, name: "album"))
            #expect(Set(book.catalog.entries(of: album.id).map(\.name)) == ["one", "two", "three"], "on \(book.origin)")
        }
    }

    /// The same one level down: the third knows `album` only as a directory without a name, and `album/sub`
    /// already exists inside it; its push of `album/sub/three` goes into that `sub`, not into a new one.
    @Test func nestedDirectoryCreatedElsewhere() throws {
        for book in try Self.overtakenPuts("album/one", "album/sub/two", "album/sub/three") {
            let album = try #require(book.catalog.lookup(parent: Inode.rootID, name: "album"))
            let sub = try #require(book.catalog.lookup(parent: album.id, name: "sub"))
            #expect(Set(book.catalog.entries(of: album.id).map(\.name)) == ["one", "sub"], "on \(book.origin)")
            #expect(Set(book.catalog.entries(of: sub.id).map(\.name)) == ["two", "three"], "on \(book.origin)")
        }
    }

    /// A directory renamed away keeps its number; a new directory of its old name is another directory, also on a
    /// node that has seen the old name go but not yet the new one arrive.
    @Test func directoryRenamedAwayIsNotReused() throws {
        let book = Book()
        let logs = try book.make(.directory, "logs")
        let old = try book.put("logs/a.log")
        let split = book.log.count
        try book.rename("logs", to: "logs.1")
        let other = Book()
        other.clock = 100
        for record in book.log[..<split] { other.catalog.apply(record) }
        // The rename's removal of `logs` has arrived, its new name `logs.1` not yet.
        for record in book.log[split...] where record.dirent?.name == "logs" { other.catalog.apply(record) }
        let fresh = try other.make(.directory, "logs")
        #expect(fresh != logs, "a new directory must not take the renamed one's number")
        for record in book.log[split...] { other.catalog.apply(record) }
        let renamed = try #require(other.catalog.lookup(parent: Inode.rootID, name: "logs.1"))
        #expect(renamed.id == logs && other.catalog.entries(of: logs).map(\.name) == ["a.log"])
        #expect(other.catalog.entries(of: fresh).isEmpty && old.inode != fresh)
    }

    @Test func mkdirCreateAndLookup() throws {
        let book = Book()
        #expect(book.rootLinks == 2)
        let dir = try book.make(.directory, "d")
        let file = try book.make(.file, "f", in: dir)
        #expect(book.rootLinks == 3, "a subdirectory adds a link to its parent")
        #expect(book.links(dir) == 2)
        #expect(book.links(file) == 1)
        #expect(book.catalog.lookup(parent: dir, name: "f")?.id == file)
        #expect(book.id("d/f") == file)
        #expect(book.catalog.entries(of: Inode.rootID).map(\.name) == ["d"])
        #expect(book.files == ["d/f"])
        #expect(Self.code { _ = try book.make(.file, "f", in: dir) } == .exists)
        #expect(Self.code { _ = try book.make(.directory, "d") } == .exists)
        #expect(Self.code { _ = try book.make(.file, "x", in: file) } == .notDir)
        #expect(Self.code { _ = try book.make(.file, "x", in: 999_999) } == .notFound)
        #expect(Self.code { _ = try book.make(.file, "..") } == .badRequest)
        #expect(Self.code { _ = try book.make(.file, "a/b") } == .badRequest)
        #expect(Self.code { _ = try book.make(.file, "") } == .badRequest)
    }

    @Test func rmdirAndUnlink() throws {
        let book = Book()
        let dir = try book.make(.directory, "d")
        let file = try book.make(.file, "f", in: dir)
        #expect(Self.code { try book.rmdir("d") } == .notEmpty)
        #expect(Self.code { try book.rmdir("f", in: dir) } == .notDir)
        #expect(Self.code { try book.rmdir("missing") } == .notFound)
        #expect(Self.code { try book.unlink("d") } == .isDir)
        #expect(Self.code { try book.unlink("missing") } == .notFound)
        try book.unlink("f", in: dir)
        #expect(book.files == [])
        // A removed inode is GONE (a mount drops writes to it); one never heard of is only NOT_FOUND.
        #expect(Self.code { _ = try book.catalog.existing(file) } == .gone)
        #expect(Self.code { _ = try book.catalog.existing(987_654) } == .notFound)
        try book.rmdir("d")
        #expect(book.catalog.inode(dir) == nil)
        #expect(book.id("d") == nil)
        #expect(book.rootLinks == 2)
        // The name is free again.
        _ = try book.make(.directory, "d")
    }

    @Test func renameOverFile() throws {
        let book = Book()
        let (a, contentA) = try book.put("a", sizeBytes: 1)
        let (b, contentB) = try book.put("b", sizeBytes: 2)
        #expect(Self.code { try book.rename("a", to: "b", flags: Catalog.RenameFlags.noReplace) } == .exists)
        try book.rename("a", to: "b")
        #expect(book.id("b") == a)
        #expect(book.id("a") == nil)
        #expect(book.catalog.inode(b) == nil, "the replaced file had no other name: it is gone")
        #expect(book.links(a) == 1)
        #expect(book.files == ["b"])
        #expect(book.catalog.liveContentIDs() == [contentA.id], "the replaced content \(contentB.id) is garbage now")
        // Renaming onto itself changes nothing.
        let same = try book.run { catalog, version, now in
            try catalog.planRename(parent: Inode.rootID, name: "b", newParent: Inode.rootID, newName: "b", flags: 0,
                                   version: version, nowNs: now)
        }
        #expect(same.records.isEmpty)
    }

    @Test func renameKinds() throws {
        let book = Book()
        let file = try book.make(.file, "file")
        let empty = try book.make(.directory, "empty")
        let full = try book.make(.directory, "full")
        _ = try book.make(.file, "x", in: full)
        let moving = try book.make(.directory, "moving")
        #expect(Self.code { try book.rename("file", to: "empty") } == .isDir)
        #expect(Self.code { try book.rename("moving", to: "file") } == .notDir)
        #expect(Self.code { try book.rename("moving", to: "full") } == .notEmpty)
        #expect(Self.code { try book.rename("missing", to: "x") } == .notFound)
        try book.rename("moving", to: "empty")
        #expect(book.id("empty") == moving)
        #expect(book.catalog.inode(empty) == nil)
        #expect(book.rootLinks == 2 + 2, "root holds 'empty' (was 'moving') and 'full'")
        try book.rename("file", to: "inside", into: full)
        #expect(book.id("full/inside") == file)
        #expect(book.files == ["full/inside", "full/x"])
    }

    @Test func renameExchange() throws {
        let book = Book()
        let a = try book.make(.file, "a")
        let d = try book.make(.directory, "d")
        try book.rename("a", to: "d", flags: Catalog.RenameFlags.exchange)
        #expect(book.id("a") == d)
        #expect(book.id("d") == a)
        #expect(Self.code { try book.rename("a", to: "missing", flags: Catalog.RenameFlags.exchange) } == .notFound)
    }

    @Test func renameDirectoryIntoItself() throws {
        let book = Book()
        let d = try book.make(.directory, "d")
        let e = try book.make(.directory, "e", in: d)
        #expect(Self.code { try book.rename("d", to: "x", into: e) } == .badRequest)
        #expect(Self.code { try book.rename("d", to: "x", into: d) } == .badRequest)
        #expect(Self.code { try book.rename("d", to: "d", flags: Catalog.RenameFlags.exchange) } == nil, "same entry: nothing to do")
        #expect(book.id("d/e") == e, "nothing moved")
        // Moving the child out is fine.
        try book.rename("e", in: d, to: "e2")
        #expect(book.id("e2") == e)
        #expect(book.links(d) == 2)
    }

    @Test func hardLinks() throws {
        let book = Book()
        let dir = try book.make(.directory, "d")
        let (f, content) = try book.put("f")
        try book.link(f, as: "g")
        try book.link(f, as: "h", in: dir)
        #expect(book.links(f) == 3)
        #expect(book.id("g") == f)
        #expect(book.id("d/h") == f)
        #expect(book.files == ["d/h", "f", "g"])
        #expect(Self.code { try book.link(f, as: "g") } == .exists)
        #expect(Self.code { try book.link(dir, as: "dirlink") } == .denied)
        #expect(Self.code { try book.link(999_999, as: "x") } == .notFound)
        try book.unlink("f")
        #expect(book.links(f) == 2)
        #expect(book.catalog.inode(f) != nil)
        try book.unlink("g")
        #expect(book.links(f) == 1)
        #expect(book.catalog.liveContentIDs() == [content.id])
        try book.unlink("h", in: dir)
        #expect(book.catalog.inode(f) == nil, "the last name is gone, so is the inode")
        #expect(book.catalog.liveContentIDs().isEmpty)
    }

    @Test func putFileCreatesParentsAndReplacesContent() throws {
        let book = Book()
        let (first, _) = try book.put("a/b/c.txt", sizeBytes: 3)
        #expect(book.catalog.resolve(try PathName("a/b"))?.kind == .directory)
        let (second, newer) = try book.put("a/b/c.txt", sizeBytes: 7)
        #expect(second == first, "an overwrite keeps the inode")
        #expect(book.catalog.inode(first)?.content == newer)
        #expect(book.catalog.liveContentIDs() == [newer.id])
        #expect(Self.code { _ = try book.put("a/b") } == .isDir)
        #expect(Self.code { _ = try book.put("a/b/c.txt/d") } == .notDir)
        #expect(book.files == ["a/b/c.txt"])
    }

    /// A file written through the mount in segments: each segment is a content of its own for the chunk code
    /// (checksums, repair, garbage collection), a moved copy of one segment shows in the file's placement, and an
    /// overwrite makes every old segment garbage.
    @Test func segmentedContent() throws {
        let book = Book()
        let (file, _) = try book.put("big", sizeBytes: 1)
        let segments = [Self.content(64), Self.content(64), Self.content(5)]
        let whole = FileContent(id: ContentID.random(), segments: segments)
        #expect(whole.sizeBytes == 133 && whole.chunks.isEmpty && whole.pieces.map(\.id) == segments.map(\.id))
        try book.run { catalog, version, now in try catalog.planWriteContent(inode: file, content: whole, version: version, nowNs: now) }
        #expect(book.catalog.liveContentIDs() == Set(segments.map(\.id)))
        #expect(book.catalog.content(segments[1].id) == segments[1])
        #expect(Set(book.catalog.liveContents().map(\.id)) == Set(segments.map(\.id)))
        let moved = [NodeAddress("127.0.0.1:7009")!]
        try book.run { catalog, version, _ in catalog.planPlacement(content: segments[2].id, chunk: 0, holders: moved, version: version) }
        #expect(book.catalog.inode(file)?.content?.segments?[2].chunks[0].holders == moved)
        #expect(book.catalog.content(segments[2].id)?.chunks[0].holders == moved)
        #expect(book.catalog.inode(file)?.content?.segments?[0].chunks[0].holders == segments[0].chunks[0].holders)
        let (_, replacement) = try book.put("big", sizeBytes: 7)
        #expect(book.catalog.liveContentIDs() == [replacement.id])
    }

    /// A file a mount names on its first close: created with the mount's inode number and its bytes; a retry changes
    /// nothing; a name another client created meanwhile is replaced (its inode is gone if that was its only name);
    /// a directory of that name is not.
    @Test func createFileNamedOnClose() throws {
        let book = Book()
        let bytes: [UInt8] = Array("small".utf8)
        let content = FileContent(id: ContentID.random(), inline: bytes, start: NodeAddress("127.0.0.1:7000")!)
        func create(_ name: String, _ id: UInt64, _ content: FileContent?) throws -> Catalog.Change {
            try book.run { catalog, version, now in
                try catalog.planCreateFile(parent: Inode.rootID, name: name, id: id, permissions: 0o640, uid: 5, gid: 6,
                                           content: content, version: version, nowNs: now)
            }
        }
        let first = try create("f", 9001, content)
        #expect(first.resultInode == 9001)
        let created = try #require(book.catalog.lookup(parent: Inode.rootID, name: "f"))
        #expect(created.id == 9001 && created.permissions == 0o640 && created.uid == 5 && created.gid == 6)
        #expect(try created.content?.checkedInlineBytes() == bytes)
        #expect(try create("f", 9001, content).records.isEmpty, "a retry")
        let (other, _) = try book.put("g")
        #expect(Self.code { _ = try create("g", 9001, nil) } == .exists, "the inode number is taken by another name")
        // Replacing another client's file: it loses its only name and is gone.
        _ = try create("g", 9002, nil)
        #expect(book.catalog.lookup(parent: Inode.rootID, name: "g")?.id == 9002)
        #expect(book.catalog.inode(other) == nil)
        _ = try book.make(.directory, "d")
        #expect(Self.code { _ = try create("d", 9003, nil) } == .isDir)
        #expect(Self.code { _ = try create("h", 0, nil) } == .badRequest)
    }

    // MARK: Merging
    // MARK: Merging
    // MARK: Merging

    /// A history with creates, overwrites, renames, links, and deletes.
    static func history() throws -> Book {
        let book = Book()
        let docs = try book.make(.directory, "docs")
        _ = try book.put("docs/a.txt")
        let (b, _) = try book.put("docs/b.txt")
        _ = try book.put("docs/a.txt", sizeBytes: 99)
        try book.rename("b.txt", in: docs, to: "c.txt")
        try book.link(b, as: "c-link")
        _ = try book.put("tmp/scratch")
        try book.unlink("scratch", in: book.id("tmp")!)
        try book.rmdir("tmp")
        _ = try book.put("x")
        try book.rename("x", to: "a.txt", into: docs)
        return book
    }

    static func snapshot(_ catalog: Catalog) -> [String] {
        var lines: [String] = []
        func walk(_ directory: UInt64, _ prefix: String) {
            for (name, inode) in catalog.entries(of: directory) {
                lines.append("\(prefix)\(name) \(inode.id) \(inode.kind) \(inode.sizeBytes) \(catalog.linkCount(of: inode))")
                if inode.kind == .directory { walk(inode.id, prefix + name + "/") }
            }
        }
        walk(Inode.rootID, "")
        lines.append("root links \(catalog.linkCount(of: catalog.inode(Inode.rootID)!))")
        return lines
    }

    /// Records merged in any order give the same catalog: the newest version of each key wins.
    @Test func mergeInAnyOrder() throws {
        let book = try Self.history()
        let expected = Self.snapshot(book.catalog)
        #expect(expected.count == 5, "\(expected)")
        var forward = Catalog()
        for record in book.log { forward.apply(record) }
        #expect(Self.snapshot(forward) == expected)
        var backward = Catalog()
        for record in book.log.reversed() { backward.apply(record) }
        #expect(Self.snapshot(backward) == expected)
        var generator = PseudoRandomBytes(seed: TestSeed.derived("mergeInAnyOrder"))
        for _ in 0..<20 {
            var shuffled = book.log
            for index in shuffled.indices.reversed() where index > 0 {
                let other = Int(generator.bytes(4).reduce(0) { $0 << 8 | UInt32($1) } % UInt32(index + 1))
                shuffled.swapAt(index, other)
            }
            var merged = Catalog()
            for record in shuffled { merged.apply(record) }
            #expect(Self.snapshot(merged) == expected)
            // Merging everything again changes nothing.
            let changedAgain = book.log.map { merged.apply($0) }
            #expect(!changedAgain.contains(true))
        }
    }

    /// A delete merged into another catalog removes the file there, and the older create arriving late does not
    /// bring it back.
    @Test func mergeDeletes() throws {
        let origin = Book()
        _ = try origin.put("f")
        let created = origin.log
        var replica = Catalog()
        for record in created { replica.apply(record) }
        #expect(replica.allFiles().map(\.path) == ["f"])
        let before = origin.log.count
        try origin.unlink("f")
        let deleted = Array(origin.log[before...])
        for record in deleted {
            let changed = replica.apply(record)
            #expect(changed)
        }
        #expect(replica.allFiles().isEmpty)
        for record in created {
            let changed = replica.apply(record)
            #expect(!changed, "an older record is ignored")
        }
        #expect(replica.allFiles().isEmpty, "the delete stays")
        // A catalog that saw the delete first never shows the file either.
        var late = Catalog()
        for record in deleted + created { late.apply(record) }
        #expect(late.allFiles().isEmpty)
    }

    /// Two nodes that each accept a push into a directory neither has yet (`FILE PUSH … dir/a` on one,
    /// `… dir/b` on the other, at the same time) each create `dir`. After both merge everything, both
    /// acknowledged files must still be there — whichever `dir` wins, the other's entries may not vanish.
    @Test func concurrentPutsIntoANewDirectoryKeepBothFiles() throws {
        let first = Book()
        first.origin = "127.0.0.1:7000"
        let second = Book()
        second.origin = "127.0.0.1:7001"
        second.lastID = 5000
        _ = try first.put("dir/a")
        _ = try second.put("dir/b")
        for (label, records) in [("first's records first", first.log + second.log), ("second's first", second.log + first.log)] {
            var merged = Catalog()
            for record in records { merged.apply(record) }
            #expect(merged.allFiles().map(\.path) == ["dir/a", "dir/b"], "\(label)")
        }
    }

    @Test func olderAndEqualVersionsAreIgnored() throws {
        let newer = Inode(id: 5, version: Version(clock: 10, origin: "b"), kind: .file, permissions: 0o600, uid: 1, gid: 1, timeNs: 10)
        let older = Inode(id: 5, version: Version(clock: 9, origin: "z"), kind: .file, permissions: 0o644, uid: 2, gid: 2, timeNs: 9)
        let tie = Inode(id: 5, version: Version(clock: 10, origin: "b"), kind: .file, permissions: 0o777, uid: 3, gid: 3, timeNs: 10)
        let tieBroken = Inode(id: 5, version: Version(clock: 10, origin: "c"), kind: .file, permissions: 0o640, uid: 4, gid: 4, timeNs: 10)
        var catalog = Catalog()
        let changed1 = catalog.apply(CatalogRecord(newer))
        #expect(changed1)
        let changed2 = catalog.apply(CatalogRecord(older))
        #expect(!changed2)
        #expect(catalog.inode(5)?.permissions == 0o600)
        let changed3 = catalog.apply(CatalogRecord(tie))
        #expect(!changed3, "an equal version is not applied twice")
        #expect(catalog.inode(5)?.permissions == 0o600)
        let changed4 = catalog.apply(CatalogRecord(tieBroken))
        #expect(changed4, "same clock: the origin breaks the tie")
        #expect(catalog.inode(5)?.permissions == 0o640)

        let name = Dirent(parent: Inode.rootID, name: "n", version: Version(clock: 20, origin: "a"), inode: 5)
        let staleRemoval = Dirent(parent: Inode.rootID, name: "n", version: Version(clock: 19, origin: "a"), inode: nil)
        let changed5 = catalog.apply(CatalogRecord(name))
        #expect(changed5)
        let changed6 = catalog.apply(CatalogRecord(staleRemoval))
        #expect(!changed6)
        #expect(catalog.lookup(parent: Inode.rootID, name: "n")?.id == 5)
        #expect(catalog.linkCount(of: catalog.inode(5)!) == 1)
        let changed7 = catalog.apply(CatalogRecord(name))
        #expect(!changed7, "re-applying the same record changes nothing")
        #expect(catalog.linkCount(of: catalog.inode(5)!) == 1)
        let changed8 = catalog.apply(CatalogRecord(Inode.root))
        #expect(!changed8, "the root's zero version never overrides")
    }

    @Test func versionOrder() {
        #expect(Version(clock: 1, origin: "z") < Version(clock: 2, origin: "a"))
        #expect(Version(clock: 2, origin: "a") < Version(clock: 2, origin: "b"))
        #expect(Version.zero < Version(clock: 0, origin: "a"))
    }
}
