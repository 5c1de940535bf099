#!/usr/bin/env bash
# The experiments benchmark of issue 17, all rows in one run:
#  1. in-process evaluations/s per core: the layered model for 1, 10 and 100
#     running experiments (experiments_bench BM_LayeredEvaluate/N), and the
#     GrowthBook payload path (BM_IsOn/N, BM_EvalFeature/N: N features with an
#     experiment rule each, the last evaluated) against the @growthbook/growthbook
#     npm SDK (node, bench/growthbook_js_bench.cjs) on the same payload and
#     user; both pinned to core 1, interleaved rounds;
#  2. remote evaluation with wrk: POST /v1/evaluate (a domain, a layer, one
#     running experiment) and POST /api/eval/{clientKey} (a feature with an
#     experiment rule, an SDK connection), distinct units per request;
#  3. event ingestion with wrk: POST /v1/events, BATCH events per request
#     (half exposures, half value events), unique idempotency keys;
#  4. event-to-result latency: a batch with a new metric, then
#     GET /v1/experiments/{id}/results until it shows (bench/experiments_probe.py),
#     with the service otherwise idle and again under row 3's ingestion load;
#  5. config propagation: 10 `capstan experiments serve` on one store, an
#     experiment's coverage changed through one of them, timed until all 10
#     answer /v1/evaluate on the new generation;
#  6. the same service over Capstan RPC (--rpc-listen): Evaluate (one unit per
#     call) and IngestEvents (BATCH typed events per call), driven by
#     experiments_rpc_load (src/experiments_rpc/load_main.cc) on core 1.
# The service under load (rows 2-4) is ONE process pinned to core 0
# (`taskset -c 0`, --threads $SERVICE_THREADS, events in a RocksDB under the
# temp dir); wrk, the store and the probes are pinned to core 1. Service CPU
# per request / per event is utime+stime from /proc/PID/stat (all its threads,
# RocksDB's included) over the measured run. wrk rows are medians over ROUNDS
# rounds (DURATION seconds each after WARMUP seconds).
# The ingestion load (rows 3, 4 and 6) honours back-pressure as a client
# should: a batch refused with 429 / RESOURCE_EXHAUSTED pauses the sender for
# the advertised Retry-After, so the rates are accepted events per CPU-second
# (the refused batches are counted in the tables); IGNORE_RETRY_AFTER=1
# resends at once instead (the cost of refusing at saturation).
# Writes docs/benchmarks/experiments.md and experiments.jsonl (the raw lines).
#
#   bench/experiments.sh            # full run (about 3 minutes)
#   QUICK=1 bench/experiments.sh    # quick look (about 60 s)
#   UNITS=30000000 ROWS=3 DURATION=60 bench/experiments.sh
#                                   # row 3 over a space of 30M units (see
#                                   # experiments_wrk.lua); EVENTS_CACHE= sets the
#                                   # service's --events-max-cached-units
#
# Regenerate the report from the raw lines:
#   python3 bench/experiments_report.py docs/benchmarks/experiments.jsonl docs/benchmarks/experiments.md
#
# Everything listens on 127.0.0.1 ports picked here, data lives in a temp
# directory, every process started here is stopped at exit. Needs a release
# build (cmake --build --preset release --target capstan experiments_bench
# experiments_rpc_load),
# wrk, node and the npm SDK (tests/e2e/growthbook/run.sh installs it).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
BENCH="${BENCH:-$ROOT/build/release/src/experiments/experiments_bench}"
RPC_LOAD="${RPC_LOAD:-$ROOT/build/release/src/experiments_rpc/experiments_rpc_load}"
if [[ -n ${QUICK:-} ]]; then
  ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-2}" WARMUP="${WARMUP:-1}"
  JS_EVALS="${JS_EVALS:-300000}" MIN_TIME="${MIN_TIME:-0.1}" PROBES="${PROBES:-15}"
else
  ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-5}" WARMUP="${WARMUP:-1}"
  JS_EVALS="${JS_EVALS:-1000000}" MIN_TIME="${MIN_TIME:-0.5}" PROBES="${PROBES:-50}"
fi
BATCH="${BATCH:-1000}"                 # events per POST /v1/events
EVAL_CONNS="${EVAL_CONNS:-32}"         # wrk connections, evaluation rows
EVENT_CONNS="${EVENT_CONNS:-8}"        # wrk connections, ingestion row
SERVICE_THREADS="${SERVICE_THREADS:-4}"
WATCHERS="${WATCHERS:-10}"
RPC_CONNS="${RPC_CONNS:-2}"            # connections the RPC rows' calls share (multiplexed)
ROWS="${ROWS:-1 2 3 4 5 6}"            # which rows to run (debugging)
IGNORE_RETRY_AFTER="${IGNORE_RETRY_AFTER:-}"  # 1: ingestion load resends refused batches at once
UNITS="${UNITS:-}"                     # row 3: units drawn in turn from a space of this many (unset: every unit new)
EVENTS_CACHE="${EVENTS_CACHE:-}"       # the service's --events-max-cached-units (unset: its default)
PERF_DATA="${PERF_DATA:-}"             # set: `perf record -g` the service over each measured wrk/RPC run, to $PERF_DATA.<row><round>
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/experiments.md}"
OUT_JSONL="${OUT_JSONL:-${OUT_MD%.md}.jsonl}"
SERVICE_CORE=0
LOAD_CORE=1

for tool in taskset wrk curl node python3; do
  command -v $tool >/dev/null || { echo "experiments.sh: needs $tool" >&2; exit 1; }
done
[[ -x $CAPSTAN && -x $BENCH && -x $RPC_LOAD ]] || {
  echo "experiments.sh: build first: cmake --build --preset release --target capstan experiments_bench experiments_rpc_load" >&2; exit 1; }
[[ " $ROWS " != *" 1 "* || -d $ROOT/tests/e2e/growthbook/node_modules/@growthbook ]] ||
  (cd "$ROOT/tests/e2e/growthbook" && npm ci --no-audit --no-fund --loglevel=error)
if [[ $(nproc) -lt 2 ]]; then echo "experiments.sh: needs 2 cores (service and load apart)" >&2; exit 1; fi

WORK=$(mktemp -d /tmp/capstan-experiments-bench.XXXXXX)
PIDS=()  # every process started here, stopped at exit
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
START_S=$(date +%s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {  # PORT: until GET /health answers 200 (20 s)
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/health" && return 0
    sleep 0.1
  done
  return 1
}
ticks() {  # PID: utime+stime in clock ticks, all threads
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
api() {  # METHOD PORT PATH [BODY]: the body of a 2xx answer, or fail
  curl -sS -f -X "$1" "http://127.0.0.1:$2$3" -H 'Content-Type: application/json' \
    -H 'X-Capstan-User: bench' ${4:+-d "$4"}
}

# ---------------------------------------------------------------- row 1
has_row() { [[ " $ROWS " == *" $1 "* ]]; }
has_row 1 && log "row 1: in-process evaluation, $ROUNDS round(s)"
FILTER='^(BM_LayeredEvaluate/(1|10|100)|BM_IsOn/(1|10|100)|BM_EvalFeature/(1|10|100)|BM_EvalFeatureView/(1|10|100)|BM_ReferenceEvalFeature|BM_HashV2)$'
for round in $(has_row 1 && seq "$ROUNDS"); do
  capstan_json=$(taskset -c $LOAD_CORE "$BENCH" --benchmark_format=json --benchmark_filter="$FILTER" \
    --benchmark_min_time="$MIN_TIME" 2>/dev/null)
  js_json=$(for n in 1 10 100; do taskset -c $LOAD_CORE node "$ROOT/bench/growthbook_js_bench.cjs" "$JS_EVALS" $n; done)
  python3 - "$round" "$capstan_json" "$js_json" >>"$RESULTS" <<'PY'
import json, sys
c = json.loads(sys.argv[2])
print(json.dumps({"row": "inprocess", "round": int(sys.argv[1]),
  "capstan": [{k: b[k] for k in ("name", "real_time", "cpu_time", "iterations", "time_unit")}
              for b in c["benchmarks"]],
  "js": [json.loads(l) for l in sys.argv[3].splitlines() if l.strip()]}))
PY
done

# ---------------------------------------------------------------- the store and one service
STORE_PORT=$(free_port); STORE_PEER=$(free_port); STORE_METRICS=$(free_port)
taskset -c $LOAD_CORE "$CAPSTAN" store --name bench --data-dir "$WORK/store" \
  --listen-client-urls "http://127.0.0.1:$STORE_PORT" --listen-metrics-urls "http://127.0.0.1:$STORE_METRICS" \
  --initial-advertise-peer-urls "http://127.0.0.1:$STORE_PEER" >"$WORK/store.log" 2>&1 &
PIDS+=($!)
SVC_PORT=$(free_port); RPC_PORT=$(free_port)
start_service() {  # EVENTS_DIR: the service on SERVICE_CORE, events in a directory of its own
  taskset -c $SERVICE_CORE "$CAPSTAN" experiments serve --store "127.0.0.1:$STORE_PORT" \
    --listen "127.0.0.1:$SVC_PORT" --threads "$SERVICE_THREADS" --events-dir "$1" \
    --rpc-listen "127.0.0.1:$RPC_PORT" ${EVENTS_CACHE:+--events-max-cached-units "$EVENTS_CACHE"} \
    >>"$WORK/service.log" 2>&1 &
  SVC_PID=$!
  PIDS+=($SVC_PID)
  wait_health "$SVC_PORT" || { echo "experiments serve did not start:" >&2; tail -20 "$WORK"/{store,service}.log >&2; exit 1; }
}
start_service "$WORK/events"

# The layered model: one domain, one layer, one running experiment on all traffic.
api PUT $SVC_PORT /v1/domains/main '{}' >/dev/null
api PUT $SVC_PORT /v1/layers/bench-layer '{"domain": "main", "parameters": {"color": "blue"}}' >/dev/null
api PUT $SVC_PORT /v1/experiments/bench-exp '{"layer": "bench-layer", "state": "running", "coverage": 1,
  "variants": [{"id": "control"}, {"id": "treatment", "parameters": {"color": "green"}}]}' >/dev/null
# GrowthBook: an SDK connection and one feature with an experiment rule behind a condition.
api PUT $SVC_PORT /v1/sdk-connections/sdk-bench '{"environment": "production"}' >/dev/null
api PUT $SVC_PORT /v1/features/feature-0 '{"defaultValue": "control", "rules": [
  {"id": "r", "condition": {"country": {"$in": ["US", "CA"]}}, "key": "exp", "hashVersion": 2,
   "variations": ["control", "treatment"], "weights": [0.5, 0.5], "meta": [{"key": "0"}, {"key": "1"}]}]}' >/dev/null
sleep 0.5
check_eval=$(api POST $SVC_PORT /v1/evaluate '{"attributes": {"id": "u-1-1", "country": "US"}}')
check_gb=$(api POST $SVC_PORT /api/eval/sdk-bench '{"attributes": {"id": "u-1-1", "country": "US"}}')
[[ $check_eval == *bench-exp* && $check_gb == *feature-0* ]] || {
  echo "experiments.sh: unexpected answers: $check_eval / $check_gb" >&2; exit 1; }

# perf_start ROW ROUND / perf_stop: with PERF_DATA set, profile the service over the measured run
# (perf report -i $PERF_DATA.<row><round> --no-children shows what binds).
PERF_PID=
perf_start() {
  [[ -n $PERF_DATA ]] || return 0
  perf record -F 499 -g -p "$SVC_PID" -o "$PERF_DATA.$1$2" -- sleep "$DURATION" >/dev/null 2>&1 &
  PERF_PID=$!
}
perf_stop() { [[ -z $PERF_PID ]] || wait "$PERF_PID" || true; PERF_PID=; }
# wrk_row ROW MODE PATH CONNS EXTRA_JSON: WARMUP then DURATION seconds, service CPU over the latter.
wrk_row() {
  local row=$1 mode=$2 path=$3 conns=$4 extra=$5 round before after out
  for round in $(seq "$ROUNDS"); do
    XB_MODE=$mode XB_BATCH=$BATCH XB_RUN="w$row$round" XB_IGNORE_RETRY_AFTER=$IGNORE_RETRY_AFTER XB_UNITS=${UNITS:-0} taskset -c $LOAD_CORE \
      wrk -t 1 -c "$conns" -d "${WARMUP}s" -s "$ROOT/bench/experiments_wrk.lua" "http://127.0.0.1:$SVC_PORT$path" >/dev/null 2>&1 || true
    before=$(ticks $SVC_PID)
    perf_start "$row" "$round"
    out=$(XB_MODE=$mode XB_BATCH=$BATCH XB_RUN="m$row$round" XB_IGNORE_RETRY_AFTER=$IGNORE_RETRY_AFTER XB_UNITS=${UNITS:-0} taskset -c $LOAD_CORE \
      wrk -t 1 -c "$conns" -d "${DURATION}s" --latency -s "$ROOT/bench/experiments_wrk.lua" "http://127.0.0.1:$SVC_PORT$path" 2>&1)
    after=$(ticks $SVC_PID)
    perf_stop
    json=$(grep '^JSON ' <<<"$out" | sed 's/^JSON //') || { echo "wrk failed: $out" >&2; exit 1; }
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2])); print(json.dumps(d))' \
      "{\"row\":\"$row\",\"round\":$round,\"connections\":$conns,\"service_cpu_us\":$(((after - before) * TICK_US))}" \
      "${json%\}},${extra#\{}" >>"$RESULTS"
    log "  $row round $round: $(tail -1 "$RESULTS" | cut -c1-200)"
  done
}
# ---------------------------------------------------------------- row 2
if has_row 2; then
  log "row 2: remote evaluation"
  wrk_row evaluate evaluate /v1/evaluate "$EVAL_CONNS" '{"batch":1}'
  wrk_row gbeval gbeval /api/eval/sdk-bench "$EVAL_CONNS" '{"batch":1}'
fi
# ---------------------------------------------------------------- row 3
has_row 3 && log "row 3: event ingestion, $BATCH events per request" &&
  wrk_row events events /v1/events "$EVENT_CONNS" "{\"batch\":$BATCH}"
# ---------------------------------------------------------------- row 4
if has_row 4; then
  log "row 4: event-to-result latency, $PROBES probes, idle and under ingestion load"
  taskset -c $LOAD_CORE python3 "$ROOT/bench/experiments_probe.py" results "$SVC_PORT" probe-exp "$PROBES" \
    event_to_result >>"$RESULTS"
  log "  $(tail -1 "$RESULTS")"
  # Again while wrk keeps row 3's load on (stopped when the probes are done).
  XB_MODE=events XB_BATCH=$BATCH XB_RUN="load4" XB_IGNORE_RETRY_AFTER=$IGNORE_RETRY_AFTER taskset -c $LOAD_CORE \
    wrk -t 1 -c "$EVENT_CONNS" -d 120s -s "$ROOT/bench/experiments_wrk.lua" "http://127.0.0.1:$SVC_PORT/v1/events" \
    >/dev/null 2>&1 &
  LOAD_PID=$!
  PIDS+=($LOAD_PID)
  sleep 1
  taskset -c $LOAD_CORE python3 "$ROOT/bench/experiments_probe.py" results "$SVC_PORT" probe-exp-load "$PROBES" \
    event_to_result_loaded >>"$RESULTS"
  kill $LOAD_PID 2>/dev/null || true; wait $LOAD_PID 2>/dev/null || true
  log "  $(tail -1 "$RESULTS")"
fi
# ---------------------------------------------------------------- row 6
# rpc_row ROW MODE WORKERS EXTRA_JSON: the load tool measures DURATION seconds
# after WARMUP, and the service's CPU over them itself.
rpc_row() {
  local row=$1 mode=$2 workers=$3 extra=$4 round out json
  for round in $(seq "$ROUNDS"); do
    # The profile starts with the load tool's warm-up, so it covers some of it.
    perf_start "$row" "$round"
    out=$(taskset -c $LOAD_CORE "$RPC_LOAD" --port "$RPC_PORT" --mode "$mode" --workers "$workers" \
      --connections "$RPC_CONNS" --warmup "$WARMUP" --duration "$DURATION" --batch "$BATCH" \
      --run "$row$round" --service-pid "$SVC_PID" ${IGNORE_RETRY_AFTER:+--ignore-retry-after} 2>&1) || { echo "experiments_rpc_load failed: $out" >&2; exit 1; }
    perf_stop
    json=$(grep '^JSON ' <<<"$out" | sed 's/^JSON //')
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.argv[2])); print(json.dumps(d))' \
      "{\"row\":\"$row\",\"round\":$round,\"connections\":$workers,\"rpc_connections\":$RPC_CONNS}" \
      "${json%\}},${extra#\{}" >>"$RESULTS"
    log "  $row round $round: $(tail -1 "$RESULTS" | cut -c1-200)"
  done
}
if has_row 6; then
  log "row 6: over Capstan RPC: Evaluate, IngestEvents ($BATCH events per call)"
  # A fresh event store, as row 3 had: both ingestion rows start from the
  # same state (rows 3-4 left tens of millions of events and units behind).
  # The configuration is in the store, so the new process serves it as well.
  # Their files go first, and what of them is still in the page cache is
  # written out before the row starts: otherwise row 6 shares the disk and
  # the memory with row 3's writeback (GBs), which row 3 did not.
  kill $SVC_PID; wait $SVC_PID 2>/dev/null || true
  rm -rf "$WORK/events"
  sync
  start_service "$WORK/events-rpc"
  rpc_row rpc_evaluate evaluate "$EVAL_CONNS" '{"batch":1}'
  rpc_row rpc_events ingest "$EVENT_CONNS" "{\"batch\":$BATCH}"
fi
kill $SVC_PID; wait $SVC_PID 2>/dev/null || true

# ---------------------------------------------------------------- row 5
if has_row 5; then
  log "row 5: config propagation to $WATCHERS instances, $PROBES changes"
  PORTS=()
  for i in $(seq "$WATCHERS"); do
    port=$(free_port)
    taskset -c $SERVICE_CORE "$CAPSTAN" experiments serve --store "127.0.0.1:$STORE_PORT" \
      --listen "127.0.0.1:$port" --threads 1 >"$WORK/watcher-$i.log" 2>&1 &
    PIDS+=($!)
    PORTS+=("$port")
  done
  for port in "${PORTS[@]}"; do wait_health "$port" || { echo "a watcher did not start" >&2; exit 1; }; done
  # The experiment whose coverage grows: its own layer, 5% to start.
  api PUT "${PORTS[0]}" /v1/layers/prop-layer '{"domain": "main", "parameters": {"size": "m"}}' >/dev/null
  api PUT "${PORTS[0]}" /v1/experiments/prop-exp '{"layer": "prop-layer", "state": "running", "coverage": 0.05,
    "variants": [{"id": "control"}, {"id": "treatment", "parameters": {"size": "l"}}]}' >/dev/null
  sleep 0.5
  taskset -c $LOAD_CORE python3 "$ROOT/bench/experiments_probe.py" propagate "${PORTS[0]}" prop-exp prop-layer \
    "$PROBES" "${PORTS[@]}" >>"$RESULTS"
  log "  $(tail -1 "$RESULTS")"
fi

# ---------------------------------------------------------------- report
CMDLINE="bench/experiments.sh"
[[ -n ${QUICK:-} ]] && CMDLINE="QUICK=1 $CMDLINE"
[[ -n $IGNORE_RETRY_AFTER ]] && CMDLINE="IGNORE_RETRY_AFTER=1 $CMDLINE"
python3 - "$RESULTS" >>"$RESULTS.meta" <<PY
import json
print(json.dumps({"row": "meta",
  "command": "$CMDLINE  (${UNITS:+UNITS=$UNITS }${EVENTS_CACHE:+EVENTS_CACHE=$EVENTS_CACHE }ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s BATCH=$BATCH EVAL_CONNS=$EVAL_CONNS EVENT_CONNS=$EVENT_CONNS SERVICE_THREADS=$SERVICE_THREADS WATCHERS=$WATCHERS PROBES=$PROBES JS_EVALS=$JS_EVALS MIN_TIME=${MIN_TIME}s)",
  "machine": "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(free -g | awk '/Mem:/ {print $2}') GiB; load average $LOADAVG_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (the cores are shared)",
  "versions": "$(node --version) node, @growthbook/growthbook $(node -p "require('$ROOT/tests/e2e/growthbook/node_modules/@growthbook/growthbook/package.json').version"), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)",
  "commit": "$(git -C "$ROOT" rev-parse --short HEAD)",
  "date": "$(date -u +%Y-%m-%dT%H:%MZ)", "seconds": $(( $(date +%s) - START_S ))}))
PY
cat "$RESULTS.meta" "$RESULTS" >"$OUT_JSONL"
python3 "$ROOT/bench/experiments_report.py" "$OUT_JSONL" "$OUT_MD"
log "wrote $OUT_MD and $OUT_JSONL"
