import Glibc
import Hummingbird
import Logging
import Metrics
import OuroCore
import Prometheus

/// A node's or a mount's HTTP port (`--http host:port`): `GET /metrics` answers every metric recorded in this
/// process through swift-metrics, in the Prometheus text format. `collect` runs first, on every scrape, to set the
/// gauges that are read rather than counted (chunks stored, disk free, open files…).
public enum MetricsServer {
    /// The registry every metric of this process lands in (swift-metrics is bootstrapped once, to it).
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Request and operation latencies: from 50 µs (a cached FUSE answer) to 10 s (a big push).
        let microseconds: [Int64] = [50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
                                     500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000]
        factory.defaultDurationHistogramBuckets = microseconds.map { Duration.microseconds($0) }
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Sets swift-metrics up to record into our registry; call before any metric is made (at start-up).
    public static func bootstrap() { _ = registry }

    /// The text a scrape returns.
    public static func render(collect: () -> Void) -> [UInt8] {
        collect()
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }

    /// Serves `/metrics` on `address` until the process ends, with the web dashboard at `/` when one is given (a
    /// node's port) or a pointer to `/metrics` (a mount's); returns at once. A port that cannot be bound is logged
    /// and ends the process: the user asked for it.
    public static func start(on address: NodeAddress, logger: Logger, dashboard: Dashboard? = nil,
                             collect: @escaping @Sendable () -> Void) {
        bootstrap()
        let router = Router()
        router.get("metrics") { _, _ -> Response in
            let body = render(collect: collect)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        if let dashboard {
            dashboard.addRoutes(to: router)
        } else {
            router.get("/") { _, _ -> String in "OuroborosFS: metrics at /metrics\n" }
        }
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .notice)
        let app = Application(router: router,
                              configuration: .init(address: .hostname(address.host, port: Int(address.port)), serverName: "ouro"),
                              logger: quiet)
        Task.detached {
            do {
                try await app.runService()
            } catch {
                logger.critical("cannot serve HTTP", metadata: ["address": "\(address)", "error": "\(error)"])
                exit(1)
            }
        }
    }
}
