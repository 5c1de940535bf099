// The unmodified @growthbook/growthbook SDK against `capstan experiments
// serve` (tests/e2e/experiments_service_test.cc starts the service and writes
// the documents). For each user it evaluates every named feature three ways:
//   local:     apiHost + clientKey, init() fetches GET /api/features/{clientKey}
//   encrypted: the same from an encrypted SDK connection, with decryptionKey
//   remote:    remoteEval: true, init() posts to POST /api/eval/{clientKey}
// and records the experiments the SDK's trackingCallback reported. Prints one
// JSON document: {"users": [{"local": {...}, "encrypted": {...}, "remote": {...},
// "localTracked": [...], "remoteTracked": [...], "remoteEvalDiff": null or
// {expected, answer}}]}, where remoteEvalDiff compares POST /api/eval's whole
// answer with what GrowthBook's back-end computes (expectedRemoteEval).
//
//   node service_sdk.cjs CONFIG_JSON
//   CONFIG_JSON: {"apiHost", "clientKey", "encryptedClientKey", "decryptionKey",
//                 "features": [...], "users": [{"attributes", "forcedVariations"?}]}
"use strict";
const util = require("node:util");
const { GrowthBook } = require("@growthbook/growthbook");

// What GrowthBook's back-end answers to remote evaluation, computed here with
// the SDK from the payload the service serves: each feature that is on or
// was decided by an experiment becomes {defaultValue}, an experiment's also a
// force rule whose "tracks" carry the experiment (other variations' values
// hidden, condition dropped) and the FeatureResult.
function expectedRemoteEval(payload, user) {
  const gb = new GrowthBook({
    attributes: user.attributes,
    forcedVariations: user.forcedVariations || {},
    features: payload.features,
    savedGroups: payload.savedGroups,
  });
  const features = {};
  for (const key of Object.keys(payload.features)) {
    const result = gb.evalFeature(key);
    if (!result.on && !result.experiment) continue;
    features[key] = { defaultValue: result.value };
    if (result.source !== "experiment") continue;
    let experiment = result.experiment;
    const chosen = result.experimentResult ? result.experimentResult.variationId : undefined;
    if (chosen !== undefined) {
      experiment = { ...experiment,
        variations: experiment.variations.map((v, i) => (i === chosen ? v : {})) };
      delete experiment.condition;
    }
    features[key].rules = [{ force: result.value, tracks: [{ experiment, result }] }];
  }
  gb.destroy();
  return JSON.parse(JSON.stringify({ ...payload, features, experiments: [] }));
}

async function remoteEvalDiff(config, user) {
  const payload = await (await fetch(`${config.apiHost}/api/features/${config.clientKey}`)).json();
  const answer = await (await fetch(`${config.apiHost}/api/eval/${config.clientKey}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ attributes: user.attributes,
      forcedVariations: user.forcedVariations || {}, forcedFeatures: [], url: "" }),
  })).json();
  const expected = expectedRemoteEval(payload, user);
  return util.isDeepStrictEqual(answer, expected) ? null : { expected, answer };
}

async function evaluate(options, features, user) {
  const tracked = [];
  const gb = new GrowthBook({
    ...options,
    attributes: user.attributes,
    forcedVariations: user.forcedVariations || {},
    // A remotely evaluated assignment arrives as a rule's "tracks", whose
    // result is the FeatureResult GrowthBook's evaluateFeatures puts there.
    trackingCallback: (experiment, result) => tracked.push([experiment.key,
      result.variationId !== undefined ? result.variationId
        : (result.experimentResult || {}).variationId]),
  });
  const loaded = await gb.init({ timeout: 10000 });
  if (!loaded.success) throw new Error(`init failed: ${JSON.stringify(loaded)}`);
  const values = {};
  for (const key of features) {
    const result = gb.evalFeature(key);
    values[key] = { value: result.value === undefined ? null : result.value, on: result.on };
  }
  gb.destroy();
  return { values, tracked };
}

async function main() {
  const config = JSON.parse(process.argv[2]);
  const out = { users: [] };
  for (const user of config.users) {
    const local = await evaluate(
      { apiHost: config.apiHost, clientKey: config.clientKey }, config.features, user);
    const encrypted = await evaluate(
      { apiHost: config.apiHost, clientKey: config.encryptedClientKey,
        decryptionKey: config.decryptionKey }, config.features, user);
    const remote = await evaluate(
      { apiHost: config.apiHost, clientKey: config.clientKey, remoteEval: true },
      config.features, user);
    out.users.push({
      local: local.values, encrypted: encrypted.values, remote: remote.values,
      localTracked: local.tracked, remoteTracked: remote.tracked,
      remoteEvalDiff: await remoteEvalDiff(config, user),
    });
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(`service_sdk.cjs: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
