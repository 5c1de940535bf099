#!/usr/bin/env bash
# The GrowthBook differential test: `capstan experiments eval` against the
# real @growthbook/growthbook npm SDK (see differential.cjs).
#
#   run.sh CAPSTAN_BINARY [--cases N] [--seed N] [--engine reference|compiled]
#
# Installs the SDK pinned by package-lock.json into node_modules here (npm ci)
# when it is missing or another version. Skips (exit 77) only when node itself
# is absent. GROWTHBOOK_DIFF_SEED picks another seed; the default is fixed so
# that a CI failure replays as is. GROWTHBOOK_DIFF_CASES sets how many random
# cases (default 12,000; the sanitizer presets run fewer, their binaries
# being 10-50x slower).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 CAPSTAN_BINARY [--cases N] [--seed N]" >&2
  exit 2
fi
capstan="$1"
shift
here="$(cd "${0%/*}" && pwd)"

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (scripts/install-deps.sh installs nodejs);" \
    "the GrowthBook differential test needs it to run the npm SDK" >&2
  exit 77
fi

# The SDK pinned by package-lock.json, installed once under a lock (both
# differential tests may start at once under ctest -j).
bash "$here/install.sh"

exec node "$here/differential.cjs" --capstan "$capstan" \
  --seed "${GROWTHBOOK_DIFF_SEED:-20261207}" --cases "${GROWTHBOOK_DIFF_CASES:-12000}" "$@"
