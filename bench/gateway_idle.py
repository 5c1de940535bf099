#!/usr/bin/env python3
"""Memory per idle keep-alive connection, for bench/gateway-vs-nginx.sh.

  gateway_idle.py PORT N PID[,PID...]

Opens N connections to 127.0.0.1:PORT, sends one `GET /1k` on each and reads
the whole answer (so each connection has served a request and sits idle in
keep-alive, as a browser's does), waits 3 s for the proxy to settle, and prints
one JSON line: the proxy's RSS (VmRSS summed over PIDs) before and after,
and the delta per connection. Connections that fail are counted, not fatal.
"""
import json
import socket
import sys
import time

port, n, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")]


def rss_kb():
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in body")
        body += chunk
    return status


time.sleep(0.3)
before = rss_kb()
socks, failed, bad_status = [], 0, 0
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n")
        if read_response(s) != 200:
            bad_status += 1
        socks.append(s)
    except OSError:
        failed += 1
# Settle: longer than capstan's idle_park_after (250ms) and its allocator's
# dirty-page decay (1s, src/cmd/jemalloc_conf.cc), so what is measured is
# what idle connections hold, not the residue of opening them.
time.sleep(3.0)
after = rss_kb()
# Still open? (a proxy that dropped them would flatter itself)
still_open = 0
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(1) == b"":
            continue
        still_open += 1
    except BlockingIOError:
        still_open += 1
    except OSError:
        pass
for s in socks:
    s.close()
opened = len(socks)
print(json.dumps({"n": n, "opened": opened, "failed": failed, "bad_status": bad_status,
                  "still_open": still_open, "rss_before_kb": before, "rss_after_kb": after,
                  "rss_per_conn_bytes": (after - before) * 1024 / opened if opened else 0}))
