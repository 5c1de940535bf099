// The JavaScript side of bench/experiments-vs-js.sh: the @growthbook/growthbook
// npm SDK evaluating the payload experiments_bench evaluates (one feature, an
// experiment rule behind a $in condition), for the same user. Prints one JSON
// line: {"ns_per_eval": ..., "evals": ...}.
"use strict";
const path = require("path");
const sdk = path.join(__dirname, "..", "tests", "e2e", "growthbook", "node_modules",
  "@growthbook", "growthbook", "dist", "cjs", "index.js");
const { GrowthBook } = require(sdk);

// argv[3]: how many such features (default 1); the last is evaluated, as
// experiments_bench's BM_IsOn/N and BM_EvalFeature/N do.
const count = Number(process.argv[3] || 1);
const features = {};
for (let i = 0; i < count; i++) {
  features["feature-" + i] = {
    defaultValue: "control",
    rules: [{
      id: "r", condition: { country: { $in: ["US", "CA"] } }, key: "exp", hashVersion: 2,
      variations: ["control", "treatment"], weights: [0.5, 0.5], meta: [{ key: "0" }, { key: "1" }],
    }],
  };
}
const key = "feature-" + (count - 1);
const gb = new GrowthBook({ attributes: { id: "user-123456", country: "US" }, features });
const evals = Number(process.argv[2] || 2000000);
let on = 0;
for (let i = 0; i < evals / 10; i++) on += gb.evalFeature(key).on ? 1 : 0;  // warm up
const start = process.hrtime.bigint();
for (let i = 0; i < evals; i++) on += gb.evalFeature(key).on ? 1 : 0;
const ns = Number(process.hrtime.bigint() - start) / evals;
process.stdout.write(JSON.stringify({ ns_per_eval: ns, evals, features: count, on }) + "\n");
