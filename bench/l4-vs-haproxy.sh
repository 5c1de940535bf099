#!/usr/bin/env bash
# The gateway's L4 (TCP) proxy against HAProxy `mode tcp` (Debian's), in one
# run, in front of the same origins (bench/l4_load.c, built here with cc):
# a sink for the one-connection throughput row and an echo origin for the
# connections-per-second row. Each proxy has ONE worker pinned to core 0
# (`taskset -c 0`; capstan gateway --threads 1, HAProxy nbthread 1); the
# generator and the origins are pinned to core 1.
#
# Rows:
#   stream     one connection, WRITE_SIZE writes (256 KiB) for DURATION s
#              through the proxy to the sink: GB/s, and the proxy's CPU
#              seconds per GB moved
#   cps        CONC connections at a time, each: connect, 64 bytes echoed,
#              close: connections/s and the proxy's CPU µs per connection
# Proxies: capstan (`splice: off`, the copy path: received blocks moved as
# buffer slices), capstan-splice (`splice: on`: splice(2) through a pipe of
# SPLICE_PIPE bytes per direction, 64KiB), capstan-auto (`splice: auto`, the
# default: the copy path for the first SPLICE_AFTER bytes, 64KiB, then
# splice), haproxy (default: recv/send
# through its buffers), haproxy-splice (`option splice-auto`: kernel
# splice(2) through pipes; HAPROXY_PIPESIZE sets `tune.pipesize`, default
# the kernel's 64 KiB).
# Proxy CPU comes from /proc/PID/stat (utime+stime) before and after each
# run. Proxies are interleaved over ROUNDS rounds; medians reported. Writes
# docs/benchmarks/l4.md (OUT_MD) with the command line and the machine.
#
#   bench/l4-vs-haproxy.sh            # about 2 minutes
#   QUICK=1 bench/l4-vs-haproxy.sh    # about 30 s
#
# Everything runs on 127.0.0.1 ports picked here, inside a temp directory,
# as child processes stopped at exit. Needs a release build (cmake --build
# --preset release --target capstan), haproxy, cc and python3
# (scripts/install-deps.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
if [[ -n ${QUICK:-} ]]; then
  ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-2}"
else
  ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-4}"
fi
CONC="${CONC:-8}"
PROXIES="${PROXIES:-capstan capstan-auto capstan-splice haproxy haproxy-splice}"
WRITE_SIZE="${WRITE_SIZE:-262144}"
SPLICE_PIPE="${SPLICE_PIPE:-64KiB}"
SPLICE_AFTER="${SPLICE_AFTER:-64KiB}"
HAPROXY_PIPESIZE="${HAPROXY_PIPESIZE:-}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/l4.md}"
PROXY_CORE=0
LOAD_CORE=1

for tool in taskset haproxy cc python3; do
  command -v $tool >/dev/null || { echo "l4-vs-haproxy: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $CAPSTAN ]] || { echo "l4-vs-haproxy: build first: cmake --build --preset release --target capstan" >&2; exit 1; }
if [[ $(nproc) -lt 2 ]]; then echo "l4-vs-haproxy: needs 2 cores (proxy and load apart)" >&2; exit 1; fi

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_init l4-bench
log() { bench_log "$@"; }
wait_file() {  # FILE: until it is not empty (5 s)
  for _ in $(seq 1 100); do [[ -s $1 ]] && return 0; sleep 0.05; done
  return 1
}
TICKS=$CLK_TCK

cc -O2 -pthread -o "$WORK/l4_load" "$ROOT/bench/l4_load.c"
LOAD="$WORK/l4_load"

# ---- origins on core 1
taskset -c $LOAD_CORE "$LOAD" sink "$WORK/sink.port" & bench_track $!
taskset -c $LOAD_CORE "$LOAD" echo "$WORK/echo.port" & bench_track $!
wait_file "$WORK/sink.port" && wait_file "$WORK/echo.port" || { echo "origins did not start" >&2; exit 1; }
SINK_PORT=$(cat "$WORK/sink.port")
ECHO_PORT=$(cat "$WORK/echo.port")

# ---- proxies: each listens on two ports, STREAM (to the sink) and CPS (to the echo origin)
start_proxy() {  # NAME: starts it on core 0; sets PROXY_PID, STREAM_PORT, CPS_PORT
  STREAM_PORT=$(free_port); CPS_PORT=$(free_port)
  case $1 in
    capstan | capstan-splice | capstan-auto)
      local splice="splice: off"
      [[ $1 == capstan-splice ]] && splice="splice: on, splice_pipe: $SPLICE_PIPE"
      [[ $1 == capstan-auto ]] && splice="splice: auto, splice_pipe: $SPLICE_PIPE, splice_after: $SPLICE_AFTER"
      cat >"$WORK/capstan.yaml" <<EOF
clusters:
  - {name: sink, endpoints: ["127.0.0.1:$SINK_PORT"]}
  - {name: echo, endpoints: ["127.0.0.1:$ECHO_PORT"]}
tcp_listeners:
  - {name: stream, address: "127.0.0.1:$STREAM_PORT", cluster: sink, $splice}
  - {name: cps, address: "127.0.0.1:$CPS_PORT", cluster: echo, $splice}
drain_timeout: 1s
EOF
      taskset -c $PROXY_CORE "$CAPSTAN" gateway --config "$WORK/capstan.yaml" --threads 1 ${CAPSTAN_FLAGS:-} \
        >"$WORK/capstan.log" 2>&1 &
      ;;
    haproxy | haproxy-splice)
      local splice="" pipesize=""
      [[ $1 == haproxy-splice ]] && splice="option splice-auto"
      [[ -n $HAPROXY_PIPESIZE ]] && pipesize="tune.pipesize $HAPROXY_PIPESIZE"
      cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  $pipesize
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  $splice
listen stream
  bind 127.0.0.1:$STREAM_PORT
  server sink 127.0.0.1:$SINK_PORT
listen cps
  bind 127.0.0.1:$CPS_PORT
  server echo 127.0.0.1:$ECHO_PORT
EOF
      taskset -c $PROXY_CORE haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  bench_track "$PROXY_PID"
  wait_port "$STREAM_PORT" && wait_port "$CPS_PORT" || { echo "$1 did not start" >&2; cat "$WORK"/*.log >&2; exit 1; }
}
stop_proxy() { bench_stop "$PROXY_PID"; }

RESULTS="$WORK/results.txt"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  for proxy in $PROXIES; do
    start_proxy "$proxy"
    # stream
    before=$(cpu_ticks "$PROXY_PID")
    out=$(taskset -c $LOAD_CORE "$LOAD" stream "$STREAM_PORT" "$DURATION" "$WRITE_SIZE")
    after=$(cpu_ticks "$PROXY_PID")
    read -r _ bytes _ secs <<<"$out"
    echo "$proxy stream $bytes $secs $((after - before))" >>"$RESULTS"
    log "round $round $proxy stream: $out cpu_ticks $((after - before))"
    # cps
    before=$(cpu_ticks "$PROXY_PID")
    out=$(taskset -c $LOAD_CORE "$LOAD" cps "$CPS_PORT" "$DURATION" "$CONC")
    after=$(cpu_ticks "$PROXY_PID")
    read -r _ conns _ secs _ errors <<<"$out"
    echo "$proxy cps $conns $secs $((after - before)) $errors" >>"$RESULTS"
    log "round $round $proxy cps: $out cpu_ticks $((after - before))"
    stop_proxy
  done
done

# ---- report
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
VERSIONS="capstan $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(haproxy -v 2>/dev/null | sed -n 1p)"
COMMAND="$0 (ROUNDS=$ROUNDS DURATION=$DURATION CONC=$CONC WRITE_SIZE=$WRITE_SIZE SPLICE_PIPE=$SPLICE_PIPE SPLICE_AFTER=$SPLICE_AFTER HAPROXY_PIPESIZE=${HAPROXY_PIPESIZE:-default} PROXIES=\"$PROXIES\")"
python3 - "$RESULTS" "$OUT_MD" "$TICKS" "$MACHINE" "$VERSIONS" "$COMMAND" <<'PY'
import statistics, sys
results, out_md, ticks, machine, versions, command = sys.argv[1:7]
ticks = float(ticks)
rows = {}
for line in open(results):
    f = line.split()
    rows.setdefault((f[0], f[1]), []).append(f[2:])
proxies = []
for (p, _) in rows:
    if p not in proxies:
        proxies.append(p)
def med(xs):
    return statistics.median(xs) if xs else float("nan")
lines = ["## Results", "",
         "Generated by `bench/l4-vs-haproxy.sh`; numbers are medians over the rounds.", "",
         f"- command: `{command}`", f"- machine: {machine}", f"- versions: {versions}",
         "- one proxy worker pinned to core 0; generator and origins (bench/l4_load.c) on core 1",
         "", "| proxy | one connection GB/s | proxy CPU s per GB | connections/s | proxy CPU µs per connection | cps errors |",
         "| --- | ---: | ---: | ---: | ---: | ---: |"]
for p in proxies:
    st = rows.get((p, "stream"), [])
    gbps = med([int(b) / float(s) / 1e9 for b, s, _ in st])
    cpu_gb = med([(int(c) / ticks) / (int(b) / 1e9) for b, s, c in st])
    cp = rows.get((p, "cps"), [])
    cps = med([int(n) / float(s) for n, s, _, _ in cp])
    us = med([(int(c) / ticks) * 1e6 / max(int(n), 1) for n, s, c, _ in cp])
    errs = sum(int(e) for _, _, _, e in cp)
    lines.append(f"| {p} | {gbps:.2f} | {cpu_gb:.3f} | {cps:,.0f} | {us:.1f} | {errs} |")
lines += ["", "Raw runs (proxy, row, bytes or connections, seconds, CPU ticks[, errors]):", "", "```"]
lines += [l.rstrip() for l in open(results)]
lines += ["```", ""]
with open(out_md + ".table", "w") as f:
    f.write("\n".join(lines))
PY
# The table goes into the report between its markers; the prose around it
# (what the numbers mean, the splice decision) is kept.
python3 - "$OUT_MD" <<'PY'
import os, sys
md = sys.argv[1]
table = open(md + ".table").read()
os.remove(md + ".table")
begin, end = "<!-- results: begin -->", "<!-- results: end -->"
text = open(md).read() if os.path.exists(md) else f"{begin}\n{end}\n"
if begin not in text:
    text += f"\n{begin}\n{end}\n"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(md, "w").write(head + begin + "\n" + table + end + tail)
PY
log "wrote $OUT_MD"
