#!/usr/bin/env bash
# A first tour of OuroborosFS on one machine: start a ring and mount it, add a fourth node, copy a tree in, kill a
# node the hard way, read everything back while it is dead, watch the ring repair the copies it held, and bring it
# back. Run it as root (FUSE) from anywhere:
#
#   examples/walkthrough.sh                 # uses .build/release/ouro (build it first: swift build -c release)
#   OURO=/path/to/ouro BASE_PORT=7100 WORK=/tmp/tour examples/walkthrough.sh
#
# It stops everything it started when it ends, also on failure or Ctrl-C. Exit status 0: every step held.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
OURO=${OURO:-$here/../.build/release/ouro}
BASE_PORT=${BASE_PORT:-7100}
WORK=${WORK:-$(mktemp -d /tmp/ouro-tour.XXXXXX)}
GRACE=${GRACE:-3}          # seconds a node may stay dead before its chunks are copied elsewhere
[[ -x $OURO ]] || { echo "no ouro executable at $OURO (swift build -c release, or set OURO)" >&2; exit 2; }

data=$WORK/data mnt=$WORK/mnt
first=127.0.0.1:$BASE_PORT fourth=127.0.0.1:$((BASE_PORT + 3))
up_pid='' fourth_pid=''
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
cleanup() {
    set +e
    [[ -n $fourth_pid ]] && kill "$fourth_pid" 2>/dev/null
    [[ -n $up_pid ]] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    fusermount3 -uz "$mnt" 2>/dev/null
    [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM   # so that the clean-up runs on Ctrl-C and on a timeout too
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local seconds=$1; shift
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "gave up after ${seconds} s waiting for: $*" >&2
    return 1
}
# The ring's view of node $1: the STATE column of `ouro status`.
state_of() { "$OURO" status --node "$first" | awk -v node="$1" '$1 == node { print $2 }'; }
is_state() { [[ $(state_of "$1") == "$2" ]]; }
alive_count() { [[ $("$OURO" status --node "$first" | grep -c ' alive ') == "$1" ]]; }
# `ouro status` columns are fixed-width: NODE 24, STATE 7, NEXT 24, CHUNKS 8, STORED 12, DISK FREE 12, SHORT 7, REPAIR.
short_and_repair() {
    "$OURO" status --node "$first" | awk 'NR > 1 && $2 != "" && $1 != "files:" {
        short = substr($0, 88, 7); gsub(/ /, "", short); repair = substr($0, 95)
        printf "%s\t%s\t%s\t%s\n", $1, $2, short == "" ? "-" : short, repair == "" ? "-" : repair }'
}
# Every live node reports no chunk short of copies and an idle repair queue.
repaired() { short_and_repair | awk -F '\t' '$2 == "alive" && ($3 != "0" || $4 != "idle") { bad = 1 } END { exit bad }'; }

step "1. A ring of 3 nodes on this machine, mounted at $mnt"
mkdir -p "$WORK"
"$OURO" up --nodes 3 --base-port "$BASE_PORT" --data "$data" --mount "$mnt" --grace-period "$GRACE" \
    --gossip-interval 300 > "$WORK/up.log" 2>&1 &
up_pid=$!
wait_for 60 grep -q "Press Ctrl-C" "$WORK/up.log"
cat "$WORK/up.log"

step "2. A fourth node joins the running ring (with the cluster secret ouro up made: $data/secret)"
mkdir -p "$data/extra"
"$OURO" node --listen "$fourth" --data "$data/extra" --join "$first" --secret-file "$data/secret" --grace-period "$GRACE" --gossip-interval 300 \
    > "$data/extra/node.log" 2>&1 &
fourth_pid=$!
wait_for 30 alive_count 4
run "$OURO" status --node "$first"

step "3. Copy a tree in: ordinary files, a big one, a symlink"
src=$WORK/tree
mkdir -p "$src/docs/notes" "$src/bin"
for i in $(seq 1 40); do printf 'note %s\n%s\n' "$i" "$(date -u)" > "$src/docs/notes/note-$i.txt"; done
head -c $((24 * 1024 * 1024)) /dev/urandom > "$src/bin/blob.bin"
cp "$here/walkthrough.sh" "$src/docs/"
ln -s docs/walkthrough.sh "$src/tour"
run cp -a "$src" "$mnt/tree"
run ls -l "$mnt/tree" "$mnt/tree/bin"
run "$OURO" ls --node "$first"

step "4. Kill the fourth node (SIGKILL: no goodbye)"
echo "\$ kill -9 $fourth_pid"
{ kill -9 "$fourth_pid"; wait "$fourth_pid"; } 2>/dev/null || true
fourth_pid=''
echo "(the others ping it every 300 ms; after a few missed pings it is marked dead and the ring closes around it)"
wait_for 30 is_state "$fourth" dead
run "$OURO" status --node "$first"

step "5. Read everything back while it is dead"
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true   # read from the ring, not from the page cache
run diff -r "$src" "$mnt/tree"
echo "every file reads back the same"

step "6. Watch the ring copy what the dead node held (after the ${GRACE} s grace period)"
for _ in $(seq 120); do
    short_and_repair | awk -F '\t' '{ printf "  %-22s %-7s short %-5s repair %s\n", $1, $2, $3, $4 }'
    repaired && break
    echo "  ..."
    sleep 1
done
repaired || { echo "the ring did not repair within 120 s" >&2; exit 1; }
run "$OURO" status --node "$first"

step "7. Bring the node back: it catches up with what changed while it was away"
echo "written while node 4 was dead" > "$mnt/tree/after.txt"
"$OURO" node --listen "$fourth" --data "$data/extra" --join "$first" --secret-file "$data/secret" --grace-period "$GRACE" --gossip-interval 300 \
    >> "$data/extra/node.log" 2>&1 &
fourth_pid=$!
wait_for 30 is_state "$fourth" alive
listed() { "$OURO" ls --node "$fourth" | grep -q tree/after.txt; }
wait_for 30 listed
run "$OURO" status --node "$first"
run "$OURO" pull --node "$fourth" tree/after.txt -
extra=$(diff -r "$src" "$mnt/tree" | grep -v "^Only in $mnt/tree: after.txt\$" || true)
[[ -z $extra ]] || { echo "the tree differs: $extra" >&2; exit 1; }

step "Done: the ring kept every byte through a node's death, repaired itself, and took the node back."
