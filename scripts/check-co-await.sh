#!/usr/bin/env bash
# Fails when a co_await sits in an operand that may not be evaluated: the
# right side of && or ||, or a branch of ?:. GCC 12 miscompiles these (the
# coroutine can hang without running its body); await into a local first.
# Catches the one-line forms; src/net/README.md states the rule.
set -euo pipefail
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
pattern='(&&|\|\||\?|[[:space:]]:)[[:space:]]*[!(]*[[:space:]]*co_await'
if hits=$(grep -rnE "$pattern" "$root/src" "$root/tests" "$root/examples" \
    --include='*.cc' --include='*.h' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then
  echo "co_await in a conditionally evaluated operand (GCC 12 miscompiles it):" >&2
  echo "$hits" >&2
  echo "Await into a local variable first, then test it (see src/net/README.md)." >&2
  exit 1
fi
echo "no co_await in conditional operands"
