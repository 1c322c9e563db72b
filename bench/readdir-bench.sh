#!/usr/bin/env bash
# Big-directory benchmark (issue 11): one directory of ENTRIES empty files, on passthrough_ll (the FUSE ceiling
# here) and on an OuroborosFS mount of a local 3-node ring (copies 2; the names made by FS CREATE requests straight
# to the nodes, 6 connections, which is faster than through the mount). Prints the time of `ls -f | wc -l` and of
# `ls -l >/dev/null` on each, after dropping the page cache (cold) and again (warm), the ratio of ours to
# passthrough_ll's (target for the cold `ls -f`: ≤ 2), and the mount's RSS after the listing (one page of 4,096
# entries held, whatever the directory's size). Run as root.
#   ENTRIES=1000000 bash bench/readdir-bench.sh      (OURO_BIN=path: a built ouro; BASE_PORT, default 7990)
set -euo pipefail
ENTRIES=${ENTRIES:-200000}
BASE_PORT=${BASE_PORT:-7990}
[[ $ENTRIES =~ ^[1-9][0-9]*$ ]] || { echo "ENTRIES must be a positive integer" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
ouro=${OURO_BIN:-$top/.build/release/ouro}
work=$(mktemp -d /tmp/ouro-readdir.XXXXXX)
cleanup() {
    set +e
    for m in "$work/pt" "$work/mnt"; do fusermount3 -uz "$m" 2>/dev/null; done
    [ -n "${up_pid:-}" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    [ -n "${pt_pid:-}" ] && kill "$pt_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${OURO_BIN:-}" ]; then echo "building release binaries…" >&2; (cd "$top" && swift build -c release >/dev/null); fi
gcc -O2 -Wall /usr/share/doc/libfuse3-dev/examples/passthrough_ll.c $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"
mkdir -p "$work/pt-src/big" "$work/pt" "$work/mnt"
python3 -c "
import os, sys
for i in range($ENTRIES): os.close(os.open(f'$work/pt-src/big/f{i:07d}', os.O_CREAT | os.O_WRONLY))"
# passthrough_ll holds a descriptor for every inode the kernel looked up: a million of them for `ls -l`.
(ulimit -n 1100000 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$work/passthrough_ll" -o source="$work/pt-src" "$work/pt") &
pt_pid=$!

"$ouro" up --nodes 3 --copies 2 --base-port "$BASE_PORT" --data "$work/ring" --mount "$work/mnt" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 300); do grep -q "mounted at" "$work/up.log" && break; sleep 0.1; done
grep -q "mounted at" "$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
mkdir "$work/mnt/big"
sync
python3 - "$BASE_PORT" "$ENTRIES" <<'PY'
import json, socket, sys, threading, time
base, entries = int(sys.argv[1]), int(sys.argv[2])
def conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    return s, s.makefile("rb")
def fs(c, op, request):
    s, f = c
    body = json.dumps(request).encode()
    s.sendall(f"FS {op} {len(body)}\n".encode() + body)
    line = f.readline().decode().strip()
    if not line.startswith("OK"): raise SystemExit(f"{op}: {line}")
    return json.loads(f.read(int(line.split()[1])))
directory = fs(conn(base), "LOOKUP", {"parent": 1, "name": "big"})["stat"]["inode"]["id"]
def worker(k):
    c = conn(base + k % 3)
    for i in range(k, entries, 6):
        fs(c, "CREATE", {"parent": directory, "name": f"f{i:07d}", "inode": (1 << 41) + i, "mode": 0o644, "uid": 0, "gid": 0})
t0 = time.time()
threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print(f"made {entries:,} names on the ring in {time.time() - t0:.1f} s", file=sys.stderr)
PY
sleep 7  # past a checkpoint: the names in the store file
[ -n "${HOLD:-}" ] && { echo "holding: mount at $work/mnt, directory big; Ctrl-C to end" >&2; sleep "$HOLD"; }

driver_pid=$(pgrep -f " mount --node 127.0.0.1:$BASE_PORT " | head -1)
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
seconds() { local t0 t1; t0=$(date +%s.%N); eval "$1" >/dev/null; t1=$(date +%s.%N); python3 -c "print(f'{$t1 - $t0:.3f}')"; }
declare -A T
for target in pt mnt; do
    dir="$work/$target/big"
    count=$(ls -f "$dir" | wc -l)
    [ "$count" = $((ENTRIES + 2)) ] || { echo "$target lists $count entries, not $((ENTRIES + 2))" >&2; exit 1; }
    drop; T[$target,cold]=$(seconds "ls -f '$dir' | wc -l")
    T[$target,warm]=$(seconds "ls -f '$dir' | wc -l")
    drop; T[$target,coldl]=$(seconds "ls -l '$dir'")
    T[$target,warml]=$(seconds "ls -l '$dir'")
done
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '%-28s %12s %12s %8s\n' "$ENTRIES entries" passthrough ours ratio
for k in cold warm coldl warml; do
    case $k in cold) label="ls -f | wc -l, cold";; warm) label="ls -f | wc -l, warm";; coldl) label="ls -l, cold";; warml) label="ls -l, warm";; esac
    printf '%-28s %11ss %11ss %7s×\n' "$label" "${T[pt,$k]}" "${T[mnt,$k]}" "$(ratio "${T[mnt,$k]}" "${T[pt,$k]}")"
done
echo "mount RSS after the listings: $(awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' /proc/$driver_pid/status)"
