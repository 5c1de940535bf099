#!/usr/bin/env bash
# Runs every libFuzzer target for N seconds, starting from the seed corpus.
# Usage: fuzz/run-all.sh BUILD_DIR SECONDS
# The targets are the *_fuzz binaries the build made (fuzz/CMakeLists.txt's
# FUZZ_TARGETS), so a new target is run without being listed here too.
set -euo pipefail
build=${1:-build/fuzz}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
shopt -s nullglob
binaries=("$build"/fuzz/*_fuzz)
if [ ${#binaries[@]} -eq 0 ]; then
  echo "no fuzz targets under $build/fuzz (build them: make fuzz-build)" >&2
  exit 2
fi
for binary in "${binaries[@]}"; do
  target=$(basename "$binary" _fuzz)
  work="$here/corpus-$target"  # grows; not committed
  mkdir -p "$work"
  echo "== $target for ${secs}s"
  "$binary" -max_total_time="$secs" -max_len=65536 "$work" "$here/corpus/$target"
done
