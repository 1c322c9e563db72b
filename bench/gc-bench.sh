#!/usr/bin/env bash
# Garbage-collection benchmark (issue 11): on a local 3-node ring (copies 2), KEEP files of 1 KiB that stay, then
# FILES more made and all removed, by FS CREATE / UNLINK requests straight to the nodes (6 connections, no mount:
# the catalog is what is measured). Prints, per node, the catalog's records and its store's size (NODE INFO
# catalogStoreBytes: SQLite's pages, wherever they are; the write-ahead log file and the catalog log, bounded
# whatever the file count, apart) at the start
# (the KEEP files made), after the creates, right after the removals, and once garbage collection has settled, with
# the ratio of the end to the start (target: within 10 %), and how long collection took. GC_INTERVAL_MS / GC_MIN_AGE_MS set the nodes' round interval and the minimum
# age of a tombstone (defaults here: 2000 / 5000; the nodes' own defaults are 30000 / 60000).
#   FILES=200000 bash bench/gc-bench.sh        (OURO_BIN=path: a built ouro; BASE_PORT, default 7970)
set -euo pipefail
FILES=${FILES:-100000}
KEEP=${KEEP:-$FILES}
BASE_PORT=${BASE_PORT:-7970}
export OURO_GC_INTERVAL_MS=${GC_INTERVAL_MS:-2000} OURO_GC_MIN_AGE_MS=${GC_MIN_AGE_MS:-5000}
[[ $FILES =~ ^[1-9][0-9]*$ ]] || { echo "FILES must be a positive integer" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
ouro=${OURO_BIN:-$top/.build/release/ouro}
work=$(mktemp -d /tmp/ouro-gc.XXXXXX)
cleanup() {
    set +e
    [ -n "${up_pid:-}" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${OURO_BIN:-}" ]; then echo "building release binaries…" >&2; (cd "$top" && swift build -c release >/dev/null); fi

"$ouro" up --nodes 3 --copies 2 --base-port "$BASE_PORT" --data "$work/ring" >"$work/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 200); do grep -q "is up" "$work/up.log" && break; sleep 0.1; done
grep -q "is up" "$work/up.log" || { cat "$work/up.log" >&2; exit 1; }
sleep 2

python3 - "$BASE_PORT" "$FILES" "$KEEP" "$work/ring" <<'PY'
import base64, glob, json, os, socket, sys, threading, time
base, files, keep, ring = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stores = sorted(glob.glob(f"{ring}/*/catalog.sqlite"))
ports = [base, base + 1, base + 2]

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.s.makefile("rb")
    def call(self, header, body=b""):
        self.s.sendall(header.encode() + b"\n" + body)
        line = self.f.readline().decode().strip()
        if not line.startswith("OK"):
            raise RuntimeError(f"{header}: {line}")
        parts = line.split()
        return json.loads(self.f.read(int(parts[1]))) if len(parts) > 1 else None
    def fs(self, op, request):
        body = json.dumps(request).encode()
        return self.call(f"FS {op} {len(body)}", body)

def info():
    out = []
    for port in ports:
        c = Conn(port)
        i = c.call("NODE INFO")
        out.append((i["catalogRecords"], i["catalogStoreBytes"], i.get("catalogCollectedRecords", 0), i["catalogStoreFreeBytes"]))
        c.s.close()
    return out

def extra():
    return "  ".join(f"node {n}: WAL {os.path.getsize(p + '-wal') / 1e6:.1f} MB, log {os.path.getsize(os.path.dirname(p) + '/catalog.log') / 1e6:.1f} MB"
                     for n, p in enumerate(stores) if os.path.exists(p + "-wal"))

def rss(port):
    import subprocess
    pid = subprocess.run(["pgrep", "-f", f"ouro node --listen 127.0.0.1:{port} "], capture_output=True, text=True).stdout.split()
    try:
        return next(int(l.split()[1]) / 1024 for l in open(f"/proc/{pid[0]}/status") if l.startswith("VmRSS"))
    except Exception:
        return float("nan")

def show(label, rows):
    print(f"{label:<26}" + "  ".join(f"node {n}: {r:>9,} records {b / 1e6:8.1f} MB ({f / 1e6:.1f} free) RSS {rss(ports[n]):.0f} MiB"
                                     for n, (r, b, _, f) in enumerate(rows)), flush=True)

def run(op, make, count=None, first=0):
    count = files if count is None else count
    threads, errors = [], []
    def worker(k):
        c = Conn(ports[k % 3])
        try:
            for i in range(first + k, first + count, 6):
                c.fs(op, make(i))
        except Exception as e:
            errors.append(str(e))
    t0 = time.time()
    for k in range(6):
        threads.append(threading.Thread(target=worker, args=(k,))); threads[-1].start()
    for t in threads: t.join()
    if errors: raise SystemExit(f"{op} failed: {errors[0]}")
    return time.time() - t0

Conn(base).fs("MKDIR", {"parent": 1, "name": "gc", "mode": 0o755, "uid": 0, "gid": 0})
time.sleep(1)
directory = Conn(base).fs("LOOKUP", {"parent": 1, "name": "gc"})["stat"]["inode"]["id"]
payload = base64.b64encode(os.urandom(1024)).decode()
make = lambda i: {"parent": directory, "name": f"f{i}", "inode": (1 << 40) + i, "mode": 0o644, "uid": 0, "gid": 0, "data": payload}
if keep:
    seconds = run("CREATE", make, keep, first=files)
    print(f"made {keep:,} files to keep in {seconds:.1f} s ({keep / seconds:,.0f} files/s)", flush=True)
time.sleep(7)  # a checkpoint (5 s) puts them in the store file
start = info(); show("start", start)
seconds = run("CREATE", make)
print(f"created {files:,} files in {seconds:.1f} s ({files / seconds:,.0f} files/s)")
time.sleep(1); made = info(); show("after the creates", made)
seconds = run("UNLINK", lambda i: {"parent": directory, "name": f"f{i}"})
print(f"removed {files:,} files in {seconds:.1f} s ({files / seconds:,.0f} files/s)")
removed = info(); show("right after the removals", removed)
t0 = time.time()
while True:
    now = info()
    if all(r <= s[0] + 2 for r, s in zip((x[0] for x in now), start)) or time.time() - t0 > 3600:
        break
    time.sleep(2)
print(f"collected in {time.time() - t0:.1f} s after the last removal")
time.sleep(7); end = info(); show("after collection", end)
print("  " + extra())
for n in range(3):
    print(f"node {n}: records end/start {end[n][0]} / {start[n][0]}; bytes end/start {end[n][1] / 1e6:.1f} / {start[n][1] / 1e6:.1f} MB "
          f"= {end[n][1] / max(1, start[n][1]):.2f}× (after the creates {made[n][1] / 1e6:.1f} MB); collected {end[n][2]:,} records")
PY
