#!/usr/bin/env bash
# Runs the public HTTP cache test suite (https://github.com/http-tests/cache-tests)
# against nginx `proxy_cache`, Varnish and `capstan gateway --cache`, in one
# run, in front of the suite's own origin server, and writes the results per
# test group into docs/benchmarks/cache.md (bench/cache_conformance_report.py)
# with the raw results beside it (docs/benchmarks/cache-conformance.json, from
# which the report can be regenerated).
#
#   bench/cache-conformance.sh SUITE_DIR
#
# SUITE_DIR is a copy of the suite outside this repository, with its npm
# dependencies installed, e.g.:
#   git clone https://github.com/http-tests/cache-tests /work/scratch/cache-tests
#   (cd /work/scratch/cache-tests && npm install --omit=dev)
# The suite is never copied into the repository; only its results are.
#
# Environment:
#   IMPLS      what to test, in order (default "capstan nginx nginx-plain
#              varnish none"):
#                capstan      capstan gateway --cache 256MiB (quick start)
#                nginx        proxy_cache as users configure a shared cache:
#                             revalidation, stale on errors and while updating
#                             in the background, cache lock
#                nginx-plain  proxy_cache and proxy_cache_revalidate only (the
#                             suite's own Docker configuration); shown because
#                             `proxy_cache_use_stale updating` with background
#                             updates serves stale responses on purpose, which
#                             the suite counts as required failures
#                varnish      varnishd with its built-in VCL
#                none         no cache, the runner straight at the origin: a
#                             baseline, what a cache that stores nothing passes
#   CAPSTAN    the capstan binary (default build/release/src/cmd/capstan);
#              when it refuses `gateway --cache`, its column says "not
#              available" and the run goes on
#   SUITE_REV  the suite's commit, for the report (default: git rev-parse in
#              SUITE_DIR, else a hash of its tests/ folder)
#   OUT_MD, OUT_JSON  where the report and the raw results go
#   RUN_TIMEOUT  seconds allowed for one implementation's run (default 600)
#   KEEP_OTHERS  1: the implementations not in IMPLS keep their results from
#              the existing OUT_JSON (e.g. IMPLS=capstan KEEP_OTHERS=1 reruns
#              capstan's column alone, the peers' columns stay as measured
#              before); the command line in the report says so
#
# The suite's runner is its CLI (test-engine/cli.mjs, what `npm run cli` runs)
# with the base URL of the cache under test; its origin is
# test-engine/server/server.mjs (`npm run server`). Both are run with node
# directly, with the environment `npm run` would give them. The origin's
# server.listen(port) binds every address; a preloaded module (written here)
# makes it bind 127.0.0.1 only. Everything runs on 127.0.0.1 ports picked
# here, inside a temp directory, as child processes stopped at exit.
# A full run takes about one minute per implementation, five by default (the
# suite pauses 3 s in many tests and runs 25 tests at a time). The preload
# needs node >= 18.18 (`node --import`).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
NAME=cache-conformance
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
IMPLS_DEFAULT="capstan nginx nginx-plain varnish none"
IMPLS="${IMPLS:-$IMPLS_DEFAULT}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/cache.md}"
OUT_JSON="${OUT_JSON:-$ROOT/docs/benchmarks/cache-conformance.json}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"  # seconds for one implementation's run (about 60 s normally)

[[ $# -eq 1 ]] || { echo "usage: $0 SUITE_DIR (a copy of github.com/http-tests/cache-tests with npm install done)" >&2; exit 2; }
SUITE=$(cd "$1" && pwd)
for f in tests/index.mjs test-engine/cli.mjs test-engine/server/server.mjs; do
  [[ -f $SUITE/$f ]] || { echo "$NAME: $SUITE/$f is missing: SUITE_DIR must be a copy of http-tests/cache-tests" >&2; exit 2; }
done
[[ -d $SUITE/node_modules/undici ]] || { echo "$NAME: $SUITE/node_modules/undici is missing: run (cd $SUITE && npm install --omit=dev)" >&2; exit 2; }
case "$SUITE/" in
  "$ROOT"/*) echo "$NAME: $SUITE is inside the repository; keep the suite outside it (e.g. /work/scratch/cache-tests)" >&2; exit 2 ;;
esac
require_tools "$NAME" node python3 curl
for impl in $IMPLS; do
  case $impl in
    nginx | nginx-plain) require_tools "$NAME" nginx ;;
    varnish) require_tools "$NAME" varnishd ;;
    capstan | none) ;;
    *) echo "$NAME: unknown implementation '$impl' in IMPLS (nginx, nginx-plain, varnish, capstan, none)" >&2; exit 2 ;;
  esac
done

bench_init "$NAME"
chmod 755 "$WORK"  # nginx's workers and varnishd's child drop to unprivileged users when started by root
mkdir -p "$WORK/results"
log() { bench_log "$@"; }

if [[ -z ${SUITE_REV:-} ]]; then
  SUITE_REV=$(git -C "$SUITE" rev-parse --short HEAD 2>/dev/null) \
    || SUITE_REV="tests/ sha256 $(cd "$SUITE" && find tests -type f | sort | xargs cat | sha256sum | cut -c1-12)"
fi

# ---- the suite's origin, bound to 127.0.0.1
cat >"$WORK/loopback.mjs" <<'EOF'
// Preloaded into the suite's origin: a listen(port) without a host binds 127.0.0.1.
import net from 'node:net'
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))
  if (portOnly && (args.length === 1 || typeof args[1] === 'function')) args.splice(1, 0, '127.0.0.1')
  return listen.apply(this, args)
}
EOF
ORIGIN_PORT=$(free_port)
(cd "$SUITE" && exec env npm_config_protocol=http npm_config_port="$ORIGIN_PORT" \
  npm_config_pidfile="$WORK/origin.pid" node --import "file://$WORK/loopback.mjs" \
  test-engine/server/server.mjs) >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!
bench_track "$ORIGIN_PID"
wait_port "$ORIGIN_PORT" 10 "$ORIGIN_PID" || { echo "$NAME: the suite's origin did not start:" >&2; cat "$WORK/origin.log" >&2; exit 1; }
log "origin (the suite's server.mjs) on 127.0.0.1:$ORIGIN_PORT; work dir $WORK"

# The test index (groups, ids, kinds, dependencies) for the report.
(cd "$SUITE" && node --input-type=module -e "
import tests from './tests/index.mjs'
console.log(JSON.stringify(tests.map(s => ({
  id: s.id, name: s.name,
  tests: s.tests.map(t => ({ id: t.id, name: t.name, kind: t.kind || 'required',
    depends_on: t.depends_on || [], browser_only: t.browser_only === true }))
}))))
") >"$WORK/index.json"

# ---- the caches under test
write_nginx_conf() {  # PORT VARIANT
  local port=$1 variant=$2 extra=""
  mkdir -p "$WORK/$variant/tmp" "$WORK/$variant/cache"
  chmod -R 755 "$WORK/$variant"
  if [[ $variant == nginx ]]; then
    # How nginx users configure a shared cache: revalidate with conditional
    # requests, serve stale on upstream errors and while one request
    # refreshes it in the background, and let one request fill a missing entry.
    extra="proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
      proxy_cache_background_update on;
      proxy_cache_lock on;"
  fi
  local dir="$WORK/$variant"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy; fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=shared:16m max_size=256m inactive=60m use_temp_path=off;
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://127.0.0.1:$ORIGIN_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache shared;
      proxy_cache_revalidate on;
      $extra
    }
  }
}
EOF
}

# Varnish with its built-in VCL (only the backend declared) and the
# parameters the suite's own Docker image runs it with: default_ttl=0 (a
# response without explicit freshness is not stored for 2 minutes, Varnish's
# default, which would make every test that depends on `freshness-none` a
# dependency failure), default_grace=0, default_keep=3600 (stored responses
# kept for revalidation). Memory storage.
write_varnish_vcl() {
  mkdir -p "$WORK/varnish"
  chmod 755 "$WORK/varnish"
  cat >"$WORK/varnish/default.vcl" <<EOF
vcl 4.1;
backend origin { .host = "127.0.0.1"; .port = "$ORIGIN_PORT"; }
EOF
  chmod 644 "$WORK/varnish/default.vcl"
}

CAPSTAN_REASON=""
capstan_has_cache() {
  if [[ ! -x $CAPSTAN ]]; then
    CAPSTAN_REASON="no capstan binary at $CAPSTAN (cmake --build --preset release --target capstan)"
    return 1
  fi
  if ! "$CAPSTAN" gateway --help 2>&1 | grep -q -- '--cache'; then
    CAPSTAN_REASON="this capstan binary has no \`gateway --cache\` flag"
    return 1
  fi
}

PROXY_PID=""
start_impl() {  # IMPL -> PROXY_PID, PROXY_PORT; returns 1 (CAPSTAN_REASON set) when not available
  local impl=$1
  PROXY_PORT=$(free_port)
  case $impl in
    none)
      PROXY_PORT=$ORIGIN_PORT
      PROXY_PID=""
      return 0
      ;;
    nginx | nginx-plain)
      write_nginx_conf "$PROXY_PORT" "$impl"
      nginx -p "$WORK/$impl" -c "$WORK/$impl/nginx.conf" -g 'daemon off;' >"$WORK/$impl.log" 2>&1 &
      ;;
    varnish)
      write_varnish_vcl
      varnishd -F -n "$WORK/varnish/work" -a "127.0.0.1:$PROXY_PORT" -T none -f "$WORK/varnish/default.vcl" \
        -p default_ttl=0 -p default_grace=0 -p default_keep=3600 -s malloc,256m >"$WORK/varnish.log" 2>&1 &
      ;;
    capstan)
      capstan_has_cache || return 1
      "$CAPSTAN" gateway --listen "127.0.0.1:$PROXY_PORT" --upstream "http://127.0.0.1:$ORIGIN_PORT" \
        --cache 256MiB --threads 1 >"$WORK/capstan.log" 2>&1 &
      ;;
  esac
  PROXY_PID=$!
  bench_track "$PROXY_PID"
  if ! wait_port "$PROXY_PORT" 15 "$PROXY_PID"; then
    if [[ $impl == capstan ]]; then
      CAPSTAN_REASON="\`capstan gateway --cache 256MiB\` did not start: $(grep -m1 -iE 'error|unknown|invalid' "$WORK/capstan.log" || head -1 "$WORK/capstan.log")"
      bench_stop "$PROXY_PID"
      return 1
    fi
    echo "$NAME: $impl did not start:" >&2
    cat "$WORK/$impl.log" "$WORK/$impl/error.log" 2>/dev/null >&2 || true
    exit 1
  fi
}

version_of() {  # IMPL
  case $1 in
    nginx | nginx-plain) nginx -v 2>&1 | sed 's/.*: //' ;;
    varnish) varnishd -V 2>&1 | head -1 | sed 's/^varnishd (\(.*\))/\1/' ;;
    capstan) capstan_describe "$CAPSTAN" ;;
    none) echo "-" ;;
  esac
}

IMPL_JSON="$WORK/implementations.jsonl"
: >"$IMPL_JSON"
for impl in $IMPLS; do
  version=$(version_of "$impl" 2>/dev/null || echo "?")
  if ! start_impl "$impl"; then
    log "$impl: not available: $CAPSTAN_REASON"
    python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "version": sys.argv[2], "status": "not available", "reason": sys.argv[3]}))' \
      "$impl" "$version" "$CAPSTAN_REASON" >>"$IMPL_JSON"
    continue
  fi
  # The cache must answer (whatever the origin says to "/") before the suite starts.
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$PROXY_PORT/" || true)
  [[ $code != 000 && -n $code ]] || { echo "$NAME: $impl on port $PROXY_PORT answers nothing" >&2; exit 1; }
  log "$impl ($version) on 127.0.0.1:$PROXY_PORT: running the suite"
  t0=$(date +%s)
  (cd "$SUITE" && exec env npm_config_base="http://127.0.0.1:$PROXY_PORT" npm_config_id= npm_package_config_id= \
    timeout "$RUN_TIMEOUT" node --no-warnings test-engine/cli.mjs) >"$WORK/results/$impl.json" 2>"$WORK/results/$impl.err" || {
    echo "$NAME: the suite's runner failed against $impl:" >&2; tail -20 "$WORK/results/$impl.err" >&2; exit 1; }
  log "$impl: done in $(($(date +%s) - t0)) s"
  [[ -n $PROXY_PID ]] && bench_stop "$PROXY_PID"
  PROXY_PID=""
  python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "version": sys.argv[2], "status": "ok",
    "results": json.load(open(sys.argv[3]))}))' "$impl" "$version" "$WORK/results/$impl.json" >>"$IMPL_JSON"
done

CMDLINE="bench/cache-conformance.sh $1"
if [[ ${KEEP_OTHERS:-0} == 1 && -f $OUT_JSON ]]; then
  # The other implementations' results as the previous run recorded them,
  # in the default order with the new ones.
  python3 - "$OUT_JSON" "$IMPL_JSON" "$IMPLS_DEFAULT" <<'EOF'
import json, sys
previous_path, impls, order = sys.argv[1], sys.argv[2], sys.argv[3].split()
previous = json.load(open(previous_path))
fresh = [json.loads(line) for line in open(impls) if line.strip()]
names = {i["name"] for i in fresh}
kept = [dict(i, reused_from=previous.get("date", "?"))
        for i in previous["implementations"] if i["name"] not in names]
rank = lambda i: order.index(i["name"]) if i["name"] in order else len(order)
with open(impls, "w") as f:
    for i in sorted(fresh + kept, key=rank):
        f.write(json.dumps(i) + "\n")
EOF
  CMDLINE="KEEP_OTHERS=1 $CMDLINE"
fi
[[ $IMPLS != "$IMPLS_DEFAULT" ]] && CMDLINE="IMPLS=\"$IMPLS\" $CMDLINE"
[[ $CAPSTAN != "$ROOT/build/release/src/cmd/capstan" ]] && CMDLINE="CAPSTAN=$CAPSTAN $CMDLINE"
python3 - "$WORK/index.json" "$IMPL_JSON" "$OUT_JSON" "$CMDLINE" "$SUITE_REV" \
  "$(cd "$SUITE" && node -p 'require("./package.json").version')" "$(node --version)" <<'EOF'
import datetime, json, sys
index, impls, out, cmdline, rev, suite_version, node_version = sys.argv[1:8]
run = {
    "command": cmdline,
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "suite": {"repository": "https://github.com/http-tests/cache-tests", "revision": rev,
              "package_version": suite_version, "node": node_version},
    "index": json.load(open(index)),
    "implementations": [json.loads(line) for line in open(impls) if line.strip()],
}
with open(out, "w") as f:
    json.dump(run, f, indent=1, sort_keys=False)
    f.write("\n")
EOF
# The suite's own classification of every result (test-engine/lib/results.mjs),
# which the reporter's must equal: a new result type or rule in the suite
# stops the report instead of miscounting.
(cd "$SUITE" && node --input-type=module -e "
import fs from 'fs'
import tests from './tests/index.mjs'
import { determineTestResult, resultTypes } from './test-engine/lib/results.mjs'
const byLabel = Object.fromEntries(Object.entries(resultTypes).map(([k, v]) => [v[2], k]))
const out = {}
for (const line of fs.readFileSync(process.argv[1], 'utf8').split('\\n')) {
  if (!line.trim()) continue
  const impl = JSON.parse(line)
  if (impl.status !== 'ok') continue
  out[impl.name] = {}
  for (const suite of tests) {
    for (const t of suite.tests) {
      out[impl.name][t.id] = byLabel[determineTestResult(tests, t.id, impl.results, true)[2]]
    }
  }
}
console.log(JSON.stringify(out))
" "$IMPL_JSON") >"$WORK/suite-classification.json"
python3 "$ROOT/bench/cache_conformance_report.py" "$OUT_JSON" "$OUT_MD" "$WORK/suite-classification.json"
log "wrote $OUT_MD and $OUT_JSON"
