#!/usr/bin/env bash
# Scale benchmark (issue 11): many small files through the mount of a local 3-node ring (copies 2).
#   1. FILES files of 1 KiB made through the mount in batches of BATCH (one directory per batch, from one Python
#      process: no fork per file); after each batch: its rate (files/s), every node's RSS and the driver's, and the
#      catalog's bytes on disk per node (NODE INFO) and per file
#   2. cold `ls -l` of the first directory, cold `find` of the whole tree, `FILE LIST` (every file, as CSV) from a node
#   3. whole-ring restart: `ouro up` stopped and started again on the same data, timed until a `stat` through the
#      new mount answers; then a check that the first and last file of every batch read back
#   4. ROUNDS × (SMALL creates, then SMALL removals) on passthrough_ll and on ours, in turn: files/s and the ratio
# Run as root (mounts, drop_caches). For humans: CI must never run it.
#   FILES=100000 BATCH=10000 bash bench/scale-bench.sh
#   quick: FILES=20000 BATCH=5000 SMALL=500 bash bench/scale-bench.sh
# Knobs: FILES, BATCH, SMALL (1000), ROUNDS (3), BASE_PORT (7950: the ring takes 3 ports), OURO_BIN, BENCH_DIR
# (default /tmp), KEEP=1 (keep the work directory).
set -euo pipefail
FILES=${FILES:-100000}
BATCH=${BATCH:-10000}
SMALL=${SMALL:-1000}
ROUNDS=${ROUNDS:-3}
BASE_PORT=${BASE_PORT:-7950}
for knob in FILES BATCH SMALL ROUNDS BASE_PORT; do
    [[ ${!knob} =~ ^[1-9][0-9]*$ ]] || { echo "$knob must be a positive integer" >&2; exit 2; }
done
top=$(cd "$(dirname "$0")/.." && pwd)
ouro=${OURO_BIN:-$top/.build/release/ouro}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/ouro-scale.XXXXXX")
mnt=$work/mnt
tlog() { printf '[scale-bench] %s\n' "$*" >&2; }

cleanup() {
    set +e
    for m in "$work/pt" "$mnt"; do fusermount3 -uz "$m" 2>/dev/null; done
    [ -n "${up_pid:-}" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    [ -n "${pt_pid:-}" ] && kill "$pt_pid" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then tlog "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ -z "${OURO_BIN:-}" ]; then tlog "building release binaries"; (cd "$top" && swift build -c release >/dev/null); fi
[ -x "$ouro" ] || { echo "no ouro binary at $ouro" >&2; exit 2; }
command -v nc >/dev/null || apt-get install -y -qq netcat-openbsd >/dev/null  # -N: the OpenBSD one
gcc -O2 -Wall /usr/share/doc/libfuse3-dev/examples/passthrough_ll.c $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"
mkdir -p "$work/pt-src" "$work/pt" "$mnt"
"$work/passthrough_ll" -o source="$work/pt-src" "$work/pt" &
pt_pid=$!

start_ring() {
    : >"$work/up.log"
    "$ouro" up --nodes 3 --copies 2 --base-port "$BASE_PORT" --data "$work/ring" --mount "$mnt" >>"$work/up.log" 2>&1 &
    up_pid=$!
}
wait_mounted() {
    for _ in $(seq 600); do grep -q "mounted at" "$work/up.log" && return 0; sleep 0.05; done
    cat "$work/up.log" >&2; exit 1
}
now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }
node_pid() { pgrep -f "ouro node --listen 127.0.0.1:$((BASE_PORT + $1)) " | head -1; }
driver_pid() { pgrep -f "ouro mount --node 127.0.0.1:$BASE_PORT" | head -1; }
node_info_field() {  # node index, field name
    python3 - "$((BASE_PORT + $1))" "$2" <<'PY'
import json, socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30) as s:
    s.sendall(b"NODE INFO\n")
    f = s.makefile("rb")
    status = f.readline().split()
    if status[:1] != [b"OK"]:
        sys.exit(f"NODE INFO answered {status}")
    print(json.loads(f.read(int(status[1]))).get(sys.argv[2], 0))
PY
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# The kernel's dentries and inodes only (the FUSE mount's caches): the nodes' files stay in the page cache.
drop_fuse() { sync; echo 2 >/proc/sys/vm/drop_caches; }

# Makes COUNT files of 1 KiB named f0… in DIR (created), or removes them with "rm"; prints files/s.
cat >"$work/files.py" <<'PY'
import os, sys, time
mode, d, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = os.urandom(1024)
t0 = time.perf_counter()
if mode == "make":
    os.mkdir(d)
    for i in range(count):
        fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
else:
    for i in range(count):
        os.unlink(f"{d}/f{i}")
    os.rmdir(d)
print(f"{count / (time.perf_counter() - t0):.0f}")
PY

start_ring
wait_mounted
tlog "ring up at $mnt; making $FILES files of 1 KiB in batches of $BATCH"
batches=$(( (FILES + BATCH - 1) / BATCH ))
printf '%-7s %9s %9s %30s %10s %14s\n' batch files files/s "node RSS MiB (0 / 1 / 2)" "driver" "catalog B/file"
made=0
for b in $(seq 0 $((batches - 1))); do
    count=$(( FILES - made < BATCH ? FILES - made : BATCH ))
    rate=$(python3 "$work/files.py" make "$mnt/d$b" "$count")
    made=$((made + count))
    catalog=$(node_info_field 0 catalogBytes)
    printf '%-7s %9s %9s %30s %10s %14s\n' "$((b + 1))" "$made" "$rate" \
        "$(rss_mib "$(node_pid 0)") / $(rss_mib "$(node_pid 1)") / $(rss_mib "$(node_pid 2)")" \
        "$(rss_mib "$(driver_pid)")" "$((catalog / made))"
done
for i in 0 1 2; do tlog "node $i: catalog $(node_info_field $i catalogBytes) bytes, $(node_info_field $i catalogRecords) records"; done

drop; t0=$(now); ls -l "$mnt/d0" >/dev/null; ls_s=$(elapsed "$t0" "$(now)")
drop; t0=$(now); found=$(find "$mnt" | wc -l); find_s=$(elapsed "$t0" "$(now)")
t0=$(now); listed=$(printf 'FILE LIST\n' | timeout 300 nc -N 127.0.0.1 "$BASE_PORT" | wc -l); list_s=$(elapsed "$t0" "$(now)")
drop_fuse; t0=$(now); ls -l "$mnt/d0" >/dev/null; ls_warm_s=$(elapsed "$t0" "$(now)")
drop_fuse; t0=$(now); find "$mnt" >/dev/null; find_warm_s=$(elapsed "$t0" "$(now)")
echo
echo "cold ls -l of $(( BATCH < FILES ? BATCH : FILES )) files: $ls_s s; cold find of $found entries: $find_s s; FILE LIST ($listed lines): $list_s s"
echo "with the nodes' files in the page cache (only the mount's kernel caches dropped): ls -l $ls_warm_s s; find $find_warm_s s"
for f in catalog.sqlite catalog.sqlite-wal catalog.log; do
    [ -e "$work/ring/node-0/$f" ] && tlog "node 0 $f: $(stat -c %s "$work/ring/node-0/$f") bytes"
done

tlog "restarting the whole ring"
kill -INT "$up_pid"; wait "$up_pid" 2>/dev/null || true
t0=$(now)
start_ring
until stat "$mnt/d0/f0" >/dev/null 2>&1; do
    python3 -c "import sys; sys.exit(0 if $(now) - $t0 < 300 else 1)" || { echo "no answer 300 s after the restart" >&2; cat "$work/up.log" >&2; exit 1; }
    sleep 0.05
done
restart_s=$(elapsed "$t0" "$(now)")
echo "whole-ring restart until a stat through the mount answers: $restart_s s (catalog records replayed from the logs: $(node_info_field 0 catalogReplayedRecords) / $(node_info_field 1 catalogReplayedRecords) / $(node_info_field 2 catalogReplayedRecords); node RSS MiB $(rss_mib "$(node_pid 0)") / $(rss_mib "$(node_pid 1)") / $(rss_mib "$(node_pid 2)"))"
made=0
for b in $(seq 0 $((batches - 1))); do
    count=$(( FILES - made < BATCH ? FILES - made : BATCH )); made=$((made + count))
    for f in "$mnt/d$b/f0" "$mnt/d$b/f$((count - 1))"; do
        [ "$(stat -c %s "$f")" = 1024 ] || { echo "after the restart, $f is not a 1 KiB file" >&2; exit 1; }
    done
done

tlog "$ROUNDS rounds of $SMALL creates and removals, passthrough_ll and ours in turn"
declare -A C R
for r in $(seq "$ROUNDS"); do
    for target in pt ours; do
        dir=$([ "$target" = pt ] && echo "$work/pt" || echo "$mnt")/small$r
        C[$target,$r]=$(python3 "$work/files.py" make "$dir" "$SMALL")
        R[$target,$r]=$(python3 "$work/files.py" rm "$dir" "$SMALL")
    done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for op in create remove; do
    declare -n table=$([ $op = create ] && echo C || echo R)
    pt=$(median $(for r in $(seq "$ROUNDS"); do echo "${table[pt,$r]}"; done))
    ours=$(median $(for r in $(seq "$ROUNDS"); do echo "${table[ours,$r]}"; done))
    echo "$SMALL ${op}s: passthrough_ll $pt files/s, ours $ours files/s, ours ÷ passthrough $(python3 -c "print(f'{$ours / $pt:.2f}')") (median of $ROUNDS)"
    unset -n table
done
