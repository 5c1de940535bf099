#!/usr/bin/env bash
# Runs the echo service in Capstan RPC and in gRPC C++ (Debian's libgrpc++,
# callback API) side by side: each server pinned to core 0, its own client
# library's load generator pinned to core 1, payloads 16 B / 1 KB / 16 KB,
# concurrency 1 / 100 / 1000, plus 64 KB messages on one connection.
# A third system, capstan-grpc, is the Capstan server spoken to in gRPC by
# the gRPC C++ generator (the one the grpc rows use): Capstan serving gRPC
# against gRPC C++ serving gRPC, same generator.
# Interleaved over ROUNDS rounds, medians reported. Syscalls are counted on
# the server with `perf stat -e raw_syscalls:sys_enter`. Writes
# docs/benchmarks/rpc.md.
#
#   bench/rpc-vs-grpc.sh                    # full run (about 10 minutes)
#   ROUNDS=1 DURATION=2 bench/rpc-vs-grpc.sh   # quick look
#   SYSTEMS="grpc capstan-grpc" ROWS_ONLY="1024 100 1" ...   # a subset
#     (systems: capstan, grpc, capstan-grpc; ROWS_ONLY: "payload conc conns",
#     several separated by commas)
#
# Needs a release build (cmake --build --preset release) and linux-perf.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
OUT_MD="${OUT_MD:-$ROOT/docs/benchmarks/rpc.md}"
SERVER_CORE=0
CLIENT_CORE=1

for tool in taskset perf python3; do
  command -v $tool >/dev/null || { echo "rpc-vs-grpc: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
done
[[ -x $CAPSTAN ]] || { echo "rpc-vs-grpc: build first: cmake --build --preset release" >&2; exit 1; }
if [[ $(nproc) -lt 2 ]]; then echo "rpc-vs-grpc: needs 2 cores (server and client apart)" >&2; exit 1; fi

WORK=$(mktemp -d /tmp/capstan-rpc-bench.XXXXXX)
SERVER_PID=""
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS="$WORK/results.jsonl"

SYSTEMS="${SYSTEMS:-capstan grpc capstan-grpc}"

server_of() { [[ $1 == capstan-grpc ]] && echo capstan || echo "$1"; }  # the server process
client_of() { [[ $1 == capstan-grpc ]] && echo grpc || echo "$1"; }     # the load generator

start_server() {  # SERVER SYSTEM
  rm -f "$WORK/port"
  taskset -c $SERVER_CORE "$CAPSTAN" bench rpc-server --system "$1" --listen 127.0.0.1:0 \
    --port-file "$WORK/port" >"$WORK/server-$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do [[ -s $WORK/port ]] && break; sleep 0.05; done
  [[ -s $WORK/port ]] || { echo "server $1 did not start:" >&2; cat "$WORK/server-$1.log" >&2; exit 1; }
  PORT=$(cat "$WORK/port")
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# run SYSTEM ROUND PAYLOAD CONCURRENCY CONNS
run() {
  local system=$1 round=$2 payload=$3 conc=$4 conns=$5
  start_server "$(server_of "$system")"
  # Syscalls over the measured window (after the warm-up).
  ( sleep "$WARMUP"; perf stat -x, -e raw_syscalls:sys_enter -p "$SERVER_PID" -- sleep "$DURATION" \
      2>"$WORK/perf.csv" >/dev/null ) &
  local perf_pid=$!
  local json
  json=$(taskset -c $CLIENT_CORE "$CAPSTAN" bench rpc --system "$(client_of "$system")" --target "127.0.0.1:$PORT" \
    --concurrency "$conc" --conns "$conns" --payload "$payload" --warmup "$WARMUP" \
    --duration "$DURATION" --pid "$SERVER_PID" --server-core $SERVER_CORE --json) || true
  wait "$perf_pid" || true
  stop_server
  local syscalls
  syscalls=$(grep raw_syscalls "$WORK/perf.csv" | cut -d, -f1 || echo 0)
  [[ -z $json ]] && { echo "  $system p=$payload c=$conc: no result" >&2; return 0; }
  echo "{\"system\":\"$system\",\"round\":$round,\"payload\":$payload,\"concurrency\":$conc,\"conns\":$conns,\"syscalls\":${syscalls:-0},\"result\":$json}" >>"$RESULTS"
  echo "  $system p=$payload c=$conc conns=$conns: $json syscalls=$syscalls" >&2
}

ROWS=(
  "16 1 1" "16 100 1" "16 1000 4"
  "1024 1 1" "1024 100 1" "1024 1000 4"
  "16384 1 1" "16384 100 1" "16384 1000 4"
  "65536 16 1"
)
if [[ -n ${ROWS_ONLY:-} ]]; then IFS=, read -r -a ROWS <<<"$ROWS_ONLY"; fi

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  for row in "${ROWS[@]}"; do
    read -r payload conc conns <<<"$row"
    for system in $SYSTEMS; do run "$system" "$round" "$payload" "$conc" "$conns"; done
  done
done

# The raw runs stay beside the report, so it can be regenerated or re-read.
cp "$RESULTS" "${OUT_MD%.md}.jsonl"
python3 "$ROOT/bench/rpc_report.py" "$RESULTS" "$OUT_MD" \
  "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)" \
  "ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP bench/rpc-vs-grpc.sh"
echo "wrote $OUT_MD" >&2
