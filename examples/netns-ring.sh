#!/usr/bin/env bash
# Several machines, on one: three "hosts" in network namespaces of their own (10.200.7.1-3, joined by a bridge in a
# hub namespace, so this machine's own network is never touched), each running a node exactly as the systemd unit
# in systemd/ runs it (ExecStart with the host's env file, restarted when it dies as Restart=always would), and a
# mount from a fourth namespace, as systemd/ouro-mount.service runs it. Then one host is cut off the network: the
# others mark it dead and the mount goes on reading and writing; it is plugged back in and returns with what it
# missed. As root:
#
#   examples/netns-ring.sh                  # uses .build/release/ouro; OURO=/path/to/ouro to choose
#
# Everything it made (namespaces, processes, the mount) is removed when it ends, also on failure or Ctrl-C.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
OURO=${OURO:-$here/../.build/release/ouro}
[[ -x $OURO ]] || { echo "no ouro executable at $OURO (swift build -c release, or set OURO)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "network namespaces and FUSE need root" >&2; exit 2; }
WORK=$(mktemp -d /tmp/ouro-netns.XXXXXX)
tag=ox$$    # namespace names: <tag>-a … (pid-tagged, so two runs do not meet)
hosts=(a b c)
mnt=$WORK/mnt
supervisors=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
    local status=$?
    set +e
    if (( status != 0 )); then
        for log in "$WORK"/*.log; do echo "--- last lines of $log"; tail -n 15 "$log"; done
    fi
    fusermount3 -uz "$mnt" 2>/dev/null
    for pid in "${supervisors[@]}"; do kill "$pid" 2>/dev/null; done
    # The nodes and the driver run inside the namespaces: stop whatever runs there.
    for ns in "${hosts[@]/#/$tag-}" "$tag-cl"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    done
    sleep 1
    for ns in "${hosts[@]/#/$tag-}" "$tag-cl" "$tag-hub"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    fusermount3 -uz "$mnt" 2>/dev/null
    [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM   # so that the clean-up runs on Ctrl-C and on a timeout too
# Runs a command in a namespace's network only (`ip netns exec` would also give it a private copy of the mounts,
# and a FUSE mount made there would be seen by nobody else).
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
wait_for() {
    local seconds=$1; shift
    for _ in $(seq $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "gave up after ${seconds} s waiting for: $*" >&2
    return 1
}

# The command line a unit's ExecStart gives with an env file, as systemd expands it (${VAR}: one word; $VAR: split
# into words), with our binary for /usr/local/bin/ouro and the data directories under $WORK instead of /var/lib.
unit_command() {
    local unit=$1 env=$2 instance=${3:-}
    (
        set -a
        # shellcheck disable=SC1090
        source "$env"
        set +a
        DATA=${DATA:+$WORK/data/${DATA##*/}}
        SECRET_FILE=${SECRET_FILE:+$WORK/secret}
        MOUNTPOINT=${MOUNTPOINT:+$mnt}
        line=$(sed -n 's/^ExecStart=//p' "$unit")
        line=${line//%i/$instance}
        line=${line//\/usr\/local\/bin\/ouro/$OURO}
        eval "words=($line)"
        printf '%s\n' "${words[@]}"
    )
}
# Starts a unit's command in a namespace and restarts it when it dies (Restart=always, RestartSec=2).
start_unit() {
    local ns=$1 log=$2; shift 2
    local -a command
    mapfile -t command < <(unit_command "$@")
    echo "  [$ns] ${command[*]}"
    ( while :; do in_ns "$ns" "${command[@]}" >> "$log" 2>&1 < /dev/null; sleep 2; done ) &
    supervisors+=($!)
}
status() { in_ns "$tag-cl" "$OURO" status --node 10.200.7.1:7000; }
alive_count() { [[ $(status | grep -c ' alive ') == "$1" ]]; }
state_of() { status | awk -v node="$1" '$1 == node { print $2 }'; }
is_state() { [[ $(state_of "$1") == "$2" ]]; }

step "1. Three hosts and a client, each a network namespace on a bridge of its own"
ip netns add "$tag-hub"
ip -n "$tag-hub" link add br0 type bridge
ip -n "$tag-hub" link set br0 up
attach() {   # namespace, port name in the hub, address
    ip netns add "$1"
    ip -n "$1" link set lo up
    ip -n "$tag-hub" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$tag-hub" link set "$2" master br0 up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}
for i in 0 1 2; do attach "$tag-${hosts[i]}" "v${hosts[i]}" "10.200.7.$((i + 1))"; done
attach "$tag-cl" vcl 10.200.7.100
ip netns list | grep "^$tag" | sed 's/^/  /'

step "2. A node on each host, as systemd/ouro-node@.service runs it"
mkdir -p "$WORK/data"
# The cluster secret the units name (/etc/ouro/secret on real machines): the same on every host.
( umask 077; openssl rand -hex 32 > "$WORK/secret" 2>/dev/null || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$WORK/secret" )
export OURO_SECRET_FILE=$WORK/secret   # for this script's own ouro commands (from the client's namespace: TCP)
for host in "${hosts[@]}"; do
    start_unit "$tag-$host" "$WORK/node-$host.log" "$here/systemd/ouro-node@.service" "$here/systemd/node-$host.env" "$host"
    [[ $host == a ]] && wait_for 30 in_ns "$tag-cl" "$OURO" status --node 10.200.7.1:7000   # the others join it
done
wait_for 60 alive_count 3
status

step "3. The ring mounted from the client, as systemd/ouro-mount.service runs it"
mkdir -p "$mnt"
start_unit "$tag-cl" "$WORK/mount.log" "$here/systemd/ouro-mount.service" "$here/systemd/mount.env"
wait_for 30 mountpoint -q "$mnt"
mkdir -p "$WORK/tree/logs"
for i in $(seq 1 20); do seq "$i" 1000 > "$WORK/tree/logs/log-$i.txt"; done
head -c $((8 * 1024 * 1024)) /dev/urandom > "$WORK/tree/image.bin"
cp -a "$WORK/tree" "$mnt/tree"
diff -r "$WORK/tree" "$mnt/tree"
echo "  copied a tree of $(find "$WORK/tree" -type f | wc -l) files in; it reads back the same"

step "4. Host c is cut off the network (its cable pulled: the node keeps running)"
ip -n "$tag-hub" link set vc down
wait_for 60 is_state 10.200.7.3:7000 dead
status
diff -r "$WORK/tree" "$mnt/tree"
echo "written while host c was cut off" > "$mnt/tree/while-away.txt"
echo "  everything still reads back, and writes go on"

step "5. Host c is plugged back in: it returns and catches up"
ip -n "$tag-hub" link set vc up
wait_for 60 is_state 10.200.7.3:7000 alive
status
caught_up() { in_ns "$tag-cl" "$OURO" ls --node 10.200.7.3:7000 | grep -q tree/while-away.txt; }
wait_for 60 caught_up
in_ns "$tag-cl" "$OURO" pull --node 10.200.7.3:7000 tree/while-away.txt -
# The ring closes around it again (maybe in another order): following each node's successor (the NEXT column of
# `ouro status`) from a passes every node once and returns to a. (The ring has a cluster secret, so this client
# asks with `ouro`, which proves it; `nc` from another machine would be refused.)
ring_whole() {
    status | awk 'NR > 1 && $2 == "alive" { next_of[$1] = $3 }
        END { node = "10.200.7.1:7000"; for (i = 0; i < 3; i++) { if (seen[node]++) exit 1; node = next_of[node] }
              exit !(node == "10.200.7.1:7000") }'
}
wait_for 60 ring_whole
status
no_short() { status | awk 'NR > 1 && $1 != "files:" { short = substr($0, 88, 7); gsub(/ /, "", short); if (short != "0") bad = 1 } END { exit bad }'; }
wait_for 60 no_short
status

step "Done: a ring of three hosts lost one to the network and took it back; nothing was lost."
