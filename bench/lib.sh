# shellcheck shell=bash
# Shared helpers of the bench/ scripts: a temp work directory, processes
# stopped at exit, free ports, waiting for a port, CPU time from /proc.
# Source it (`source "$ROOT/bench/lib.sh"`) after `set -euo pipefail`, then
# call `bench_init NAME` once.
#
#   bench_init NAME        WORK=/tmp/capstan-NAME.XXXXXX; everything tracked
#                          is stopped and WORK removed at exit (KEEP_WORK=1
#                          keeps WORK)
#   bench_track PID        stop PID (and its descendants) at exit
#   bench_stop PID         SIGTERM, wait up to 5 s, then SIGKILL
#   bench_log MSG          timestamped line on stderr
#   free_port              a free TCP port on 127.0.0.1
#   wait_port PORT [S] [PID]  until something accepts on 127.0.0.1:PORT (S s,
#                          default 5; gives up as soon as PID, if given, has exited)
#   proc_tree PID...       the processes and all their descendants
#   cpu_ticks PID...       utime+stime (clock ticks) of the processes, their
#                          threads and descendants (nginx's workers, varnishd's child)
#   CLK_TCK                clock ticks per second
#   require_tools SCRIPT TOOL...  exit with a message naming the missing tool
#   capstan_describe BINARY  "capstan VERSION at COMMIT (BRANCH)" of the tree the
#                          binary was built in, "+ uncommitted changes" if any

BENCH_PIDS=()
CLK_TCK=$(getconf CLK_TCK)  # used by the scripts that source this file
export CLK_TCK

bench_log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

require_tools() {
  local script=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$script: needs $tool (scripts/install-deps.sh)" >&2; exit 1; }
  done
}

proc_tree() {
  local pid
  for pid in "$@"; do
    [[ -n $pid ]] || continue
    echo "$pid"
    # shellcheck disable=SC2046
    proc_tree $(pgrep -P "$pid" 2>/dev/null || true)
  done
}

cpu_ticks() {
  local total=0 pid t
  for pid in $(proc_tree "$@"); do
    # Fields after the command name (which may hold spaces): utime and stime
    # are the 12th and 13th. A process's own stat already sums its threads.
    t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

bench_stop() {  # PID: the process and its descendants, politely then not
  local pid=$1 procs p
  [[ -n $pid ]] || return 0
  procs=$(proc_tree "$pid")
  # shellcheck disable=SC2086
  kill $procs 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in $procs; do kill -9 "$p" 2>/dev/null || true; done
  wait "$pid" 2>/dev/null || true
  local kept=() p2
  for p2 in "${BENCH_PIDS[@]:-}"; do [[ $p2 == "$pid" ]] || kept+=("$p2"); done
  BENCH_PIDS=("${kept[@]:-}")
}

bench_track() { BENCH_PIDS+=("$1"); }

bench_cleanup() {
  local p
  for p in "${BENCH_PIDS[@]:-}"; do [[ -n $p ]] && bench_stop "$p"; done
  if [[ -n ${WORK:-} && -d $WORK ]]; then
    if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  fi
}

bench_init() {  # NAME
  WORK=$(mktemp -d "/tmp/capstan-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {  # PORT [SECONDS] [PID]: gives up early once PID has exited
  local deadline=$((SECONDS + ${2:-5}))
  while ((SECONDS <= deadline)); do
    if [[ -n ${3:-} ]] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

capstan_describe() {  # BINARY
  local dir rev branch dirty=""
  dir=$(dirname "$1")
  rev=$(git -C "$dir" rev-parse --short HEAD 2>/dev/null || echo unknown)
  branch=$(git -C "$dir" rev-parse --abbrev-ref HEAD 2>/dev/null || echo "?")
  [[ -n $(git -C "$dir" status --porcelain --untracked-files=no 2>/dev/null | head -1) ]] && dirty=" + uncommitted changes"
  echo "capstan $("$1" --version 2>/dev/null || echo '?') at $rev ($branch)$dirty"
}
