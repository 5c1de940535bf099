#!/usr/bin/env bash
# Server CPU per put, by thread, for the 100k-watcher watch row: runs the
# watch workload with A puts and then with B puts against one member and
# prints each thread's CPU per extra put (creating the watchers cancels out).
#
#   bench/watch-thread-cpu.sh            # capstan, A=10 B=50, W=100000
#   bench/watch-thread-cpu.sh etcd
#
# Needs a release build (cmake --build --preset release).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
WORK_PREFIX=/var/tmp/capstan-bench
# shellcheck source=bench/store-cluster.sh
source "$ROOT/bench/store-cluster.sh"
A=${A:-10}
B=${B:-50}
W=${W:-100000}

# Per thread name: CPU ticks (utime + stime) summed over its threads.
snapshot() {
  for t in /proc/"$SERVER_PIDS"/task/*; do
    echo "$(tr ' ' _ <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
  done | awk '{ticks[$1] += $2} END {for (k in ticks) print k, ticks[k]}' | sort
}

run() {
  "$CAPSTAN" bench store --endpoints "$ENDPOINTS" --pid "$SERVER_PIDS" --workload watch \
    --clients 1 --conns 4 --total "$1" --watchers "$W" --watchers-per-stream 1000 --rate 10 \
    --no-progress --json |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%s puts: p50 %s ms, p99 %s ms, server %s us/event, generator %s us/event" % (
    sys.argv[1], d["p50_ms"], d["p99_ms"], d["server_cpu_us_per_op"], d["client_cpu_us_per_op"]))' "$1"
}

start_cluster "${1:-capstan}" 1
snapshot >"$WORK/t0"
run "$A"
snapshot >"$WORK/t1"
run "$B"
snapshot >"$WORK/t2"
stop_cluster
hz=$(getconf CLK_TCK)
join "$WORK/t0" "$WORK/t1" | join - "$WORK/t2" |
  awk -v a="$A" -v b="$B" -v hz="$hz" '{
    ms = (($4 - $3) - ($3 - $2)) * 1000 / hz / (b - a)
    if (ms > 0.05) printf "%-16s %.2f ms/put\n", $1, ms
  }'
