import Foundation
import Glibc
import OuroCore
import Testing

/// The fuzzing corpora (`fuzz/corpus/request`, grown by `fuzz/run.sh`, and `fuzz/corpus/node`, by `fuzz/run-node.sh`,
/// both under libFuzzer and AddressSanitizer) replayed on every run: each parser input through the parser as the
/// fuzz target feeds it, then sessions sent to live nodes, which must keep answering. A crash that fuzzing finds is
/// added to the corpus and so stays a test.
@Suite struct FuzzCorpusTests {
    static let corpora = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fuzz/corpus").path

    /// The inputs of `fuzz/corpus/<name>`: `request` (the parser target's), `node` (the live-node target's).
    static func inputs(_ name: String = "request") throws -> [(name: String, bytes: [UInt8])] {
        let corpus = corpora + "/" + name
        return try FileManager.default.contentsOfDirectory(atPath: corpus).sorted().map {
            ($0, Array(try Data(contentsOf: URL(fileURLWithPath: corpus + "/" + $0))))
        }
    }

    @Test func theParserTakesEveryInput() throws {
        let inputs = try Self.inputs()
        #expect(inputs.count >= 8)
        for (_, data) in inputs { ParserExercise.run(data) }
    }

    /// Every line input as a session of its own on a node with a cluster secret (what a stranger can send) and on
    /// one without (where every command runs): the nodes answer pings afterwards and keep their files.
    @Test func liveNodesSurviveTheCorpus() throws {
        for secret in ["fuzz-secret", nil] as [String?] {
            let ring = try Ring(nodes: 2, settings: Ring.Settings(secret: secret), label: secret == nil ? "fuzz-open" : "fuzz-closed")
            defer { ring.shutdown() }
            let kept = Array("kept through the corpus\n".utf8)
            #expect(try ring.push(0, name: "kept.txt", bytes: kept).last == "OK")
            var sessions = 0
            // A sample of the parser's corpus, and the live-node target's inputs for this kind of node (its first
            // byte picks: even, the open node; odd, the one with a secret).
            // (Node inputs that join or walk other addresses are left to the fuzzer: each waits out unreachable
            // peers, up to 30 s a session.)
            let replayed = try Self.inputs().filter { ($0.bytes.first ?? 2) % 4 < 2 }
                + Self.inputs("node").filter {
                    let text = String(decoding: $0.bytes, as: UTF8.self)
                    return ($0.bytes.first ?? 0) % 2 == (secret == nil ? 0 : 1) && !text.contains("JOIN") && !text.contains("DISCOVER")
                }
            for (name, data) in replayed {
                // NODE LEAVE would take the node away on purpose: not what this checks.
                let text = String(decoding: data.dropFirst(), as: UTF8.self)
                guard !text.contains("NODE LEAVE") else { continue }
                let socket = try TestSocket(ring.address(sessions % 2), timeoutSeconds: 10)
                try? socket.send(Array(data.dropFirst()))
                socket.shutdownWrite()
                _ = try? socket.readToEnd()
                socket.close()
                sessions += 1
                #expect(ring.isRunning(0) && ring.isRunning(1), "a node died after \(name)")
            }
            #expect(sessions > 0)
            #expect(ring.ping(0) && ring.ping(1))
            // Behind the secret nothing ran, so nothing changed. (Without one the corpus may rewire or delete: it
            // is a stream of real commands.)
            if secret != nil { #expect(try ring.pull(1, name: "kept.txt") == kept) }
        }
    }
}
