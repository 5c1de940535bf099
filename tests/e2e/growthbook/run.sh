#!/usr/bin/env bash
# The GrowthBook differential test: `capstan experiments eval` against the
# real @growthbook/growthbook npm SDK (see differential.cjs).
#
#   run.sh CAPSTAN_BINARY [--cases N] [--seed N] [--engine reference|compiled]
#
# Installs the SDK pinned by package-lock.json into node_modules here (npm ci)
# when it is missing or another version. Skips (exit 77) only when node itself
# is absent. GROWTHBOOK_DIFF_SEED picks another seed; the default is fixed so
# that a CI failure replays as is.
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

# Both differential tests (reference and compiled engines) may start at once
# under ctest -j: the install runs under a lock so only one npm ci touches
# node_modules, and the other then finds it in place.
install_if_needed() {
  local wanted installed
  wanted=$(cd "$here" && node -p \
    'require("./package-lock.json").packages["node_modules/@growthbook/growthbook"].version')
  installed=$(cd "$here" && node -p \
    'try { require("./node_modules/@growthbook/growthbook/package.json").version } catch (e) { "" }')
  if [ "$wanted" != "$installed" ]; then
    echo "installing @growthbook/growthbook $wanted with npm ci" >&2
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}
exec 9>"$here/.npm-install.lock"
flock 9
install_if_needed
flock -u 9

exec node "$here/differential.cjs" --capstan "$capstan" \
  --seed "${GROWTHBOOK_DIFF_SEED:-20261207}" "$@"
