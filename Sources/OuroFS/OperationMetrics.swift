import Metrics
import OuroClient

/// What a mount counts for `/metrics` (swift-metrics; the HTTP side renders it): FUSE operations by type, their
/// errors (any errno the file system answered) and latency, and the bytes applications read and wrote.
final class OperationMetrics: Sendable {
    private let operations = TimedCounts(prefix: "ouro_mount_operation", label: "operation")
    let bytesRead = Metrics.Counter(label: "ouro_mount_read_bytes_total")
    let bytesWritten = Metrics.Counter(label: "ouro_mount_written_bytes_total")

    /// `lookup(_:_:_:)` → `lookup`.
    static func name(of function: String) -> String {
        String(function.prefix { $0 != "(" })
    }

    func record(_ function: String, nanoseconds: Int64, failed: Bool) {
        operations.record(Self.name(of: function), nanoseconds: nanoseconds, failed: failed)
    }
}
