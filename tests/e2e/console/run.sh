#!/usr/bin/env bash
# The web console's browser test (console_e2e.mjs) in Debian's headless
# Chromium. Skips (exit 77) only when node or chromium is absent
# (scripts/install-deps.sh installs both).
#
#   run.sh CAPSTAN_BINARY ARTIFACTS_DIR [SCRIPT.mjs [ARGS...]]
# SCRIPT defaults to console_e2e.mjs; walkthrough_e2e.mjs takes --source DIR.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CAPSTAN_BINARY ARTIFACTS_DIR" >&2
  exit 2
fi
here="$(cd "${0%/*}" && pwd)"
chromium="${CAPSTAN_CHROMIUM:-/usr/bin/chromium}"
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (scripts/install-deps.sh installs nodejs)" >&2
  exit 77
fi
if [ ! -x "$chromium" ]; then
  echo "SKIP: $chromium is not installed (scripts/install-deps.sh installs chromium)" >&2
  exit 77
fi
# puppeteer-core as package-lock.json pins it, installed once under a lock;
# it never downloads a browser.
exec 9>"$here/.npm-install.lock"
flock 9
wanted=$(cd "$here" && node -p 'require("./package-lock.json").packages["node_modules/puppeteer-core"].version')
installed=$(cd "$here" && node -p 'try { require("./node_modules/puppeteer-core/package.json").version } catch (e) { "" }')
if [ "$wanted" != "$installed" ]; then
  echo "installing puppeteer-core $wanted with npm ci" >&2
  (cd "$here" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
fi
flock -u 9
capstan=$1
artifacts=$2
script=${3:-console_e2e.mjs}
shift $(($# < 3 ? $# : 3))
exec node "$here/$script" --capstan "$capstan" --artifacts "$artifacts" --chromium "$chromium" "$@"
