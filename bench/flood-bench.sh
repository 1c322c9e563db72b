#!/usr/bin/env bash
# A flood of connections that never prove the cluster secret against a ring that a mount writes through: the
# mount's latency (a 4 KiB file written and fsynced, N times in a row) before the flood and during it, with its
# ratio. The ring is `ouro up`'s (a cluster secret by default); nodes and mount talk TCP (OURO_LOCAL_ROUTES=0), as
# on separate machines; the flood comes from 127.0.0.2, a host of its own. Run as root.
#   FLOOD=10000 WRITES=200 bash bench/flood-bench.sh   (OURO_BIN=path: a built ouro)
set -euo pipefail
FLOOD=${FLOOD:-10000}
WRITES=${WRITES:-200}
BASE_PORT=${BASE_PORT:-7700}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ouro-flood.XXXXXX)
ouro=${OURO_BIN:-$top/.build/release/ouro}
cleanup() {
    set +e
    [ -n "${flood_pid:-}" ] && kill "$flood_pid" 2>/dev/null
    fusermount3 -uz "$work/mnt" 2>/dev/null
    [ -n "${up_pid:-}" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${OURO_BIN:-}" ]; then echo "building release binaries…"; (cd "$top" && swift build -c release >/dev/null); fi
mkdir -p "$work/mnt"
OURO_LOCAL_ROUTES=0 "$ouro" up --nodes 3 --base-port "$BASE_PORT" --data "$work/ring" --mount "$work/mnt" --no-http >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do grep -q "mounted at" "$work/up.log" && break; sleep 0.2; done
grep -q "mounted at" "$work/up.log" || { cat "$work/up.log"; exit 1; }

# Milliseconds per write+fsync of a 4 KiB file through the mount, N in a row: "p50 p99 max".
latency() {
    python3 - "$work/mnt/$1" "$WRITES" <<'PY'
import os, sys, time
directory, count = sys.argv[1], int(sys.argv[2])
os.makedirs(directory, exist_ok=True)
block = os.urandom(4096)
times = []
for i in range(count):
    started = time.perf_counter()
    fd = os.open(f"{directory}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
    times.append((time.perf_counter() - started) * 1000)
times.sort()
print(f"{times[len(times) // 2]:.2f} {times[int(len(times) * 0.99) - 1]:.2f} {times[-1]:.2f}")
PY
}
read -r quiet_p50 quiet_p99 quiet_max < <(latency quiet)
python3 "$top/bench/flood.py" --port "$BASE_PORT" --source 127.0.0.2 --count "$FLOOD" --seconds 60 --ready "$work/ready" > "$work/flood.log" 2>&1 &
flood_pid=$!
for _ in $(seq 300); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || { cat "$work/flood.log"; exit 1; }
read -r flood_p50 flood_p99 flood_max < <(latency flooded)
kill "$flood_pid" 2>/dev/null; wait "$flood_pid" 2>/dev/null || true; flood_pid=
cat "$work/flood.log"
printf '%-34s %10s %10s %10s\n' "4 KiB write+fsync (ms)" p50 p99 max
printf '%-34s %10s %10s %10s\n' "no flood" "$quiet_p50" "$quiet_p99" "$quiet_max"
printf '%-34s %10s %10s %10s\n' "$FLOOD unproved connections" "$flood_p50" "$flood_p99" "$flood_max"
python3 -c "import sys; q, f = float(sys.argv[1]), float(sys.argv[2]); print(f'p50 during the flood / without: {f / q:.2f}x')" "$quiet_p50" "$flood_p50"
# Every file written during the flood is there and whole.
[ "$(ls "$work/mnt/flooded" | wc -l)" = "$WRITES" ] && echo "all $WRITES files written during the flood are there"
