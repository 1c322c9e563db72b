import Foundation
import Glibc
import OuroCore
import Testing

/// The web dashboard every node serves on its `--http` port: its JSON behind the cluster secret, and the page in a
/// real headless browser (chromium) following a node's death and return without a reload.
@Suite struct DashboardTests {
    /// `Tests/browser/dashboard.py` (this file is `Tests/OuroTests/DashboardTests.swift`).
    static let browserScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("browser/dashboard.py").path

    /// An HTTP request made by Python (as a browser or script would): the status, then the body.
    static func request(_ url: String, method: String = "GET", body: String? = nil, cookie: String? = nil,
                        in directory: String) throws -> (status: Int, body: String, setCookie: String?) {
        let script = """
            python3 - '\(url)' '\(method)' <<'EOF'
            import sys, urllib.request, urllib.error
            data = \(body.map { "'" + $0 + "'.encode()" } ?? "None")
            request = urllib.request.Request(sys.argv[1], data=data, method=sys.argv[2])
            \(cookie.map { "request.add_header('Cookie', '\($0)')" } ?? "")
            try:
                r = urllib.request.urlopen(request, timeout=20)
                status, body, cookie = r.status, r.read().decode(), r.headers.get('Set-Cookie') or ''
            except urllib.error.HTTPError as e:
                status, body, cookie = e.code, e.read().decode(), ''
            print(status); print(cookie); sys.stdout.write(body)
            EOF
            """
        let (termination, output) = try ChildProcess.shell(script, in: directory, timeoutSeconds: 40)
        let lines = String(decoding: output, as: UTF8.self).split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
        guard termination == .exited(0), lines.count == 3, let status = Int(lines[0]) else {
            throw TestFailure("\(method) \(url): \(termination) \(String(decoding: output, as: UTF8.self))")
        }
        return (status, String(lines[2]), lines[1].isEmpty ? nil : String(lines[1]))
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    @Test func apiNeedsTheSecretAndShowsRingFilesAndCopies() throws {
        var settings = Ring.Settings()
        settings.secret = "dashboard-secret-1"
        settings.http = true
        let ring = try Ring(nodes: 3, settings: settings, label: "dash-api")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("dashboard"))
        #expect(try ring.push(0, name: "docs/guide.bin", bytes: generator.bytes(2_000_000)).last == "OK")
        let base = "http://127.0.0.1:\(try #require(ring.members[1].httpPort))"
        try waitUntil("the dashboard to answer", timeoutSeconds: 20) {
            (try? Self.request(base + "/api/session", in: ring.directory))?.status == 200
        }

        // Without the secret: the page loads (it asks for the secret), the data does not.
        let page = try Self.request(base + "/", in: ring.directory)
        #expect(page.status == 200 && page.body.contains("<title>OuroborosFS</title>"))
        #expect(try Self.json(try Self.request(base + "/api/session", in: ring.directory).body)["authorized"] as? Bool == false)
        for path in ["/api/ring", "/api/events", "/api/dir?path=/", "/api/file?path=/docs/guide.bin"] {
            let refused = try Self.request(base + path, in: ring.directory)
            #expect(refused.status == 401 && !refused.body.contains("guide"), "\(path): \(refused)")
        }
        #expect(try Self.request(base + "/api/verify", method: "POST", in: ring.directory).status == 401)
        #expect(try Self.request(base + "/api/ring", cookie: "ouro_session=0000", in: ring.directory).status == 401)
        let wrong = try Self.request(base + "/api/login", method: "POST", body: "not-it", in: ring.directory)
        #expect(wrong.status == 401 && wrong.setCookie == nil)

        // With it: a session cookie that is not the secret.
        let login = try Self.request(base + "/api/login", method: "POST", body: "dashboard-secret-1", in: ring.directory)
        let setCookie = try #require(login.setCookie)
        #expect(login.status == 200 && setCookie.contains("HttpOnly") && !setCookie.contains("dashboard-secret-1"), "\(setCookie)")
        let cookie = String(setCookie.split(separator: ";")[0])

        let picture = try Self.json(try Self.request(base + "/api/ring", cookie: cookie, in: ring.directory).body)
        let members = try #require(picture["members"] as? [[String: Any]])
        #expect(members.map { $0["address"] as? String } == (0..<3).map { ring.address($0).description })
        #expect(members.allSatisfy { $0["state"] as? String == "alive" })
        #expect(members.map { $0["next"] as? String } == [1, 2, 0].map { ring.address($0).description })

        let root = try Self.json(try Self.request(base + "/api/dir?path=/", cookie: cookie, in: ring.directory).body)
        let rootEntries = try #require(root["entries"] as? [[String: Any]])
        #expect(rootEntries.map { $0["name"] as? String } == ["docs"] && rootEntries.first?["kind"] as? String == "directory")
        let docs = try Self.json(try Self.request(base + "/api/dir?path=/docs", cookie: cookie, in: ring.directory).body)
        let guide = try #require((docs["entries"] as? [[String: Any]])?.first)
        #expect(guide["name"] as? String == "guide.bin" && guide["sizeBytes"] as? Int == 2_000_000)
        #expect(guide["copies"] as? Int == 2 && guide["wanted"] as? Int == 2)
        #expect(try Self.request(base + "/api/dir?path=/nothing", cookie: cookie, in: ring.directory).status == 404)

        // Verify: every node scrubs now, and the file's copies then carry the time they were read back.
        let verify = try Self.json(try Self.request(base + "/api/verify", method: "POST", cookie: cookie, in: ring.directory).body)
        #expect(verify["result"] as? String == "scrub started on 3 of 3 live nodes")
        try waitUntil("every copy of guide.bin read back", timeoutSeconds: 30) {
            let file = try? Self.json(try Self.request(base + "/api/file?path=/docs/guide.bin", cookie: cookie, in: ring.directory).body)
            let verification = file?["verification"] as? [String: Any]
            return verification?["copies"] as? Int == 6 && verification?["unverified"] as? Int == 0
        }
        let file = try Self.json(try Self.request(base + "/api/file?path=/docs/guide.bin", cookie: cookie, in: ring.directory).body)
        let chunks = try #require(file["chunks"] as? [[String: Any]])
        #expect(chunks.count == 3 && chunks.allSatisfy { ($0["holders"] as? [[String: Any]])?.count == 2 })
        let oldest = try #require((file["verification"] as? [String: Any])?["oldest"] as? Double)
        #expect(abs(oldest - Date().timeIntervalSince1970) < 120)
        let scrubbed = try Self.json(try Self.request(base + "/api/ring", cookie: cookie, in: ring.directory).body)
        for member in try #require(scrubbed["members"] as? [[String: Any]]) {
            let scrub = try #require(member["scrub"] as? [String: Any])
            #expect(scrub["finishedAt"] != nil && scrub["corrupt"] as? Int == 0, "\(member)")
        }

        // Events: a ring picture as a server-sent event.
        let events = try ChildProcess.shell("timeout 3 python3 -c \"import urllib.request as u; r = u.Request('\(base)/api/events'); "
                                            + "r.add_header('Cookie', '\(cookie)'); s = u.urlopen(r); print(s.readline().decode().strip())\"",
                                            in: ring.directory, timeoutSeconds: 20)
        #expect(String(decoding: events.output, as: UTF8.self).contains("event: ring"), "\(String(decoding: events.output, as: UTF8.self))")

        // Heal answers as NODE HEAL does.
        let heal = try Self.json(try Self.request(base + "/api/heal", method: "POST", cookie: cookie, in: ring.directory).body)
        #expect((heal["result"] as? String)?.hasPrefix("OK") == true, "\(heal)")
    }

    /// The page in chromium: the secret prompt, the ring, the file tree, then a killed node shown dead and, once
    /// started again, alive — all without a reload.
    @Test func browserFollowsANodesDeathAndReturn() throws {
        guard access("/usr/bin/chromium", X_OK) == 0, access("/usr/bin/chromedriver", X_OK) == 0 else {
            Issue.record("chromium and chromium-driver are not installed (.ci/run installs them)")
            return
        }
        var settings = Ring.Settings()
        settings.secret = "dashboard-secret-2"
        settings.http = true
        let ring = try Ring(nodes: 3, settings: settings, label: "dash-browser")
        defer { ring.shutdown() }
        var generator = PseudoRandomBytes(seed: TestSeed.derived("dashboard-browser"))
        for (name, size) in [("docs/guide.bin", 3_000_000), ("docs/notes.txt", 800), ("photos/2026/lake.jpg", 1_500_000), ("readme.md", 4_000)] {
            #expect(try ring.push(0, name: name, bytes: generator.bytes(size)).last == "OK")
        }
        let signals = ring.directory + "/signals"
        try FileManager.default.createDirectory(atPath: signals, withIntermediateDirectories: true)
        let screenshot = ring.directory + "/dashboard.png"
        let watched = ring.address(2)
        let browser = try ChildProcess(executable: "/usr/bin/env", arguments: ["python3", 
            Self.browserScript, "--url", "http://127.0.0.1:\(try #require(ring.members[0].httpPort))/",
            "--secret-file", ring.secretPath, "--nodes", "3", "--watch", watched.description,
            "--signals", signals, "--screenshot", screenshot], outputPath: ring.directory + "/browser.log")
        defer { ProcessTable.killTree(browser) }
        func seen(_ name: String) -> Bool { access(signals + "/" + name, F_OK) == 0 }
        func log() -> String { (try? String(contentsOfFile: ring.directory + "/browser.log", encoding: .utf8)) ?? "" }

        try waitUntil("the page to show every node alive", timeoutSeconds: 90) { seen("alive") || !browser.isRunning }
        try #require(seen("alive"), "\(log())")
        ring.kill(2)
        try waitUntil("the page to show node 2 dead", timeoutSeconds: 60) { seen("dead") || !browser.isRunning }
        try #require(seen("dead"), "\(log())")
        try ring.start(2)
        let ended = browser.wait(seconds: 90)
        #expect(ended == .exited(0) && seen("back"), "\(String(describing: ended)) \(log())")
        #expect(((try? FileManager.default.attributesOfItem(atPath: screenshot)[.size] as? Int) ?? 0) > 10_000, "no screenshot: \(log())")
        // DASHBOARD_SCREENSHOT=docs/dashboard.png keeps the picture (how the one in docs/ was made).
        if let keep = ProcessInfo.processInfo.environment["DASHBOARD_SCREENSHOT"] {
            _ = try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: screenshot, toPath: keep)
        }
    }
}
