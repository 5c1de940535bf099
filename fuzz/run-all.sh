#!/usr/bin/env bash
# Runs every libFuzzer target for N seconds, starting from the seed corpus.
# Usage: fuzz/run-all.sh BUILD_DIR SECONDS
set -euo pipefail
build=${1:-build/fuzz}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
for target in wal_record log_entry rpc_frame grpc_wire watch_scan http1_request http1_response \
    http1_chunked gateway_config route_match growthbook_eval experiment_model event_batch event_log \
    dns_message dns_zone; do
  work="$here/corpus-$target"  # grows; not committed
  mkdir -p "$work"
  echo "== $target for ${secs}s"
  "$build/fuzz/${target}_fuzz" -max_total_time="$secs" -max_len=65536 "$work" "$here/corpus/$target"
done
