#!/usr/bin/env bash
# The DNS server against NSD and Knot (Debian) on the same zone file, with
# dnsperf, in interleaved rounds. Each server gets one thread (one server
# process for NSD, one UDP worker for Knot, one event loop for capstan)
# pinned to CPU 0; dnsperf runs on CPU 1. All servers start once and stay
# up; each round measures every server, in an order that rotates from round
# to round, so a burst of load on the machine hits each of them alike.
# Two phases per server and round:
#   1. throughput: dnsperf as fast as it can for $SECS s (-q 200 outstanding)
#      -> queries/s, and the server's CPU seconds per query from
#      /proc/PID/stat (utime + stime of every thread and child);
#   2. latency: a fixed offered load ($RATE q/s, far below every server's
#      maximum, so the server's own queueing is not the measure) with
#      dnsperf -v, which prints each query's latency -> p50, p99, p99.9.
#      With RT=1 (the default) the server's threads run SCHED_FIFO for this
#      phase only (chrt; servers block on their sockets, they do not spin)
#      and dnsperf at nice -19, so the other work of a shared machine does
#      not delay them: without it, the p99 of all three servers measures
#      how long they waited for a CPU behind compilers.
#      The run-queue wait of the server and of dnsperf during the phase
#      (/proc/PID/task/*/schedstat) is reported, to show what was left.
# With MEASURE=1 (the default) each round ends with a further capstan, with
# udp_latency_metrics, started for a latency phase of its own (and stopped
# after: its kernel packet timestamps are on for every socket while it
# runs); its /metrics splits each query's time inside the server: waiting
# in the socket before recvmmsg read it (the server busy or not scheduled),
# and from recvmmsg to the sendmmsg that carried its answer (the queueing
# inside a batch).
# Usage: bench/dns-vs-nsd-knot.sh [BUILD_DIR] [SECS] [RATE] [ROUNDS]
# Environment:
#   BASELINE=PATH      also measures another capstan binary (an A/B in one run)
#   VARIANTS="NAME:KEY=VALUE,... ..."  more capstan configurations, each
#                      KEY a dns: option (udp_answer_slice=64) or io=epoll
#   PEERS=0            leaves NSD and Knot out (a quick A/B while developing)
#   RT=0               no SCHED_FIFO (servers) / nice -19 (dnsperf) in the latency phase
#   RT=2               dnsperf SCHED_FIFO too: the client's own scheduling
#                      leaves the measurement, but dnsperf's sender spins at
#                      a fixed rate, so it holds CPU 1 (up to the kernel's RT
#                      limit, 95%) for each latency phase, and it has been
#                      seen to hang there (its receiver starved): each
#                      dnsperf is killed $SECS + 30 s after it starts
#   MEASURE=0          no server-side latency breakdown
# Output: a Markdown table per round and one of the medians on stdout
# (docs/benchmarks/dns.md), logs under $WORK (kept for inspection).
set -euo pipefail
build=${1:-build/release}
secs=${2:-10}
rate=${3:-20000}
rounds=${4:-3}
rt=${RT:-1}
here=$(cd "$(dirname "$0")/.." && pwd)
capstan="$build/src/cmd/capstan"
[ -x "$capstan" ] || capstan="$build/capstan"
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
require_tools "$0" dnsperf nsd knotd taskset chrt timeout curl dig
py=/usr/bin/python3
KEEP_WORK=${KEEP_WORK:-1}  # the logs stay for inspection (printed at the end)
bench_init dns-bench

# The zone: 1,000 hosts with A and AAAA, MX, CNAMEs, a wildcard.
zone="$WORK/example.com.zone"
{
  echo '$ORIGIN example.com.'
  echo '$TTL 3600'
  echo '@ SOA ns1 hostmaster 1 7200 3600 1209600 300'
  echo '@ NS ns1'
  echo '@ MX 10 mail'
  echo 'ns1 A 192.0.2.1'
  echo 'mail A 192.0.2.2'
  echo '*.wild A 192.0.2.3'
  for i in $(seq 1 1000); do
    echo "host$i A 10.0.$((i / 256)).$((i % 256))"
    echo "host$i AAAA 2001:db8::$(printf %x "$i")"
    echo "alias$i CNAME host$i"
  done
} >"$zone"
# The queries: hits of each kind, NXDOMAIN, a wildcard, mixed case.
queries="$WORK/queries.txt"
{
  for i in $(seq 1 1000); do
    echo "host$i.example.com A"
    echo "HOST$i.example.com AAAA"
    echo "alias$i.example.com A"
    echo "nope$i.example.com A"
    echo "x$i.wild.example.com A"
    echo "example.com MX"
  done
} | shuf --random-source=<(yes) >"$queries"

wait_answer() {
  for _ in $(seq 100); do
    if dig +time=1 +tries=1 @127.0.0.1 -p "$1" example.com SOA 2>/dev/null | grep -q 'status: NOERROR'; then
      return 0
    fi
    sleep 0.1
  done
  echo "server on port $1 did not answer" >&2
  return 1
}

threads_of() {  # PID...: every thread of the processes and their descendants
  local pid
  for pid in $(proc_tree "$@"); do ls "/proc/$pid/task" 2>/dev/null || true; done
}
# Nanoseconds the threads spent runnable but waiting for a CPU.
run_delay_ns() {
  local total=0 tid d
  for tid in $(threads_of "$@"); do
    d=$(awk '{print $2}' "/proc/$tid/schedstat" 2>/dev/null) || d=0
    total=$((total + ${d:-0}))
  done
  echo "$total"
}
set_policy() {  # fifo|other PID...
  local policy=$1 tid
  shift
  [ "$rt" != 0 ] || return 0
  for tid in $(threads_of "$@"); do
    if [ "$policy" = fifo ]; then chrt -f -p 10 "$tid" 2>/dev/null || true; else chrt -o -p 0 "$tid" 2>/dev/null || true; fi
  done
}

# name -> port, pids; results appended per round
declare -A port_of pids_of phases_of
names=()
add_server() {  # name port phases(both|latency) pid...
  names+=("$1")
  port_of[$1]=$2
  phases_of[$1]=$3
  shift 3
  pids_of[${names[-1]}]="$*"
}

rows=()      # | round | name | ... |
raw="$WORK/raw.tsv"  # name round us_per_query p50 p99 p999 sat_avg, for the medians
: >"$raw"
measure() {  # round name
  local round=$1 name=$2 port=${port_of[$2]}
  # shellcheck disable=SC2086
  local pids=(${pids_of[$2]})
  local tag="$WORK/${name// /_}.r$round"
  local qps="—" us_per_query="—" cpu_share="—" sat_avg="—"
  if [ "${phases_of[$name]}" = both ]; then
    local before after sent
    before=$(cpu_ticks "${pids[@]}")
    timeout -s KILL $((secs + 30)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" \
      -l "$secs" -q 200 -c 4 -T 1 >"$tag.throughput.txt" 2>&1 || true
    after=$(cpu_ticks "${pids[@]}")
    qps=$(awk '/Queries per second:/ {printf "%\047.0f", $4}' "$tag.throughput.txt")
    sent=$(awk '/Queries completed:/ {print $3}' "$tag.throughput.txt")
    us_per_query=$($py -c "print(f'{($after - $before) / $CLK_TCK / max($sent, 1) * 1e6:.2f}')")
    cpu_share=$($py -c "print(f'{($after - $before) / $CLK_TCK / $secs * 100:.0f}%')")
    # The mean latency with 200 queries outstanding: large batches, where
    # the answers' queueing inside a batch shows.
    sat_avg=$(awk '/Average Latency/ {printf "%.0f", $4 * 1e6}' "$tag.throughput.txt")
  fi
  set_policy fifo "${pids[@]}"
  local server_wait0 server_wait1
  server_wait0=$(run_delay_ns "${pids[@]}")
  # dnsperf itself is not SCHED_FIFO: its sender can spin, and a FIFO
  # thread that spins never lets its receiver (same CPU, same priority)
  # run. The highest CFS weight instead, and a deadline in any case.
  local prio=()
  [ "$rt" = 1 ] && prio=(nice -n -19)
  [ "$rt" = 2 ] && prio=(chrt -f 10)
  "${prio[@]}" timeout -s KILL $((secs + 30)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$secs" -Q "$rate" \
    -c 4 -T 1 -v >"$tag.latency.txt" 2>&1 &
  local perf_pid=$!
  # dnsperf's own run-queue wait, read just before it exits (polled).
  local perf_wait=0 w
  while kill -0 "$perf_pid" 2>/dev/null; do
    w=$(run_delay_ns "$perf_pid")
    [ "${w:-0}" -gt 0 ] && perf_wait=$w
    sleep 0.2
  done
  wait "$perf_pid" || true
  server_wait1=$(run_delay_ns "${pids[@]}")
  set_policy other "${pids[@]}"
  local lat
  lat=$($py - "$tag.latency.txt" <<'EOF'
import sys
lat = []
lost = 0
for line in open(sys.argv[1]):
    parts = line.split()
    # "> NOERROR host1.example.com A 0.000123"
    if line.startswith('>') and len(parts) >= 5:
        try:
            lat.append(float(parts[-1]))
        except ValueError:
            pass
    elif line.strip().startswith('Queries lost:'):
        lost = int(parts[2])
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6 if lat else float('nan')
print(f"{pct(50):.0f} {pct(99):.0f} {pct(99.9):.0f} {len(lat)} {lost}")
EOF
)
  local p50 p99 p999 n lost
  read -r p50 p99 p999 n lost <<<"$lat"
  local sw pw
  sw=$($py -c "print(f'{($server_wait1 - $server_wait0) / 1e6:.1f}')")
  pw=$($py -c "print(f'{$perf_wait / 1e6:.1f}')")
  rows+=("| $round | $name | $qps | $cpu_share | $us_per_query | $sat_avg | $p50 | $p99 | $p999 | $lost | $sw | $pw |")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$us_per_query" "$p50" "$p99" "$p999" "$sat_avg" >>"$raw"
  bench_log "round $round $name: ${us_per_query} µs/query, p50/p99/p99.9 $p50/$p99/$p999 µs, server waited ${sw} ms, dnsperf ${pw} ms"
}

# ---- capstan: one event loop (UDP and TCP on it), from a configuration
# file so that /metrics (admin) is there.
start_capstan() {  # name binary phases [KEY=VALUE,...]
  local name=$1 binary=$2 phases=$3 opts=${4:-} port admin io=auto
  port=$(free_port)
  admin=$(free_port)
  local cfg="$WORK/${name// /_}.yaml"
  {
    echo "admin: 127.0.0.1:$admin"
    echo "dns:"
    echo "  listen: 127.0.0.1:$port"
    echo "  zones: [$zone]"
    local kv
    IFS=, read -ra kvs <<<"$opts"
    for kv in "${kvs[@]}"; do
      [ -n "$kv" ] || continue
      if [ "${kv%%=*}" = io ]; then io=${kv#*=}; else echo "  ${kv%%=*}: ${kv#*=}"; fi
    done
  } >"$cfg"
  taskset -c 0 "$binary" gateway --threads 1 --io-backend "$io" --config "$cfg" \
    >"$WORK/${name// /_}.log" 2>&1 &
  local pid=$!
  bench_track "$pid"
  wait_answer "$port"
  add_server "$name" "$port" "$phases" "$pid"
  admin_of[$name]=$admin
}
breakdown=()
measure_breakdown() {  # round
  local name="capstan measured"
  start_capstan "$name" "$capstan" latency "udp_latency_metrics=true"
  measure "$1" "$name"
  local line
  line=$(curl -s "http://127.0.0.1:${admin_of[$name]}/metrics" | $py -c '
import re, sys
q = {}
for line in sys.stdin:
    m = re.match(r"capstan_dns_udp_latency_microseconds\{part=\"(\w+)\",quantile=\"([0-9.]+)\"\} (\S+)", line)
    if m:
        q[(m.group(1), m.group(2))] = float(m.group(3))
nan = float("nan")
print(" | ".join(f"{q.get((part, p), nan):.0f}" for part in ("socket", "server") for p in ("0.5", "0.99", "0.999")))
')
  breakdown+=("| $1 | $line |")
  bench_stop "${pids_of[$name]}"
  names=("${names[@]:0:${#names[@]}-1}")  # not in the next round's rotation
}
declare -A admin_of
if [ -n "${BASELINE:-}" ]; then
  # An older binary may not know the newer options: quick-start flags.
  port=$(free_port)
  taskset -c 0 "$BASELINE" gateway --threads 1 --dns-listen "127.0.0.1:$port" \
    --dns-zone "$zone" >"$WORK/baseline.log" 2>&1 &
  bench_track $!
  wait_answer "$port"
  add_server "capstan baseline" "$port" both $!
fi
start_capstan "capstan" "$capstan" both
for variant in ${VARIANTS:-}; do
  start_capstan "capstan ${variant%%:*}" "$capstan" both "${variant#*:}"
done

if [ "${PEERS:-1}" != 0 ]; then
  # ---- NSD: one server process
  port=$(free_port)
  mkdir -p "$WORK/nsd"
  cat >"$WORK/nsd/nsd.conf" <<EOF
server:
  port: $port
  ip-address: 127.0.0.1
  username: ""
  chroot: ""
  zonesdir: "$WORK/nsd"
  database: ""
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  xfrdir: "$WORK/nsd"
  zonelistfile: "$WORK/nsd/zone.list"
  logfile: "$WORK/nsd/nsd.log"
  server-count: 1
  rrl-ratelimit: 0
  hide-version: yes
remote-control:
  control-enable: no
zone:
  name: example.com
  zonefile: "$zone"
EOF
  taskset -c 0 nsd -d -c "$WORK/nsd/nsd.conf" >"$WORK/nsd.out" 2>&1 &
  bench_track $!
  wait_answer "$port"
  add_server "NSD $(nsd -v 2>&1 | awk '/NSD version/ {print $3}')" "$port" both $!

  # ---- Knot: one UDP worker
  port=$(free_port)
  mkdir -p "$WORK/knot"
  cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/knot"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK/knot"
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: example.com
    file: "$zone"
EOF
  taskset -c 0 knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.out" 2>&1 &
  bench_track $!
  wait_answer "$port"
  add_server "Knot $(knotd -V 2>&1 | awk '{print $NF}')" "$port" both $!
fi

bench_log "servers up: ${names[*]}; $rounds rounds, ${secs}s per phase, $rate q/s, RT=$rt, load: $(cut -d' ' -f1-3 /proc/loadavg)"
count=${#names[@]}
for round in $(seq 1 "$rounds"); do
  for k in $(seq 0 $((count - 1))); do
    measure "$round" "${names[$(((k + round - 1) % count))]}"
  done
  if [ "${MEASURE:-1}" = 1 ]; then measure_breakdown "$round"; fi
done

echo "$(capstan_describe "$capstan"); $rounds rounds, ${secs}s per phase, latency at $rate q/s, RT=$rt; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | server | queries/s answered | server CPU (of 1 core) | CPU µs/query | mean latency µs, 200 outstanding | p50 µs | p99 µs | p99.9 µs | lost | server run-queue wait ms | dnsperf run-queue wait ms |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "Medians over the rounds:"
echo
echo "| server | CPU µs/query | queries per CPU-second | mean latency µs, 200 outstanding | p50 µs | p99 µs | p99.9 µs |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
medians=("${names[@]}")
if [ "${#breakdown[@]}" -gt 0 ]; then medians+=("capstan measured"); fi
$py - "$raw" "${medians[@]}" <<'EOF'
import statistics, sys
rows = [line.rstrip('\n').split('\t') for line in open(sys.argv[1])]
for name in sys.argv[2:]:
    mine = [r for r in rows if r[0] == name]
    def med(i):
        vals = [float(r[i]) for r in mine if r[i] not in ('—', 'nan')]
        return statistics.median(vals) if vals else None
    cpu = med(2)
    cpu_s = f"{cpu:.2f}" if cpu else "—"
    per_s = f"{1e6 / cpu:,.0f}" if cpu else "—"
    sat = med(6)
    sat_s = f"{sat:.0f}" if sat else "—"
    print(f"| {name} | {cpu_s} | {per_s} | {sat_s} | {med(3):.0f} | {med(4):.0f} | {med(5):.0f} |")
EOF
if [ "${#breakdown[@]}" -gt 0 ]; then
  echo
  echo "Inside capstan (udp_latency_metrics, its own latency phase each round), µs per query:"
  echo "socket = arrival in the socket (kernel time) to the recvmmsg that read it;"
  echo "server = that recvmmsg to the sendmmsg that carried the answer."
  echo
  echo "| round | socket p50 | socket p99 | socket p99.9 | server p50 | server p99 | server p99.9 |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${breakdown[@]}"
fi
echo
echo "zone: 3,005 records; queries: 6,000 (A, AAAA, CNAME->A, NXDOMAIN, wildcard, MX), dnsperf -q 200 -c 4 (throughput), -Q $rate -c 4 (latency), ${secs}s per phase; logs in $WORK"
