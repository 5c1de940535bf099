#!/usr/bin/env bash
# Compares capstan binaries (before and after a change) with etcd in one run,
# through the clientv3 generator (bench/clientv3_load): per round, one member
# of each binary in turn and then etcd, the same row against each; prints the
# server CPU per op and its ratio to etcd's in the same round. On a shared
# machine only those same-round ratios hold.
#
#   bench/store-ab.sh before=/tmp/capstan-before after=build/release/src/cmd/capstan
#   ROUNDS=2 TOTAL=40000 CLIENTS=100 WORKLOAD=put bench/store-ab.sh ...
#
# WORKLOAD is put, get or txn-create; 10 connections, 256 B values on 1,000 keys.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-2}"
TOTAL="${TOTAL:-40000}"
CLIENTS="${CLIENTS:-100}"
WORKLOAD="${WORKLOAD:-put}"
(($# > 0)) || { echo "usage: $0 NAME=CAPSTAN_BINARY..." >&2; exit 2; }
for spec in "$@"; do
  [[ $spec == *=* && -x ${spec#*=} ]] || { echo "$0: $spec: want NAME=executable" >&2; exit 2; }
done
CAPSTAN="${1#*=}"
# shellcheck disable=SC2034  # read by store-cluster.sh
WORK_PREFIX=/var/tmp/capstan-ab
# shellcheck source=bench/store-cluster.sh
source "$ROOT/bench/store-cluster.sh"
CLIENTV3_LOAD="$ROOT/build/clientv3_load"
if [[ ! -x $CLIENTV3_LOAD || $ROOT/bench/clientv3_load/main.go -nt $CLIENTV3_LOAD ]]; then
  (cd "$ROOT" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS='' GOCACHE="$ROOT/build/go-cache" \
    go build -o "$CLIENTV3_LOAD" ./bench/clientv3_load)
fi

RESULTS="$WORK/ab.jsonl"
for ((round = 1; round <= ROUNDS; round++)); do
  for spec in "$@" etcd=etcd; do
    name=${spec%%=*}
    system=capstan
    [[ $name == etcd ]] && system=etcd
    # shellcheck disable=SC2034  # start_cluster (store-cluster.sh) runs $CAPSTAN
    [[ $system == capstan ]] && CAPSTAN="${spec#*=}"
    start_cluster "$system" 1
    json=$("$CLIENTV3_LOAD" --endpoints "$ENDPOINTS" --pid "$SERVER_PIDS" --workload "$WORKLOAD" \
      --clients "$CLIENTS" --total "$TOTAL" --json) || json=""
    stop_cluster
    [[ -n $json ]] && echo "{\"round\":$round,\"name\":\"$name\",\"result\":$json}" >>"$RESULTS"
    echo "round $round $name: ${json:-no result}" >&2
  done
done

/usr/bin/python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
etcd = {r["round"]: r["result"]["server_cpu_us_per_op"] for r in rows if r["name"] == "etcd"}
names = list(dict.fromkeys(r["name"] for r in rows))
print("| binary | CPU µs/op by round | ratio to etcd by round | median ratio | ops/s by round |")
print("| --- | --- | --- | --- | --- |")
for n in names:
    mine = [r for r in rows if r["name"] == n]
    cpu = [r["result"]["server_cpu_us_per_op"] for r in mine]
    ratios = [r["result"]["server_cpu_us_per_op"] / etcd[r["round"]] for r in mine if etcd.get(r["round"])]
    tput = [r["result"]["throughput"] for r in mine]
    print(f"| {n} | {', '.join(f'{c:.1f}' for c in cpu)} | {', '.join(f'{x:.3f}' for x in ratios)} | "
          f"{statistics.median(ratios) if ratios else 0:.3f} | {', '.join(f'{t:.0f}' for t in tput)} |")
EOF
