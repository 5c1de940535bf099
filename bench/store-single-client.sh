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
[[ -x "$CAPSTAN" ]] || { echo "build first: cmake --build --preset release" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not found: run scripts/install-deps.sh" >&2; exit 2; }

WORK="$(mktemp -d /var/tmp/capstan-single.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for ((round = 1; round <= ROUNDS; round++)); do
  for system in capstan etcd; do
    cports=(); pports=(); members=()
    for i in 0 1 2; do cports+=("$(free_port)"); pports+=("$(free_port)"); done
    initial="m0=http://127.0.0.1:${pports[0]},m1=http://127.0.0.1:${pports[1]},m2=http://127.0.0.1:${pports[2]}"
    for i in 0 1 2; do
      args=(--name "m$i" --data-dir "$WORK/$system-$round-$i"
        --listen-client-urls "http://127.0.0.1:${cports[$i]}"
        --advertise-client-urls "http://127.0.0.1:${cports[$i]}"
        --listen-peer-urls "http://127.0.0.1:${pports[$i]}"
        --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}"
        --initial-cluster "$initial")
      if [[ $system == capstan ]]; then
        "$CAPSTAN" store "${args[@]}" --log-level warn >"$WORK/$system-$round-$i.log" 2>&1 &
      else
        etcd "${args[@]}" --log-level error --logger zap >"$WORK/$system-$round-$i.log" 2>&1 &
      fi
      PIDS+=($!)
      members+=($!)
    done
    all="127.0.0.1:${cports[0]},127.0.0.1:${cports[1]},127.0.0.1:${cports[2]}"
    for _ in $(seq 1 100); do
      ETCDCTL_API=3 etcdctl --endpoints="$all" --command-timeout=2s put ready 1 >/dev/null 2>&1 && break
      sleep 0.2
    done
    leader=""
    for i in 0 1 2; do
      if ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:${cports[$i]}" endpoint status -w json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(s["leader"] != s["header"]["member_id"])'; then
        leader=$i
      fi
    done
    [[ -n $leader ]] || { echo "$system: no leader found; logs in $WORK" >&2; trap - EXIT; exit 1; }
    follower=$(((leader + 1) % 3))
    pids=$(IFS=,; echo "${members[*]}")
    for role in leader follower; do
      target=${!role}
      json=$("$CAPSTAN" bench store --endpoints "127.0.0.1:${cports[$target]}" --pid "$pids" \
        --workload put --clients 1 --conns 1 --total "$TOTAL" --no-progress --json)
      echo "$system round $round at the $role: $json"
    done
    for p in "${members[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  done
done
