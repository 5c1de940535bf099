#!/usr/bin/env bash
# Installs the @growthbook/growthbook version package-lock.json pins into
# node_modules here (npm ci) when it is missing or another version. Tests
# that run the SDK call it first; it runs under a lock so tests started at
# once (ctest -j) install once. Exits 77 (skip) when node is absent.
set -euo pipefail
here="$(cd "${0%/*}" && pwd)"
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (scripts/install-deps.sh installs nodejs)" >&2
  exit 77
fi
exec 9>"$here/.npm-install.lock"
flock 9
wanted=$(cd "$here" && node -p \
  'require("./package-lock.json").packages["node_modules/@growthbook/growthbook"].version')
installed=$(cd "$here" && node -p \
  'try { require("./node_modules/@growthbook/growthbook/package.json").version } catch (e) { "" }')
if [ "$wanted" != "$installed" ]; then
  echo "installing @growthbook/growthbook $wanted with npm ci" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
