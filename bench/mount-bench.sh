#!/usr/bin/env bash
# Mount benchmark: the same workloads on (a) a local directory, (b) libfuse's passthrough_ll over a local directory
# (the FUSE ceiling on this machine), and (c) an OuroborosFS mount over a local 3-node ring with copies on.
# Prints each figure and its ratio to (b). Run as root (mounts, drop_caches).
#   BIG_MB=1024 PAR_MB=256 FILES=1000 SMALL_ROUNDS=3 bash bench/mount-bench.sh   (OURO_BIN=path: a built ouro)
set -euo pipefail
BIG_MB=${BIG_MB:-1024}
PAR_MB=${PAR_MB:-256}
FILES=${FILES:-1000}
FIO_SECONDS=${FIO_SECONDS:-10}
SMALL_ROUNDS=${SMALL_ROUNDS:-3}
[[ $SMALL_ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "SMALL_ROUNDS must be a positive integer" >&2; exit 2; }
BASE_PORT=${BASE_PORT:-7600}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ouro-mbench.XXXXXX)
ouro=${OURO_BIN:-$top/.build/release/ouro}

cleanup() {
    set +e
    for m in "$work/pt" "$work/ouro"; do fusermount3 -uz "$m" 2>/dev/null; done
    [ -n "${up_pid:-}" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    [ -n "${pt_pid:-}" ] && kill "$pt_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

command -v fio >/dev/null || { echo "installing fio"; apt-get install -y -qq fio >/dev/null; }
if [ -z "${OURO_BIN:-}" ]; then echo "building release binaries…"; (cd "$top" && swift build -c release >/dev/null); fi
gcc -O2 -Wall /usr/share/doc/libfuse3-dev/examples/passthrough_ll.c $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"

mkdir -p "$work/local" "$work/pt-src" "$work/pt" "$work/ouro" "$work/input"
"$work/passthrough_ll" -o source="$work/pt-src" "$work/pt" &
pt_pid=$!
"$ouro" up --nodes 3 --copies 2 --base-port "$BASE_PORT" --data "$work/ring" --mount "$work/ouro" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do grep -q "mounted at" "$work/up.log" && grep -q " $work/pt " /proc/self/mountinfo && break; sleep 0.2; done
grep -q "mounted at" "$work/up.log" || { cat "$work/up.log"; exit 1; }
driver_pid=$(pgrep -f "ouro mount --node 127.0.0.1:$BASE_PORT" | head -1)

echo "making inputs: ${BIG_MB} MiB file, 4 × ${PAR_MB} MiB files"
head -c $((BIG_MB << 20)) /dev/urandom >"$work/input/big"
for i in 1 2 3 4; do head -c $((PAR_MB << 20)) /dev/urandom >"$work/input/par$i"; done

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1 / ($3 - $2) / 1e6:.1f}')"; }

declare -A R
for target in local pt ouro; do
    dir="$work/$target"
    # cp of the big file, then sync
    drop; t0=$(now); cp "$work/input/big" "$dir/big"; sync; t1=$(now)
    R[$target,cp]=$(mbps $((BIG_MB << 20)) "$t0" "$t1")
    # cold cat
    drop; t0=$(now); cat "$dir/big" >/dev/null; t1=$(now)
    R[$target,cat]=$(mbps $((BIG_MB << 20)) "$t0" "$t1")
    # 4 parallel readers
    for i in 1 2 3 4; do cp "$work/input/par$i" "$dir/par$i"; done
    drop; t0=$(now)
    readers=(); for i in 1 2 3 4; do cat "$dir/par$i" >/dev/null & readers+=($!); done; wait "${readers[@]}"
    t1=$(now)
    R[$target,par]=$(mbps $((4 * PAR_MB << 20)) "$t0" "$t1")
    # random 4 KiB reads
    drop
    R[$target,rand]=$(fio --name=rr --filename="$dir/big" --rw=randread --bs=4k --ioengine=psync --runtime="$FIO_SECONDS" \
        --time_based --readonly --output-format=json 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["jobs"][0]["read"]["iops"]))')
    rm -f "$dir/big" "$dir"/par*
done

# Small files: SMALL_ROUNDS rounds, the three targets in turn within each round (this machine's metadata speed
# drifts by tens of percent from one minute to the next); each figure is the median of its rounds.
declare -A SMALL
for _ in $(seq "$SMALL_ROUNDS"); do
    for target in local pt ouro; do
        dir="$work/$target"
        # created from one process (no fork per file)
        mkdir "$dir/small"
        t0=$(now)
        python3 - "$dir/small" "$FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(4096)
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(data)
PY
        t1=$(now)
        SMALL[$target,create]+="$(python3 -c "print(f'{$FILES / ($t1 - $t0):.0f}')") "
        drop; t0=$(now); ls -l "$dir/small" >/dev/null; t1=$(now)
        SMALL[$target,ls]+="$(python3 -c "print(f'{($t1 - $t0) * 1000:.1f}')") "
        t0=$(now); rm -r "$dir/small"; t1=$(now)
        SMALL[$target,rm]+="$(python3 -c "print(f'{$FILES / ($t1 - $t0):.0f}')") "
    done
done
median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for target in local pt ouro; do
    for key in create ls rm; do R[$target,$key]=$(median "${SMALL[$target,$key]}"); done
done
rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$driver_pid/status")

printf '\n%-28s %12s %12s %12s %10s\n' "workload" "local" "passthrough" "ouro" "ouro/pt"
row() { # name key unit higher-is-better(1)/lower(0)
    local l=${R[local,$2]} p=${R[pt,$2]} o=${R[ouro,$2]}
    local ratio
    if [ "$4" = 1 ]; then ratio=$(python3 -c "print(f'{$o / $p:.2f}')"); else ratio=$(python3 -c "print(f'{$p / $o:.2f}')"); fi
    printf '%-28s %12s %12s %12s %10s\n' "$1 ($3)" "$l" "$p" "$o" "$ratio"
}
row "cp ${BIG_MB} MiB + sync" cp MB/s 1
row "cold cat" cat MB/s 1
row "4 parallel readers" par MB/s 1
row "random 4 KiB reads" rand IOPS 1
row "create ${FILES} × 4 KiB" create files/s 1
row "ls -l ${FILES}, cold" ls ms 0
row "rm ${FILES}" rm files/s 1
echo "ouro driver peak RSS: $rss"
echo "(ratios: ouro ÷ passthrough; for ls -l, passthrough time ÷ ouro time)"
echo "small files, each round (local | passthrough | ouro):"
for key in create ls rm; do echo "  $key: ${SMALL[local,$key]}| ${SMALL[pt,$key]}| ${SMALL[ouro,$key]}"; done
