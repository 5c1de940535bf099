#!/usr/bin/env bash
# Cache hits per second and CPU per hit: `capstan gateway --cache` against
# nginx `proxy_cache` and Varnish (Debian's), in one run, in front of the same
# origin (an nginx serving fixed 1 KiB and 100 KiB bodies with
# `Cache-Control: max-age=3600` from a temp directory).
#
# One worker on one core each, pinned to core 0 (`taskset -c 0`):
#   capstan  gateway --threads 1 --cache 256MiB (the quick start)
#   capstan-copy  the same with --io-splice=false: large bodies copied into
#            the socket instead of spliced (net/splice_sender.h), to show
#            what the splice path is worth in the same run
#   nginx    worker_processes 1; proxy_cache in a keys_zone, its files on
#            /dev/shm (tmpfs, so no disk in the path, as Varnish's malloc
#            storage and capstan's memory cache); sendfile on
#   varnish  -s malloc,256m, -p thread_pools=1 (the minimum) and
#            thread_pool_min=5 (the minimum); thread_pool_max=CONNS, because
#            Varnish serves each request in flight on its own worker thread
#            and fewer threads than connections would queue requests
#            (with every thread pinned to core 0 it is still one core)
#   floor-sendfile, floor-splice  not caches: bench/send_floor.c, a bare
#            epoll loop that answers each GET with one send of a fixed head
#            and one sendfile from a memfd (nginx's way) or one vmsplice +
#            splice (capstan's way): about the least a server on this kernel
#            can spend (only receiving the request could cost less); the
#            report gives every cache's CPU per hit against it.
# The load generator (wrk -t 1 -c CONNS) and the origin share core 1.
#
# Each cache is warmed (one request per object, then WARMUP s of wrk), and
# before and after the timed run a request must be a hit by the cache's own
# word (capstan: X-Cache says HIT; nginx: X-Cache-Status: HIT, the
# $upstream_cache_status header added for this; Varnish: X-Varnish carries
# two ids) and the origin's access log must not grow during the timed run
# (`origin_requests` in the results); the floor's evidence is its own header.
# TCP segments per hit (Tcp OutSegs of /proc/net/snmp, both directions of
# loopback, machine-wide) show whether two servers made the kernel do the same
# work. CPU per hit = (utime+stime of the cache's
# processes, threads and children, from /proc/PID/stat, after minus before) /
# requests answered. Caches run in turn, interleaved over ROUNDS rounds;
# medians reported by bench/cache_report.py into the benchmark section of
# docs/benchmarks/cache.md (the conformance section is kept). Raw runs:
# docs/benchmarks/cache-bench.jsonl.
#
#   bench/cache-vs-nginx-varnish.sh                          # full run (about 2 minutes)
#   ROUNDS=1 DURATION=1 WARMUP=1 bench/cache-vs-nginx-varnish.sh   # smoke run
#
# When the capstan binary has no `gateway --cache` flag its rows say "not
# available" and the run goes on. Everything runs on 127.0.0.1 ports picked
# here, inside a temp directory, as child processes stopped at exit. Needs
# nginx, varnish, wrk (scripts/install-deps.sh) and a release build.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
NAME="cache-vs-nginx-varnish"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" WARMUP="${WARMUP:-1}" CONNS="${CONNS:-50}"
ALL_CACHES="capstan capstan-copy nginx varnish floor-sendfile floor-splice"
CACHES="${CACHES:-$ALL_CACHES}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/cache.md}"
OUT_JSONL="${OUT_JSONL:-$ROOT/docs/benchmarks/cache-bench.jsonl}"
SMOKE_NOTE="${SMOKE_NOTE:-}"  # a line for the report, e.g. that this was a smoke run
CACHE_CORE=0
LOAD_CORE=1
OBJECTS="1k 100k"

require_tools "$NAME" taskset nginx varnishd wrk curl python3 cc
if [[ $(nproc) -lt 2 ]]; then echo "$NAME: needs 2 cores (cache and load apart)" >&2; exit 1; fi

bench_init "$NAME"
chmod 755 "$WORK"  # nginx's workers and varnishd's child drop privileges when started by root
SHM_DIR=""
if [[ -d /dev/shm && -w /dev/shm ]]; then
  SHM_DIR=$(mktemp -d /dev/shm/capstan-cache-bench.XXXXXX)
  chmod 755 "$SHM_DIR"
fi
cleanup_all() { bench_cleanup; [[ -n $SHM_DIR ]] && rm -rf "$SHM_DIR"; return 0; }
trap cleanup_all EXIT
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
TICK_US=$((1000000 / CLK_TCK))
cc -O2 -o "$WORK/send_floor" "$ROOT/bench/send_floor.c"

# ---- the origin (core 1): fixed bodies, cacheable for an hour, access log counted
mkdir -p "$WORK/www" "$WORK/tmp"
chmod 755 "$WORK/www"
head -c 768 /dev/urandom | base64 -w 0 >"$WORK/www/1k"      # 3 bytes -> 4 characters
head -c 76800 /dev/urandom | base64 -w 0 >"$WORK/www/100k"
ORIGIN_PORT=$(free_port)
cat >"$WORK/origin.conf" <<EOF
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http {
  access_log $WORK/origin.access;
  client_body_temp_path $WORK/tmp/ob; proxy_temp_path $WORK/tmp/op; fastcgi_temp_path $WORK/tmp/of;
  uwsgi_temp_path $WORK/tmp/ou; scgi_temp_path $WORK/tmp/os;
  keepalive_requests 100000000; keepalive_timeout 300s;
  sendfile on; default_type application/octet-stream;
  server {
    listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www;
    location / { add_header Cache-Control "max-age=3600"; }
  }
}
EOF
taskset -c $LOAD_CORE nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;' 2>>"$WORK/origin.err" &
bench_track $!
wait_port "$ORIGIN_PORT" || { echo "$NAME: origin nginx did not start:" >&2; cat "$WORK/origin.err" >&2; exit 1; }
origin_requests() { wc -l <"$WORK/origin.access" 2>/dev/null || echo 0; }

CAPSTAN_REASON=""
capstan_has_cache() {
  [[ -x $CAPSTAN ]] || { CAPSTAN_REASON="no capstan binary at $CAPSTAN"; return 1; }
  "$CAPSTAN" gateway --help 2>&1 | grep -q -- '--cache' \
    || { CAPSTAN_REASON="this capstan binary has no \`gateway --cache\` flag"; return 1; }
}

CACHE_PID=""
start_cache() {  # NAME -> CACHE_PID, CACHE_PORT; 1 when not available (CAPSTAN_REASON)
  CACHE_PORT=$(free_port)
  case $1 in
    capstan)
      capstan_has_cache || return 1
      taskset -c $CACHE_CORE "$CAPSTAN" gateway --threads 1 --listen "127.0.0.1:$CACHE_PORT" \
        --upstream "http://127.0.0.1:$ORIGIN_PORT" --cache 256MiB >"$WORK/capstan.log" 2>&1 &
      ;;
    capstan-copy)
      capstan_has_cache || return 1
      "$CAPSTAN" gateway --help 2>&1 | grep -q -- '--io-splice' \
        || { CAPSTAN_REASON="this capstan binary has no \`gateway --io-splice\` flag"; return 1; }
      taskset -c $CACHE_CORE "$CAPSTAN" gateway --threads 1 --listen "127.0.0.1:$CACHE_PORT" \
        --upstream "http://127.0.0.1:$ORIGIN_PORT" --cache 256MiB --io-splice=false \
        >"$WORK/capstan-copy.log" 2>&1 &
      ;;
    nginx)
      local cache_dir=${SHM_DIR:-$WORK}/nginx-cache
      rm -rf "$cache_dir" && mkdir -p "$cache_dir" && chmod 755 "$cache_dir"
      cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/nb; proxy_temp_path $WORK/tmp/np; fastcgi_temp_path $WORK/tmp/nf;
  uwsgi_temp_path $WORK/tmp/nu; scgi_temp_path $WORK/tmp/ns;
  keepalive_requests 100000000; keepalive_timeout 300s;
  sendfile on;
  proxy_cache_path $cache_dir levels=1:2 keys_zone=bench:16m max_size=256m inactive=60m use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$CACHE_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_revalidate on;
      proxy_cache_lock on;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
EOF
      taskset -c $CACHE_CORE nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx.err" &
      ;;
    floor-sendfile | floor-splice)
      taskset -c $CACHE_CORE "$WORK/send_floor" "${1#floor-}" "$CACHE_PORT" "$WORK/www" >"$WORK/$1.log" 2>&1 &
      ;;
    varnish)
      rm -rf "$WORK/varnish" && mkdir -p "$WORK/varnish" && chmod 755 "$WORK/varnish"
      printf 'vcl 4.1;\nbackend origin { .host = "127.0.0.1"; .port = "%s"; }\n' "$ORIGIN_PORT" \
        >"$WORK/varnish/default.vcl"
      chmod 644 "$WORK/varnish/default.vcl"
      taskset -c $CACHE_CORE varnishd -F -n "$WORK/varnish/work" -a "127.0.0.1:$CACHE_PORT" -T none \
        -f "$WORK/varnish/default.vcl" -s malloc,256m \
        -p thread_pools=1 -p thread_pool_min=5 -p thread_pool_max="$((CONNS > 5 ? CONNS : 5))" \
        >"$WORK/varnish.log" 2>&1 &
      ;;
  esac
  CACHE_PID=$!
  bench_track "$CACHE_PID"
  wait_port "$CACHE_PORT" 15 "$CACHE_PID" || {
    echo "$NAME: $1 did not start:" >&2; cat "$WORK/$1".{log,err} 2>/dev/null >&2; exit 1; }
}

# Is a request for OBJECT a hit, by the cache's own headers? Prints the evidence.
hit_evidence() {  # CACHE OBJECT
  local headers
  headers=$(curl -s -D - -o /dev/null "http://127.0.0.1:$CACHE_PORT/$2" | tr -d '\r')
  case $1 in
    capstan | capstan-copy) grep -i '^x-cache:' <<<"$headers" | grep -qi hit && grep -i '^x-cache:' <<<"$headers" ;;
    nginx) grep -i '^x-cache-status: hit' <<<"$headers" ;;
    varnish) grep -iE '^x-varnish: [0-9]+ [0-9]+' <<<"$headers" ;;
    floor-*) grep -i '^x-served-by: send_floor' <<<"$headers" ;;
  esac
}

tcp_out_segments() {  # Tcp OutSegs from /proc/net/snmp
  awk '/^Tcp:/ { if (!n) { for (i = 1; i <= NF; i++) if ($i == "OutSegs") col = i; n = 1 } else print $col }' /proc/net/snmp
}

record() {  # CACHE ROUND ROW JSON
  echo "{\"cache\":\"$1\",\"round\":$2,\"row\":\"$3\",\"result\":$4}" >>"$RESULTS"
  bench_log "  $1 $3: $4"
}

run_row() {  # CACHE ROUND OBJECT
  local cache=$1 round=$2 object=$3 url="http://127.0.0.1:$CACHE_PORT/$3"
  local body_ok=false hit_before hit_after t0 t1 o0 o1 s0 s1 out json
  cmp -s <(curl -sf "$url") "$WORK/www/$object" && body_ok=true
  taskset -c $LOAD_CORE wrk -t 1 -c "$CONNS" -d "${WARMUP}s" "$url" >/dev/null 2>&1 || true
  hit_before=$(hit_evidence "$cache" "$object" || true)
  t0=$(cpu_ticks "$CACHE_PID"); o0=$(origin_requests); s0=$(tcp_out_segments)
  out=$(taskset -c $LOAD_CORE wrk -t 1 -c "$CONNS" -d "${DURATION}s" --latency \
    -s "$ROOT/bench/gateway_wrk.lua" "$url" 2>&1) || true
  t1=$(cpu_ticks "$CACHE_PID"); o1=$(origin_requests); s1=$(tcp_out_segments)
  hit_after=$(hit_evidence "$cache" "$object" || true)
  json=$(grep '^JSON ' <<<"$out" | sed 's/^JSON //') || true
  if [[ -z $json ]]; then
    echo "$out" >"$WORK/failed-$cache-$object-$round.txt"; KEEP_WORK=1
    record "$cache" "$round" "$object" '{"status":"failed"}'
    return 0
  fi
  record "$cache" "$round" "$object" "$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(status="ok", conns=int(sys.argv[2]), cpu_us=int(sys.argv[3]) * int(sys.argv[4]),
         origin_requests=int(sys.argv[5]), body_ok=sys.argv[6] == "true",
         hit_before=sys.argv[7], hit_after=sys.argv[8], tcp_segments=int(sys.argv[9]))
print(json.dumps(r))' "$json" "$CONNS" "$((t1 - t0))" "$TICK_US" "$((o1 - o0))" "$body_ok" "$hit_before" \
    "$hit_after" "$((s1 - s0))")"
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
bench_log "work dir $WORK; origin on port $ORIGIN_PORT; ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS"
for round in $(seq 1 "$ROUNDS"); do
  for cache in $CACHES; do
    if ! start_cache "$cache"; then
      bench_log "$cache: not available: $CAPSTAN_REASON"
      for object in $OBJECTS; do
        record "$cache" "$round" "$object" "$(python3 -c 'import json,sys; print(json.dumps({"status":"not available","reason":sys.argv[1]}))' "$CAPSTAN_REASON")"
      done
      continue
    fi
    bench_log "round $round/$ROUNDS: $cache on port $CACHE_PORT"
    for object in $OBJECTS; do
      curl -s -o /dev/null "http://127.0.0.1:$CACHE_PORT/$object" || true  # fill
      run_row "$cache" "$round" "$object"
    done
    bench_stop "$CACHE_PID"
    CACHE_PID=""
  done
done

cp "$RESULTS" "$OUT_JSONL"
CMDLINE="ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS"
[[ $CACHES != "$ALL_CACHES" ]] && CMDLINE="$CMDLINE CACHES=\"$CACHES\""
[[ $CAPSTAN != "$ROOT/build/release/src/cmd/capstan" ]] && CMDLINE="$CMDLINE CAPSTAN=$CAPSTAN"
CMDLINE="$CMDLINE bench/cache-vs-nginx-varnish.sh"
# (wrk -v exits 1 after printing its version)
VERSIONS="$(nginx -v 2>&1 | sed 's/.*: //'); $(varnishd -V 2>&1 | head -1 | sed 's/^varnishd (\(.*\))/\1/'); $( (wrk -v 2>&1 || true) | head -1 | cut -d' ' -f1-2)"
[[ -x $CAPSTAN ]] && VERSIONS="$(capstan_describe "$CAPSTAN"); $VERSIONS"
python3 "$ROOT/bench/cache_report.py" "$RESULTS" "$OUT_MD" \
  "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); load average $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (the cores are shared)" \
  "$CMDLINE" "$VERSIONS" "$(date -u '+%Y-%m-%d %H:%M UTC')" "$SMOKE_NOTE"
bench_log "wrote $OUT_MD and $OUT_JSONL"
