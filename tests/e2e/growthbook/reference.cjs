// The reference side of the GrowthBook differential test: answers requests of
// the `capstan experiments eval` line protocol with the real
// @growthbook/growthbook npm SDK, so both sides can be compared answer by
// answer. Run directly, it speaks the line protocol on stdin/stdout.
"use strict";

const path = require("path");
const readline = require("readline");

const sdkDir = path.join(__dirname, "node_modules", "@growthbook", "growthbook", "dist", "cjs");
const { GrowthBook, StickyBucketService, evalCondition } = require(path.join(sdkDir, "index.js"));
const util = require(path.join(sdkDir, "util.js"));

// A sticky-bucket store in memory, keyed as the SDK's services key documents.
class MemoryStickyBucketService extends StickyBucketService {
  constructor() {
    super();
    this.docs = new Map();
  }
  async getAssignments(attributeName, attributeValue) {
    return this.docs.get(`${attributeName}||${attributeValue}`) ?? null;
  }
  async saveAssignments(doc) {
    this.docs.set(`${doc.attributeName}||${doc.attributeValue}`, doc);
  }
}

function sdkOptions(context) {
  const c = context || {};
  const options = {};
  for (const k of [
    "attributes",
    "features",
    "savedGroups",
    "forcedVariations",
    "qaMode",
    "enabled",
    "url",
    "contextualBandits",
  ]) {
    if (k in c) options[k] = c[k];
  }
  return options;
}

async function answerRequest(req) {
  switch (req.op) {
    case "evalCondition":
      return { result: evalCondition(req.attributes, req.condition, req.savedGroups || {}) };
    case "hash":
      return { result: util.hash(req.seed, req.value, req.version) };
    case "getBucketRange":
      return {
        result: util.getBucketRanges(req.numVariations, req.coverage, req.weights ?? undefined),
      };
    case "chooseVariation":
      return { result: util.chooseVariation(req.n, req.ranges) };
    case "inNamespace":
      return { result: util.inNamespace(req.id, req.namespace) };
    case "getEqualWeights":
      return { result: util.getEqualWeights(req.numVariations) };
    case "versionCompare": {
      const cond = { v: { [req.operator]: req.v2 } };
      return { result: evalCondition({ v: req.v1 }, cond) };
    }
    case "getQueryStringOverride":
      return { result: util.getQueryStringOverride(req.id, req.url, req.numVariations) };
    case "decrypt":
      try {
        return { result: await util.decrypt(req.encryptedString, req.key) };
      } catch (e) {
        return { result: null };
      }
    case "feature": {
      const gb = new GrowthBook(sdkOptions(req.context));
      return gb.evalFeature(req.feature);
    }
    case "run": {
      const gb = new GrowthBook(sdkOptions(req.context));
      return gb.run(req.experiment);
    }
    case "stickyBucket": {
      const service = new MemoryStickyBucketService();
      for (const doc of req.stickyBucketStore || []) await service.saveAssignments(doc);
      const options = sdkOptions(req.context);
      options.stickyBucketService = service;
      if (req.context && req.context.stickyBucketAssignmentDocs) {
        options.stickyBucketAssignmentDocs = req.context.stickyBucketAssignmentDocs;
      }
      const gb = new GrowthBook(options);
      await gb.refreshStickyBuckets();
      const res = gb.evalFeature(req.feature);
      return {
        experimentResult: res.experimentResult ?? null,
        stickyBucketAssignmentDocs: gb.getStickyBucketAssignmentDocs(),
      };
    }
    case "urlRedirect": {
      // The SDK runs auto experiments in its constructor (no navigate
      // function in node: the redirect is only recorded); the answer is what
      // the SDK's own json.test.ts reads back from it.
      const options = sdkOptions(req.context);
      if (req.context && "experiments" in req.context) options.experiments = req.context.experiments;
      const gb = new GrowthBook(options);
      return {
        result: gb.getDeferredTrackingCalls().map((c) => ({
          inExperiment: c.result.inExperiment,
          urlRedirect: c.result.value.urlRedirect,
          urlWithParams: gb.getRedirectUrl(),
        })),
      };
    }
    default:
      return { error: "unknown op: " + req.op };
  }
}

// One request object in, one plain JSON-compatible answer out; SDK exceptions
// become {"error": ...} as the protocol asks.
async function answer(req) {
  let out;
  try {
    out = await answerRequest(req);
  } catch (e) {
    out = { error: String(e && e.message ? e.message : e) };
  }
  out = JSON.parse(JSON.stringify(out));
  if (req && "seq" in req) out.seq = req.seq;
  return out;
}

module.exports = { answer };

if (require.main === module) {
  // The SDK logs to the console; keep stdout for answers only.
  console.log = console.error;
  const rl = readline.createInterface({ input: process.stdin });
  // Answers are chained so they come out in request order.
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let req;
      try {
        req = JSON.parse(line);
      } catch (e) {
        process.stdout.write(JSON.stringify({ error: "malformed request" }) + "\n");
        return;
      }
      process.stdout.write(JSON.stringify(await answer(req)) + "\n");
    });
  });
}
