# Shared by bench/update-bench.sh and bench/programs-bench.sh (sourced, not run): finds or builds `ouro`, starts
# the targets the benchmarks compare, and stops them again.
#   local  a directory on the local disk
#   pt     libfuse's passthrough_ll over a local directory (the FUSE ceiling on this machine)
#   ouro   an OuroborosFS mount over a local 3-node ring with copies 2 (`ouro up`)
#   mfs    MooseFS (master, 3 chunkservers, 2 copies) via /work/shared/peers/setup-moosefs.sh, when WITH_MOOSEFS=1
# The caller sets `top` (the repository), `work` (a fresh temporary directory), `BASE_PORT` and `bench_name`,
# calls targets_start, and installs `trap targets_cleanup EXIT` before it. After targets_start, TARGETS lists the
# targets in order and DIR[<target>] is the directory to work in on each.
# Knobs: OURO_BIN (binary to use), WITH_MOOSEFS=1, PEERS_DIR (default /work/shared/peers), KEEP=1 (keep $work).

declare -A DIR
TARGETS=()
declare -A TARGET_LABEL=([local]=local [pt]=passthrough [ouro]=ours [mfs]=MooseFS)

tlog() { printf '[%s] %s\n' "$bench_name" "$*" >&2; }
now() { date +%s.%N; }
drop_caches() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }

targets_find_ouro() {
    if [ -n "${OURO_BIN:-}" ]; then
        ouro=$OURO_BIN
    elif [ -x "$top/.build-rel/release/ouro" ]; then
        ouro=$top/.build-rel/release/ouro
    else
        command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
        tlog "building release into $top/.build-bench (incremental after the first time)"
        (cd "$top" && swift build -c release --scratch-path "$top/.build-bench" >&2)
        ouro=$top/.build-bench/release/ouro
    fi
    [ -x "$ouro" ] || { tlog "no ouro binary at $ouro"; exit 2; }
    # A private copy: the binary under test must not change under a running ring (a rebuild replaces it, and
    # `ouro up` restarts dead nodes from its own path).
    cp "$ouro" "$work/ouro"
    tlog "ouro: $ouro ($(stat -c '%y' "$ouro" | cut -d. -f1))"
    ouro=$work/ouro
}

targets_start() {
    [ "$(id -u)" = 0 ] || { tlog "run as root (FUSE mounts, drop_caches)"; exit 2; }
    [[ $BASE_PORT =~ ^[0-9]+$ ]] || { tlog "BASE_PORT must be a number"; exit 2; }
    for p in "$BASE_PORT" $((BASE_PORT + 1)) $((BASE_PORT + 2)); do
        if ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then tlog "port $p is in use: set BASE_PORT"; exit 2; fi
    done
    targets_find_ouro
    local ex=/usr/share/doc/libfuse3-dev/examples
    [ -f "$ex/passthrough_ll.c" ] || { tlog "installing libfuse3-dev"; apt-get install -y -qq libfuse3-dev pkg-config >/dev/null; }
    gcc -O2 -Wall "$ex/passthrough_ll.c" $(pkg-config fuse3 --cflags --libs) -o "$work/passthrough_ll"

    mkdir -p "$work/local" "$work/pt-src" "$work/pt" "$work/ouro-mnt"
    DIR[local]=$work/local
    DIR[pt]=$work/pt
    DIR[ouro]=$work/ouro-mnt
    # -f: stays in the foreground, so $! is the daemon itself
    "$work/passthrough_ll" -f -o source="$work/pt-src" "$work/pt" >"$work/pt.log" 2>&1 &
    pt_pid=$!
    "$ouro" up --nodes 3 --copies 2 --base-port "$BASE_PORT" --data "$work/ring" --mount "$work/ouro-mnt" \
        >"$work/up.log" 2>&1 &
    up_pid=$!
    local i
    for i in $(seq 300); do
        grep -q "mounted at" "$work/up.log" && grep -q " $work/pt " /proc/self/mountinfo && break
        kill -0 "$up_pid" 2>/dev/null || break
        sleep 0.2
    done
    grep -q "mounted at" "$work/up.log" || { tlog "the ring did not mount:"; cat "$work/up.log" >&2; exit 1; }
    grep -q " $work/pt " /proc/self/mountinfo || { tlog "passthrough_ll did not mount:"; cat "$work/pt.log" >&2; exit 1; }
    driver_pid=$(awk '/mounted at/ { for (i = 1; i < NF; i++) if ($i == "pid") print $(i + 1) }' "$work/up.log" | head -1)
    TARGETS=(local pt ouro)

    if [ "${WITH_MOOSEFS:-0}" = 1 ]; then
        local peers=${PEERS_DIR:-/work/shared/peers} mnt=/tmp/peers/mnt-mfs
        if grep -qs " $mnt fuse" /proc/mounts; then
            tlog "MooseFS is already mounted at $mnt: using it, and leaving it running"
        else
            tlog "starting MooseFS ($peers/setup-moosefs.sh; log $work/mfs-setup.log)"
            mfs_started=1
            if ! bash "$peers/setup-moosefs.sh" >"$work/mfs-setup.log" 2>&1; then
                tlog "setup-moosefs.sh failed:"; tail -20 "$work/mfs-setup.log" >&2; exit 1
            fi
        fi
        mfs_dir=$mnt/$bench_name.$$
        mkdir -p "$mfs_dir"
        DIR[mfs]=$mfs_dir
        TARGETS+=(mfs)
    fi
    tlog "targets: ${TARGETS[*]} (ring on ports $BASE_PORT-$((BASE_PORT + 2)), work in $work)"
}

# Stops everything targets_start started, even half-way; safe to call more than once.
targets_cleanup() {
    set +e
    [ -n "${mfs_dir:-}" ] && rm -rf "$mfs_dir"
    for m in "$work/pt" "$work/ouro-mnt"; do
        grep -qs " $m " /proc/self/mountinfo && fusermount3 -uz "$m" 2>/dev/null
    done
    if [ -n "${up_pid:-}" ] && kill -0 "$up_pid" 2>/dev/null; then
        kill -INT "$up_pid" 2>/dev/null
        local i
        for i in $(seq 150); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$up_pid" 2>/dev/null; then
            tlog "ouro up did not stop in 30 s: killing it and its children"
            kill -KILL "$up_pid" 2>/dev/null
            # its children, as it printed them ("pid N"), if they are still ours (their command line names $work)
            for pid in $(awk '{ for (i = 1; i < NF; i++) if ($i == "pid") print $(i + 1) }' "$work/up.log" 2>/dev/null); do
                tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$work" && kill -KILL "$pid" 2>/dev/null
            done
        fi
        wait "$up_pid" 2>/dev/null
    fi
    up_pid=
    if [ -n "${pt_pid:-}" ]; then kill "$pt_pid" 2>/dev/null; wait "$pt_pid" 2>/dev/null; pt_pid=; fi
    if [ "${mfs_started:-0}" = 1 ]; then
        tlog "stopping MooseFS"
        bash "${PEERS_DIR:-/work/shared/peers}/teardown.sh" mfs >>"$work/mfs-setup.log" 2>&1
        mfs_started=0
    fi
    if [ "${KEEP:-0}" = 1 ]; then tlog "kept $work"; else rm -rf "$work"; fi
}
