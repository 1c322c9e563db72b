#!/usr/bin/env bash
# Builds fuzz/RequestFuzzer.swift with libFuzzer and AddressSanitizer (swiftc -sanitize=fuzzer,address, over the
# sources of OuroCore and COuroSupport) and runs it on fuzz/corpus/request for SECONDS (default 60), adding what it
# finds new to the corpus (a long run: CORPUS=/tmp/dir, then `request-fuzzer -merge=1 fuzz/corpus/request /tmp/dir`). A crash leaves its input as crash-* in the current directory: make it a regression test
# (FuzzCorpusTests replays the whole corpus).
#   bash fuzz/run.sh 1800          # 30 minutes
set -euo pipefail
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
top=$here/..
out=${OUT:-/tmp/ouro-fuzz}
command -v swiftc >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
clang=$(dirname "$(command -v swiftc)")/clang
mkdir -p "$out/modules/COuroSupport"
cat > "$out/modules/COuroSupport/module.modulemap" <<MAP
module COuroSupport [system] {
    header "$top/Sources/COuroSupport/include/COuroSupport.h"
    export *
}
MAP
objects=()
for source in "$top"/Sources/COuroSupport/*.c; do
    object="$out/$(basename "$source" .c).o"
    "$clang" -c -O1 -g -msse4.2 -fsanitize=fuzzer-no-link,address -I "$top/Sources/COuroSupport/include" "$source" -o "$object"
    objects+=("$object")
done
swiftc -O -g -sanitize=fuzzer,address -parse-as-library -module-name OuroFuzz -I "$out/modules" \
    "$top"/Sources/OuroCore/*.swift "$here/RequestFuzzer.swift" "${objects[@]}" -o "$out/request-fuzzer"
corpus=${CORPUS:-$here/corpus/request}   # CORPUS=dir: grow another directory (merge it in with -merge=1)
mkdir -p "$corpus"
"$out/request-fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    "$corpus"
