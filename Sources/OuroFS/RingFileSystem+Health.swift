import Metrics
import OuroClient
import OuroCore

/// What the mount's health files (`HealthFiles`) read from the ring.
public protocol RingHealthSource: AnyObject, Sendable {
    /// `ouro status`'s table.
    func statusReport() throws -> String
    /// `NETMAP GET`'s lines.
    func netmapReport() throws -> String
    /// `FILE SHORT` as CSV (`name,copies,wanted`), at most `limit` rows, then a line saying how many more there were.
    func shortOfCopiesReport(limit: Int) throws -> String
    /// A regular file's content as the catalog has it now, with the netmap to judge its holders by; nil for other
    /// kinds of inode.
    func contentHealth(of inode: UInt64) throws -> (content: FileContent?, netmap: Netmap)?
    /// When the holders last read each copy of `content` back from disk and found it good.
    func verification(of content: FileContent?) -> CopyVerification
}

extension RingFileSystem: RingHealthSource {
    public func statusReport() throws -> String {
        let (map, infos) = try ring.call(idempotent: true) { try RingReport.fetch(from: $0.address, pool: ring.pool) }
        return RingReport.status(netmap: map, infos: infos)
    }

    public func netmapReport() throws -> String {
        RingReport.netmap(try ring.call(idempotent: true) { try $0.netmap() })
    }

    public func shortOfCopiesReport(limit: Int) throws -> String {
        try ring.call(idempotent: true) { node in
            var text = "name,copies,wanted\n"
            var rows = 0
            try node.shortOfCopies { row in
                rows += 1
                if rows <= limit { text += "\(CSV.field(row.name)),\(row.health.liveCopies),\(row.health.wantedCopies)\n" }
            }
            if rows > limit { text += "(and \(rows - limit) more: `printf 'FILE SHORT\\n' | nc -N <node>` lists them all)\n" }
            return text
        }
    }

    public func contentHealth(of inode: UInt64) throws -> (content: FileContent?, netmap: Netmap)? {
        try nameCreated(inDirectories: [], inodes: [inode])  // a file made here and not named yet has no content yet
        let found = try stat(inode)
        guard found.inode.kind == .file else { return nil }
        return (found.inode.content, try ring.call(idempotent: true) { try $0.netmap() })
    }

    public func verification(of content: FileContent?) -> CopyVerification {
        CopyVerification.of(content, pool: ring.pool)
    }
}

extension RingFileSystem {
    /// Sets the gauges a scrape of the mount's `/metrics` reads.
    public func collectMetrics() {
        let (files, handleCount, spooled, pending) = metricsSnapshot()
        Metrics.Gauge(label: "ouro_mount_open_files").record(files)
        Metrics.Gauge(label: "ouro_mount_open_handles").record(handleCount)
        // Bytes written by applications and held in local spools until their push: the mount's push queue.
        Metrics.Gauge(label: "ouro_mount_spooled_bytes").record(Int64(spooled))
        Metrics.Gauge(label: "ouro_mount_files_awaiting_name").record(pending)
        SocketTraffic.addToCounters(prefix: "ouro_mount")
    }
}
