#!/bin/bash
# One client writing to a 3-member cluster, at the leader and at a follower,
# for capstan and etcd in turn (ROUNDS rounds). A put at a follower is
# forwarded to the leader, so the two roles differ by two network hops; the
# main comparison (store-vs-etcd.sh) loads the first endpoint, whichever role
# it has, so this script measures each role separately.
#
#   bench/store-single-client.sh            # prints one line per system, role and round
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CAPSTAN="${CAPSTAN:-$ROOT/build/release/src/cmd/capstan}"
ROUNDS="${ROUNDS:-3}"
TOTAL="${TOTAL:-2000}"
WORK_PREFIX=/var/tmp/capstan-single
# shellcheck source=bench/store-cluster.sh
source "$ROOT/bench/store-cluster.sh"

for ((round = 1; round <= ROUNDS; round++)); do
  for system in capstan etcd; do
    start_cluster "$system" 3
    leader=""
    for i in 0 1 2; do
      if ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:${CLIENT_PORTS[$i]}" endpoint status -w json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(s["leader"] != s["header"]["member_id"])'; then
        leader=$i
      fi
    done
    [[ -n $leader ]] || { echo "$system: no leader found; logs in $WORK" >&2; KEEP_WORK=1; exit 1; }
    follower=$(((leader + 1) % 3))
    for role in leader follower; do
      target=${!role}
      json=$("$CAPSTAN" bench store --endpoints "127.0.0.1:${CLIENT_PORTS[$target]}" --pid "$SERVER_PIDS" \
        --workload put --clients 1 --conns 1 --total "$TOTAL" --no-progress --json)
      echo "$system round $round at the $role: $json"
    done
    stop_cluster
  done
done
