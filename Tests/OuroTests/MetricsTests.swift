import Foundation
import Glibc
import OuroCore
import Testing

/// `GET /metrics` on a node's and a mount's `--http` port: the Prometheus text format, with what the process did.
@Suite struct MetricsTests {
    /// The page at `url`, fetched by Python (as a scraper would over HTTP): its Content-Type line, then the body.
    static func fetch(_ url: String, in directory: String) throws -> (contentType: String, body: String) {
        let script = "python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=10); "
            + "print(r.headers[\"Content-Type\"]); sys.stdout.write(r.read().decode())' '\(url)'"
        let (status, output) = try ChildProcess.shell(script, in: directory, timeoutSeconds: 30)
        let text = String(decoding: output, as: UTF8.self)
        guard status == .exited(0), let newline = text.firstIndex(of: "\n") else { throw TestFailure("GET \(url): \(status) \(text)") }
        return (String(text[..<newline]), String(text[text.index(after: newline)...]))
    }

    /// Every line is a comment or `name{labels} value`; returns the samples by their name with labels.
    static func samples(_ body: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            // The value follows the last space (label values may hold spaces: `command="NODE PING"`).
            let space = line.lastIndex(of: " ") ?? line.endIndex
            let (name, value) = (String(line[..<space]), Double(line[line.index(after: min(space, line.index(before: line.endIndex)))...]))
            #expect(value != nil && name.range(of: #"^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})?$"#, options: .regularExpression) != nil,
                    "not a Prometheus sample: \(line)")
            if let value { samples[name] = value }
        }
        return samples
    }

    @Test func nodeCountsRequestsAndReportsWhatItHolds() throws {
        let directory = try TestEnvironment.makeScratchDirectory("metrics-node")
        defer { TestEnvironment.removeScratchDirectory(directory) }
        let (port, http) = (try PortAllocator.freePort(), try PortAllocator.freePort())
        let node = try ChildProcess(executable: TestEnvironment.ouroExecutable,
                                    arguments: ["node", "--listen", "127.0.0.1:\(port)", "--data", directory + "/data", "--copies", "1",
                                                "--http", "127.0.0.1:\(http)"], outputPath: directory + "/node.log")
        defer { node.stop() }
        // A pid file in the scratch directory: a later run's sweep stops the node if this run dies before the defer.
        try? "\(node.pid)\n".write(toFile: directory + "/node.pid", atomically: false, encoding: .utf8)
        let address = NodeAddress(host: "127.0.0.1", port: port)
        try waitUntil("the node to answer", timeoutSeconds: 20) { Wire.ping(address) }
        try waitUntil("its HTTP port to answer", timeoutSeconds: 20) { (try? Self.fetch("http://127.0.0.1:\(http)/", in: directory)) != nil }
        for _ in 0..<3 { _ = try Wire.request(address, "NODE PING") }
        _ = try? Wire.request(address, "FILE STAT no/such/file")
        var generator = PseudoRandomBytes(seed: TestSeed.derived("metrics"))
        let bytes = generator.bytes(70_000)
        try Data(bytes).write(to: URL(fileURLWithPath: directory + "/in.bin"))
        let (pushed, output) = try ChildProcess.shell("\(TestEnvironment.ouroExecutable) push --node \(address) \(directory)/in.bin in.bin",
                                                      in: directory)
        #expect(pushed == .exited(0), "\(String(decoding: output, as: UTF8.self))")

        let (contentType, body) = try Self.fetch("http://127.0.0.1:\(http)/metrics", in: directory)
        #expect(contentType.hasPrefix("text/plain; version=0.0.4"))
        let samples = Self.samples(body)
        #expect(samples[#"ouro_node_requests_total{command="NODE PING"}"#] ?? 0 >= 3, "\(body)")
        #expect(samples[#"ouro_node_request_duration_seconds_count{command="NODE PING"}"#] ?? 0 >= 3)
        #expect(samples[#"ouro_node_request_duration_seconds_bucket{command="NODE PING",le="+Inf"}"#] ?? 0 >= 3, "\(body)")
        #expect(samples[#"ouro_node_requests_total{command="FILE PUSH"}"#] == 1)
        #expect(samples[#"ouro_node_request_errors_total{command="FILE STAT"}"#] == 1)
        #expect(samples["ouro_node_chunks"] == 1 && samples["ouro_node_chunk_bytes"] == 70_000, "\(body)")
        #expect(samples["ouro_node_catalog_files"] ?? 0 >= 1)
        #expect(samples["ouro_node_disk_free_bytes"] ?? 0 > 0)
        #expect(samples["ouro_node_received_bytes_total"] ?? 0 >= 70_000, "\(body)")
        // A scrub pass asked for shows its progress: the one copy checked, none corrupt.
        #expect(try Wire.request(address, "NODE SCRUB") == ["OK scrub requested"])
        try waitUntil("the scrub pass in the metrics", timeoutSeconds: 20) {
            let scrub = Self.samples(try Self.fetch("http://127.0.0.1:\(http)/metrics", in: directory).body)
            return scrub["ouro_node_scrub_running"] == 0 && scrub["ouro_node_scrub_total"] == 1 && scrub["ouro_node_scrub_checked"] == 1
                && scrub["ouro_node_scrub_corrupt"] == 0
        }
        // Counted once more on the next scrape, not reset.
        _ = try Wire.request(address, "NODE PING")
        let again = Self.samples(try Self.fetch("http://127.0.0.1:\(http)/metrics", in: directory).body)
        #expect(again[#"ouro_node_requests_total{command="NODE PING"}"#] == (samples[#"ouro_node_requests_total{command="NODE PING"}"#] ?? 0) + 1)
        #expect(again["ouro_node_received_bytes_total"] ?? 0 >= samples["ouro_node_received_bytes_total"] ?? 0)
    }

    @Test func mountCountsOperationsAndBytes() throws {
        try MountedRing.with(mountOn: [], label: "metrics-mount") { ring in
            let http = try PortAllocator.freePort()
            try ring.mount(onNode: 0, extraArguments: ["--http", "127.0.0.1:\(http)"])
            // The rmdir of a directory that is not empty fails (ENOTEMPTY, decided by the ring): an operation and an error.
            try ring.ok(#"head -c 200000 /dev/urandom > "$M/f" && cat "$M/f" > /dev/null && mkdir "$M/d" && touch "$M/d/x" && ! rmdir "$M/d" 2>/dev/null"#)
            let samples = Self.samples(try Self.fetch("http://127.0.0.1:\(http)/metrics", in: ring.workDirectory).body)
            #expect(samples["ouro_mount_written_bytes_total"] == 200_000)
            #expect(samples["ouro_mount_read_bytes_total"] ?? 0 >= 200_000)
            #expect(samples[#"ouro_mount_operations_total{operation="mkdir"}"#] == 1)
            #expect(samples[#"ouro_mount_operation_errors_total{operation="mkdir"}"#] == 0)
            #expect(samples[#"ouro_mount_operations_total{operation="rmdir"}"#] == 1)
            #expect(samples[#"ouro_mount_operation_errors_total{operation="rmdir"}"#] == 1)
            #expect(samples[#"ouro_mount_operations_total{operation="write"}"#] ?? 0 >= 1)
            #expect(samples[#"ouro_mount_operation_duration_seconds_count{operation="create"}"#] ?? 0 >= 1)
            #expect(samples["ouro_mount_open_files"] == 0)
        }
    }
}
