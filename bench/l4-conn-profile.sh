#!/usr/bin/env bash
# What one short L4 connection costs the proxy: system calls and io_uring
# operations per connection, and (PERF=1) where the CPU goes. For the
# "connections/s" row of bench/l4-vs-haproxy.sh (same origins and load:
# bench/l4_load.c cps, CONC connections at a time, each connect, 64 bytes
# echoed, close with RST).
#
#   bench/l4-conn-profile.sh                      # capstan copy, auto, on; haproxy
#   PROXIES="capstan-auto haproxy" DURATION=2 bench/l4-conn-profile.sh
#   PERF=1 bench/l4-conn-profile.sh               # + perf record -g, top symbols
#
# Per proxy, three runs of DURATION seconds against a fresh proxy (one
# worker on core 0, load on core 1):
#   1. perf stat of the proxy: raw_syscalls:sys_enter (every system call,
#      io_uring_enter included) and io_uring:io_uring_submit_req (each
#      operation handed to io_uring), divided by the connections made;
#   2. strace -c -f of the proxy: the calls by name (strace slows the proxy
#      down a lot; the counts per connection are what matter);
#   3. with PERF=1, perf record -g, and perf report's top symbols.
# Prints a table; everything runs on 127.0.0.1, in a temp directory, as child
# processes stopped at exit. Needs perf (linux-perf), strace, haproxy, cc.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
DURATION="${DURATION:-3}"
CONC="${CONC:-8}"
PROXIES="${PROXIES:-capstan capstan-auto capstan-splice haproxy}"
PROXY_CORE=0
LOAD_CORE=1

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
require_tools l4-conn-profile taskset haproxy cc perf strace
[[ -x $CAPSTAN ]] || { echo "l4-conn-profile: build first: cmake --build --preset release --target capstan" >&2; exit 1; }
bench_init l4-conn-profile
wait_file() { for _ in $(seq 1 100); do [[ -s $1 ]] && return 0; sleep 0.05; done; return 1; }

cc -O2 -pthread -o "$WORK/l4_load" "$ROOT/bench/l4_load.c"
LOAD="$WORK/l4_load"
taskset -c $LOAD_CORE "$LOAD" echo "$WORK/echo.port" & bench_track $!
wait_file "$WORK/echo.port" || { echo "the echo origin did not start" >&2; exit 1; }
ECHO_PORT=$(cat "$WORK/echo.port")

start_proxy() {  # NAME: sets PROXY_PID and PORT
  PORT=$(free_port)
  case $1 in
    capstan*)
      local splice="off"
      [[ $1 == capstan-auto ]] && splice="auto"
      [[ $1 == capstan-splice ]] && splice="on"
      cat >"$WORK/capstan.yaml" <<EOF
clusters:
  - {name: echo, endpoints: ["127.0.0.1:$ECHO_PORT"]}
tcp_listeners:
  - {name: cps, address: "127.0.0.1:$PORT", cluster: echo, splice: $splice}
drain_timeout: 1s
EOF
      taskset -c $PROXY_CORE "$CAPSTAN" gateway --config "$WORK/capstan.yaml" --threads 1 ${CAPSTAN_FLAGS:-} \
        >"$WORK/proxy.log" 2>&1 &
      ;;
    haproxy)
      cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen cps
  bind 127.0.0.1:$PORT
  server echo 127.0.0.1:$ECHO_PORT
EOF
      taskset -c $PROXY_CORE haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/proxy.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  bench_track "$PROXY_PID"
  wait_port "$PORT" 5 "$PROXY_PID" || { echo "$1 did not start" >&2; cat "$WORK/proxy.log" >&2; exit 1; }
}

load() { taskset -c $LOAD_CORE "$LOAD" cps "$PORT" "$DURATION" "$CONC" | awk '{print $2}'; }

# Runs the load while TOOL... watches the proxy; TOOL gets SIGINT at the end.
# Prints the connections made.
watched() {
  "$@" -p "$PROXY_PID" >"$WORK/tool.out" 2>&1 &
  local tool=$!
  sleep 0.5  # the tool attaches (a start-up wait, not synchronization of the measured part)
  local conns
  conns=$(load)
  kill -INT "$tool" 2>/dev/null || true
  wait "$tool" 2>/dev/null || true
  echo "$conns"
}

printf '%-16s %8s %10s %10s %10s\n' proxy conns syscalls/c uring_ops/c cpu_us/c
for proxy in $PROXIES; do
  start_proxy "$proxy"
  before=$(cpu_ticks "$PROXY_PID")
  conns=$(watched perf stat -x, -e raw_syscalls:sys_enter -e io_uring:io_uring_submit_req)
  after=$(cpu_ticks "$PROXY_PID")
  sys=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$WORK/tool.out")
  ops=$(awk -F, '/io_uring_submit_req/ {print $1}' "$WORK/tool.out")
  printf '%-16s %8d %10.1f %10.1f %10.1f\n' "$proxy" "$conns" "$(echo "$sys / $conns" | bc -l)" \
    "$(echo "${ops:-0} / $conns" | bc -l)" "$(echo "($after - $before) / $CLK_TCK * 1000000 / $conns" | bc -l)"
  # io_uring operations by opcode
  if [[ $proxy == capstan* ]]; then
    conns=$(watched perf record -q -e io_uring:io_uring_submit_req -o "$WORK/uring.data")
    perf script -i "$WORK/uring.data" 2>/dev/null | grep -o 'opcode [A-Z_0-9]*' | sort | uniq -c |
      awk -v c="$conns" '{printf "    uring %-22s %6.2f per connection\n", $3, $1 / c}' | sort -k3 -rn
  fi
  conns=$(watched strace -c -f -q)
  awk -v c="$conns" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {
      printf "    syscall %-20s %6.2f per connection\n", $NF, $4 / c }' "$WORK/tool.out" | sort -k3 -rn | head -20
  if [[ -n ${PERF:-} ]]; then
    watched perf record -q -g -o "$WORK/perf.data" >/dev/null
    perf report -i "$WORK/perf.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null |
      grep -E '^ +[0-9.]+%' | head -25 | sed 's/^/    /'
  fi
  bench_stop "$PROXY_PID"
done
