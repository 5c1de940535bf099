// The unmodified @growthbook/growthbook SDK against `capstan experiments
// serve` (tests/e2e/experiments_service_test.cc starts the service and writes
// the documents). For each user it evaluates every named feature three ways:
//   local:     apiHost + clientKey, init() fetches GET /api/features/{clientKey}
//   encrypted: the same from an encrypted SDK connection, with decryptionKey
//   remote:    remoteEval: true, init() posts to POST /api/eval/{clientKey}
// and records the experiments the SDK's trackingCallback reported. Prints one
// JSON document: {"users": [{"local": {...}, "encrypted": {...}, "remote": {...},
// "localTracked": [...], "remoteTracked": [...]}]}.
//
//   node service_sdk.cjs CONFIG_JSON
//   CONFIG_JSON: {"apiHost", "clientKey", "encryptedClientKey", "decryptionKey",
//                 "features": [...], "users": [{"attributes", "forcedVariations"?}]}
"use strict";
const { GrowthBook } = require("@growthbook/growthbook");

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
    });
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write(`service_sdk.cjs: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
