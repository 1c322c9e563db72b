import ArgumentParser
import Glibc
import Logging
import OuroClient
import OuroCore
import OuroHTTP
import OuroNode
import SystemPackage

struct NodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "node", abstract: "Run one node in the foreground.")

    @Option(help: "Address to listen on (host:port).") var listen: NodeAddress
    @Option(help: "Directory for this node's chunks and catalog.") var data: String
    @Option(help: "Successor in the ring (host:port).") var next: NodeAddress?
    @Option(help: "Join the ring that this node belongs to (host:port).") var join: NodeAddress?
    @Option(name: .customLong("gossip-interval"), help: "Milliseconds between pings and catalog syncs.") var gossipInterval = 1000
    @Option(name: .customLong("max-file-size"), help: "Largest file accepted, in bytes.") var maxFileSize = Limits.defaultMaxFileSizeBytes
    @Option(help: "Copies of every chunk (1 = no copies).") var copies = 2
    @Option(name: .customLong("grace-period"), help: "Seconds a node may stay dead before its chunks are re-replicated elsewhere.") var gracePeriod = 60
    @Option(name: .customLong("scrub-interval"), help: "Seconds between scrub passes over every local chunk copy.") var scrubInterval = 600
    @Option(name: .customLong("secret-file"), help: "File holding the cluster secret: TCP connections (from clients and to peers) are TLS 1.3 keyed by it, which proves it both ways.")
    var secretFile: String?
    @Option(help: "Serve the web dashboard (/) and GET /metrics (Prometheus text) on this address (host:port).") var http: NodeAddress?
    @Flag(help: "Do not require encryption: allow running without a cluster secret on an address other than loopback, and with a secret accept (and use) plain-text connections that prove it by the challenge (NODE HELLO, NODE PROVE). Trusted networks only.")
    var insecure = false

    func run() throws {
        Signals.block()
        limitMallocArenas(keepFreeBytes: 4 << 20)  // each request's stream buffer is reused, not faulted in again
        bootstrapLogging()
        guard copies >= 1, gossipInterval >= 10 else { throw fail("--copies must be ≥ 1 and --gossip-interval ≥ 10") }
        var configuration = NodeConfiguration(listen: listen, dataDirectory: FilePath(data))
        configuration.next = next
        configuration.join = join
        configuration.gossipIntervalMilliseconds = gossipInterval
        configuration.maxFileSizeBytes = maxFileSize
        configuration.copies = copies
        configuration.gracePeriodSeconds = gracePeriod
        configuration.scrubIntervalSeconds = scrubInterval
        // A node given the secret in the environment requires it too (not only sends it).
        if let secretFile = secretFile ?? ProcessInfoLite.environment("OURO_SECRET_FILE") {
            do { configuration.secret = try ClientSecret.load(file: secretFile) } catch { throw fail("\(error)") }
            ClientSecret.use(configuration.secret)
        }
        if insecure {
            configuration.requiresEncryption = false
            ClientSecret.use(encryption: false)
        }
        if configuration.secret == nil && !insecure {
            for address in [listen] + (http.map { [$0] } ?? []) where !address.isLoopback {
                throw fail("\(address) is reachable from other machines, and this node has no cluster secret: anyone there could "
                           + "read, change or stop the ring. Give it --secret-file FILE (the same file on every node; e.g. "
                           + "`openssl rand -hex 32 > FILE`), or --insecure on a network you trust.")
            }
        }
        let logger = Logger(label: "ouro.node.\(listen)")
        let node: Node
        do {
            node = try Node(configuration: configuration, logger: logger)
        } catch {
            throw fail("cannot start the node: \(error)")
        }
        if let http {
            MetricsServer.start(on: http, logger: logger, dashboard: Dashboard(node: listen, secret: configuration.secret)) {
                node.collectMetrics()
            }
            logger.info("dashboard served", metadata: ["address": "http://\(http)/", "metrics": "http://\(http)/metrics"])
        }
        node.start()
        let signal = Signals.wait()
        logger.info("stopping", metadata: ["signal": "\(signal)"])
        node.stop()
    }
}
