#!/usr/bin/env bash
# Edge functions: the CPU a Lua function adds per request in `capstan
# gateway` (LuaJIT, JIT off, instruction budget hook on: src/gateway/edge/)
# against nginx with libnginx-mod-http-lua (Debian; LuaJIT with the JIT on,
# no budget) running the same Lua. Three variants per proxy, each in front
# of the same origin (an nginx serving a fixed 1 KiB body):
#   none     no function (the baseline)
#   empty    an on_request that does nothing (nginx: an empty access_by_lua_block)
#   rewrite  on_request sets one request header and removes another,
#            on_response sets a response header (nginx: access_by_lua_block
#            + header_filter_by_lua_block doing the same)
# Each proxy has ONE worker pinned to core 0 (capstan --threads 1, nginx
# worker_processes 1); wrk (HTTP/1.1 keep-alive, 50 connections) and the
# origin are pinned to core 1. The proxy's CPU comes from /proc/PID/stat
# (utime+stime of its processes) before and after each run, as in
# bench/gateway-vs-nginx.sh; CPU per request = that / requests done; the
# added CPU of a variant = its CPU per request - the same proxy's `none`.
# Variants are interleaved over ROUNDS rounds; medians reported.
#
#   bench/edge-vs-openresty.sh                          # full run (about 2 minutes)
#   DURATION=1 WARMUP=1 ROUNDS=1 bench/edge-vs-openresty.sh   # smoke run
#
# Writes OUT_MD (default docs/benchmarks/edge.md) and prints the table.
# Everything runs on 127.0.0.1 ports picked here, inside a temp directory,
# as child processes stopped at exit (no nginx service is started). Needs a
# release build (cmake --build --preset release --target capstan) and
# nginx, libnginx-mod-http-lua and wrk (scripts/install-deps.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" WARMUP="${WARMUP:-1}" CONNS="${CONNS:-50}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/edge.md}"
LUA_MODULES="${LUA_MODULES:-/usr/lib/nginx/modules}"
PROXY_CORE=0
LOAD_CORE=1

for tool in taskset nginx wrk curl python3; do
  command -v $tool >/dev/null || { echo "edge-vs-openresty: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -f $LUA_MODULES/ngx_http_lua_module.so ]] || {
  echo "edge-vs-openresty: needs libnginx-mod-http-lua (scripts/install-deps.sh)" >&2; exit 1; }
[[ -x $CAPSTAN ]] || { echo "edge-vs-openresty: build first: cmake --build --preset release --target capstan" >&2; exit 1; }
if [[ $(nproc) -lt 2 ]]; then echo "edge-vs-openresty: needs 2 cores (proxy and load apart)" >&2; exit 1; fi

WORK=$(mktemp -d /tmp/capstan-edge-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

mkdir -p "$WORK/www" "$WORK/tmp"
chmod 755 "$WORK" "$WORK/www"
head -c 768 /dev/urandom | base64 -w 0 >"$WORK/www/1k"

ORIGIN_PORT=$(free_port)
cat >"$WORK/origin.conf" <<EOF
worker_processes 1;
pid $WORK/origin.pid;
error_log $WORK/origin.err warn;
events { worker_connections 4000; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/ob; proxy_temp_path $WORK/tmp/op; fastcgi_temp_path $WORK/tmp/of;
  uwsgi_temp_path $WORK/tmp/ou; scgi_temp_path $WORK/tmp/os;
  keepalive_requests 100000000; keepalive_timeout 300s;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; location / { } }
}
EOF
taskset -c $LOAD_CORE nginx -p "$WORK" -c "$WORK/origin.conf" -g 'daemon off;' 2>>"$WORK/origin.err" &
PIDS+=($!)
wait_port "$ORIGIN_PORT" || { cat "$WORK/origin.err" >&2; exit 1; }

# ---- the same Lua, in each proxy's API
capstan_functions() {  # VARIANT: the edge_functions section and the route's edge line
  case $1 in
    none) ;;
    empty) cat <<'EOF'
edge_functions:
  f:
    source: |
      function on_request(req) end
EOF
      ;;
    rewrite) cat <<'EOF'
edge_functions:
  f:
    source: |
      function on_request(req)
        req:set_header("x-edge", "1")
        req:remove_header("user-agent")
      end
      function on_response(resp)
        resp:set_header("x-served-by", "edge")
      end
EOF
      ;;
  esac
}
nginx_lua() {  # VARIANT
  case $1 in
    none) ;;
    empty) echo 'access_by_lua_block { }' ;;
    rewrite) cat <<'EOF'
access_by_lua_block {
  ngx.req.set_header("x-edge", "1")
  ngx.req.clear_header("user-agent")
}
header_filter_by_lua_block {
  ngx.header["x-served-by"] = "edge"
}
EOF
      ;;
  esac
}

PORT=""
PROXY_PID=""
start_proxy() {  # SYSTEM VARIANT
  local system=$1 variant=$2 edge_line=""
  PORT=$(free_port)
  case $system in
    capstan)
      [[ $variant != none ]] && edge_line=", edge: {function: f}"
      {
        echo "listeners: [{address: \"127.0.0.1:$PORT\"}]"
        echo "clusters: [{name: origin, endpoints: [\"127.0.0.1:$ORIGIN_PORT\"], max_idle_connections: 1024}]"
        echo "virtual_hosts: [{name: all, routes: [{cluster: origin$edge_line}]}]"
        echo "drain_timeout: 1s"
        capstan_functions "$variant"
      } >"$WORK/capstan.yaml"
      taskset -c $PROXY_CORE "$CAPSTAN" gateway --threads 1 --config "$WORK/capstan.yaml" \
        >"$WORK/capstan.log" 2>&1 &
      ;;
    nginx-lua)
      cat >"$WORK/nginx.conf" <<EOF
load_module $LUA_MODULES/ndk_http_module.so;
load_module $LUA_MODULES/ngx_http_lua_module.so;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4000; }
http {
  access_log off;
  client_body_temp_path $WORK/tmp/nb; proxy_temp_path $WORK/tmp/np; fastcgi_temp_path $WORK/tmp/nf;
  uwsgi_temp_path $WORK/tmp/nu; scgi_temp_path $WORK/tmp/ns;
  keepalive_requests 100000000; keepalive_timeout 300s;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 1024; }
  server {
    listen 127.0.0.1:$PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      $(nginx_lua "$variant")
    }
  }
}
EOF
      taskset -c $PROXY_CORE nginx -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx.err" &
      ;;
  esac
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
  wait_port "$PORT" || { echo "$system $variant did not start:" >&2; cat "$WORK"/{capstan.log,nginx.err} 2>/dev/null >&2; exit 1; }
}
stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
}
proxy_pids() { { echo "$PROXY_PID"; pgrep -P "$PROXY_PID" || true; } | paste -sd, -; }
proxy_ticks() {
  local total=0 p t
  for p in ${1//,/ }; do
    t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# The function must have run before anything is timed.
check() {  # VARIANT
  local head
  head=$(curl -sS -D - -o /dev/null "http://127.0.0.1:$PORT/1k") || return 1
  grep -q '^HTTP/1.1 200' <<<"$head" || return 1
  if [[ $1 == rewrite ]]; then grep -qi '^x-served-by: edge' <<<"$head" || return 1; fi
  return 0
}

run() {  # SYSTEM VARIANT ROUND
  local pids t0 t1 out requests
  pids=$(proxy_pids)
  taskset -c $LOAD_CORE wrk -t 1 -c "$CONNS" -d "${WARMUP}s" "http://127.0.0.1:$PORT/1k" >/dev/null 2>&1 || true
  t0=$(proxy_ticks "$pids")
  out=$(taskset -c $LOAD_CORE wrk -t 1 -c "$CONNS" -d "${DURATION}s" "http://127.0.0.1:$PORT/1k" 2>&1) || true
  t1=$(proxy_ticks "$pids")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "{\"system\":\"$1\",\"variant\":\"$2\",\"round\":$3,\"requests\":${requests:-0},\"non2xx\":${non2xx:-0},\"cpu_us\":$(((t1 - t0) * TICK_US)),\"duration_s\":$DURATION}" >>"$RESULTS"
  log "  $1 $2: ${requests:-0} requests, $(((t1 - t0) * TICK_US)) us CPU"
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS"
for round in $(seq 1 "$ROUNDS"); do
  for system in capstan nginx-lua; do
    for variant in none empty rewrite; do
      start_proxy "$system" "$variant"
      check "$variant" || { echo "$system $variant: the check request failed" >&2; KEEP_WORK=1; exit 1; }
      run "$system" "$variant" "$round"
      stop_proxy
    done
  done
done

CMDLINE="bench/edge-vs-openresty.sh (ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s CONNS=$CONNS)"
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); load average $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
VERSIONS="$(nginx -v 2>&1 | sed 's/.*: //'); libnginx-mod-http-lua $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null || echo '?'); $(dpkg-query -W -f='libluajit ${Version}' libluajit-5.1-2 2>/dev/null || echo '')"
/usr/bin/python3 - "$RESULTS" "$OUT_MD" "$CMDLINE" "$MACHINE" "$VERSIONS" <<'EOF'
import json, statistics, sys
results, out_md, cmdline, machine, versions = sys.argv[1:6]
rows = [json.loads(l) for l in open(results)]
per = {}
for r in rows:
    if r["requests"] > 0:
        per.setdefault((r["system"], r["variant"]), []).append(r)
def med(system, variant, f):
    rs = per.get((system, variant), [])
    return statistics.median(f(r) for r in rs) if rs else float("nan")
cpu = lambda r: r["cpu_us"] / r["requests"]
rps = lambda r: r["requests"] / r["duration_s"]
lines = ["| proxy | function | requests/s | CPU µs/request | added CPU µs/request | non-2xx |",
         "| --- | --- | ---: | ---: | ---: | ---: |"]
for system in ["capstan", "nginx-lua"]:
    base = med(system, "none", cpu)
    for variant in ["none", "empty", "rewrite"]:
        c = med(system, variant, cpu)
        added = "—" if variant == "none" else f"{c - base:+.2f}"
        non2xx = sum(r["non2xx"] for r in per.get((system, variant), []))
        lines.append(f"| {system} | {variant} | {med(system, variant, rps):,.0f} | {c:.2f} | {added} | {non2xx} |")
table = "\n".join(lines)
print(table)
with open(out_md, "w") as f:
    f.write(f"""# Edge functions: added CPU per request, capstan gateway vs nginx + lua-nginx-module

Generated by `bench/edge-vs-openresty.sh`; see the script's header for the method.

- command: `{cmdline}`
- machine: {machine}
- versions: {versions}

{table}

"added" is the variant's CPU per request minus the same proxy's run without
a function (medians over the rounds). One worker per proxy on core 0; wrk
(HTTP/1.1 keep-alive) and the origin on core 1.

Raw runs:

```
{open(results).read().strip()}
```
""")
EOF
log "wrote $OUT_MD"
