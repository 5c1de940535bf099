#!/usr/bin/env bash
# The README's "Walkthrough", step by step, as a test: capstan dev on picked
# ports (the README uses the defaults 8080/8090/2379), the curl forms of the
# steps (the console's are in tests/e2e/console/walkthrough_e2e.mjs), the
# same traffic.py and etcdctl commands, and a check after each step.
# Usage: walkthrough.sh CAPSTAN_BINARY SOURCE_DIR
set -euo pipefail
capstan=$1
src=$2
work=$(mktemp -d /tmp/capstan-walkthrough.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "walkthrough: FAIL: $*" >&2; echo "--- capstan dev log:" >&2; tail -50 "$work/dev.log" >&2; exit 1; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Polls a condition (a command) for up to $1 seconds.
until_ok() { local t=$1; shift; for _ in $(seq 1 $((t * 10))); do "$@" && return 0; sleep 0.1; done; return 1; }

store_port=$(free_port); gw_port=$(free_port)
"$capstan" dev --data-dir "$work/data" \
  --listen-client-urls "http://127.0.0.1:$store_port" \
  --listen-metrics-urls "http://127.0.0.1:$(free_port)" \
  --initial-advertise-peer-urls "http://127.0.0.1:$(free_port)" \
  --gateway-listen "127.0.0.1:$gw_port" --experiments-listen 127.0.0.1:0 >"$work/dev.log" 2>&1 &
pid=$!
until_ok 30 grep -qs "capstan dev is up" "$work/dev.log" || fail "capstan dev did not start"
# Step 0: the URLs it prints.
grep -q "gateway           http://127.0.0.1:$gw_port/" "$work/dev.log" || fail "no gateway URL printed"
grep -q "console           http://127.0.0.1:[0-9]*/console/" "$work/dev.log" || fail "no console URL printed"
grep -q "gateway status    http://127.0.0.1:[0-9]*/status" "$work/dev.log" || fail "no gateway status URL printed"
api=$(sed -n 's|.*experiments API   \(http://127.0.0.1:[0-9]*\)/v1/.*|\1|p' "$work/dev.log")
[ -n "$api" ] || fail "no experiments API URL printed"
gw=http://127.0.0.1:$gw_port
export ETCDCTL_API=3
store=127.0.0.1:$store_port

# Before any experiment, everyone gets v1.
until_ok 10 sh -c "curl -sf -H 'X-User-Id: alice' $gw/ | grep -q 'service v1'" || fail "before step 1: v1 not served"

# Step 1: the experiment (README: in the console, or these three curl PUTs).
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[ "$(code -X PUT "$api/v1/domains/main" -d '{}')" = 201 ] || fail "step 1: domain"
[ "$(code -X PUT "$api/v1/layers/web" -d '{"domain": "main"}')" = 201 ] || fail "step 1: layer"
[ "$(code -X PUT "$api/v1/experiments/hello-v2" -d '{"layer": "web", "state": "running",
  "variants": [{"id": "v1"}, {"id": "v2"}]}')" = 201 ] || fail "step 1: experiment"
# Step 2: the gateway splits.
until_ok 10 sh -c "curl -sf -H 'X-User-Id: alice' $gw/ | grep -q 'experiment hello-v2=v'" ||
  fail "step 2: the gateway did not pick up the experiment"

# Step 3: traffic.
out=$(/usr/bin/python3 "$src/examples/walkthrough/traffic.py" --gateway "$gw/" --experiments "$api" --users 400)
echo "traffic: $out"
echo "$out" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
v = r["users_per_version"]
assert r["users"] == 400, r
assert v.get("v1", 0) > 100 and v.get("v2", 0) > 100, v
assert r["events_accepted"] > 0, r
' || fail "step 3: traffic did not reach both versions"

# Step 4: the results: both variants with units, the purchase metric and the
# gateway's own latency metric.
check_results() {
  curl -sf "$api/v1/experiments/hello-v2/results" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
units = {v["variant"]: v["units"] for v in r["variants"]}
metrics = {m["metric"] for m in r["metrics"]}
sys.exit(0 if units.get("v1", 0) > 100 and units.get("v2", 0) > 100
         and {"purchase", "gateway_latency_ms"} <= metrics else 1)'
}
until_ok 30 check_results || fail "step 4: results incomplete: $(curl -s "$api/v1/experiments/hello-v2/results" | head -c 2000)"

# Step 5: the gateway as the console's Gateways page reads it (GET
# /v1/gateways: capstan dev's own gateway, both clusters with a healthy
# endpoint); then a route from the store, and the gateway follows.
curl -sf "$api/v1/gateways" | /usr/bin/python3 -c '
import json, sys
g = json.load(sys.stdin)["gateways"]
assert len(g) == 1 and g[0]["ok"], g
clusters = {c["cluster"]: c["endpoints"] for c in g[0]["status"]["clusters"]}
assert all(len(clusters[c]) == 1 and clusters[c][0]["healthy"] for c in ("hello", "hello-v2")), clusters
assert any(r["route"] == "dev/hello" and r["experiment"]["id"] == "hello-v2" for r in g[0]["status"]["routes"]), g
' || fail "step 5: GET /v1/gateways: $(curl -s "$api/v1/gateways" | head -c 2000)"
etcdctl --endpoints="$store" put /capstan/gateway/routes/dev '{"name": "dev", "domains": ["*"], "routes": [
  {"match": {"path": "/maintenance"}, "direct_response": {"status": 503, "body": "down for maintenance\n"}},
  {"experiment": {"id": "hello-v2", "unit_header": "x-user-id",
                  "variants": {"v1": "hello", "v2": "hello-v2"}, "default": "hello"}}]}' >/dev/null ||
  fail "step 5: etcdctl put"
until_ok 10 sh -c "curl -s $gw/maintenance | grep -q 'down for maintenance'" || fail "step 5: route not followed"
curl -sf -H 'X-User-Id: alice' "$gw/" | grep -q 'experiment hello-v2=v' || fail "step 5: the split route is gone"

echo "walkthrough: all steps passed"
