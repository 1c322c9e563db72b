#!/usr/bin/env bash
# Push/pull throughput of a local ring (3 nodes, or BENCH_NODES) against a plain local copy.
#
# Builds `ouro` in release mode (scratch path .build-bench, so it never touches the default .build; set OURO_BIN to
# use another binary), starts `ouro up --nodes $BENCH_NODES` on free ports with its data in a temporary directory, makes one
# random file, then runs BENCH_ROUNDS interleaved rounds of
#   push:    ouro push <file>                       (answers once every chunk and copy is fsynced)
#   pull:    ouro pull <name> <file on the same disk> (fsyncs and renames the file at the end)
#   cp+sync: cp <file> <copy> && sync <copy>        (the same durability for one local copy)
# dropping the page cache before each measurement when this process may (root, writable /proc/sys/vm/drop_caches).
# Prints the median MB/s (10^6 bytes per second) of each, their ratio to cp+sync, and each node's peak RSS (VmHWM).
# Everything it starts and writes is removed on exit.
#
# Knobs (environment):
#   BENCH_SIZE_MIB   size of the file in MiB              (default 1024)
#   BENCH_ROUNDS     number of rounds                     (default 3)
#   BENCH_DIR        parent of the temporary directory    (default /var/tmp; all files of the run live on its disk)
#   BENCH_BASE_PORT  first port to try for the nodes      (default: a random one below the ephemeral range)
#   BENCH_COPIES     copies of every chunk                (default 2, as `ouro up`)
#   BENCH_NODES      nodes in the ring                    (default 3; the issue's big ring: 16)
#   OURO_BIN         ouro binary to use instead of building one
# Quick run: BENCH_SIZE_MIB=256 bench/ring-bench.sh
set -euo pipefail

size_mib=${BENCH_SIZE_MIB:-1024}
rounds=${BENCH_ROUNDS:-3}
parent=${BENCH_DIR:-/var/tmp}
copies=${BENCH_COPIES:-2}
nodes=${BENCH_NODES:-3}
[[ $nodes =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_NODES must be a positive integer" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $size_mib =~ ^[1-9][0-9]*$ && $rounds =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_SIZE_MIB and BENCH_ROUNDS must be positive integers" >&2; exit 2; }
size_bytes=$((size_mib * 1024 * 1024))

log() { printf '[ring-bench] %s\n' "$*" >&2; }

# --- build --------------------------------------------------------------------------------------------------------
if [[ -n ${OURO_BIN:-} ]]; then
    ouro=$OURO_BIN
    log "using OURO_BIN=$ouro"
else
    command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
    log "building release into $repo/.build-bench (incremental after the first time)"
    swift build -c release --scratch-path "$repo/.build-bench" --product ouro >&2
    ouro="$(swift build -c release --scratch-path "$repo/.build-bench" --show-bin-path)/ouro"
fi
[[ -x $ouro ]] || { echo "no ouro binary at $ouro" >&2; exit 1; }

# --- set-up and clean-up ------------------------------------------------------------------------------------------
work=$(mktemp -d "$parent/ring-bench.XXXXXX")
data="$work/ring"
up_pid=""

node_pids() { pgrep -f -- "ouro node --listen .* --data $data/node-" || true; }

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
    # Nodes outlive a killed `ouro up`: stop any left, found by this run's data directory only.
    local left
    mapfile -t left < <(node_pids)
    if (( ${#left[@]} > 0 )); then
        kill -TERM "${left[@]}" 2>/dev/null || true
        sleep 1
        mapfile -t left < <(node_pids)
        (( ${#left[@]} == 0 )) || kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the kernel's ephemeral range, so that no outgoing connection holds the port.
ephemeral_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
(( ephemeral_low > 21000 )) || ephemeral_low=32768
base=${BENCH_BASE_PORT:-$((20000 + RANDOM % (ephemeral_low - 20000 - 100)))}
ports_free() { local i; for ((i = 0; i < nodes; i++)); do port_free $((base + i)) || return 1; done; }
while ! ports_free; do base=$((base + nodes)); done
node="127.0.0.1:$base"

drop_caches() {
    sync
    if [[ $can_drop == yes ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
}
can_drop=no
if { sync; echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then can_drop=yes; fi

log "work directory $work on $(df -P "$work" | awk 'NR == 2 { print $1 " (" $6 ")" }'); free $(df -P -BG "$work" | awk 'NR == 2 { print $4 }')"
needed_mib=$((size_mib * (3 + rounds * copies) + 512))  # source, pull, copy, and every round's pushed copies (old ones are collected only after 300 s)
avail_mib=$(df -P -BM "$work" | awk 'NR == 2 { sub("M", "", $4); print $4 }')
(( avail_mib > needed_mib )) || { echo "need about $needed_mib MiB free in $work, have $avail_mib" >&2; exit 1; }

log "starting a $nodes-node ring on ports $base-$((base + nodes - 1)), copies=$copies"
"$ouro" up --nodes "$nodes" --data "$data" --base-port "$base" --copies "$copies" > "$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 1 300); do
    grep -q 'Press Ctrl-C' "$work/up.log" 2>/dev/null && break
    kill -0 "$up_pid" 2>/dev/null || { cat "$work/up.log" >&2; tail -n 5 "$data"/node-*/node.log >&2; echo "ouro up exited" >&2; exit 1; }
    sleep 0.1
done
grep -q 'Press Ctrl-C' "$work/up.log" || { cat "$work/up.log" >&2; echo "the ring did not come up in 30 s" >&2; exit 1; }
read -r -a pids <<< "$(node_pids | tr '\n' ' ')"
(( ${#pids[@]} == nodes )) || { echo "expected $nodes node processes, found: ${pids[*]:-none}" >&2; exit 1; }
"$ouro" status --node "$node" >&2

log "making a ${size_mib} MiB random file"
src="$work/source.bin"
head -c "$size_bytes" /dev/urandom > "$src"
sync

# --- measurements -------------------------------------------------------------------------------------------------
now() { date +%s.%N; }
mbps() { awk -v b="$size_bytes" -v s="$1" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
push_rates=(); pull_rates=(); cp_rates=()

for round in $(seq 1 "$rounds"); do
    drop_caches
    t0=$(now)
    "$ouro" push --node "$node" "$src" bench.bin > /dev/null
    t1=$(now)
    push_rates+=("$(mbps "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")")

    drop_caches
    t0=$(now)
    "$ouro" pull --node "$node" bench.bin "$work/pulled.bin"
    t1=$(now)
    pull_rates+=("$(mbps "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")")
    if (( round == 1 )); then cmp "$src" "$work/pulled.bin" || { echo "pulled file differs from the source" >&2; exit 1; }; fi
    rm -f "$work/pulled.bin"

    drop_caches
    t0=$(now)
    cp "$src" "$work/copy.bin"
    sync "$work/copy.bin"
    t1=$(now)
    cp_rates+=("$(mbps "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")")
    rm -f "$work/copy.bin"

    log "round $round: push ${push_rates[-1]} MB/s, pull ${pull_rates[-1]} MB/s, cp+sync ${cp_rates[-1]} MB/s"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
push_median=$(median "${push_rates[@]}")
pull_median=$(median "${pull_rates[@]}")
cp_median=$(median "${cp_rates[@]}")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# --- report -------------------------------------------------------------------------------------------------------
echo
echo "OuroborosFS ring benchmark: $nodes nodes on 127.0.0.1, copies=$copies, file ${size_mib} MiB, $rounds rounds"
echo "binary: $ouro"
echo "disk: $(df -P "$work" | awk 'NR == 2 { print $1 }'), page cache dropped before each measurement: $can_drop"
printf '%-10s %12s %12s   %s\n' "" "median MB/s" "vs cp+sync" "rounds (MB/s)"
printf '%-10s %12s %12s   %s\n' "push" "$push_median" "$(ratio "$push_median" "$cp_median")" "${push_rates[*]}"
printf '%-10s %12s %12s   %s\n' "pull" "$pull_median" "$(ratio "$pull_median" "$cp_median")" "${pull_rates[*]}"
printf '%-10s %12s %12s   %s\n' "cp+sync" "$cp_median" "1.00" "${cp_rates[*]}"
echo "peak RSS of the node processes (VmHWM):"
current=" $(node_pids | tr '\n' ' ') "
for pid in "${pids[@]}"; do
    if [[ $current != *" $pid "* ]]; then echo "  pid $pid: gone (restarted by ouro up during the run?)"; continue; fi
    args=$(tr '\0' ' ' < "/proc/$pid/cmdline")
    listen=$(sed -n 's/.*--listen \([^ ]*\).*/\1/p' <<< "$args")
    hwm=$(awk '/^VmHWM:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$pid/status")
    echo "  node $listen (pid $pid): $hwm"
done
