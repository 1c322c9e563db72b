import Metrics
import Synchronization

/// Counts, errors and a latency histogram of one kind of work, split by one label (a node's requests by command, a
/// mount's FUSE operations by type): `<prefix>s_total`, `<prefix>_errors_total`, `<prefix>_duration_seconds`. The
/// metrics of each label value are made once; recording takes a lock and three updates.
public final class TimedCounts: @unchecked Sendable {
    private let prefix: String
    private let label: String
    private let lock = Lock()
    private var byValue: [String: (count: Metrics.Counter, errors: Metrics.Counter, seconds: Metrics.Timer)] = [:]

    /// `TimedCounts(prefix: "ouro_node_request", label: "command")`.
    public init(prefix: String, label: String) {
        self.prefix = prefix
        self.label = label
    }

    public func record(_ value: String, nanoseconds: Int64, failed: Bool) {
        let metrics = lock.withLock {
            if let known = byValue[value] { return known }
            let dimensions = [(label, value)]
            let made = (Metrics.Counter(label: "\(prefix)s_total", dimensions: dimensions),
                        Metrics.Counter(label: "\(prefix)_errors_total", dimensions: dimensions),
                        Metrics.Timer(label: "\(prefix)_duration_seconds", dimensions: dimensions))
            byValue[value] = made
            return made
        }
        metrics.count.increment()
        if failed { metrics.errors.increment() }
        metrics.seconds.recordNanoseconds(nanoseconds)
    }
}

extension SocketTraffic {
    private static let reported = Mutex<(received: UInt64, sent: UInt64)>((0, 0))

    /// Adds what the sockets moved since the last call to `<prefix>_received_bytes_total` and
    /// `<prefix>_sent_bytes_total` (called at each scrape).
    public static func addToCounters(prefix: String) {
        let (received, sent) = (self.received.load(ordering: .relaxed), self.sent.load(ordering: .relaxed))
        let (newReceived, newSent) = reported.withLock { last in
            defer { last = (received, sent) }
            return (received - min(received, last.received), sent - min(sent, last.sent))
        }
        Metrics.Counter(label: "\(prefix)_received_bytes_total").increment(by: Int64(newReceived))
        Metrics.Counter(label: "\(prefix)_sent_bytes_total").increment(by: Int64(newSent))
    }
}
