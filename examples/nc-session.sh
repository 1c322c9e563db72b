#!/usr/bin/env bash
# Every command of the original OuroborosFS protocol, typed with nc against a running ring, with what each answers.
# Start a ring first (e.g. `ouro up --nodes 3`), then:
#
#   examples/nc-session.sh                  # talks to 127.0.0.1:7000
#   NODE=127.0.0.1:7100 examples/nc-session.sh
#
# A ring with a cluster secret (what `ouro up` starts) takes TCP connections in TLS keyed by the secret only (or,
# started with --insecure, after a proof that takes an HMAC: NODE HELLO, NODE PROVE), nothing to type. On the node's
# own machine its Unix socket needs no secret (it lets in the node's own user only): `NODE LOCAL`, which any client
# may ask, names it, and this script then talks `nc -NU <socket>`. Exit status 0: every answer had the documented form.
set -euo pipefail
NODE=${NODE:-127.0.0.1:7000}
host=${NODE%:*} port=${NODE##*:}
connect=(nc -N "$host" "$port")
if printf 'NODE STATUS\n' | nc -N "$host" "$port" | grep -q '^ERR DENIED'; then
    socket=$(printf 'NODE LOCAL\n' | nc -N "$host" "$port" | sed -n 's/^OK //p')
    [[ -S $socket ]] || { echo "$NODE has a cluster secret and its Unix socket is not on this machine" >&2; exit 1; }
    echo "(this ring has a cluster secret: talking to $NODE through its Unix socket $socket)"
    connect=(nc -NU "$socket")
fi
work=$(mktemp -d /tmp/ouro-nc.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Sends the request (header, then the payload file if given) on one connection; prints both sides; keeps the answer.
say() {
    local request=$1 payload=${2:-}
    printf '\n\033[1m> %s\033[0m%s\n' "$request" "${payload:+   (then the $(wc -c < "$payload") bytes of $payload)}"
    { printf '%s\n' "$request"; if [[ -n $payload ]]; then cat "$payload"; fi; } | "${connect[@]}" > "$work/answer"
    if LC_ALL=C grep -q '[^[:print:][:space:]]' "$work/answer"; then
        echo "< ($(wc -c < "$work/answer") bytes of file content)"
    else
        sed 's/^/< /' "$work/answer"
    fi
}
# The answer matched the extended regular expression (on its whole text), or the session fails.
expect() { grep -Eq "$1" "$work/answer" || { echo "unexpected answer (wanted /$1/)" >&2; exit 1; }; }

say "NODE PING";                     expect '^PONG$'
say "NODE STATUS";                   expect '^PORT ' ; expect '^NEXT ' ; expect '^OK$'
successor=$(sed -n 's/^NEXT //p' "$work/answer")

# Rewires the ring: the node's successor. Here it is set to what it already is, so the ring stays as it was.
say "NODE NEXT $successor";          expect "^OK next=$successor\$"

# A walk around the ring that collects every node and hands the map to all of them.
say "NETMAP DISCOVER";               expect '^OK$'
say "NETMAP GET";                    expect '=Alive$' ; expect '^OK$'
say "TOPOLOGY WALK";                 expect '^[^ ]+->[^ ]+$' ; expect '^OK$'

# A file of 100 KiB, pushed under a path (directories are made as needed), listed, pulled back and compared.
head -c 102400 /dev/urandom > "$work/photo.jpg"
say "FILE PUSH 102400 holiday/photo.jpg" "$work/photo.jpg"
expect '^FILE 102400 bytes split into [0-9]+ chunks and distributed$' ; expect '^OK$'
say "FILE LIST";                     expect '^name,start,size$' ; expect '^holiday/photo.jpg,[^,]+,102400$'
say "FILE PULL holiday/photo.jpg"
cmp "$work/photo.jpg" "$work/answer" && echo "(the same bytes as were pushed)"

# Errors are one line: ERR, a code, a reason.
say "FILE PULL no/such/file";        expect '^ERR file not found$'
say "FILE FROB";                     expect '^ERR BAD_REQUEST'
echo
echo "every answer had the documented form"
