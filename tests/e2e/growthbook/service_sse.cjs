// GrowthBook streaming against `capstan experiments serve`, with the
// unmodified @growthbook/growthbook SDK (tests/e2e/experiments_streaming_test.cc
// starts the service and creates the documents). Two SDK instances — one on a
// plain SDK connection, one on an encrypted one — init with streaming: true;
// node has no EventSource, so the SDK gets the `eventsource` package's. Then,
// `rounds` times, this script changes the feature's default value through the
// service's API (PUT /v1/features/{key} with the revision) and waits, driven
// by the SDK's renderer callback (no polling), until both instances evaluate
// the new value. Counts the SDK's fetches: streaming must need none after init.
//
//   node service_sse.cjs CONFIG_JSON
//   CONFIG_JSON: {"apiHost", "clientKey", "encryptedClientKey", "decryptionKey",
//                 "feature", "rounds", "timeoutMs"}
// Prints {"rounds": N, "propagationMs": [...] (PUT sent -> both SDKs see it),
// "putMs": [...] (the PUT's own round trip), "sdkFetches": {url: count},
// "streamsOpened": N, "streamUrls": [...]}; exits 1 with a reason on failure.
"use strict";
const { GrowthBook, setPolyfills } = require("@growthbook/growthbook");
const { EventSource } = require("eventsource");

const sdkFetches = {};
const countingFetch = (url, options) => {
  sdkFetches[url] = (sdkFetches[url] || 0) + 1;
  return fetch(url, options);
};
const streamUrls = [];
let opened = 0;
const openWaiters = [];
class CountingEventSource extends EventSource {
  constructor(url, init) {
    super(url, init);
    streamUrls.push(String(url));
    this.addEventListener("open", () => {
      opened++;
      openWaiters.splice(0).forEach((w) => w());
    });
  }
}
setPolyfills({ fetch: countingFetch, EventSource: CountingEventSource });

// Resolves when `check()` holds, re-checked whenever an SDK re-renders
// (after each payload it applies); rejects after `ms`.
let renderWaiters = [];
function onRender() {
  renderWaiters = renderWaiters.filter((w) => !w());
}
function until(check, ms, what) {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    renderWaiters.push(() => {
      if (!check()) return false;
      clearTimeout(timer);
      resolve();
      return true;
    });
  });
}
function untilOpened(count, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${opened} of ${count} streams opened`)), ms);
    const check = () => {
      if (opened < count) return openWaiters.push(check);
      clearTimeout(timer);
      resolve();
    };
    check();
  });
}

async function api(config, method, path, body) {
  const res = await fetch(`${config.apiHost}${path}`, {
    method, headers: { "Content-Type": "application/json", "X-Capstan-User": "sse-test" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function main() {
  const config = JSON.parse(process.argv[2]);
  const timeout = config.timeoutMs || 10000;
  const instances = [
    new GrowthBook({ apiHost: config.apiHost, clientKey: config.clientKey,
      attributes: { id: "u1" } }),
    new GrowthBook({ apiHost: config.apiHost, clientKey: config.encryptedClientKey,
      decryptionKey: config.decryptionKey, attributes: { id: "u1" } }),
  ];
  for (const gb of instances) {
    gb.setRenderer(onRender);
    const loaded = await gb.init({ streaming: true, timeout });
    if (!loaded.success) throw new Error(`init failed: ${JSON.stringify(loaded)}`);
  }
  await untilOpened(instances.length, timeout);
  const fetchesAfterInit = Object.values(sdkFetches).reduce((a, b) => a + b, 0);

  const propagationMs = [], putMs = [];
  let revision = (await api(config, "GET", `/v1/features/${config.feature}`)).revision;
  for (let round = 1; round <= config.rounds; round++) {
    const value = `v${round}`;
    const start = performance.now();
    const written = await api(config, "PUT", `/v1/features/${config.feature}?revision=${revision}`,
      { defaultValue: value });
    putMs.push(performance.now() - start);
    revision = written.revision;
    await until(() => instances.every((gb) => gb.getFeatureValue(config.feature, null) === value),
      timeout, `round ${round}: both SDKs evaluate ${config.feature} = ${value}`);
    propagationMs.push(performance.now() - start);
  }
  const fetchesAtEnd = Object.values(sdkFetches).reduce((a, b) => a + b, 0);
  process.stdout.write(JSON.stringify({
    rounds: propagationMs.length, propagationMs, putMs, sdkFetches, fetchesAfterInit,
    fetchesAtEnd, streamsOpened: opened, streamUrls,
  }) + "\n");
  instances.forEach((gb) => gb.destroy());
  process.exit(0);  // the SDK keeps its streams open otherwise
}

main().catch((e) => {
  process.stderr.write(`service_sse.cjs: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
