import Glibc
import Metrics
import OuroClient
import OuroCore

/// What a node counts for `/metrics` (through swift-metrics; the HTTP side renders it): requests by command, their
/// errors and latency, and, at each scrape, gauges read from the node itself (`Node.collectMetrics`).
final class RequestMetrics: Sendable {
    private let requests = TimedCounts(prefix: "ouro_node_request", label: "command")

    /// The command of a request line that parsed: its first two words (`FILE PUSH`, `FS LOOKUP`), a closed set.
    static func command(of line: String) -> String {
        var words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).prefix(2).map(String.init)
        if words.count == 2, words[1].hasSuffix("\r") { words[1].removeLast() }
        return words.joined(separator: " ")
    }

    func record(_ command: String, nanoseconds: Int64, failed: Bool) {
        requests.record(command, nanoseconds: nanoseconds, failed: failed)
    }
}

extension Node {
    /// Sets the gauges a scrape reads: what this node stores, its disk, its catalog, its view of the ring.
    public func collectMetrics() {
        let info = info()
        let map = netmap
        func gauge(_ label: String, _ value: some BinaryInteger) { Metrics.Gauge(label: label).record(Int64(value)) }
        gauge("ouro_node_chunks", info.chunkFiles)
        gauge("ouro_node_chunk_bytes", info.chunkBytes)
        gauge("ouro_node_short_copies", info.underReplicatedChunks)
        gauge("ouro_node_repair_active", info.repair == "idle" ? 0 : 1)
        // The scrubber's pass: copies checked of the pass's total, and corrupt ones found in it.
        let scrub = scrub.current
        gauge("ouro_node_scrub_running", scrub.running ? 1 : 0)
        gauge("ouro_node_scrub_checked", scrub.checked)
        gauge("ouro_node_scrub_total", scrub.total)
        gauge("ouro_node_scrub_corrupt", scrub.corrupt)
        gauge("ouro_node_disk_total_bytes", info.usage.totalBytes)
        gauge("ouro_node_disk_free_bytes", info.usage.availableBytes)
        gauge("ouro_node_catalog_files", info.usage.files)
        gauge("ouro_node_catalog_records", info.catalogRecords)
        gauge("ouro_node_catalog_disk_bytes", catalog.diskBytes)
        gauge("ouro_node_members", map.members.count)
        gauge("ouro_node_members_alive", map.liveAddresses.count)
        gauge("ouro_node_netmap_epoch", map.epoch)
        SocketTraffic.addToCounters(prefix: "ouro_node")
    }
}
