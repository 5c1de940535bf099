#!/usr/bin/env bash
# Runs `capstan store` and etcd (Debian's etcd-server) side by side on this
# machine, as 1 member and as 3 members on 127.0.0.1, with the same durability
# (fsync on, data directories on the same disk), loads each with
# `capstan bench store` in turn (interleaved, ROUNDS rounds, median reported),
# and writes docs/benchmarks/store.md plus a throughput plot.
#
#   bench/store-vs-etcd.sh              # full run (several minutes)
#   ROUNDS=1 TOTAL=5000 bench/store-vs-etcd.sh   # quick look
#   SMOKE=1 bench/store-vs-etcd.sh      # tiny sizes, proves the script works;
#                                       # the report goes to $WORK, not docs/
#   ROWSETS=clientv3 bench/store-vs-etcd.sh  # only the clientv3 rows; their
#                                       # section of docs/benchmarks/store.md is replaced
#
# ROWSETS (default "raw null fill watch clientv3") picks the row sets:
#   raw       capstan bench store over raw HTTP/2: put, range, txn
#   null      libgrpc++'s own cost per call (capstan bench null-server)
#   fill      one million keys, peak RSS
#   watch     watchers and lease expiry
#   clientv3  go.etcd.io/etcd/clientv3, the Go client Kubernetes uses
#             (bench/clientv3_load, built with Debian's golang-go and
#             golang-etcd-server-dev into build/clientv3_load)
# NOTE, if set, is printed with the clientv3 section (e.g. "machine shared
# with other builds").
#
# Needs a release build (cmake --build --preset release).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
SMOKE="${SMOKE:-}"
if [[ -n $SMOKE ]]; then
  ROUNDS="${ROUNDS:-1}"; TOTAL="${TOTAL:-400}"; WATCHERS="${WATCHERS:-200}"
  FILL_KEYS="${FILL_KEYS:-2000}"; LEASE_TOTAL="${LEASE_TOTAL:-20}"
fi
ROUNDS="${ROUNDS:-3}"
TOTAL="${TOTAL:-20000}"
FILL_KEYS="${FILL_KEYS:-1000000}"
LEASE_TOTAL="${LEASE_TOTAL:-1000}"
ROWSETS="${ROWSETS:-raw null fill watch clientv3}"
# clientv3 rows: member counts, and the client's shape (Kubernetes' API server
# holds one clientv3.Client per storage backend, each one gRPC connection).
CLIENTV3_SIZES="${CLIENTV3_SIZES:-1 3}"
CLIENTV3_TOTAL="${CLIENTV3_TOTAL:-$TOTAL}"
has_rowset() { [[ " $ROWSETS " == *" $1 "* ]]; }
OUT_MD_DEFAULT="$ROOT/docs/benchmarks/store.md"
OUT_MD="${OUT_MD:-$OUT_MD_DEFAULT}"
# Same disk for both: a directory under /var/tmp (not tmpfs).
WORK_PREFIX=/var/tmp/capstan-bench
# shellcheck source=bench/store-cluster.sh
source "$ROOT/bench/store-cluster.sh"
RESULTS="$WORK/results.jsonl"
# A smoke run's report stays in the work directory (kept), not in docs/.
[[ -n $SMOKE && $OUT_MD == "$OUT_MD_DEFAULT" ]] && { OUT_MD="$WORK/store.md"; KEEP_WORK=1; }

# The clientv3 generator, built once into build/ (rebuilt when its source is
# newer). Debian packages Go libraries for GOPATH mode, and nothing is fetched:
# GO111MODULE=off with GOPATH=/usr/share/gocode finds go.etcd.io/etcd/clientv3
# and its dependencies (gRPC, zap) where golang-etcd-server-dev put them.
CLIENTV3_LOAD="$ROOT/build/clientv3_load"
build_clientv3_load() {
  local src="$ROOT/bench/clientv3_load/main.go"
  [[ -x $CLIENTV3_LOAD && $CLIENTV3_LOAD -nt $src ]] && return 0
  command -v go >/dev/null || { echo "go not found: run scripts/install-deps.sh (golang-go)" >&2; exit 2; }
  [[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ]] ||
    { echo "clientv3 not found: run scripts/install-deps.sh (golang-etcd-server-dev)" >&2; exit 2; }
  mkdir -p "$ROOT/build"
  echo "building $CLIENTV3_LOAD" >&2
  (cd "$ROOT" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS='' GOCACHE="$ROOT/build/go-cache" \
    go build -o "$CLIENTV3_LOAD" ./bench/clientv3_load)
}
has_rowset clientv3 && build_clientv3_load

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
  [[ $workload == lease ]] && total=$LEASE_TOTAL
  # fill: one million 64 B keys with 256 B values, for the RSS they cost.
  [[ $workload == fill ]] && { workload=put; total=$FILL_KEYS; }
  local json
  if [[ $workload == clientv3-* ]]; then
    json=$("$CLIENTV3_LOAD" --endpoints "$ENDPOINTS" --pid "$SERVER_PIDS" --workload "${workload#clientv3-}" \
      --clients "$clients" --total "$CLIENTV3_TOTAL" --json "$@") || true
    record "$system" "$size" "$round" "$row" "$clients" "$json" "$@"
    return 0
  fi
  # A run with errors still prints its JSON (errors are counted in the report);
  # one that prints nothing is reported and skipped, not fatal to the whole run.
  json=$("$CAPSTAN" bench store --endpoints "$ENDPOINTS" --pid "$SERVER_PIDS" --workload "$workload" \
    --clients "$clients" --conns "$conns" --total "$total" --client "$BENCH_CLIENT" \
    --no-progress --json "$@") || true
  record "$system" "$size" "$round" "$row" "$clients" "$json" "$@"
}

# record SYSTEM SIZE ROUND ROW CLIENTS JSON [flags...]: one line of RESULTS.
record() {
  local system=$1 size=$2 round=$3 row=$4 clients=$5 json=$6
  shift 6
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
  echo "  $system x$size $row c=$clients $extra: $json" >&2
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
  has_rowset raw || break
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
  has_rowset null || break
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
  has_rowset fill || break
  for system in capstan etcd; do
    start_cluster "$system" 1
    run "$system" 1 "$round" fill 256 --key-size 64 --val-size 256 --key-space "$FILL_KEYS" --sequential-keys
    stop_cluster
  done
done

# Watchers: one member, WATCHERS watchers on a prefix (1000 per stream), a
# slow trickle of puts; put-to-event latency at every watcher and server RSS
# growth per watcher.
WATCHERS="${WATCHERS:-100000}"
for ((round = 1; round <= ROUNDS; round++)); do
  has_rowset watch || break
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

# Kubernetes' client: go.etcd.io/etcd/clientv3 (bench/clientv3_load), 10
# connections, 100 goroutines (and one per connection), 256 B values on 1,000
# keys: put, serializable get, and Kubernetes' create (a txn on create_revision).
CLIENTV3_ROWS=(
  "clientv3-put 100 --conns 10 --val-size 256 --keys 1000"
  "clientv3-get 100 --conns 10 --val-size 256 --keys 1000"
  "clientv3-txn-create 100 --conns 10 --val-size 256 --keys 1000"
  "clientv3-put 10 --conns 10 --val-size 256 --keys 1000"
)
for size in $CLIENTV3_SIZES; do
  has_rowset clientv3 || break
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "clientv3 round $round, $size member(s)" >&2
    for system in capstan etcd; do
      start_cluster "$system" "$size"
      for row in "${CLIENTV3_ROWS[@]}"; do
        # shellcheck disable=SC2086
        run "$system" "$size" "$round" $row
      done
      stop_cluster
    done
  done
done

SETTINGS="ROUNDS=$ROUNDS TOTAL=$TOTAL${SMOKE:+ SMOKE=1}"
has_rowset clientv3 && SETTINGS+=" CLIENTV3_TOTAL=$CLIENTV3_TOTAL CLIENTV3_SIZES='$CLIENTV3_SIZES'"
# The raw results stay beside the report, so it can be regenerated:
#   python3 bench/store_report.py docs/benchmarks/store-results.jsonl docs/benchmarks/store.md "..."
if [[ $ROWSETS == clientv3 ]]; then
  # Only the clientv3 rows ran: their section of the report is replaced, the
  # rest (from the last full run) is kept.
  cp "$RESULTS" "$(dirname "$OUT_MD")/store-clientv3-results.jsonl"
  python3 "$ROOT/bench/store_report.py" "$RESULTS" "$OUT_MD" "$SETTINGS" --only-clientv3 "${NOTE:-}"
else
  cp "$RESULTS" "$(dirname "$OUT_MD")/store-results.jsonl"
  python3 "$ROOT/bench/store_report.py" "$RESULTS" "$OUT_MD" "$SETTINGS" "" "${NOTE:-}"
fi
echo "wrote $OUT_MD" >&2
