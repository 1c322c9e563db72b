#!/usr/bin/env bash
# Every command of the original OuroborosFS protocol, typed with nc against a running ring, with what each answers.
# Start a ring first (e.g. `ouro up --nodes 3`), then:
#
#   examples/nc-session.sh                  # talks to 127.0.0.1:7000
#   NODE=127.0.0.1:7100 examples/nc-session.sh
#
# A ring with a cluster secret refuses these until the connection sends `NODE AUTH <secret>` first (the first line
# of each session below); on a node's own machine its Unix socket `<data>/node.sock` needs no secret
# (`nc -NU <data>/node-0/node.sock`). Exit status 0: every answer had the documented form.
set -euo pipefail
NODE=${NODE:-127.0.0.1:7000}
host=${NODE%:*} port=${NODE##*:}
auth=''
if [[ -n ${SECRET_FILE:-} ]]; then auth="NODE AUTH $(cat "$SECRET_FILE")"$'\n'; fi
work=$(mktemp -d /tmp/ouro-nc.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Sends the request (header, then the payload file if given) on one connection; prints both sides; keeps the answer.
say() {
    local request=$1 payload=${2:-}
    printf '\n\033[1m> %s\033[0m%s\n' "$request" "${payload:+   (then the $(wc -c < "$payload") bytes of $payload)}"
    { printf '%s%s\n' "$auth" "$request"; if [[ -n $payload ]]; then cat "$payload"; fi; } |
        nc -N "$host" "$port" > "$work/answer"
    # The answer to NODE AUTH ("OK") comes first when a secret is used: not shown.
    if [[ -n $auth ]]; then sed -i 1d "$work/answer"; fi
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
