#!/usr/bin/env bash
# What encryption costs: push and pull of one file through two local rings side by side, every byte over TCP
# (OURO_LOCAL_ROUTES=0 for the nodes and the client, so no Unix socket or handed-over chunk file short-cuts it):
#   tls:   `ouro up` with a cluster secret (TLS 1.3 keyed by it, the default)
#   plain: `ouro up --secret-file S --insecure` (the same secret proved by the challenge, bytes in the clear)
# BENCH_ROUNDS interleaved rounds (tls push, plain push, tls pull, plain pull), the page cache dropped before each
# measurement where this process may. Prints median MB/s (10^6 bytes/s) of each and tls / plain.
# Target (issue 13): tls ≥ 0.7 × plain for push and pull of 1 GiB through 3 nodes.
#
# Knobs: BENCH_SIZE_MIB (1024), BENCH_ROUNDS (3), BENCH_NODES (3), BENCH_COPIES (2), BENCH_DIR (/var/tmp),
# OURO_BIN (a binary to use instead of building release into .build-bench).
set -euo pipefail

size_mib=${BENCH_SIZE_MIB:-1024}
rounds=${BENCH_ROUNDS:-3}
nodes=${BENCH_NODES:-3}
copies=${BENCH_COPIES:-2}
parent=${BENCH_DIR:-/var/tmp}
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $size_mib =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ && $nodes =~ ^[1-9][0-9]*$ ]] || { echo "sizes must be positive integers" >&2; exit 2; }
size_bytes=$((size_mib * 1024 * 1024))
log() { printf '[tls-bench] %s\n' "$*" >&2; }

if [[ -n ${OURO_BIN:-} ]]; then
    ouro=$OURO_BIN
else
    command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
    log "building release into $repo/.build-bench"
    swift build -c release --scratch-path "$repo/.build-bench" --product ouro >&2
    ouro="$(swift build -c release --scratch-path "$repo/.build-bench" --show-bin-path)/ouro"
fi
[[ -x $ouro ]] || { echo "no ouro binary at $ouro" >&2; exit 1; }
export OURO_LOCAL_ROUTES=0

work=$(mktemp -d "$parent/tls-bench.XXXXXX")
declare -A up_pid
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for mode in "${!up_pid[@]}"; do kill -TERM "${up_pid[$mode]}" 2>/dev/null || true; done
    for mode in "${!up_pid[@]}"; do
        for _ in $(seq 1 150); do kill -0 "${up_pid[$mode]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${up_pid[$mode]}" 2>/dev/null || true
    done
    pkill -f -- "--data $work/" 2>/dev/null || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

needed_mib=$((size_mib * (2 + 2 * rounds * copies) + 512))
avail_mib=$(df -P -BM "$work" | awk 'NR == 2 { sub("M", "", $4); print $4 }')
(( avail_mib > needed_mib )) || { echo "need about $needed_mib MiB free in $work, have $avail_mib" >&2; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports_free() { local i; for ((i = 0; i < nodes; i++)); do port_free $(($1 + i)) || return 1; done; }
free_base() { local base=$1; while ! ports_free "$base"; do base=$((base + nodes)); done; echo "$base"; }

openssl rand -hex 32 > "$work/secret"
chmod 600 "$work/secret"
export OURO_SECRET_FILE="$work/secret"
declare -A node
base=$((20000 + RANDOM % 8000))
for mode in tls plain; do
    base=$(free_base "$base")
    extra=()
    [[ $mode == plain ]] && extra=(--insecure)
    "$ouro" up --nodes "$nodes" --copies "$copies" --data "$work/$mode" --base-port "$base" --secret-file "$work/secret" \
        --no-http "${extra[@]}" > "$work/$mode.log" 2>&1 &
    up_pid[$mode]=$!
    node[$mode]="127.0.0.1:$base"
    base=$((base + nodes))
done
for mode in tls plain; do
    for _ in $(seq 1 300); do grep -q 'Press Ctrl-C' "$work/$mode.log" 2>/dev/null && break; sleep 0.1; done
    grep -q 'Press Ctrl-C' "$work/$mode.log" || { cat "$work/$mode.log" >&2; echo "the $mode ring did not come up" >&2; exit 1; }
    log "$mode ring at ${node[$mode]}: $(grep -E 'Traffic' "$work/$mode.log")"
done
client() { local mode=$1; shift; if [[ $mode == plain ]]; then OURO_INSECURE=1 "$ouro" "$@"; else "$ouro" "$@"; fi; }

can_drop=no
if { sync; echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then can_drop=yes; fi
drop_caches() { sync; if [[ $can_drop == yes ]]; then echo 3 > /proc/sys/vm/drop_caches; fi; }
log "making a ${size_mib} MiB random file"
head -c "$size_bytes" /dev/urandom > "$work/source.bin"

now() { date +%s.%N; }
mbps() { awk -v b="$size_bytes" -v a="$1" -v c="$2" 'BEGIN { printf "%.1f", b / 1e6 / (c - a) }'; }
declare -A rates
for round in $(seq 1 "$rounds"); do
    for mode in tls plain; do
        drop_caches; t0=$(now)
        client "$mode" push --node "${node[$mode]}" "$work/source.bin" "bench-$round.bin" > /dev/null
        rates[$mode,push]+="$(mbps "$t0" "$(now)") "
    done
    for mode in tls plain; do
        drop_caches; t0=$(now)
        client "$mode" pull --node "${node[$mode]}" "bench-$round.bin" "$work/pulled.bin"
        rates[$mode,pull]+="$(mbps "$t0" "$(now)") "
        if (( round == 1 )); then cmp "$work/source.bin" "$work/pulled.bin" || { echo "$mode: pulled file differs" >&2; exit 1; }; fi
        rm -f "$work/pulled.bin"
    done
    log "round $round: push tls/plain: ${rates[tls,push]}/ ${rates[plain,push]}; pull: ${rates[tls,pull]}/ ${rates[plain,pull]}"
done

median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
echo "Encryption cost: $nodes-node rings, copies $copies, ${size_mib} MiB, $rounds interleaved rounds, all over TCP (page cache dropped: $can_drop)"
echo "binary: $ouro"
printf '%-6s %14s %14s %10s   %s\n' "" "tls MB/s" "plain MB/s" "tls/plain" "rounds tls | plain"
for what in push pull; do
    t=$(median "${rates[tls,$what]}"); p=$(median "${rates[plain,$what]}")
    printf '%-6s %14s %14s %10s   %s| %s\n' "$what" "$t" "$p" "$(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }')" \
        "${rates[tls,$what]}" "${rates[plain,$what]}"
done
