#!/usr/bin/env bash
# Failure benchmark: on a local 3-node ring (copies 2, no supervisor, so a killed node stays dead):
#  - time from `kill -9` of a node to the others declaring it dead, and to the first push that routes around it;
#  - time and throughput of re-replicating what the dead node held (once its grace period is over);
#  - pull throughput with every node alive vs with one node dead.
#   SIZE_MIB=1024 GOSSIP_MS=1000 GRACE_S=5 bash bench/failure-bench.sh
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-1024}
GOSSIP_MS=${GOSSIP_MS:-1000}
GRACE_S=${GRACE_S:-5}
BASE_PORT=${BASE_PORT:-7700}
top=$(cd "$(dirname "$0")/.." && pwd)
ouro=${OURO_BIN:-$top/.build/release/ouro}
work=$(mktemp -d /var/tmp/ouro-fbench.XXXXXX)
pids=()
cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
[ -x "$ouro" ] || (cd "$top" && swift build -c release >/dev/null)

now() { date +%s.%N; }
since() { python3 -c "print(f'{$(now) - $1:.2f}')"; }
mbps() { python3 -c "print(f'{$1 / ($3 - $2) / 1e6:.0f}')"; }
ask() { printf '%s\n' "$2" | nc -N 127.0.0.1 "$1"; }

for i in 0 1 2; do
    "$ouro" node --listen "127.0.0.1:$((BASE_PORT + i))" --data "$work/n$i" --copies 2 \
        --gossip-interval "$GOSSIP_MS" --grace-period "$GRACE_S" 2>"$work/n$i.log" &
    pids+=($!)
    disown  # the kills below are the point: no job-control notices about them
done
for i in 0 1 2; do
    for _ in $(seq 50); do ask $((BASE_PORT + i)) "NODE PING" 2>/dev/null | grep -q PONG && break; sleep 0.1; done
    ask $((BASE_PORT + i)) "NODE NEXT 127.0.0.1:$((BASE_PORT + (i + 1) % 3))" >/dev/null
done
ask "$BASE_PORT" "NETMAP DISCOVER" >/dev/null

head -c $((SIZE_MIB << 20)) /dev/urandom >"$work/file"
"$ouro" push "$work/file" big --node "127.0.0.1:$BASE_PORT" >/dev/null
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now); "$ouro" pull big "$work/out" --node "127.0.0.1:$BASE_PORT"; t1=$(now)
alive_pull=$(mbps $((SIZE_MIB << 20)) "$t0" "$t1")
cmp "$work/file" "$work/out"; rm "$work/out"

victim=$((BASE_PORT + 2))
held=$(du -sb "$work/n2/chunks" | cut -f1)
killed=$(now)
kill -9 "${pids[2]}"
until ask "$BASE_PORT" "NETMAP GET" | grep -q "127.0.0.1:$victim=Dead"; do sleep 0.02; done
detected=$(since "$killed")
head -c 4096 /dev/urandom >"$work/small"
until "$ouro" push "$work/small" after-kill --node "127.0.0.1:$((BASE_PORT + 1))" 2>/dev/null | grep -q "split into 2 chunks"; do sleep 0.02; done
routed=$(since "$killed")

sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now); "$ouro" pull big "$work/out" --node "127.0.0.1:$BASE_PORT"; t1=$(now)
dead_pull=$(mbps $((SIZE_MIB << 20)) "$t0" "$t1")
cmp "$work/file" "$work/out"; rm "$work/out"

# Re-replication starts once the grace period is over; it is done when no chunk is short of copies.
short() { ask "$BASE_PORT" "NODE INFO" | tail -n +2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["underReplicatedChunks"])'; }
until [ "$(short)" = 0 ]; do sleep 0.05; done
repaired=$(since "$killed")
# The grace period runs from the moment the node was declared dead.
repair_time=$(python3 -c "print(f'{$repaired - $detected - $GRACE_S:.2f}')")
repair_rate=$(python3 -c "print(f'{$held / max(0.01, $repaired - $detected - $GRACE_S) / 1e6:.0f}')")

echo
echo "OuroborosFS failure benchmark: 3 nodes, copies 2, ${SIZE_MIB} MiB file, gossip ${GOSSIP_MS} ms, grace ${GRACE_S} s"
echo "kill -9 → declared dead:               ${detected} s"
echo "kill -9 → first push routed around it: ${routed} s"
echo "re-replication of $((held >> 20)) MiB the dead node held: ${repair_time} s after the grace period (~${repair_rate} MB/s)"
echo "pull, all nodes alive:                 ${alive_pull} MB/s"
echo "pull, one node dead:                   ${dead_pull} MB/s"
