#!/usr/bin/env python3
"""A flood of connections that never prove the cluster secret: opens --count TCP connections to a node from
--source (a loopback address of its own, e.g. 127.0.0.2, as a stranger's host would be) as fast as it can, holds
them, and opens a new one for each the node closes, until --seconds have passed. Prints what the node did with them:
  flood: opened N, refused at once R (ERR UNAVAILABLE too many connections...), closed later C (the deadline to
  prove the secret), held at the end H (let in and not closed yet: at most the source's share)
Used by FloodTests and bench/flood-bench.sh.
"""
import argparse, resource, selectors, socket, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--source", default="127.0.0.2")
parser.add_argument("--count", type=int, default=10000)
parser.add_argument("--seconds", type=float, default=20)
parser.add_argument("--ready", help="a file to create once --count connections were opened")
parser.add_argument("--rate", type=float, default=5000, help="new connections a second at most, after the first --count")
args = parser.parse_args()

want = args.count + 512
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
except (ValueError, OSError):
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

selector = selectors.DefaultSelector()
opened = refused = closed = failed = 0


def open_one():
    global opened, failed
    s = socket.socket()
    s.setblocking(False)
    try:
        s.bind((args.source, 0))
        s.connect_ex((args.host, args.port))
    except OSError:
        failed += 1
        s.close()
        return
    selector.register(s, selectors.EVENT_READ)
    opened += 1


def drain(timeout):
    global refused, closed
    for key, _ in selector.select(timeout):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"ERR UNAVAILABLE too many connections"):
            refused += 1
        elif data.startswith(b"ERR"):
            closed += 1
        elif data:
            continue  # something else: keep reading until it closes
        else:
            closed += 1
        selector.unregister(s)
        s.close()


start = time.time()
while opened < args.count and time.time() - start < args.seconds:
    for _ in range(200):
        open_one()
    drain(0)
if args.ready:
    open(args.ready, "w").close()
print(f"flood: {opened} connections opened in {time.time() - start:.1f} s", flush=True)
last = time.time()
while time.time() - start < args.seconds:
    drain(0.05)
    # Keep the pressure: as many open as asked for, at most --rate new ones a second.
    now = time.time()
    allowed = int((now - last) * args.rate)
    if allowed > 0:
        last = now
        for _ in range(min(allowed, args.count - len(selector.get_map()))):
            open_one()
# Then nothing new, until every connection in flight has had its answer (quiet for 2 s, 20 s at most): what is
# left open was let in.
quiet_since = end = time.time()
while time.time() - quiet_since < 2 and time.time() - end < 20:
    before = (refused, closed)
    drain(0.1)
    if (refused, closed) != before:
        quiet_since = time.time()
# Held: connected and not answered (let in). A socket still connecting sits in the kernel's queues (the node
# has not accepted it yet), which is not a connection the node holds.
held = pending = 0
for key in list(selector.get_map().values()):
    try:
        key.fileobj.getpeername()
        held += 1
    except OSError:
        pending += 1
print(f"flood: opened {opened}, refused at once {refused}, closed later {closed}, held at the end {held}, "
      f"still connecting {pending}, could not open {failed}", flush=True)
