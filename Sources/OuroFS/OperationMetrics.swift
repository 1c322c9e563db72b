import Metrics
import OuroClient

/// What a mount counts for `/metrics` (swift-metrics; the HTTP side renders it): FUSE operations by type, their
/// errors (any errno, ENOENT of a lookup included) and latency, and the bytes applications read and wrote.
final class OperationMetrics: @unchecked Sendable {
    private let lock = Lock()
    private var byOperation: [String: (operations: Metrics.Counter, errors: Metrics.Counter, seconds: Metrics.Timer)] = [:]
    let bytesRead = Metrics.Counter(label: "ouro_mount_read_bytes_total")
    let bytesWritten = Metrics.Counter(label: "ouro_mount_written_bytes_total")

    /// `lookup(_:_:_:)` → `lookup`.
    static func name(of function: String) -> String {
        String(function.prefix { $0 != "(" })
    }

    func record(_ function: String, nanoseconds: Int64, failed: Bool) {
        let metrics = lock.withLock {
            if let known = byOperation[function] { return known }
            let dimensions = [("operation", Self.name(of: function))]
            let made = (Metrics.Counter(label: "ouro_mount_operations_total", dimensions: dimensions),
                        Metrics.Counter(label: "ouro_mount_operation_errors_total", dimensions: dimensions),
                        Metrics.Timer(label: "ouro_mount_operation_duration_seconds", dimensions: dimensions))
            byOperation[function] = made
            return made
        }
        metrics.operations.increment()
        if failed { metrics.errors.increment() }
        metrics.seconds.recordNanoseconds(nanoseconds)
    }
}
