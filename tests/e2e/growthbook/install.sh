#!/usr/bin/env bash
# Installs what package-lock.json pins (@growthbook/growthbook, and the
# eventsource polyfill the streaming test gives the SDK: node has no
# EventSource) into node_modules here (npm ci) when either is missing or
# another version. Tests
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
versions='(p) => ["@growthbook/growthbook", "eventsource"].map((name) => {
  try { return p(name); } catch (e) { return ""; } }).join(" ")'
wanted=$(cd "$here" && node -p \
  "($versions)((n) => require('./package-lock.json').packages['node_modules/' + n].version)")
installed=$(cd "$here" && node -p \
  "($versions)((n) => require('./node_modules/' + n + '/package.json').version)")
if [ "$wanted" != "$installed" ]; then
  echo "installing $wanted (@growthbook/growthbook eventsource) with npm ci" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
