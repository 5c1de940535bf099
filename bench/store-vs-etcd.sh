#!/usr/bin/env bash
# Runs `capstan store` and etcd (Debian's etcd-server) side by side on this
# machine, as 1 member and as 3 members on 127.0.0.1, with the same durability
# (fsync on, data directories on the same disk), loads each with
# `capstan bench store` in turn (interleaved, ROUNDS rounds, median reported),
# and writes docs/benchmarks/store.md plus a throughput plot.
#
#   bench/store-vs-etcd.sh              # full run (several minutes)
#   ROUNDS=1 TOTAL=5000 bench/store-vs-etcd.sh   # quick look
#
# Needs a release build (cmake --build --preset release).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
ROUNDS="${ROUNDS:-3}"
TOTAL="${TOTAL:-20000}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/store.md}"
# Same disk for both: a directory under /var/tmp (not tmpfs).
WORK_PREFIX=/var/tmp/capstan-bench
# shellcheck source=bench/store-cluster.sh
source "$ROOT/bench/store-cluster.sh"
RESULTS="$WORK/results.jsonl"

# Requests go over raw HTTP/2 (bench/raw_unary.h): the gRPC C++ client costs
# the shared cores ~30 us per call, as much as a capstan put, and capped the
# throughput rows. BENCH_CLIENT=grpc measures with the client library instead.
BENCH_CLIENT=${BENCH_CLIENT:-raw}

# run SYSTEM SIZE ROUND WORKLOAD CLIENTS [extra bench flags...]
run() {
  local system=$1 size=$2 round=$3 workload=$4 clients=$5 row=$4
  shift 5
  local total=$TOTAL
  local conns=$(( clients < 8 ? clients : 8 ))
  [[ $clients -eq 1 ]] && total=$((TOTAL / 10))
  [[ $workload == watch ]] && { total=20; conns=4; }
  [[ $workload == lease ]] && total=1000
  # fill: one million 64 B keys with 256 B values, for the RSS they cost.
  [[ $workload == fill ]] && { workload=put; total=1000000; }
  local json
  # A run with errors still prints its JSON (errors are counted in the report);
  # one that prints nothing is reported and skipped, not fatal to the whole run.
  json=$("$CAPSTAN" bench store --endpoints "$ENDPOINTS" --pid "$SERVER_PIDS" --workload "$workload" \
    --clients "$clients" --conns "$conns" --total "$total" --client "$BENCH_CLIENT" \
    --no-progress --json "$@") || true
  if [[ -z $json ]]; then
    echo "  $system x$size $row c=$clients $*: no result (server logs kept in $WORK/failed-*)" >&2
    for log in "$WORK/$system-$size"-*.log; do
      [[ -f $log ]] && cp "$log" "$WORK/failed-$round-$row-$clients-$(basename "$log")"
    done
    KEEP_WORK=1
    return 0
  fi
  local extra="$*"
  echo "{\"system\":\"$system\",\"size\":$size,\"round\":$round,\"workload\":\"$row\",\"clients\":$clients,\"flags\":\"$extra\",\"result\":$json}" >>"$RESULTS"
  echo "  $system x$size $workload c=$clients $extra: $json" >&2
}

ROWS=(
  "put 1 --key-size 8 --val-size 256 --key-space 100000"
  "put 16 --key-size 8 --val-size 256 --key-space 100000"
  "put 64 --key-size 8 --val-size 256 --key-space 100000"
  "put 256 --key-size 8 --val-size 256 --key-space 100000"
  "range 64 --key-size 8 --val-size 256 --key-space 10000 --consistency l"
  "range 64 --key-size 8 --val-size 256 --key-space 10000 --consistency s"
  "txn-create 64"
  "txn-update 64 --key-space 2000"
)

for size in 1 3; do
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round, $size member(s)" >&2
    for system in capstan etcd; do
      start_cluster "$system" "$size"
      for row in "${ROWS[@]}"; do
        # shellcheck disable=SC2086
        run "$system" "$size" "$round" $row
      done
      stop_cluster
    done
  done
done

# The floor under CPU per put: gRPC's own cost per unary call, measured on
# `capstan bench null-server` (the etcd KV API answering at once, no work).
for ((round = 1; round <= ROUNDS; round++)); do
  port=$(free_port)
  "$CAPSTAN" bench null-server --listen "127.0.0.1:$port" &
  null_pid=$!
  PIDS+=("$null_pid")
  ENDPOINTS="127.0.0.1:$port"; SERVER_PIDS="$null_pid"
  for _ in $(seq 1 50); do
    ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=1s put x 1 >/dev/null 2>&1 && break
    sleep 0.1
  done
  for clients in 1 16 64 256; do
    run grpc-null 1 "$round" put "$clients" --key-size 8 --val-size 256 --key-space 100000
  done
  kill "$null_pid"; wait "$null_pid" 2>/dev/null || true
done

# One million keys (64 B keys, 256 B values) on one member: peak RSS.
for ((round = 1; round <= ROUNDS; round++)); do
  for system in capstan etcd; do
    start_cluster "$system" 1
    run "$system" 1 "$round" fill 256 --key-size 64 --val-size 256 --key-space 1000000 --sequential-keys
    stop_cluster
  done
done

# Watchers: one member, WATCHERS watchers on a prefix (1000 per stream), a
# slow trickle of puts; put-to-event latency at every watcher and server RSS
# growth per watcher.
WATCHERS="${WATCHERS:-100000}"
for ((round = 1; round <= ROUNDS; round++)); do
  for system in capstan etcd; do
    start_cluster "$system" 1
    run "$system" 1 "$round" watch 1 --watchers "$WATCHERS" --watchers-per-stream 1000 --rate 10
    stop_cluster
    # Leases left to expire: lag from TTL to the DELETE a watcher sees.
    start_cluster "$system" 1
    run "$system" 1 "$round" lease 1 --lease-ttl 2
    stop_cluster
  done
done

# The raw results stay beside the report, so it can be regenerated:
#   python3 bench/store_report.py docs/benchmarks/store-results.jsonl docs/benchmarks/store.md "..."
cp "$RESULTS" "$(dirname "$OUT_MD")/store-results.jsonl"
python3 "$ROOT/bench/store_report.py" "$RESULTS" "$OUT_MD" "ROUNDS=$ROUNDS TOTAL=$TOTAL"
echo "wrote $OUT_MD" >&2
