// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "OuroborosFS",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ouro", targets: ["ouro"]),
        // The node and its client library, for programs beside the project (fuzz/run-node.sh's fuzzer).
        .library(name: "OuroKit", targets: ["OuroCore", "OuroClient", "OuroNode"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        // Small C helpers: hardware CRC32C (SSE4.2) with a portable fallback, and sync_file_range.
        .target(name: "COuroSupport"),
        // The system SQLite (Debian's libsqlite3-dev): the node's catalog store.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // The system OpenSSL (Debian's libssl-dev): SHA-256 of file contents.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", providers: [.apt(["libssl-dev"])]),
        // TLS 1.3 keyed by the cluster secret (external PSK) through the system OpenSSL's libssl: a thin C layer,
        // since OpenSSL's setup is mostly macros Swift cannot call.
        .target(name: "COuroTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        // The C bridge to libfuse3 (low-level API).
        .target(name: "CFuse", linkerSettings: [.linkedLibrary("fuse3")]),
        // Pure code shared by everything: wire protocol, chunk layout, catalog model. No I/O.
        .target(name: "OuroCore", dependencies: ["COuroSupport"]),
        // Blocking socket client for nodes, shared by the node (peer traffic), the CLI and the FUSE driver.
        .target(name: "OuroClient", dependencies: [
            "OuroCore", "COuroSupport", "COpenSSL", "COuroTLS",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The node daemon: chunk store, catalog, ring membership, server.
        .target(name: "OuroNode", dependencies: [
            "OuroCore", "OuroClient", "COuroSupport", "CSQLite",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The FUSE driver: a FUSE-free file-system layer plus a thin libfuse adapter.
        .target(name: "OuroFS", dependencies: [
            "OuroCore", "OuroClient", "CFuse", "COuroSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // The HTTP side of a node or mount: `GET /metrics` in the Prometheus text format (swift-metrics recorded,
        // swift-prometheus rendered, Hummingbird served).
        .target(name: "OuroHTTP", dependencies: [
            "OuroCore", "OuroClient",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The one executable users run.
        .executableTarget(name: "ouro", dependencies: [
            "OuroCore", "OuroClient", "OuroNode", "OuroFS", "OuroHTTP", "COuroSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // examples/swift-client: a small program on the client library (push, catalog, pull); run by a test.
        .executableTarget(name: "ouro-example-client", dependencies: ["OuroCore", "OuroClient"], path: "examples/swift-client"),
        .testTarget(name: "OuroTests", dependencies: ["OuroCore", "OuroClient", "OuroNode", "OuroFS", "ouro", "ouro-example-client"]),
    ],
    swiftLanguageModes: [.v5]
)
