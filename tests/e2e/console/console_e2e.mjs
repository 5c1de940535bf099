// The web console end to end, in a real browser (Debian's headless
// Chromium, driven by puppeteer-core: no browser download):
//   capstan store + capstan experiments serve --events-dir
//   → /console is served with its content type, ETag and 304
//   → in the console: create an experiment (labelled controls), ramp it,
//     start it, see a 409 conflict shown and the page reloaded
//   → a script assigns 400 units (/v1/evaluate/batch) and posts their
//     exposure and conversion events (POST /v1/events), some purchases a day
//     before the exposure (the CUPED covariate)
//   → the results page shows every variant with the API's numbers, the
//     CUPED-adjusted lift and variance reduction, the lift
//     chart and the lift-over-time chart; the layers page; the system page
//     (the store's member as leader, its endpoint up); the gateways page with
//     a gateway that does not answer; a flag created with rules in the
//     form, a 409 on it shown; a layer created in a new domain, one edited
// Screenshots go to --artifacts DIR. Every wait has a deadline.
//
//   node console_e2e.mjs --capstan BIN --artifacts DIR [--chromium /usr/bin/chromium]
import { join } from 'node:path';
import { Harness, check, freePort, http as request, log, logOf, openPage, parseArgs, portAnswers, waitFor } from './lib.mjs';

const { capstan, artifacts, chromium, keep } = parseArgs('console_e2e.mjs --capstan BIN --artifacts DIR');
const harness = new Harness('console-e2e', artifacts);
const work = harness.work;
const start = (name, argv) => harness.start(name, argv);
let base = '';
const http = (method, path, body, headers) => request(base, method, path, body, headers);

async function main() {
  // The store (a one-member capstan store) and the experiments service.
  let store;
  let storePort;
  for (let attempt = 0; attempt < 3; attempt++) {
    storePort = await freePort();
    const peer = await freePort();
    const metrics = await freePort();
    store = start(`store-${attempt}`, [capstan, 'store', '--name', 'console-e2e', '--data-dir', join(work, `store-${attempt}`),
      '--listen-client-urls', `http://127.0.0.1:${storePort}`, '--listen-metrics-urls', `http://127.0.0.1:${metrics}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`]);
    await new Promise((r) => setTimeout(r, 0));
    const up = await waitFor('the store to listen or exit', async () => {
      if (store.exited) return 'exited';
      return (await portAnswers(storePort)) && 'up';
    }, 30000);
    if (up === 'up') break;
    if (!/address already in use|cannot listen/i.test(logOf(store))) throw new Error(`the store exited:\n${logOf(store)}`);
    log('store port race, retrying');
  }
  // A gateway admin address where nothing listens: the Gateways page shows
  // it unreachable (capstan dev's walkthrough test shows a live one).
  const deadGateway = `http://127.0.0.1:${await freePort()}`;
  const service = start('service', [capstan, 'experiments', 'serve', '--store', `127.0.0.1:${storePort}`,
    '--listen', '127.0.0.1:0', '--events-dir', join(work, 'events'), '--gateway-admin', deadGateway,
    '--gateway-timeout-ms', '500']);
  const port = await waitFor('the service to print its port', () => {
    if (service.exited) throw new Error(`the service exited:\n${logOf(service)}`);
    const m = logOf(service).match(/experiments listening on port (\d+)/);
    return m && Number(m[1]);
  }, 30000);
  base = `http://127.0.0.1:${port}`;
  await waitFor('/health 200', async () => (await http('GET', '/health')).status === 200, 30000, 200);
  log(`service at ${base}`);

  // The assets as HTTP serves them.
  const index = await http('GET', '/console/');
  check(index.status === 200, `/console/ status ${index.status}`);
  check(index.headers.get('content-type') === 'text/html; charset=utf-8', `index content type ${index.headers.get('content-type')}`);
  const etag = index.headers.get('etag');
  check(etag && etag.startsWith('"'), `index ETag ${etag}`);
  check((await http('GET', '/console/', undefined, { 'If-None-Match': etag })).status === 304, 'If-None-Match gives 304');
  const script = index.text.match(/src="\/console\/([^"]+\.js)"/)[1];
  const js = await http('GET', `/console/${script}`);
  check(js.status === 200 && js.headers.get('content-type').startsWith('text/javascript'), `bundle served as JS (${js.headers.get('content-type')})`);
  check(js.headers.get('cache-control').includes('immutable'), 'hashed bundle is immutable');

  // The model the experiment lives in, written by the API.
  check((await http('PUT', '/v1/domains/main', {})).status === 201, 'domain created');
  check((await http('PUT', '/v1/layers/checkout', { domain: 'main', parameters: { button_color: 'blue' } })).status === 201, 'layer created');

  const browser = await harness.launchBrowser(chromium);
  // The browser logs every non-2xx answer; the 409s of the conflicts and the
  // 400 of the refused domain below are expected.
  const { page, errors: pageErrors, shot, h1, bodyText, fillByLabel } = await openPage(browser, artifacts, /status of (409|400)/);

  await page.goto(`${base}/console/`, { waitUntil: 'networkidle0', timeout: 30000 });
  await waitFor('the experiments page', async () => (await h1()) === 'Experiments');
  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'first Tab focuses the skip link');
  await shot('01-experiments-empty');

  // Create an experiment through the form, finding controls by their labels.
  await page.locator('::-p-aria(New experiment)').click();
  await waitFor('the new experiment form', async () => (await h1()) === 'New experiment');
  await fillByLabel('Id', 'green-button');
  await fillByLabel('Description', 'Green checkout button');
  await waitFor('the layer list', () => page.$eval('#exp-layer', (e) => e.value === 'checkout'));
  await fillByLabel('Coverage (0–1)', '0.5');
  await page.locator('[aria-label="Variant 2 parameters"]').fill('{"button_color": "green"}');
  // Targeting, with the rows: every unit with an id (all the units below
  // have one). A row first says country is one of DE, FR (the JSON follows),
  // then is changed (keyboard: Add condition focuses the new row).
  await page.focus('#add-condition');
  await page.keyboard.press('Enter');
  await waitFor('focus on the new condition', () => page.evaluate(() => document.activeElement.id === 'cond-0-attribute'));
  await page.keyboard.type('country');
  await page.select('[aria-label="Condition 1 operator"]', '$in');
  await page.locator('[aria-label="Condition 1 value"]').fill('DE, FR');
  await waitFor('the JSON to follow the row', () => page.$eval('#exp-condition', (e) => {
    try { return JSON.stringify(JSON.parse(e.value)) === '{"country":{"$in":["DE","FR"]}}'; } catch { return false; }
  }));
  await page.locator('[aria-label="Condition 1 attribute"]').fill('id');
  await page.select('[aria-label="Condition 1 operator"]', '$exists');
  await waitFor('the JSON to follow the change', () => page.$eval('#exp-condition', (e) => {
    try { return JSON.stringify(JSON.parse(e.value)) === '{"id":{"$exists":true}}'; } catch { return false; }
  }));
  // An allow-list naming a variant the experiment does not have is refused in the page.
  await fillByLabel('Allow-list (one unit = variant per line)', 'qa-user = purple');
  await page.locator('::-p-aria(Create experiment)').click();
  await waitFor('the allow-list refused', async () => (await bodyText()).includes('Allow-list line 1: "purple" is not one of the variants (control, treatment)'));
  check(await page.$eval('#exp-allow', (e) => e.getAttribute('aria-invalid')) === 'true', 'the allow-list is marked invalid');
  await fillByLabel('Allow-list (one unit = variant per line)', 'qa-user = treatment');
  await shot('02-new-experiment');
  await page.locator('::-p-aria(Create experiment)').click();
  await waitFor('the experiment page', async () => (await h1()) === 'green-button');
  let doc = (await http('GET', '/v1/experiments/green-button')).json;
  check(doc.spec.layer === 'checkout' && doc.spec.coverage === 0.5, `created spec ${JSON.stringify(doc.spec)}`);
  check(doc.spec.variants[1].parameters.button_color === 'green', 'variant parameters saved');
  check(doc.spec.forced_variants['qa-user'] === 'treatment', 'allow-list saved');
  check(JSON.stringify(doc.spec.condition) === '{"id":{"$exists":true}}', `condition saved: ${JSON.stringify(doc.spec.condition)}`);
  check(doc.updatedBy === 'console', `written as the console user (${doc.updatedBy})`);

  // Start, then ramp to everyone.
  await page.locator('::-p-aria(Start)').click();
  await waitFor('the running state', async () => (await bodyText()).includes('Now running.'));
  await fillByLabel('Ramp coverage to (0–1)', '1');
  await page.locator('::-p-aria(Ramp)').click();
  await waitFor('the ramp', async () => (await bodyText()).includes('Coverage is now 100%'));
  doc = (await http('GET', '/v1/experiments/green-button')).json;
  check(doc.spec.state === 'running' && doc.spec.coverage === 1, `running at full coverage: ${JSON.stringify(doc.spec)}`);
  await shot('03-running');

  // A concurrent edit: the page's save is refused (409), shown, and the page reloads.
  const behind = await http('PUT', `/v1/experiments/green-button?revision=${doc.revision}`, { ...doc.spec, description: 'Changed elsewhere' });
  check(behind.status === 200, `edit behind the page's back: ${behind.status} ${behind.text}`);
  await fillByLabel('Description', 'My edit');
  await page.locator('::-p-aria(Save changes)').click();
  await waitFor('the conflict message', async () => (await bodyText()).includes('Someone else changed this experiment'));
  await waitFor('the reloaded description', () => page.$eval('#exp-description', (e) => e.value === 'Changed elsewhere'));
  await shot('04-conflict');

  // Traffic: assign 400 units, post their exposures and conversions
  // (treatment converts 30%, control 10%).
  const units = Array.from({ length: 400 }, (_, i) => `user-${i}`);
  const batch = await http('POST', '/v1/evaluate/batch', { units: units.map((id) => ({ attributes: { id } })), exposures: false });
  check(batch.status === 200, `evaluate batch ${batch.status} ${batch.text}`);
  const lines = [];
  const counts = {};
  const now = Date.now();
  batch.json.results.forEach((r, i) => {
    const a = r.assignments.find((x) => x.experiment === 'green-button');
    if (!a) return;
    counts[a.variant] = (counts[a.variant] || 0) + 1;
    lines.push(JSON.stringify({ type: 'exposure', key: `x-${i}`, experiment: 'green-button', unit: units[i], variant: a.variant, ts: now }));
    // A unit's propensity to buy: below 10 (control) or 30 (treatment) it
    // converts; below 20, in either variant, it also bought the day before
    // the exposure (the CUPED covariate, balanced across the variants).
    const propensity = (i * 7919) % 100;
    const rate = a.variant === 'treatment' ? 0.3 : 0.1;
    if (propensity < rate * 100) {
      lines.push(JSON.stringify({ type: 'conversion', key: `c-${i}`, experiment: 'green-button', unit: units[i], metric: 'purchase', ts: now + 1000 }));
    }
    if (propensity < 20) {
      lines.push(JSON.stringify({ type: 'conversion', key: `p-${i}`, experiment: 'green-button', unit: units[i], metric: 'purchase', ts: now - 86400000 }));
    }
  });
  check(counts.control > 50 && counts.treatment > 50, `both variants assigned: ${JSON.stringify(counts)}`);
  const posted = await http('POST', '/v1/events', lines.join('\n'));
  check(posted.status === 200 && posted.json.accepted === lines.length, `events accepted: ${posted.status} ${posted.text}`);
  log(`posted ${lines.length} events; units per variant ${JSON.stringify(counts)}`);

  // The results page shows every variant with the numbers the API has.
  await page.goto(`${base}/console/#/experiments/green-button/results`, { waitUntil: 'networkidle0', timeout: 30000 });
  await waitFor('the results page', async () => (await h1()) === 'Results: green-button');
  const unitsTable = async () => page.$$eval('section[aria-labelledby="units-title"] tbody tr',
    (rows) => rows.map((r) => [r.querySelector('th').textContent.trim(), r.querySelector('td').textContent.trim()]));
  await waitFor('units of both variants', async () => {
    const rows = Object.fromEntries(await unitsTable());
    return Number(rows.control) === counts.control && Number(rows.treatment) === counts.treatment;
  }, 30000, 250);
  const metricRows = await waitFor('the purchase metric table', () => page.$$eval('#metric-purchase ~ table tbody tr',
    (rows) => rows.length ? rows.map((r) => Array.from(r.children).map((c) => c.textContent.trim())) : null));
  const api = (await http('GET', '/v1/experiments/green-button/results')).json;
  const purchase = api.metrics.find((m) => m.metric === 'purchase');
  for (const v of purchase.variants) {
    const row = metricRows.find((r) => r[0].startsWith(v.variant));
    check(row, `a row for ${v.variant}`);
    check(Number(row[1]) === v.n, `${v.variant} n ${row[1]} = ${v.n}`);
  }
  const treatmentRow = metricRows.find((r) => r[0].startsWith('treatment'));
  const lift = purchase.variants.find((v) => v.variant === 'treatment').comparison.relative.lift;
  check(treatmentRow[3].startsWith(`${(lift * 100).toFixed(2)}%`), `treatment lift ${treatmentRow[3]} shows ${lift}`);
  // CUPED: the adjusted lift and the variance reduction the API computed.
  const cuped = purchase.variants.find((v) => v.variant === 'treatment').comparison.cuped;
  check(cuped && !cuped.error && cuped.varianceReduction.variant > 0, `the API has CUPED with a variance reduction: ${JSON.stringify(cuped)}`);
  const headers = await page.$$eval('#metric-purchase ~ table thead th', (ths) => ths.map((t) => t.textContent.trim()));
  const cupedColumn = headers.findIndex((h) => h.startsWith('CUPED lift ['));
  check(cupedColumn > 0 && headers.includes('Variance reduction'), `CUPED columns: ${JSON.stringify(headers)}`);
  const reductionCell = treatmentRow[headers.indexOf('Variance reduction')];
  check(reductionCell.startsWith(`${(cuped.varianceReduction.variant * 100).toFixed(1)}%`) &&
    reductionCell.includes(`control ${(cuped.varianceReduction.control * 100).toFixed(1)}%`),
    `treatment variance reduction ${reductionCell} shows ${JSON.stringify(cuped.varianceReduction)}`);
  const cupedCell = treatmentRow[cupedColumn];
  check(cupedCell.startsWith(`${(cuped.relative.lift * 100).toFixed(2)}%`), `treatment CUPED lift ${cupedCell} shows ${cuped.relative.lift}`);
  await waitFor('the lift chart', () => page.$('svg.lift-chart circle'));
  await waitFor('the lift-over-time chart', () => page.$('.uplot canvas'), 30000, 250);
  const srmShown = (await bodyText()).includes('Sample ratio mismatch');
  check(srmShown === (api.srm.status === 'mismatch'), `SRM banner shown exactly when the API says mismatch (${api.srm.status})`);
  await shot('05-results');

  // Layers: the layer with its experiment, reached through the navigation.
  await page.locator('::-p-aria(Layers)').click();
  await waitFor('the layers page', async () => (await h1()) === 'Layers');
  const layerRow = await waitFor('the checkout layer row', () => page.$$eval('tbody tr', (rows) => {
    const row = rows.find((r) => r.querySelector('th') && r.querySelector('th').textContent.trim() === 'checkout');
    return row ? row.textContent : null;
  }));
  check(layerRow.includes('green-button') && layerRow.includes('main'), `layer row: ${layerRow}`);
  check(await page.evaluate(() => document.activeElement.tagName) === 'H1', 'after navigation the page heading has focus');
  await shot('06-layers');

  // System: the store's one member, shown as the leader, and its endpoint up.
  await page.locator('::-p-aria(System)').click();
  await waitFor('the system page', async () => (await h1()) === 'System');
  const members = await waitFor('the store members', () => page.$$eval('section[aria-labelledby="members-title"] tbody tr',
    (rows) => (rows.length ? rows.map((r) => r.textContent) : null)));
  check(members.length === 1 && members[0].includes('console-e2e') && members[0].includes('leader'), `members: ${members}`);
  const endpointRow = await page.$eval('section[aria-labelledby="endpoints-title"] tbody tr', (r) => r.textContent);
  check(endpointRow.includes(`127.0.0.1:${storePort}`) && endpointRow.includes('up'), `endpoint row: ${endpointRow}`);
  await shot('07-system');

  // Gateways: the one configured does not answer; shown as such, not as an error page.
  await page.locator('::-p-aria(Gateways)').click();
  await waitFor('the gateways page', async () => (await h1()) === 'Gateways');
  const gatewayCard = await waitFor('the unreachable gateway', () => page.$$eval('section.card h2', (hs) => {
    const h = hs.find((x) => x.textContent.includes('unreachable'));
    return h ? h.textContent : null;
  }));
  check(gatewayCard.includes(deadGateway), `gateway card: ${gatewayCard}`);
  await shot('08-gateway-unreachable');

  // Flags: create one with a rollout rule and an experiment rule, all in the form.
  await page.locator('::-p-aria(Flags)').click();
  await waitFor('the flags page', async () => (await h1()) === 'Flags');
  await page.locator('::-p-aria(New flag)').click();
  await waitFor('the new flag form', async () => (await h1()) === 'New flag');
  await fillByLabel('Key', 'new-checkout');
  await fillByLabel('Default value (JSON)', 'false');
  // Keyboard: Add rule with Enter puts focus on the new rule's first control.
  await page.focus('#add-rule');
  await page.keyboard.press('Enter');
  await waitFor('focus on the new rule', () => page.evaluate(() => document.activeElement.id === 'rule-0-type'));
  await page.select('#rule-0-type', 'rollout');
  await fillByLabel('Rule 1 value (JSON)', 'true');
  await fillByLabel('Rule 1 coverage (0–1)', '0.25');
  await fillByLabel('Rule 1 condition (GrowthBook condition JSON; blank: every unit)', '{"country": "DE"}');
  await page.locator('::-p-aria(Add rule)').click();
  await page.select('#rule-1-type', 'experiment');
  await waitFor('the experiment list in rule 2', () => page.$$eval('#rule-1-experiment option', (os) => os.some((o) => o.value === 'green-button')));
  await page.select('#rule-1-experiment', 'green-button');
  await fillByLabel('Rule 2 value for control (JSON; blank: next rule)', 'false');
  await fillByLabel('Rule 2 value for treatment (JSON; blank: next rule)', 'true');
  // Moving a rule moves focus with it; moving it back restores the order.
  await page.focus('#rule-1-up');
  await page.keyboard.press('Enter');
  await waitFor('rule 2 moved up, focus with it', () => page.evaluate(() =>
    document.getElementById('rule-0-type').value === 'experiment' && document.activeElement.id === 'rule-0-type'));
  await page.focus('#rule-0-down');
  await page.keyboard.press('Enter');
  await waitFor('the order restored', () => page.evaluate(() =>
    document.getElementById('rule-0-type').value === 'rollout' && document.activeElement.id === 'rule-1-type'));
  // A value that is not JSON is refused in the page, naming the field.
  await fillByLabel('Default value (JSON)', 'nope');
  await page.locator('::-p-aria(Create flag)').click();
  await waitFor('the invalid default named', async () => (await bodyText()).includes('The default value is not valid JSON'));
  check(await page.$eval('#flag-default', (e) => e.getAttribute('aria-invalid')) === 'true', 'the default value is marked invalid');
  await fillByLabel('Default value (JSON)', 'false');
  await shot('09-new-flag');
  await page.locator('::-p-aria(Create flag)').click();
  await waitFor('the flag page', async () => (await h1()) === 'new-checkout');
  let flag = (await http('GET', '/v1/flags/new-checkout')).json;
  check(JSON.stringify(flag.spec.rules) === JSON.stringify([
    { type: 'rollout', condition: { country: 'DE' }, value: true, coverage: 0.25 },
    { type: 'experiment', experiment: 'green-button', values: { control: false, treatment: true } },
  ]) && flag.spec.default_value === false && flag.spec.enabled === true, `flag spec ${JSON.stringify(flag.spec)}`);
  // Edited behind the page's back, the page's save is a 409, shown.
  const flagBehind = await http('PUT', `/v1/flags/new-checkout?revision=${flag.revision}`, { ...flag.spec, default_value: 'elsewhere' });
  check(flagBehind.status === 200, `flag edit behind the page: ${flagBehind.status}`);
  await fillByLabel('Rule 1 coverage (0–1)', '0.5');
  await page.locator('::-p-aria(Save changes)').click();
  await waitFor('the flag conflict', async () => (await bodyText()).includes('Someone else changed this flag'));
  await waitFor('the reloaded default', () => page.$eval('#flag-default', (e) => e.value === '"elsewhere"'));
  await fillByLabel('Rule 1 coverage (0–1)', '0.5');
  await page.locator('::-p-aria(Save changes)').click();
  await waitFor('the save', async () => (await bodyText()).includes('Saved.'));
  flag = (await http('GET', '/v1/flags/new-checkout')).json;
  check(flag.spec.rules[0].coverage === 0.5 && flag.spec.default_value === 'elsewhere', `flag after save ${JSON.stringify(flag.spec)}`);
  await shot('10-flag-saved');

  // Layers: a new layer; a domain that does not exist yet would be created
  // with it, but a second domain covering every unit is refused (domains
  // of a unit type must not overlap), and the page says so; then an edit
  // of the existing layer.
  await page.locator('::-p-aria(Layers)').click();
  await waitFor('the layers page', async () => (await h1()) === 'Layers');
  await page.locator('::-p-aria(New layer)').click();
  await waitFor('the new layer form', async () => (await h1()) === 'New layer');
  await fillByLabel('Id', 'search');
  await fillByLabel('Domain', 'mobile');
  await waitFor('the new-domain note', async () => (await bodyText()).includes('Domain "mobile" does not exist yet'));
  await fillByLabel('Parameters and their defaults (JSON)', '{"ranker": "bm25"}');
  await page.locator('::-p-aria(Create layer)').click();
  await waitFor('the refused domain', async () => (await bodyText()).includes('Creating domain "mobile" for the layer: range: overlaps domain "main"'));
  check(await page.$eval('#layer-domain', (e) => e.getAttribute('aria-invalid')) === 'true', 'the domain is marked invalid');
  await fillByLabel('Domain', 'main');
  await page.locator('::-p-aria(Create layer)').click();
  await waitFor('the layer page', async () => (await h1()) === 'search');
  check((await http('GET', '/v1/domains/mobile')).status === 404, 'no domain was created');
  const search = (await http('GET', '/v1/layers/search')).json;
  check(search.spec.domain === 'main' && search.spec.parameters.ranker === 'bm25', `layer ${JSON.stringify(search.spec)}`);
  await page.goto(`${base}/console/#/layers/checkout`, { waitUntil: 'networkidle0', timeout: 30000 });
  await waitFor('the checkout layer page', async () => (await h1()) === 'checkout');
  await fillByLabel('Parameters and their defaults (JSON)', '{"button_color": "blue", "button_size": "m"}');
  await page.locator('::-p-aria(Save changes)').click();
  await waitFor('the layer save', async () => (await bodyText()).includes('Saved.'));
  const checkout = (await http('GET', '/v1/layers/checkout')).json;
  check(checkout.spec.parameters.button_size === 'm' && checkout.spec.domain === 'main', `layer edit ${JSON.stringify(checkout.spec)}`);
  await shot('11-layer-edited');
  check(pageErrors.length === 0, `no page errors: ${pageErrors.join(' | ')}`);
  log('PASS');
}

await harness.main(main, keep);
