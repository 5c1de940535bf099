# Shared by the store benchmarks: checks the tools, makes the work directory
# (on the disk under test, removed at exit unless KEEP_WORK is set), and
# starts and stops clusters of capstan or etcd members on 127.0.0.1 with the
# same flags for both. Source it after setting CAPSTAN (the binary) and
# WORK_PREFIX (e.g. /var/tmp/capstan-bench).

[[ -x "$CAPSTAN" ]] || { echo "build first: cmake --build --preset release" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd not found: run scripts/install-deps.sh" >&2; exit 2; }

WORK="$(mktemp -d "$WORK_PREFIX.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [[ -n "$p" ]] && kill -9 "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK for its logs" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_cluster SYSTEM SIZE: starts the members, sets ENDPOINTS and
# SERVER_PIDS (comma-separated) and CLIENT_PORTS (an array, by member).
start_cluster() {
  local system=$1 size=$2 i name initial="" cports=() pports=()
  for ((i = 0; i < size; i++)); do cports+=("$(free_port)"); pports+=("$(free_port)"); done
  for ((i = 0; i < size; i++)); do initial+="${initial:+,}m$i=http://127.0.0.1:${pports[$i]}"; done
  ENDPOINTS=""; SERVER_PIDS=""
  for ((i = 0; i < size; i++)); do
    name="m$i"
    local dir="$WORK/$system-$size-$i"
    rm -rf "$dir"
    local args=(--name "$name" --data-dir "$dir"
      --listen-client-urls "http://127.0.0.1:${cports[$i]}"
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}"
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}"
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}"
      --initial-cluster "$initial")
    if [[ $system == capstan ]]; then
      "$CAPSTAN" store "${args[@]}" --log-level warn >"$dir.log" 2>&1 &
    else
      etcd "${args[@]}" --log-level error --logger zap >"$dir.log" 2>&1 &
    fi
    PIDS+=($!)
    SERVER_PIDS+="${SERVER_PIDS:+,}$!"
    ENDPOINTS+="${ENDPOINTS:+,}127.0.0.1:${cports[$i]}"
  done
  CLIENT_PORTS=("${cports[@]}")
  # Ready when a write goes through.
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=2s put bench-ready 1 >/dev/null 2>&1; then
      ((size > 1)) && leader_first
      return 0
    fi
    sleep 0.2
  done
  echo "$system cluster of $size did not start; logs in $WORK" >&2
  KEEP_WORK=1
  exit 1
}

# Puts the leader's endpoint first in ENDPOINTS: a one-connection run then
# talks to the leader of either system (which member wins the election is
# chance), and a many-connection run spreads from it over all members.
leader_first() {
  local status leader
  status=$(ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=2s endpoint status -w json) || return 0
  leader=$(python3 -c '
import json, sys
for e in json.loads(sys.argv[1]):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"])' "$status")
  [[ -n $leader ]] || return 0
  local rest
  rest=$(tr , '\n' <<<"$ENDPOINTS" | grep -vx "$leader" | paste -sd,)
  ENDPOINTS="$leader,$rest"
}

stop_cluster() {
  for p in ${SERVER_PIDS//,/ }; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

