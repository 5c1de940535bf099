#!/usr/bin/env bash
# The DNS server against NSD and Knot (Debian) on the same zone file, with
# dnsperf, side by side in one run. Each server gets one thread (one server
# process for NSD, one UDP worker for Knot) pinned to CPU 0; dnsperf runs on
# CPU 1. Two phases per server:
#   1. throughput: dnsperf as fast as it can for $SECS s (-q 200 outstanding)
#      -> queries/s, and the server's CPU seconds per query from
#      /proc/PID/stat (utime + stime of every thread and child);
#   2. latency: a fixed offered load ($RATE q/s, below every server's
#      maximum, so queueing is not the measure) with dnsperf -v, which prints
#      each query's latency -> p50, p99.
# Usage: bench/dns-vs-nsd-knot.sh [BUILD_DIR] [SECS] [RATE]
# Environment: BASELINE=PATH also measures another capstan binary (e.g. the
# previous release) right before this one, for an A/B of the same run;
# PEERS=0 leaves NSD and Knot out (a quick A/B while developing).
# Output: a Markdown table on stdout (docs/benchmarks/dns.md), logs under
# $WORK (kept for inspection).
set -euo pipefail
build=${1:-build/release}
secs=${2:-10}
rate=${3:-20000}
here=$(cd "$(dirname "$0")/.." && pwd)
capstan="$build/src/cmd/capstan"
[ -x "$capstan" ] || capstan="$build/capstan"
for tool in dnsperf nsd knotd taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
# shellcheck source=bench/lib.sh
source "$here/bench/lib.sh"
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

results=()
measure() {  # name port pid...
  local name=$1 port=$2
  shift 2
  wait_answer "$port"
  local hz
  hz=$CLK_TCK
  local before after
  before=$(cpu_ticks "$@")
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$secs" -q 200 -c 4 -T 1 \
    >"$WORK/$name.throughput.txt" 2>&1
  after=$(cpu_ticks "$@")
  local qps sent
  qps=$(awk '/Queries per second:/ {print $4}' "$WORK/$name.throughput.txt")
  sent=$(awk '/Queries completed:/ {print $3}' "$WORK/$name.throughput.txt")
  local us_per_query
  us_per_query=$(python3 -c "print(f'{($after - $before) / $hz / max($sent, 1) * 1e6:.2f}')")
  local cpu_share
  cpu_share=$(python3 -c "print(f'{($after - $before) / $hz / $secs * 100:.0f}')")
  taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$secs" -Q "$rate" -c 4 -T 1 -v \
    >"$WORK/$name.latency.txt" 2>&1
  local lat
  lat=$(python3 - "$WORK/$name.latency.txt" <<'EOF'
import sys
lat = []
for line in open(sys.argv[1]):
    parts = line.split()
    # "> NOERROR host1.example.com A 0.000123"
    if line.startswith('>') and len(parts) >= 5:
        try:
            lat.append(float(parts[-1]))
        except ValueError:
            pass
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6 if lat else float('nan')
print(f"{pct(50):.0f} {pct(99):.0f} {len(lat)}")
EOF
)
  read -r p50 p99 n <<<"$lat"
  local per_core
  per_core=$(python3 -c "print(f'{1e6 / max($us_per_query, 1e-9):,.0f}')")
  qps=$(python3 -c "print(f'{$qps:,.0f}')")
  results+=("| $name | $qps | $cpu_share% | $us_per_query | $per_core | $p50 | $p99 |")
}

# ---- capstan: one event loop (UDP and TCP on it)
run_capstan() {  # name binary
  local port
  port=$(free_port)
  taskset -c 0 "$2" gateway --threads 1 --dns-listen "127.0.0.1:$port" \
    --dns-zone "$zone" >"$WORK/$1.log" 2>&1 &
  bench_track $!
  measure "$1" "$port" "$!"
  kill "$!" 2>/dev/null || true
}
if [ -n "${BASELINE:-}" ]; then
  run_capstan "capstan baseline" "$BASELINE"
fi
run_capstan "capstan gateway" "$capstan"
if [ "${PEERS:-1}" = 0 ]; then
  echo "| server | queries/s answered | server CPU (of 1 core) | CPU µs/query | queries per CPU-second | p50 µs at $rate q/s | p99 µs at $rate q/s |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${results[@]}"
  exit 0
fi

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
measure "NSD $(nsd -v 2>&1 | awk '/NSD version/ {print $3}')" "$port" "$!"

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
measure "Knot $(knotd -V 2>&1 | awk '{print $NF}')" "$port" "$!"

echo "| server | queries/s answered | server CPU (of 1 core) | CPU µs/query | queries per CPU-second | p50 µs at $rate q/s | p99 µs at $rate q/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${results[@]}"
echo
echo "zone: 3,005 records; queries: 6,000 (A, AAAA, CNAME->A, NXDOMAIN, wildcard, MX), dnsperf -q 200 -c 4, ${secs}s per phase; logs in $WORK"
