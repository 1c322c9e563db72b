#!/usr/bin/env bash
# Real programs on each target: a local directory, libfuse's passthrough_ll over a local directory, an OuroborosFS
# mount over a local 3-node ring with copies 2, and MooseFS when WITH_MOOSEFS=1. Each round runs, on every target
# in turn (interleaved: this machine's speed drifts from one minute to the next), in <target>/r<round>/tree:
#   sqlite   Python's sqlite3: 20,000 rows inserted in 200 transactions, an update of every row, a delete of half,
#            PRAGMA integrity_check (must say ok), then WAL mode and 50 more transactions (timed inside Python)
#   clone    git clone --no-hardlinks of SRC_REPO (default: this repository, snapshotted once at start so every
#            target clones the same commits); checked with git fsck and a clean git status
#   make     make -j2 of a generated, self-contained C project (PROJ_FILES .c files, default 60, and a Makefile);
#            the program it builds must print what the same build printed on the local disk at start
#   venv     python3 -m venv; its python must run and its pip must answer --version
#   tar      tar czf of the tree, tar xzf into another directory on the same target, diff -r of the two
#   rm       rm -r of all of it (the round's directory must be gone)
# Each step is timed (seconds, wall clock, checks excluded); the table shows the median of the rounds that
# succeeded and the ratios ours ÷ passthrough and ours ÷ MooseFS (lower is better). A step that fails is shown as
# FAILED with its error; the script goes on and exits 1 at the end. Run as root. For humans: CI must never run it.
#   ROUNDS=3 bash bench/programs-bench.sh            quick: ROUNDS=1 bash bench/programs-bench.sh
# Knobs: ROUNDS (default 3), STEPS (default "sqlite clone make venv tar rm"), PROJ_FILES (60), SRC_REPO,
# STEP_TIMEOUT (s, default 900), BASE_PORT (default 7720: the ring takes 3 ports), OURO_BIN, WITH_MOOSEFS=1,
# BENCH_DIR (parent of the work directory, default /tmp), KEEP=1 (keep it, with every step's log).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-"sqlite clone make venv tar rm"}
PROJ_FILES=${PROJ_FILES:-60}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
BASE_PORT=${BASE_PORT:-7720}
for v in ROUNDS PROJ_FILES STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer" >&2; exit 2; }
done
for s in $STEPS; do
    case $s in sqlite|clone|make|venv|tar|rm) ;; *) echo "unknown step $s in STEPS" >&2; exit 2 ;; esac
done
bench_name=programs-bench
top=$(cd "$(dirname "$0")/.." && pwd)
SRC_REPO=${SRC_REPO:-$top}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/ouro-pbench.XXXXXX")
. "$top/bench/targets.sh"
trap targets_cleanup EXIT
trap 'exit 130' INT TERM

python3 -c 'import sqlite3' 2>/dev/null || { echo "python3 has no sqlite3 module" >&2; exit 2; }
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    tlog "installing python3-venv"; apt-get install -y -qq python3-venv >/dev/null
fi
command -v make >/dev/null && command -v gcc >/dev/null || { tlog "installing make, gcc"; apt-get install -y -qq make gcc >/dev/null; }

# --- inputs ----------------------------------------------------------------------------------------------------
cat >"$work/sqlite-work.py" <<'PY'
import random, sqlite3, sys, time
path = sys.argv[1]
rng = random.Random(42)
rows = [[(rng.randrange(1 << 30), rng.randbytes(60).hex()) for _ in range(100)] for _ in range(200)]
more = [[(rng.randrange(1 << 30), rng.randbytes(60).hex()) for _ in range(100)] for _ in range(50)]
t0 = time.perf_counter()
con = sqlite3.connect(path, isolation_level=None)      # autocommit: explicit BEGIN/COMMIT below
con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL)")
con.execute("CREATE INDEX t_k ON t (k)")
for batch in rows:                                     # 20,000 rows in 200 transactions
    con.execute("BEGIN")
    con.executemany("INSERT INTO t (k, v) VALUES (?, ?)", batch)
    con.execute("COMMIT")
con.execute("BEGIN"); con.execute("UPDATE t SET k = k + 1, v = v || 'u'"); con.execute("COMMIT")
con.execute("BEGIN"); con.execute("DELETE FROM t WHERE id % 2 = 0"); con.execute("COMMIT")
check = con.execute("PRAGMA integrity_check").fetchall()
if check != [("ok",)]:
    sys.exit(f"integrity_check (rollback journal): {check[:5]}")
mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
if mode != "wal":
    sys.exit(f"journal_mode = WAL answered {mode}")
for batch in more:                                     # 50 more transactions in WAL mode
    con.execute("BEGIN")
    con.executemany("INSERT INTO t (k, v) VALUES (?, ?)", batch)
    con.execute("COMMIT")
con.close()
elapsed = time.perf_counter() - t0
con = sqlite3.connect(path)                            # reopen: what is on the file system
check = con.execute("PRAGMA integrity_check").fetchall()
n = con.execute("SELECT count(*) FROM t").fetchone()[0]
u = con.execute("SELECT count(*) FROM t WHERE v LIKE '%u'").fetchone()[0]
con.close()
if check != [("ok",)] or n != 15000 or u != 10000:
    sys.exit(f"after reopening: integrity_check {check[:5]}, {n} rows (want 15000), {u} updated (want 10000)")
print(f"{elapsed:.4f}")
PY

# A C project: PROJ_FILES modules of generated integer code, a static library of them, a program that calls each.
cat >"$work/gen-cproj.py" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
os.makedirs(f"{root}/src", exist_ok=True)
os.makedirs(f"{root}/include", exist_ok=True)
with open(f"{root}/include/proj.h", "w") as h:
    h.write("#ifndef PROJ_H\n#define PROJ_H\n#include <stdint.h>\n#include <stddef.h>\n")
    h.write("typedef struct { uint32_t a, b, c, d; } state_t;\n")
    for i in range(n):
        h.write(f"uint64_t mod{i:03d}_run(uint32_t seed);\n")
    h.write("#endif\n")
for i in range(n):
    with open(f"{root}/src/mod{i:03d}.c", "w") as c:
        c.write('#include "proj.h"\n#include <string.h>\n\n')
        c.write(f"static const uint32_t table[256] = {{{', '.join(str(rng.randrange(1 << 32)) + 'u' for _ in range(256))}}};\n\n")
        for j in range(12):
            ops = []
            for _ in range(10):
                x, y = rng.choice("abcd"), rng.choice("abcd")
                r = rng.randrange(1, 31)
                ops.append(rng.choice([
                    f"s->{x} += (s->{y} << {r}) | (s->{y} >> {32 - r});",
                    f"s->{x} ^= table[(s->{y} + {rng.randrange(256)}u) & 255u];",
                    f"s->{x} = s->{x} * {rng.randrange(3, 1 << 20) | 1}u + s->{y};",
                    f"if (s->{x} & {1 << rng.randrange(32)}u) s->{y} -= s->{x} >> {r}; else s->{y} += {rng.randrange(1 << 16)}u;",
                ]))
            body = "\n        ".join(ops)
            c.write(f"static void step{j}(state_t *s, int rounds) {{\n    for (int k = 0; k < rounds; k++) {{\n        {body}\n    }}\n}}\n\n")
        c.write(f"uint64_t mod{i:03d}_run(uint32_t seed) {{\n    state_t s = {{seed, seed ^ 0x9e3779b9u, {rng.randrange(1 << 32)}u, {i}u}};\n")
        for j in range(12):
            c.write(f"    step{j}(&s, {rng.randrange(50, 200)});\n")
        c.write("    return ((uint64_t)(s.a ^ s.c) << 32) | (s.b ^ s.d);\n}\n")
with open(f"{root}/src/main.c", "w") as c:
    c.write('#include <stdio.h>\n#include "proj.h"\n\nint main(void) {\n    uint64_t sum = 0;\n')
    for i in range(n):
        c.write(f"    sum = sum * 31u + mod{i:03d}_run({i}u);\n")
    c.write('    printf("%016llx\\n", (unsigned long long)sum);\n    return 0;\n}\n')
with open(f"{root}/Makefile", "w") as m:
    m.write("""CC ?= gcc
CFLAGS ?= -O2 -g -Wall -Wextra
SRCS := $(sort $(wildcard src/*.c))
OBJS := $(SRCS:src/%.c=build/%.o)
LIBOBJS := $(filter-out build/main.o,$(OBJS))

all: bin/app

build bin:
\tmkdir -p $@

build/%.o: src/%.c | build
\t$(CC) $(CFLAGS) -Iinclude -MMD -MP -c $< -o $@

build/libproj.a: $(LIBOBJS)
\tar rcs $@ $^

bin/app: build/main.o build/libproj.a | bin
\t$(CC) $(CFLAGS) -o $@ build/main.o -Lbuild -lproj

clean:
\trm -rf build bin

-include $(OBJS:.o=.d)
.PHONY: all clean
""")
PY
python3 "$work/gen-cproj.py" "$work/cproj-src" "$PROJ_FILES"
tlog "building the C project once on the local disk (the reference output; also warms the compiler's files)"
cp -r "$work/cproj-src" "$work/cproj-ref"
make -C "$work/cproj-ref" -j2 -s >/dev/null
app_out=$("$work/cproj-ref/bin/app")
rm -rf "$work/cproj-ref"

tlog "snapshotting $SRC_REPO"
git clone -q --mirror --no-hardlinks "$SRC_REPO" "$work/src.git"
src_head=$(git -C "$work/src.git" rev-parse HEAD)

targets_start

# --- steps: each runs in a subshell with set -e; `timed CMD…` adds CMD's wall time to the step's figure ---------
timed() {
    local t0 t1
    t0=$(now)
    timeout "$STEP_TIMEOUT" "$@"
    t1=$(now)
    python3 -c "import sys; print(float(sys.argv[1]) + float(sys.argv[2]) - float(sys.argv[3]))" "$(cat "$tfile")" "$t1" "$t0" >"$tfile.new"
    mv "$tfile.new" "$tfile"
    python3 -c "import sys; print(f'{sys.argv[3]} {float(sys.argv[1]) - float(sys.argv[2]):.2f}', end='; ')" "$t1" "$t0" "$1 ${2:-}" >>"$tfile.parts"
}
step_sqlite() {
    local secs
    secs=$(timeout "$STEP_TIMEOUT" python3 "$work/sqlite-work.py" "$1/tree/db.sqlite")
    echo "$secs" >"$tfile"
}
step_clone() {
    timed git clone -q --no-hardlinks "$work/src.git" "$1/tree/clone"
    [ "$(git -C "$1/tree/clone" rev-parse HEAD)" = "$src_head" ] || { echo "clone: HEAD is not $src_head"; exit 1; }
    git -C "$1/tree/clone" fsck --no-progress --full
    [ -z "$(git -C "$1/tree/clone" status --porcelain)" ] || { echo "clone: git status is not clean:"; git -C "$1/tree/clone" status --short | head; exit 1; }
}
step_make() {
    cp -r "$work/cproj-src" "$1/tree/cproj"
    timed make -C "$1/tree/cproj" -j2 -s
    local out
    out=$("$1/tree/cproj/bin/app")
    [ "$out" = "$app_out" ] || { echo "make: the program printed $out, not $app_out"; exit 1; }
}
step_venv() {
    timed python3 -m venv "$1/tree/venv"
    "$1/tree/venv/bin/python" -c 'import sys; assert sys.prefix != sys.base_prefix, sys.prefix'
    "$1/tree/venv/bin/pip" --version >/dev/null
}
step_tar() {
    timed tar czf "$1/tree.tgz" -C "$1" tree
    mkdir "$1/x"
    timed tar xzf "$1/tree.tgz" -C "$1/x"
    timed diff -r --no-dereference "$1/tree" "$1/x/tree"
}
step_rm() {
    timed rm -r "$1"
    [ ! -e "$1" ] || { echo "rm: $1 still exists"; exit 1; }
}

declare -A T      # T[target,step]: the times of the rounds that succeeded
declare -A NFAIL
declare -A P      # P[target,tar]: its parts' times in each round
failures=()
mkdir -p "$work/logs"
for round in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
        d=${DIR[$t]}/r$round
        mkdir -p "$d/tree"
        for s in $STEPS; do
            log=$work/logs/$t.$s.$round
            tfile=$work/logs/$t.$s.$round.time
            echo 0 >"$tfile"
            : >"$tfile.parts"
            sync
            set +e
            ( set -e; "step_$s" "$d" ) >"$log" 2>&1
            rc=$?
            set -e
            if [ $rc = 0 ]; then
                secs=$(python3 -c "print(f'{float(open(\"$tfile\").read()):.3f}')")
                T[$t,$s]+="$secs "
                [ "$s" = tar ] && P[$t,$s]+="[$(cat "$tfile.parts")] "
                tlog "round $round, ${TARGET_LABEL[$t]}, $s: $secs s"
            else
                why=$(grep -v '^\s*$' "$log" | tail -3 | tr '\n' ' ' | cut -c1-300)
                [ $rc = 124 ] && why="timed out after $STEP_TIMEOUT s; $why"
                [ -n "$why" ] || why="exit status $rc"
                NFAIL[$t,$s]=$((${NFAIL[$t,$s]:-0} + 1))
                failures+=("round $round, ${TARGET_LABEL[$t]}, $s: $why")
                tlog "round $round, ${TARGET_LABEL[$t]}, $s: FAILED: $why"
            fi
        done
        rm -rf "$d" 2>/dev/null || true      # whatever a failed step left behind
    done
done
rss=$(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$driver_pid/status" 2>/dev/null || echo "?")

# --- report -----------------------------------------------------------------------------------------------------
median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A M
for t in "${TARGETS[@]}"; do
    for s in $STEPS; do
        if [ -n "${T[$t,$s]:-}" ]; then M[$t,$s]=$(median "${T[$t,$s]}"); else M[$t,$s]=-; fi
    done
done
cell() { # TARGET STEP
    local f=${NFAIL[$1,$2]:-0}
    if [ "${M[$1,$2]}" = - ]; then echo "FAILED"; return; fi
    if [ "$f" -gt 0 ]; then echo "${M[$1,$2]} (${f}F)"; else echo "${M[$1,$2]}"; fi
}
ratio() { python3 -c "import sys; a, b = sys.argv[1:]; print(f'{float(a) / float(b):.2f}' if '-' not in (a, b) and float(b) > 0 else '-')" "$1" "$2"; }
have_mfs=0; [[ " ${TARGETS[*]} " == *" mfs "* ]] && have_mfs=1
declare -A NAME=([sqlite]="SQLite 20k rows + WAL" [clone]="git clone" [make]="make -j2 ($PROJ_FILES files)"
    [venv]="python3 -m venv" [tar]="tar czf, xzf, diff -r" [rm]="rm -r of it all")
echo
echo "seconds, median of $ROUNDS round(s) (of the rounds that succeeded: (nF) = n rounds failed); lower is better"
printf '%-26s' "step"
for t in "${TARGETS[@]}"; do printf ' %12s' "${TARGET_LABEL[$t]}"; done
printf ' %8s' "ours/pt"; [ $have_mfs = 1 ] && printf ' %9s' "ours/mfs"
echo
for s in $STEPS; do
    printf '%-26s' "${NAME[$s]}"
    for t in "${TARGETS[@]}"; do printf ' %12s' "$(cell "$t" "$s")"; done
    printf ' %8s' "$(ratio "${M[ouro,$s]}" "${M[pt,$s]}")"
    [ $have_mfs = 1 ] && printf ' %9s' "$(ratio "${M[ouro,$s]}" "${M[mfs,$s]}")"
    echo
done
echo "each round (${TARGETS[*]}):"
for s in $STEPS; do
    printf '  %-7s' "$s:"
    for t in "${TARGETS[@]}"; do printf ' %s|' "${T[$t,$s]:-}"; done
    echo
done
if [[ " $STEPS " == *" tar "* ]]; then
    echo "tar, its parts in each round:"
    for t in "${TARGETS[@]}"; do printf '  %-12s %s\n' "${TARGET_LABEL[$t]}" "${P[$t,tar]:-}"; done
fi
echo "ours: mount driver peak RSS $rss"
if [ ${#failures[@]} -gt 0 ]; then
    echo
    echo "FAILED steps:"
    printf '  %s\n' "${failures[@]}"
    exit 1
fi
