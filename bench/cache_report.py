#!/usr/bin/env python3
"""Writes the benchmark section of docs/benchmarks/cache.md from
bench/cache-vs-nginx-varnish.sh's raw runs.

  cache_report.py RESULTS.jsonl OUT.md MACHINE COMMAND VERSIONS DATE [NOTE]

RESULTS.jsonl has one line per (cache, round, object): {"cache", "round",
"row", "result"} where result is wrk's numbers (bench/gateway_wrk.lua) plus
cpu_us, origin_requests, body_ok, hit_before, hit_after, or a status
("failed", "not available"). docs/benchmarks/cache-bench.jsonl is a copy, so
the section can be regenerated. Only the part between the benchmark markers
is rewritten; the conformance section is kept.
"""
import json
import os
import statistics
import sys
from collections import defaultdict

BEGIN = "<!-- benchmark:begin (bench/cache_report.py) -->"
END = "<!-- benchmark:end -->"
CACHES = ("capstan", "capstan-copy", "nginx", "varnish")
# Not caches: bench/send_floor.c, the least a server can spend on this kernel
FLOORS = ("floor-sendfile", "floor-splice")
ROWS = [("1k", "1 KiB object"), ("100k", "100 KiB object")]
TARGET = 0.6  # capstan's CPU per hit <= 0.6x the better peer's (issue 18)


def summarise(results):
    ok = [r for r in results if r.get("status") == "ok" and r.get("requests")]
    if not ok:
        status = results[0].get("status", "missing") if results else "missing"
        return {"status": status, "reason": results[0].get("reason", "") if results else ""}
    med = lambda f: statistics.median(f(r) for r in ok)
    errors = sum(r.get(k, 0) for r in ok for k in
                 ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "status": "ok",
        "rounds": len(ok),
        "hits_per_s": med(lambda r: r["requests"] / r["duration_us"] * 1e6),
        "cpu_us_per_hit": med(lambda r: r["cpu_us"] / r["requests"]),
        "p99_ms": med(lambda r: r["p99_us"] / 1000),
        "requests": sum(r["requests"] for r in ok),
        "origin_requests": sum(r.get("origin_requests", 0) for r in ok),
        "verified": all(r.get("body_ok") and r.get("hit_before") and r.get("hit_after") for r in ok),
        "evidence": ok[-1].get("hit_after", ""),
        "errors": errors,
        "segments_per_hit": (med(lambda r: r["tcp_segments"] / r["requests"])
                             if all("tcp_segments" in r for r in ok) else None),
    }


def render(results_path, machine, command, versions, date, note):
    runs = defaultdict(list)
    for line in open(results_path, encoding="utf-8"):
        if line.strip():
            r = json.loads(line)
            runs[(r["row"], r["cache"])].append(r["result"])
    S = {(row, c): summarise(runs.get((row, c), [])) for row, _ in ROWS for c in CACHES + FLOORS}

    out = [BEGIN, "", "## Benchmark: hits per second and CPU per hit", ""]
    if note:
        out.append(f"> **{note}**")
        out.append("")
    out.append(f"- Command: `{command}`")
    out.append(f"- Date: {date}")
    out.append(f"- Machine: {machine}")
    out.append(f"- Versions: {versions}")
    out.append("- One worker on one core each, pinned to core 0: `capstan gateway --threads 1 --cache 256MiB` "
               "(capstan-copy: the same with `--io-splice=false`, large bodies copied into the socket "
               "rather than spliced); "
               "nginx `worker_processes 1`, `proxy_cache` with its files on /dev/shm (tmpfs), sendfile on; "
               "Varnish `-s malloc,256m -p thread_pools=1 -p thread_pool_min=5 -p thread_pool_max=CONNS` "
               "(one pool, the minimum; 5 threads, the minimum; at most one thread per client connection, "
               "because Varnish serves each request in flight on its own thread; all on core 0). The load "
               "generator (wrk -t 1) and the origin (one nginx worker serving the files with "
               "`Cache-Control: max-age=3600`) share core 1. "
               "floor-sendfile and floor-splice are not caches: bench/send_floor.c, one thread with "
               "an epoll loop that answers each GET with one `send` of a fixed ~300-byte head and the "
               "body by one `sendfile` from a memfd (nginx's way) or one `vmsplice` + `splice` "
               "(capstan's way). Every server makes the same sending calls; a server can save only on "
               "receiving the request (the floor's `read` and `epoll_wait`) and on what it does between "
               "the calls.")
    out.append("- Every cache is warmed first; a row counts only if the body equals the origin's file, "
               "a request before and after the timed run is a hit by the cache's own headers (capstan "
               "`X-Cache`, nginx `X-Cache-Status` from `$upstream_cache_status`, Varnish's two "
               "`X-Varnish` ids) and the origin's access log did not grow during the timed run.")
    out.append("- **CPU µs/hit** = (utime+stime of the cache's processes, threads and children from "
               "/proc/PID/stat, after minus before the run) / hits. req/s on 2 shared cores is bounded by "
               "core 1 (wrk and the origin) and by other work on the machine; CPU per hit is the figure "
               "that holds. Loopback TCP work done in softirq on core 0 is charged to whichever process "
               "runs there, so mostly to the cache; /proc's ticks are 10 ms, so short runs are coarse. "
               "**TCP segments/hit**: Tcp OutSegs of /proc/net/snmp over the run (machine-wide, both "
               "directions of loopback) per hit: equal counts mean the kernel did the same work.")
    out.append("")
    out.append("| object | cache | hits/s | CPU µs/hit | TCP segments/hit | p99 ms | hits verified | "
               "origin requests during runs | errors |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for row, label in ROWS:
        for c in CACHES + FLOORS:
            m = S[(row, c)]
            if m["status"] == "ok":
                segs = f"{m['segments_per_hit']:.2f}" if m["segments_per_hit"] is not None else "n/a"
                out.append(f"| {label} | {c} | {m['hits_per_s']:.0f} | {m['cpu_us_per_hit']:.1f} | {segs} | "
                           f"{m['p99_ms']:.2f} | {'yes' if m['verified'] else '**no**'} | "
                           f"{m['origin_requests']} | {m['errors']} |")
            elif m["status"] == "not available":
                out.append(f"| {label} | {c} | not available yet | | | | | | {m['reason']} |")
            elif m["status"] != "missing":
                out.append(f"| {label} | {c} | FAILED | | | | | | see the run's log |")
    out.append("")
    out.append(f"### Ratios (CPU per hit: lower is better; target: capstan ≤ {TARGET}× the better peer)")
    out.append("")
    out.append("| object | capstan / nginx | capstan / varnish | capstan / better peer | target met | "
               "capstan / capstan-copy | capstan / floor | floor / better peer |")
    out.append("|---|---|---|---|---|---|---|---|")
    for row, label in ROWS:
        cap, copy, ngx, var = (S[(row, c)] for c in CACHES)
        floors = [S[(row, f)] for f in FLOORS if S[(row, f)]["status"] == "ok" and S[(row, f)]["cpu_us_per_hit"]]
        floor = min(floors, key=lambda f: f["cpu_us_per_hit"]) if floors else {"status": "missing"}

        def ratio(peer, of=cap):
            if of["status"] != "ok" or peer["status"] != "ok" or not peer["cpu_us_per_hit"]:
                return None
            return of["cpu_us_per_hit"] / peer["cpu_us_per_hit"]
        r_ngx, r_var = ratio(ngx), ratio(var)
        peers = [p["cpu_us_per_hit"] for p in (ngx, var) if p["status"] == "ok" and p["cpu_us_per_hit"]]
        if cap["status"] == "ok" and peers:
            best = cap["cpu_us_per_hit"] / min(peers)
            met = "yes" if best <= TARGET else "no"
            if not all(p["verified"] for p in (cap, ngx, var) if p["status"] == "ok"):
                met += " (but a row's hits were not verified: see above)"
            best_s = f"{best:.2f}×"
        else:
            best_s, met = "n/a", "n/a (capstan not available yet)" if cap["status"] != "ok" else "n/a"
        fmt = lambda r: f"{r:.2f}×" if r is not None else "n/a"
        ok_peers = [p for p in (ngx, var) if p["status"] == "ok" and p["cpu_us_per_hit"]]
        better = min(ok_peers, key=lambda p: p["cpu_us_per_hit"]) if ok_peers else {"status": "missing"}
        out.append(f"| {label} | {fmt(r_ngx)} | {fmt(r_var)} | {best_s} | {met} | {fmt(ratio(copy))} | "
                   f"{fmt(ratio(floor))} | {fmt(ratio(better, of=floor))} |")
    out.append("")
    out.append("The floor is the cheaper of floor-sendfile and floor-splice. *floor / better peer* is about "
               "the lowest ratio a server could reach in this run (less only by receiving the request more "
               "cheaply than `read` + `epoll_wait`): when it is above the target, the target asks for about "
               "the kernel's own work for the same packets, or less.")
    out.append("")
    evid = [f"{c}: `{S[('1k', c)]['evidence']}`" for c in CACHES
            if S[("1k", c)]["status"] == "ok" and S[("1k", c)]["evidence"]]
    if evid:
        out.append("Hit evidence (1 KiB, after the last run): " + "; ".join(evid) + ".")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def splice(path, section):
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else \
        "# HTTP cache: conformance and benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main():
    if len(sys.argv) not in (7, 8):
        sys.exit("usage: cache_report.py RESULTS.jsonl OUT.md MACHINE COMMAND VERSIONS DATE [NOTE]")
    results, out_md, machine, command, versions, date = sys.argv[1:7]
    note = sys.argv[7] if len(sys.argv) == 8 else ""
    splice(out_md, render(results, machine, command, versions, date, note))


if __name__ == "__main__":
    main()
