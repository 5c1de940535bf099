#!/usr/bin/env bash
# In-process GrowthBook evaluation: Capstan's SDK (experiments_bench, Google
# Benchmark) against the @growthbook/growthbook npm SDK (node) on the same
# payload and user, each pinned to core 1, interleaved over ROUNDS rounds,
# medians reported. Prints its table (and writes it to OUT_MD, a temp file
# unless given): bench/experiments.sh, which runs all of issue 17's rows,
# owns docs/benchmarks/experiments.md and carries this comparison as a section.
#
#   bench/experiments-vs-js.sh            # about a minute
#   ROUNDS=1 bench/experiments-vs-js.sh   # quick look
#
# Needs a release build (cmake --build --preset release --target
# experiments_bench), node, and the SDK (tests/e2e/growthbook/run.sh installs it).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/build/release/src/experiments/experiments_bench}"
ROUNDS="${ROUNDS:-3}"
OUT_MD="${OUT_MD:-$(mktemp /tmp/experiments-vs-js.XXXXXX.md)}"
CORE=1

[[ -x $BENCH ]] || { echo "experiments-vs-js: build experiments_bench first" >&2; exit 1; }
command -v node >/dev/null || { echo "experiments-vs-js: needs node" >&2; exit 1; }
[[ -d $ROOT/tests/e2e/growthbook/node_modules/@growthbook ]] ||
  (cd "$ROOT/tests/e2e/growthbook" && npm ci --no-audit --no-fund --loglevel=error)

results_file=$(mktemp)
trap 'rm -f "$results_file"' EXIT
for round in $(seq "$ROUNDS"); do
  capstan_json=$(taskset -c $CORE "$BENCH" --benchmark_format=json \
    --benchmark_filter='^(BM_IsOn/1|BM_EvalFeature/1|BM_ReferenceEvalFeature|BM_HashV2)$' 2>/dev/null)
  js_json=$(taskset -c $CORE node "$ROOT/bench/growthbook_js_bench.cjs" 2000000)
  python3 -c 'import json,sys; print(json.dumps({"capstan": json.loads(sys.argv[1]), "js": json.loads(sys.argv[2])}))' \
    "$capstan_json" "$js_json" >> "$results_file"
  echo "experiments-vs-js: round $round of $ROUNDS done" >&2
done

python3 - "$OUT_MD" "$ROUNDS" "$results_file" <<'PY'
import json, statistics, sys, datetime
out, rounds = sys.argv[1], sys.argv[2]
runs = [json.loads(line) for line in open(sys.argv[3]) if line.strip()]
def median_cpu(name):
    return statistics.median(
        b["real_time"] for r in runs for b in r["capstan"]["benchmarks"] if b["name"] == name)
js = statistics.median(r["js"]["ns_per_eval"] for r in runs)
rows = [
    ("Capstan `GrowthBookClient::IsOn` (compiled payload)", median_cpu("BM_IsOn/1")),
    ("Capstan `GrowthBookClient::EvalFeature` (compiled, FeatureResult JSON)", median_cpu("BM_EvalFeature/1")),
    ("Capstan reference evaluator (`GrowthBookEvaluator::EvalFeature`)", median_cpu("BM_ReferenceEvalFeature")),
    ("@growthbook/growthbook `evalFeature` (node)", js),
]
with open(out, "w") as f:
    f.write("# Experiments: in-process evaluation against the GrowthBook JS SDK\n\n")
    f.write("One feature with one experiment rule behind a `$in` condition (hash v2, two\n"
            "weighted variations, meta), one user, evaluated in a loop on one pinned core.\n"
            "Both sides are wall time (Google Benchmark real time; node over 2M\n"
            f"evaluations after warm-up). Medians of {rounds} interleaved rounds.\n\n")
    f.write("| evaluator | ns per evaluation | evaluations/s | vs JS SDK |\n| --- | ---: | ---: | ---: |\n")
    for name, ns in rows:
        f.write(f"| {name} | {ns:.0f} | {1e9 / ns / 1e6:.2f} M | {js / ns:.1f}x |\n")
    f.write(f"\nv2 hash alone: {median_cpu('BM_HashV2'):.0f} ns.\n\n")
    f.write("Command: `bench/experiments-vs-js.sh` (ROUNDS=" + rounds + "), "
            + datetime.date.today().isoformat() + ", on the shared 2-core development\n"
            "machine (other builds running, so absolute numbers are noisy; the ratio is the point).\n")
print(open(out).read())
PY
