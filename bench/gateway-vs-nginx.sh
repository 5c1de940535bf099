#!/usr/bin/env bash
# Runs `capstan gateway`, nginx (proxy_pass to an upstream block with
# keepalive) and HAProxy (all from Debian) side by side in one run, in front
# of the same origin (an nginx serving fixed 1 KiB and 64 KiB bodies from a
# temp directory). Each proxy has ONE worker pinned to core 0 (`taskset -c 0`;
# capstan gateway --threads 1, nginx worker_processes 1, HAProxy nbthread 1);
# the load generator (wrk for HTTP/1.1, h2load for HTTP/2) and the origin are
# pinned to core 1. Rows: HTTP/1.1 keep-alive 1 KiB at 50 and 500
# connections, HTTP/2 (h2c prior knowledge, 100 streams per connection),
# 64 KiB responses, HTTPS keep-alive, and a new TLS connection per request.
# Proxy CPU per request comes from /proc/PID/stat (utime+stime) before and
# after each run; memory per idle keep-alive connection from VmRSS with N
# idle connections open. Proxies are interleaved over ROUNDS rounds, medians
# reported (DURATION and WARMUP are whole seconds). At the end the capstan gateway is profiled during the 1 KiB row
# (perf record -g when hardware counters work, else valgrind callgrind).
# Writes docs/benchmarks/gateway.md, gateway.jsonl (the raw runs) and
# gateway-cpu.png.
#
#   bench/gateway-vs-nginx.sh            # full run (about 5 minutes)
#   QUICK=1 bench/gateway-vs-nginx.sh    # quick look (about 80 s)
#
# The report can be regenerated from the kept raw runs:
#   python3 bench/gateway_report.py docs/benchmarks/gateway.jsonl docs/benchmarks/gateway.md \
#     MACHINE COMMAND docs/benchmarks/gateway-profile.txt PROFILER VERSIONS
# (the last run's values for those strings are in gateway.md's header).
#
# Everything runs on 127.0.0.1 ports picked here, inside a temp directory,
# as child processes stopped at exit. Needs a release build
# (cmake --build --preset release --target capstan) and the packages from
# scripts/install-deps.sh (nginx, haproxy, wrk, nghttp2-client, gnuplot,
# openssl, valgrind or linux-perf).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
if [[ -n ${QUICK:-} ]]; then
  ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-2}" WARMUP="${WARMUP:-1}" IDLE_CONNS="${IDLE_CONNS:-1000}"
  PROFILE_SECONDS="${PROFILE_SECONDS:-2}"
else
  ROUNDS="${ROUNDS:-2}" DURATION="${DURATION:-5}" WARMUP="${WARMUP:-1}" IDLE_CONNS="${IDLE_CONNS:-3000}"
  PROFILE_SECONDS="${PROFILE_SECONDS:-5}"
fi
PROXIES="${PROXIES:-capstan nginx haproxy}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/gateway.md}"
PROXY_CORE=0
LOAD_CORE=1

for tool in taskset nginx haproxy wrk h2load openssl curl python3; do
  command -v $tool >/dev/null || { echo "gateway-vs-nginx: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $CAPSTAN ]] || { echo "gateway-vs-nginx: build first: cmake --build --preset release --target capstan" >&2; exit 1; }
if [[ $(nproc) -lt 2 ]]; then echo "gateway-vs-nginx: needs 2 cores (proxy and load apart)" >&2; exit 1; fi

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_init gateway-bench
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
log() { bench_log "$@"; }

# ---- fixtures: bodies, a test CA and a server certificate (ECDSA P-256)
mkdir -p "$WORK/www" "$WORK/tmp"
chmod 755 "$WORK" "$WORK/www"  # nginx workers run as nobody when started by root
# 3 random bytes make 4 base64 characters: exactly 1 KiB and 64 KiB (no
# `| head`, whose early exit would be a SIGPIPE under pipefail).
head -c 768 /dev/urandom | base64 -w 0 >"$WORK/www/1k"
head -c 49152 /dev/urandom | base64 -w 0 >"$WORK/www/64k"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=capstan bench CA" -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout key.pem -out req.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
  openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out cert.pem 2>/dev/null
  cat cert.pem key.pem >combined.pem  # HAProxy wants both in one file
)

# ---- the origin: nginx on core 1, bodies from files (page cache), keep-alive without limit
ORIGIN_PORT=$(free_port)
cat >"$WORK/origin.conf" <<EOF
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 8000; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/ob; proxy_temp_path $WORK/tmp/op; fastcgi_temp_path $WORK/tmp/of;
  uwsgi_temp_path $WORK/tmp/ou; scgi_temp_path $WORK/tmp/os;
  keepalive_requests 100000000; keepalive_timeout 300s;
  sendfile on; tcp_nopush on; open_file_cache max=16; open_file_cache_valid 600s;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; location / { } }
}
EOF
taskset -c $LOAD_CORE nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;' 2>>"$WORK/origin.err" &
bench_track $!
wait_port "$ORIGIN_PORT" || { echo "origin nginx did not start:" >&2; cat "$WORK/origin.err" >&2; exit 1; }

# ---- the proxies. Each listens on three ports: HTTP/1.1 (PLAIN), h2c prior
# knowledge (H2C; the same port as PLAIN for capstan, which is meant to take
# both there), and TLS (TLS, ALPN http/1.1).
write_configs() {
  PLAIN_PORT=$(free_port); TLS_PORT=$(free_port); H2C_PORT=$(free_port)
  cat >"$WORK/capstan.yaml" <<EOF
listeners:
  - name: plain
    address: 127.0.0.1:$PLAIN_PORT
  - name: tls
    address: 127.0.0.1:$TLS_PORT
    tls:
      certificates: [{cert: $WORK/cert.pem, key: $WORK/key.pem}]
      alpn: [http/1.1]
clusters:
  - {name: origin, endpoints: ["127.0.0.1:$ORIGIN_PORT"], max_idle_connections: 1024}
virtual_hosts:
  - name: all
    routes: [{cluster: origin}]
drain_timeout: 1s
EOF
  cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 9000; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/nb; proxy_temp_path $WORK/tmp/np; fastcgi_temp_path $WORK/tmp/nf;
  uwsgi_temp_path $WORK/tmp/nu; scgi_temp_path $WORK/tmp/ns;
  keepalive_requests 100000000; keepalive_timeout 300s;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 1024; keepalive_requests 100000000; keepalive_timeout 300s; }
  server {
    listen 127.0.0.1:$PLAIN_PORT;
    listen 127.0.0.1:$TLS_PORT ssl;
    listen 127.0.0.1:$H2C_PORT http2;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;  # 1.22's default stops at TLSv1.2; the others negotiate 1.3
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_buffers 8 16k;  # a 64 KiB answer fits in memory, no temp file
    }
  }
}
EOF
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option forwardfor
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:$PLAIN_PORT
  bind 127.0.0.1:$H2C_PORT proto h2
  bind 127.0.0.1:$TLS_PORT ssl crt $WORK/combined.pem alpn http/1.1
  default_backend origin
backend origin
  server origin 127.0.0.1:$ORIGIN_PORT
EOF
}

PROXY_PID=""
start_proxy() {  # SYSTEM
  local system=$1
  write_configs
  case $system in
    capstan)
      H2C_PORT=$PLAIN_PORT
      taskset -c $PROXY_CORE "$CAPSTAN" gateway --threads 1 --config "$WORK/capstan.yaml" \
        >"$WORK/capstan.log" 2>&1 &
      ;;
    nginx)
      taskset -c $PROXY_CORE nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx.err" &
      ;;
    haproxy)
      taskset -c $PROXY_CORE haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  bench_track "$PROXY_PID"
  wait_port "$PLAIN_PORT" && wait_port "$TLS_PORT" || {
    echo "$system did not start:" >&2; cat "$WORK/$system".{log,err} 2>/dev/null >&2; exit 1; }
}

stop_proxy() {
  bench_stop "$PROXY_PID"
  PROXY_PID=""
}

# The proxy's processes: the one started and its children (nginx's worker).
proxy_pids() { { echo "$PROXY_PID"; pgrep -P "$PROXY_PID" || true; } | paste -sd, -; }
# utime+stime in clock ticks, summed over the proxy's processes (all threads).
proxy_ticks() {
  local total=0 p t
  for p in ${1//,/ }; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
core_busy() {  # busy jiffies of core 0 (everything but idle and iowait)
  awk -v c="cpu$PROXY_CORE" '$1 == c {print $2 + $3 + $4 + $7 + $8}' /proc/stat
}
TICK_US=$((1000000 / CLK_TCK))

# Bodies through the proxy must equal the files (before any timing).
check_bodies() {  # SYSTEM
  local system=$1 f ok=true
  for f in 1k 64k; do
    cmp -s <(curl -sf "http://127.0.0.1:$PLAIN_PORT/$f") "$WORK/www/$f" || ok=false
    cmp -s <(curl -sf --cacert "$WORK/ca.pem" "https://127.0.0.1:$TLS_PORT/$f") "$WORK/www/$f" || ok=false
  done
  echo "$ok"
}
# What a client negotiates with the proxy: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519".
tls_params() {
  echo | timeout 5 openssl s_client -connect "127.0.0.1:$TLS_PORT" -brief 2>&1 </dev/null \
    | awk -F': ' '/^Protocol version/ {p=$2} /^Ciphersuite/ {c=$2} /^Server Temp Key/ {split($2, k, ","); t=k[1]}
                  END {print p " " c " " t}' || true
}
h2_works() { cmp -s <(curl -sf --http2-prior-knowledge "http://127.0.0.1:$H2C_PORT/1k") "$WORK/www/1k"; }

record() {  # SYSTEM ROUND ROW JSON
  echo "{\"system\":\"$1\",\"round\":$2,\"row\":\"$3\",\"result\":$4}" >>"$RESULTS"
  log "  $1 $3: $4"
}

# run_wrk SYSTEM ROUND ROW CONNS URL [wrk args...]
run_wrk() {
  local system=$1 round=$2 row=$3 conns=$4 url=$5 pids out t0 t1 c0 c1
  shift 5
  pids=$(proxy_pids)
  taskset -c $LOAD_CORE wrk -t 1 -c "$conns" -d "${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
  t0=$(proxy_ticks "$pids"); c0=$(core_busy)
  out=$(taskset -c $LOAD_CORE wrk -t 1 -c "$conns" -d "${DURATION}s" --latency -s "$ROOT/bench/gateway_wrk.lua" \
    "$@" "$url" 2>&1) || true
  t1=$(proxy_ticks "$pids"); c1=$(core_busy)
  local json
  json=$(grep '^JSON ' <<<"$out" | sed 's/^JSON //') || true
  if [[ -z $json ]]; then
    echo "$out" >"$WORK/failed-$system-$row-$round.txt"; KEEP_WORK=1
    record "$system" "$round" "$row" '{"status":"failed"}'
    return 0
  fi
  record "$system" "$round" "$row" "$(python3 -c "
import json,sys; r=json.loads(sys.argv[1]); r.update(status='ok', conns=$conns,
  cpu_us=($t1-$t0)*$TICK_US, core0_busy_us=($c1-$c0)*$TICK_US); print(json.dumps(r))" "$json")"
}

# run_h2load SYSTEM ROUND ROW CONNS STREAMS URL
run_h2load() {
  local system=$1 round=$2 row=$3 conns=$4 streams=$5 url=$6 pids out t0 t1 c0 c1
  if ! h2_works; then
    record "$system" "$round" "$row" '{"status":"not_supported"}'
    return 0
  fi
  pids=$(proxy_pids)
  taskset -c $LOAD_CORE h2load -t 1 -c "$conns" -m "$streams" -D "$WARMUP" "$url" >/dev/null 2>&1 || true
  rm -f "$WORK/h2.log"
  t0=$(proxy_ticks "$pids"); c0=$(core_busy)
  out=$(taskset -c $LOAD_CORE h2load -t 1 -c "$conns" -m "$streams" -D "$DURATION" \
    --log-file="$WORK/h2.log" "$url" 2>&1) || true
  t1=$(proxy_ticks "$pids"); c1=$(core_busy)
  echo "$out" >"$WORK/h2load-$system-$round.txt"
  record "$system" "$round" "$row" "$(python3 - "$WORK/h2.log" "$conns" "$((t1 - t0))" "$((c1 - c0))" \
      "$TICK_US" "$DURATION" "$WORK/h2load-$system-$round.txt" <<'EOF'
import json, re, sys
log, conns, ticks, busy, tick_us, duration, out_path = sys.argv[1:8]
out = open(out_path).read()
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
              r"(\d+) errored, (\d+) timeout", out)
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
lat = []
try:
    for line in open(log):
        parts = line.split()
        if len(parts) >= 3 and parts[1].startswith("2"):
            lat.append(int(parts[2]))
except FileNotFoundError:
    pass
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] if lat else 0
done = int(m.group(3)) if m else 0
r = {"status": "ok" if done else "failed", "conns": int(conns), "requests": done,
     "duration_us": float(duration) * 1e6,
     "status_errors": (int(codes.group(3)) + int(codes.group(4))) if codes else 0,
     "failed": int(m.group(5)) if m else 0, "errored": int(m.group(6)) if m else 0,
     "timeouts": int(m.group(7)) if m else 0,
     "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "p999_us": pct(99.9),
     "cpu_us": int(ticks) * int(tick_us), "core0_busy_us": int(busy) * int(tick_us)}
print(json.dumps(r))
EOF
)"
}

run_idle() {  # SYSTEM ROUND
  local json
  json=$(taskset -c $LOAD_CORE python3 "$ROOT/bench/gateway_idle.py" "$PLAIN_PORT" "$IDLE_CONNS" "$(proxy_pids)") \
    || json='{"status":"failed"}'
  record "$1" "$2" idle "$json"
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; origin on port $ORIGIN_PORT; ROUNDS=$ROUNDS DURATION=$DURATION"
for round in $(seq 1 "$ROUNDS"); do
  for system in $PROXIES; do
    log "round $round/$ROUNDS: $system"
    start_proxy "$system"
    record "$system" "$round" check "{\"bodies_ok\":$(check_bodies "$system"),\"tls\":\"$(tls_params)\"}"
    # Idle memory first, on a fresh process (after load, freed buffers would be reused).
    curl -s "http://127.0.0.1:$PLAIN_PORT/1k" >/dev/null || true
    run_idle "$system" "$round"
    run_wrk "$system" "$round" h1-1k-c50 50 "http://127.0.0.1:$PLAIN_PORT/1k"
    run_wrk "$system" "$round" h1-1k-c500 500 "http://127.0.0.1:$PLAIN_PORT/1k"
    run_h2load "$system" "$round" h2-1k-c4-m100 4 100 "http://127.0.0.1:$H2C_PORT/1k"
    run_wrk "$system" "$round" h1-64k-c50 50 "http://127.0.0.1:$PLAIN_PORT/64k"
    run_wrk "$system" "$round" tls-1k-c50 50 "https://127.0.0.1:$TLS_PORT/1k"
    run_wrk "$system" "$round" tls-new-conn-1k-c50 50 "https://127.0.0.1:$TLS_PORT/1k" -H "Connection: close"
    stop_proxy
  done
done

# ---- profile of the capstan gateway during the 1 KiB keep-alive row.
# With hardware counters: perf record -g (cycles). Without them (a VM like
# this one): perf's software clock (cpu-clock) still samples user and kernel
# stacks, which is what shows the binding resource, so it is used first;
# valgrind --tool=callgrind is the last resort. (Note: `capstan gateway`
# under valgrind hangs at start-up, its io_uring loop never waking, and it
# has no flag to choose epoll; callgrind is therefore given a time limit:
# three tries of wait_port, then SIGKILL.)
PROFILE_TXT="$WORK/profile.txt"
: >"$PROFILE_TXT"
perf_top() {  # DATA SORT [perf report args...]: the top lines, trailing columns trimmed
  local data=$1 sort=$2
  shift 2
  perf report -i "$data" --stdio --sort "$sort" "$@" 2>/dev/null | grep -v '^#' \
    | grep -E '^ +[0-9.]+%' | sed -E 's/[ -]+$//' | head -30 || true
}
# profile_perf EVENT: one recording per profiled row, each summarised as
# self cost by symbol, share by binary, and inclusive cost by symbol.
PROFILE_ROWS=(
  "h1-1k-c50|http://127.0.0.1:PLAIN/1k"
  "h1-64k-c50|http://127.0.0.1:PLAIN/64k"
  "tls-new-conn-1k-c50|https://127.0.0.1:TLS/1k|Connection: close"
)
profile_perf() {
  local spec row url header perf_pid
  start_proxy capstan
  : >"$PROFILE_TXT"
  for spec in "${PROFILE_ROWS[@]}"; do
    IFS='|' read -r row url header <<<"$spec"
    url=${url/PLAIN/$PLAIN_PORT}; url=${url/TLS/$TLS_PORT}
    perf record -e "$1" -g -o "$WORK/perf-$row.data" -p "$PROXY_PID" -- sleep "$PROFILE_SECONDS" >/dev/null 2>&1 &
    perf_pid=$!
    taskset -c $LOAD_CORE wrk -t 1 -c 50 -d "${PROFILE_SECONDS}s" ${header:+-H "$header"} "$url" >/dev/null 2>&1 || true
    wait "$perf_pid" || true
    {
      echo "=== $row: self by symbol"
      perf_top "$WORK/perf-$row.data" symbol --no-children
      echo "=== $row: by binary"
      perf_top "$WORK/perf-$row.data" dso --no-children | head -8
      echo "=== $row: inclusive (children) by symbol"
      perf_top "$WORK/perf-$row.data" symbol --children -g none
    } >>"$PROFILE_TXT"
  done
  stop_proxy
}
PROFILER="none"
if [[ " $PROXIES " == *" capstan "* ]]; then
  if command -v perf >/dev/null && perf stat -e instructions true 2>&1 | grep -E '[0-9] +instructions' >/dev/null; then
    PROFILER="perf record -e cycles -g, ${PROFILE_SECONDS}s of wrk -c 50 per profiled row"
    profile_perf cycles
  elif command -v perf >/dev/null && perf record -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
    PROFILER="perf record -e cpu-clock -g (no hardware counters on this VM, so perf's software clock), ${PROFILE_SECONDS}s of wrk -c 50 per profiled row; kernel and user stacks"
    profile_perf cpu-clock
  elif command -v valgrind >/dev/null; then
    PROFILER="valgrind --tool=callgrind (user-space instructions only)"
    write_configs
    # valgrind itself is the proxy's pid, so stop_proxy's SIGKILL reaches it (the
    # gateway stuck at start-up under valgrind ignores SIGTERM).
    taskset -c $PROXY_CORE valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
      "$CAPSTAN" gateway --threads 1 --config "$WORK/capstan.yaml" >"$WORK/callgrind.log" 2>&1 &
    PROXY_PID=$!
    bench_track "$PROXY_PID"
    if wait_port "$PLAIN_PORT" || wait_port "$PLAIN_PORT" || wait_port "$PLAIN_PORT"; then
      taskset -c $LOAD_CORE wrk -t 1 -c 50 -d "${PROFILE_SECONDS}s" "http://127.0.0.1:$PLAIN_PORT/1k" >/dev/null 2>&1 || true
    else
      PROFILER="$PROFILER: the gateway did not start under valgrind"
    fi
    stop_proxy
    {
      echo "=== h1-1k-c50: self by symbol (callgrind, instructions)"
      callgrind_annotate --inclusive=no "$WORK/callgrind.out" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -30 || true
    } >"$PROFILE_TXT"
  fi
fi

OUT_DIR=$(dirname "$OUT_MD")
cp "$RESULTS" "$OUT_DIR/gateway.jsonl"
cp "$PROFILE_TXT" "$OUT_DIR/gateway-profile.txt"
CMDLINE="bench/gateway-vs-nginx.sh"
[[ -n ${QUICK:-} ]] && CMDLINE="QUICK=1 $CMDLINE"
python3 "$ROOT/bench/gateway_report.py" "$RESULTS" "$OUT_MD" \
  "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB; load average $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (the cores are shared)" \
  "$CMDLINE  (ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s IDLE_CONNS=$IDLE_CONNS)" \
  "$PROFILE_TXT" "$PROFILER" \
  "$(nginx -v 2>&1 | sed 's/.*: //'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(h2load --version); $(openssl version | cut -d' ' -f1-2)"
log "wrote $OUT_MD"
