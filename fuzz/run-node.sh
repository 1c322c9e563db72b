#!/usr/bin/env bash
# Builds fuzz/node/NodeFuzzer.swift — random sessions against two live nodes in one process — with SwiftPM's
# --sanitize=fuzzer --sanitize=address (the node's code instrumented too: coverage guides the mutations) and runs it
# for SECONDS (default 60) on fuzz/corpus/node, seeded also from fuzz/corpus/request. A crash or a node that stops
# answering leaves its input as crash-* in the current directory: make it a regression test (FuzzCorpusTests replays
# fuzz/corpus/node against live nodes). Leak checking is off: the nodes' background threads allocate all the time.
#   bash fuzz/run-node.sh 1800          # 30 minutes
set -euo pipefail
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
out=${OUT:-/tmp/ouro-node-fuzz-build}
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
# A package of its own beside the project (which it names by path), so the project's build is never instrumented.
package=$out/package
mkdir -p "$package/Sources/node-fuzzer"
ln -sfn "$top" "$package/ouroborosfs"
rm -f "$package/Sources/node-fuzzer/main.swift"
cp "$here/node/NodeFuzzer.swift" "$package/Sources/node-fuzzer/NodeFuzzer.swift"
cat > "$package/Package.swift" <<'PACKAGE'
// swift-tools-version: 6.0
import PackageDescription
let package = Package(
    name: "OuroNodeFuzz",
    dependencies: [
        .package(path: "ouroborosfs"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        .executableTarget(name: "node-fuzzer", dependencies: [
            .product(name: "OuroKit", package: "ouroborosfs"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
PACKAGE
(cd "$package" && swift build -c release --sanitize=fuzzer --sanitize=address --product node-fuzzer >&2)
binary=$(cd "$package" && swift build -c release --sanitize=fuzzer --sanitize=address --show-bin-path)/node-fuzzer
corpus=${CORPUS:-$here/corpus/node}   # CORPUS=dir: grow another directory (merge it in with -merge=1)
mkdir -p "$corpus"
rm -rf /tmp/ouro-node-fuzz
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} "$binary" -max_total_time="$seconds" -max_len=4096 -timeout=20 -rss_limit_mb=8192 \
    -print_final_stats=1 "$corpus" "$here/corpus/node" "$here/corpus/request"
rm -rf /tmp/ouro-node-fuzz
