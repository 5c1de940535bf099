// The README's walkthrough in a real browser (Debian's headless Chromium,
// driven by puppeteer-core), step by step as the README tells it:
//   capstan dev (store, gateway, experiments service + console, hello v1/v2)
//   on ports this test picks
//   0. the gateway serves the example; everyone gets v1
//   1. in the console: a layer `web` (its domain `main` created with it),
//      then experiment `hello-v2` with variants v1 and v2, started
//   2. the gateway follows: units are assigned and routed to v1 or v2
//   3. examples/walkthrough/traffic.py sends users through the gateway
//   4. the results page shows both variants with units and the purchase
//      metric (bounded wait: the page polls)
//   5. the Gateways page lists the route, the clusters hello and hello-v2
//      with healthy endpoints; a route changed in the store (etcdctl put,
//      as the README does) is followed by the gateway (fetch) and shown
// Screenshots go to --artifacts DIR. Every wait has a deadline.
//
//   node walkthrough_e2e.mjs --capstan BIN --source REPO --artifacts DIR [--chromium PATH]
import { join } from 'node:path';
import { Harness, check, freePort, http as request, log, logOf, openPage, parseArgs, waitFor } from './lib.mjs';

const { capstan, artifacts, chromium, source, keep } =
  parseArgs('walkthrough_e2e.mjs --capstan BIN --source REPO --artifacts DIR');
if (!source) { console.error('walkthrough_e2e.mjs: --source REPO (for examples/walkthrough/traffic.py) is required'); process.exit(2); }
const harness = new Harness('walkthrough-e2e', artifacts);

// What the README's route change writes (README.md, Walkthrough, step 5).
const MAINTENANCE_ROUTES = JSON.stringify({
  name: 'dev', domains: ['*'], routes: [
    { match: { path: '/maintenance' }, direct_response: { status: 503, body: 'down for maintenance\n' } },
    { experiment: { id: 'hello-v2', unit_header: 'x-user-id', variants: { v1: 'hello', v2: 'hello-v2' }, default: 'hello' } },
  ],
});

async function gatewayGet(url, user) {
  const r = await fetch(url, { headers: user ? { 'X-User-Id': user } : {} });
  return { status: r.status, text: await r.text() };
}

async function main() {
  // capstan dev on picked ports (the README uses 2379, 8080, 8090).
  let dev;
  let up;
  for (let attempt = 0; attempt < 3 && !up; attempt++) {
    const [store, metrics, peer, gatewayPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    dev = harness.start(`dev-${attempt}`, [capstan, 'dev', '--data-dir', join(harness.work, `data-${attempt}`),
      '--listen-client-urls', `http://127.0.0.1:${store}`, '--listen-metrics-urls', `http://127.0.0.1:${metrics}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`, '--gateway-listen', `127.0.0.1:${gatewayPort}`,
      '--gateway-admin-listen', '127.0.0.1:0', '--experiments-listen', '127.0.0.1:0']);
    const state = await waitFor('capstan dev to come up or exit', () => {
      if (/capstan dev is up/.test(logOf(dev))) return 'up';
      return dev.exited ? 'exited' : null;
    }, 60000, 200);
    if (state === 'up') { up = { store, gatewayPort }; break; }
    if (!/address already in use/i.test(logOf(dev))) throw new Error(`capstan dev exited:\n${logOf(dev)}`);
    log('port race, retrying');
  }
  check(up, 'capstan dev came up');
  const printed = logOf(dev);
  const consoleUrl = printed.match(/console +(http:\/\/127\.0\.0\.1:\d+\/console\/)/)?.[1];
  const api = printed.match(/experiments API +(http:\/\/127\.0\.0\.1:\d+)\/v1\//)?.[1];
  const statusUrl = printed.match(/gateway status +(http:\/\/127\.0\.0\.1:\d+)\/status/)?.[1];
  check(consoleUrl && api && statusUrl, `the URLs printed: console ${consoleUrl}, API ${api}, gateway status ${statusUrl}`);
  const gateway = `http://127.0.0.1:${up.gatewayPort}`;
  log(`console ${consoleUrl}, gateway ${gateway}, gateway admin ${statusUrl}`);

  // Step 0: everyone gets v1 before the experiment exists.
  await waitFor('v1 through the gateway', async () => (await gatewayGet(`${gateway}/`, 'alice')).text.includes('service v1'), 30000, 200);

  const browser = await harness.launchBrowser(chromium);
  const { page, errors, shot, h1, bodyText, fillByLabel } = await openPage(browser, artifacts);
  const go = async (hash, title) => {
    await page.goto(`${consoleUrl}#${hash}`, { waitUntil: 'networkidle0', timeout: 30000 });
    await waitFor(`the page "${title}"`, async () => (await h1()) === title);
  };

  // Step 1: open the console; a layer (its domain created with it), then the experiment.
  await go('/experiments', 'Experiments');
  await shot('walkthrough-01-console');
  await page.locator('::-p-aria(Layers)').click();
  await waitFor('the layers page', async () => (await h1()) === 'Layers');
  await page.locator('::-p-aria(New layer)').click();
  await waitFor('the new layer form', async () => (await h1()) === 'New layer');
  await fillByLabel('Id', 'web');
  await fillByLabel('Domain', 'main');
  await waitFor('the new-domain note', async () => (await bodyText()).includes('Domain "main" does not exist yet'));
  await shot('walkthrough-02-new-layer');
  await page.locator('::-p-aria(Create layer)').click();
  await waitFor('the layer page', async () => (await h1()) === 'web');
  const apiGet = (path) => request(api, 'GET', path);
  check((await apiGet('/v1/domains/main')).status === 200, 'domain main created with the layer');

  await page.locator('::-p-aria(Experiments)').click();
  await waitFor('the experiments page', async () => (await h1()) === 'Experiments');
  await page.locator('::-p-aria(New experiment)').click();
  await waitFor('the new experiment form', async () => (await h1()) === 'New experiment');
  await fillByLabel('Id', 'hello-v2');
  await waitFor('the layer list', () => page.$eval('#exp-layer', (e) => e.value === 'web'));
  await page.locator('[aria-label="Variant 1 id"]').fill('v1');
  await page.locator('[aria-label="Variant 2 id"]').fill('v2');
  await fillByLabel('Description', 'The example service v2 against v1');
  await shot('walkthrough-03-new-experiment');
  await page.locator('::-p-aria(Create experiment)').click();
  await waitFor('the experiment page', async () => (await h1()) === 'hello-v2');
  await page.locator('::-p-aria(Start)').click();
  await waitFor('the running state', async () => (await bodyText()).includes('Now running.'));
  const experiment = (await apiGet('/v1/experiments/hello-v2')).json;
  check(experiment.spec.state === 'running' && experiment.spec.layer === 'web' &&
        experiment.spec.variants.map((v) => v.id).join() === 'v1,v2', `the experiment: ${JSON.stringify(experiment.spec)}`);
  await shot('walkthrough-04-running');

  // Step 2: the gateway assigns and routes by the experiment.
  const seen = new Set();
  await waitFor('the gateway to route both variants', async () => {
    for (let i = 0; i < 20; i++) {
      const m = (await gatewayGet(`${gateway}/`, `user-${i}`)).text.match(/service (v\d).*experiment hello-v2=(v\d)/);
      if (m) { check(m[1] === m[2], `user-${i} assigned ${m[2]} but served by ${m[1]}`); seen.add(m[1]); }
    }
    return seen.has('v1') && seen.has('v2');
  }, 30000, 250);

  // Step 3: traffic through the gateway, purchases to the service.
  const traffic = await harness.run('traffic', ['/usr/bin/python3', join(source, 'examples/walkthrough/traffic.py'),
    '--gateway', `${gateway}/`, '--experiments', api, '--users', '400'], 120000);
  check(traffic.code === 0, `traffic.py exited ${traffic.code}: ${traffic.output}`);
  const summary = JSON.parse(traffic.output.trim().split('\n').pop());
  check(summary.users_per_version.v1 > 100 && summary.users_per_version.v2 > 100, `traffic: ${JSON.stringify(summary)}`);
  log(`traffic: ${JSON.stringify(summary.users_per_version)}`);

  // Step 4: the results page shows both variants with data (it polls every 5 s).
  await page.locator('::-p-aria(Results)').click();
  await waitFor('the results page', async () => (await h1()) === 'Results: hello-v2');
  const units = await waitFor('units of both variants on the results page', async () => {
    const rows = Object.fromEntries(await page.$$eval('section[aria-labelledby="units-title"] tbody tr',
      (trs) => trs.map((r) => [r.querySelector('th').textContent.trim(), Number(r.querySelector('td').textContent.trim())])));
    return rows.v1 > 100 && rows.v2 > 100 ? rows : null;
  }, 60000, 500);
  await waitFor('the purchase metric with both variants', () => page.$$eval('#metric-purchase ~ table tbody tr',
    (rows) => rows.length >= 2 && rows.some((r) => r.textContent.startsWith('v2'))), 60000, 500);
  check((await bodyText()).includes('gateway_latency_ms'), 'the gateway\'s own latency metric is shown');
  log(`results page: units ${JSON.stringify(units)}`);
  await shot('walkthrough-05-results');

  // Step 5: the Gateways page: the experiment route, both clusters with healthy endpoints.
  await page.locator('::-p-aria(Gateways)').click();
  await waitFor('the gateways page', async () => (await h1()) === 'Gateways');
  const gatewayCard = () => page.$$eval('section.card.gateway', (cards) => cards.map((c) => ({
    title: c.querySelector('h2').textContent,
    routes: Array.from(c.querySelectorAll('table')[0].querySelectorAll('tbody tr')).map((r) => r.textContent),
    endpoints: Array.from(c.querySelectorAll('tbody tr[data-cluster]')).map((r) => ({ cluster: r.dataset.cluster, text: r.textContent })),
  })));
  const card = await waitFor('the gateway with its routes and clusters', async () => {
    const cards = await gatewayCard();
    return cards.length === 1 && cards[0].routes.length > 0 ? cards[0] : null;
  });
  check(card.title.includes(statusUrl) && card.title.includes('up'), `gateway card title: ${card.title}`);
  check(card.routes.some((r) => r.includes('dev/hello') && r.includes('experiment hello-v2') && r.includes('v2 → hello-v2')), `routes: ${card.routes}`);
  for (const cluster of ['hello', 'hello-v2']) {
    const rows = card.endpoints.filter((e) => e.cluster === cluster);
    check(rows.length === 1 && rows[0].text.includes('healthy') && !rows[0].text.includes('unhealthy'), `cluster ${cluster}: ${JSON.stringify(rows)}`);
  }
  await shot('walkthrough-06-gateway');

  // The README's route change, in the store with etcdctl; the gateway follows.
  const put = await harness.run('etcdctl', ['etcdctl', `--endpoints=127.0.0.1:${up.store}`, 'put', '/capstan/gateway/routes/dev', MAINTENANCE_ROUTES], 30000);
  check(put.code === 0 && put.output.includes('OK'), `etcdctl put: ${put.output}`);
  await waitFor('the gateway to serve the maintenance route', async () => {
    const r = await gatewayGet(`${gateway}/maintenance`);
    return r.status === 503 && r.text === 'down for maintenance\n';
  }, 30000, 200);
  check((await gatewayGet(`${gateway}/`, 'alice')).text.includes('experiment hello-v2=v'), 'the split route is still there');
  await waitFor('the Gateways page to show the new routes', async () => {
    const cards = await gatewayCard();
    const routes = cards[0] ? cards[0].routes : [];
    return routes.some((r) => r.includes('dev/#0') && r.includes('direct response')) && routes.some((r) => r.includes('dev/#1') && r.includes('experiment hello-v2'));
  }, 30000, 500);
  await shot('walkthrough-07-route-changed');
  check(errors.length === 0, `no page errors: ${errors.join(' | ')}`);
  log('PASS');
}

await harness.main(main, keep);
