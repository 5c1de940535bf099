// The web console end to end, in a real browser (Debian's headless
// Chromium, driven by puppeteer-core: no browser download):
//   capstan store + capstan experiments serve --events-dir
//   → /console is served with its content type, ETag and 304
//   → in the console: create an experiment (labelled controls), ramp it,
//     start it, see a 409 conflict shown and the page reloaded
//   → a script assigns 400 units (/v1/evaluate/batch) and posts their
//     exposure and conversion events (POST /v1/events)
//   → the results page shows every variant with the API's numbers, the lift
//     chart and the lift-over-time chart; the layers page; the system page
//     (the store's member as leader, its endpoint up)
// Screenshots go to --artifacts DIR. Every wait has a deadline.
//
//   node console_e2e.mjs --capstan BIN --artifacts DIR [--chromium /usr/bin/chromium]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const capstan = opt('--capstan');
const artifacts = opt('--artifacts', join(process.cwd(), 'console-e2e-artifacts'));
const chromium = opt('--chromium', '/usr/bin/chromium');
const keep = args.includes('--keep');
if (!capstan) { console.error('usage: console_e2e.mjs --capstan BIN --artifacts DIR'); process.exit(2); }
mkdirSync(artifacts, { recursive: true });

const work = mkdtempSync(join(tmpdir(), 'capstan-console-e2e-'));
const children = [];
let browser = null;

function log(...m) { console.log(`[console-e2e ${new Date().toISOString().slice(11, 23)}]`, ...m); }

async function waitFor(what, fn, timeoutMs = 30000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

// A port that binds now, picked below the kernel's ephemeral range so an
// outgoing connection does not take it before the server binds it.
function freePort() {
  return new Promise((resolve) => {
    const tryOne = () => {
      const port = 20000 + Math.floor(Math.random() * 12000);
      const s = net.createServer();
      s.once('error', tryOne);
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(port)));
    };
    tryOne();
  });
}

function start(name, argv) {
  const logFile = join(work, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd] });
  child.logFile = logFile;
  child.exited = null;
  child.on('exit', (code, signal) => { child.exited = { code, signal }; });
  children.push(child);
  return child;
}
const logOf = (child) => { try { return readFileSync(child.logFile, 'utf8'); } catch { return ''; } };

async function stopAll() {
  if (browser) await browser.close().catch(() => {});
  for (const child of children.reverse()) {
    if (child.exited) continue;
    child.kill('SIGTERM');
    try { await waitFor(`${child.spawnfile} to exit`, () => child.exited, 15000); } catch { child.kill('SIGKILL'); }
  }
}

let base = '';
async function http(method, path, body, headers = {}) {
  const init = { method, headers: { 'X-Capstan-User': 'e2e-script', ...headers } };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await fetch(base + path, init);
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

function check(cond, message) { if (!cond) throw new Error(`check failed: ${message}`); }

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
      return new Promise((resolve) => {
        const s = net.connect(storePort, '127.0.0.1', () => { s.end(); resolve('up'); });
        s.on('error', () => resolve(false));
      });
    }, 30000);
    if (up === 'up') break;
    if (!/address already in use|cannot listen/i.test(logOf(store))) throw new Error(`the store exited:\n${logOf(store)}`);
    log('store port race, retrying');
  }
  const service = start('service', [capstan, 'experiments', 'serve', '--store', `127.0.0.1:${storePort}`,
    '--listen', '127.0.0.1:0', '--events-dir', join(work, 'events')]);
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

  browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
  });
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  // The browser logs every non-2xx answer; the 409 of the conflict below is expected.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 409/.test(m.text())) pageErrors.push(m.text());
  });
  page.on('response', (r) => { if (r.status() === 404) pageErrors.push(`404 for ${r.url()}`); });
  const shot = (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true });
  const h1 = () => page.$eval('h1', (e) => e.textContent.trim()).catch(() => '');
  const bodyText = () => page.evaluate(() => document.body.innerText);
  // Fills the control whose <label> reads `text` exactly (so the test also
  // checks that the control is labelled).
  const fillByLabel = async (text, value) => {
    const id = await waitFor(`a control labelled "${text}"`, () => page.evaluate((t) => {
      const label = Array.from(document.querySelectorAll('label')).find((l) => l.textContent.trim() === t);
      return label && label.control ? label.control.id : null;
    }, text));
    await page.locator(`#${id}`).fill(value);
  };

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
  await fillByLabel('Allow-list (one unit = variant per line)', 'qa-user = treatment');
  await shot('02-new-experiment');
  await page.locator('::-p-aria(Create experiment)').click();
  await waitFor('the experiment page', async () => (await h1()) === 'green-button');
  let doc = (await http('GET', '/v1/experiments/green-button')).json;
  check(doc.spec.layer === 'checkout' && doc.spec.coverage === 0.5, `created spec ${JSON.stringify(doc.spec)}`);
  check(doc.spec.variants[1].parameters.button_color === 'green', 'variant parameters saved');
  check(doc.spec.forced_variants['qa-user'] === 'treatment', 'allow-list saved');
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
    const rate = a.variant === 'treatment' ? 0.3 : 0.1;
    if ((i * 7919) % 100 < rate * 100) {
      lines.push(JSON.stringify({ type: 'conversion', key: `c-${i}`, experiment: 'green-button', unit: units[i], metric: 'purchase', ts: now + 1000 }));
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
  check(pageErrors.length === 0, `no page errors: ${pageErrors.join(' | ')}`);
  log('PASS');
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  console.error(`FAIL: ${e.stack || e}`);
  for (const child of children) console.error(`--- ${child.logFile}\n${logOf(child).slice(-4000)}`);
}
await stopAll();
if (!keep) rmSync(work, { recursive: true, force: true });
console.log(code === 0 ? '1 passed, 0 failed' : '0 passed, 1 failed');
process.exit(code);
