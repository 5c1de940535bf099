// What the browser tests share: arguments, bounded waits, picked ports,
// child processes (stopped in reverse order at the end), an HTTP helper, a
// browser page with error collection, screenshots and label-based filling.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

export function parseArgs(usage) {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const parsed = {
    capstan: opt('--capstan'),
    artifacts: opt('--artifacts', join(process.cwd(), 'console-e2e-artifacts')),
    chromium: opt('--chromium', '/usr/bin/chromium'),
    source: opt('--source'),
    keep: args.includes('--keep'),
  };
  if (!parsed.capstan) { console.error(`usage: ${usage}`); process.exit(2); }
  mkdirSync(parsed.artifacts, { recursive: true });
  return parsed;
}

export function log(...m) { console.log(`[console-e2e ${new Date().toISOString().slice(11, 23)}]`, ...m); }

export function check(cond, message) { if (!cond) throw new Error(`check failed: ${message}`); }

// Polls `fn` until it returns something truthy; throws after `timeoutMs`.
export async function waitFor(what, fn, timeoutMs = 30000, everyMs = 100) {
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
export function freePort() {
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

export function portAnswers(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

// The processes a test starts, its scratch directory and its browser.
export class Harness {
  constructor(name, artifacts) {
    this.artifacts = artifacts;
    this.work = mkdtempSync(join(tmpdir(), `capstan-${name}-`));
    this.children = [];
    this.browser = null;
  }

  start(name, argv, options = {}) {
    const logFile = join(this.work, `${name}.log`);
    const fd = openSync(logFile, 'a');
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], ...options });
    child.logFile = logFile;
    child.exited = null;
    child.on('exit', (code, signal) => { child.exited = { code, signal }; });
    this.children.push(child);
    return child;
  }

  // Runs a command to its end (bounded); resolves {code, output}.
  run(name, argv, timeoutMs = 60000) {
    const child = this.start(name, argv);
    return waitFor(`${name} to finish`, () => child.exited, timeoutMs, 100)
      .then((exited) => ({ code: exited.code, output: logOf(child) }))
      .catch((e) => { child.kill('SIGKILL'); throw e; });
  }

  async launchBrowser(chromium) {
    this.browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'],
    });
    return this.browser;
  }

  async stopAll() {
    if (this.browser) await this.browser.close().catch(() => {});
    for (const child of this.children.slice().reverse()) {
      if (child.exited) continue;
      child.kill('SIGTERM');
      try { await waitFor(`${child.spawnfile} to exit`, () => child.exited, 15000); } catch { child.kill('SIGKILL'); }
    }
  }

  // Runs `main`, prints the children's logs on failure, stops everything;
  // exits 0 or 1.
  async main(main, keep) {
    let code = 0;
    try {
      await main();
    } catch (e) {
      code = 1;
      console.error(`FAIL: ${e.stack || e}`);
      // What the browser showed when it failed.
      const pages = this.browser ? await this.browser.pages().catch(() => []) : [];
      for (const [i, page] of pages.entries()) {
        const path = join(this.artifacts, `FAILED-${i}.png`);
        await page.screenshot({ path, fullPage: true }).then(() => console.error(`screenshot: ${path}`), () => {});
      }
      for (const child of this.children) console.error(`--- ${child.logFile}\n${logOf(child).slice(-4000)}`);
    }
    await this.stopAll();
    if (!keep) rmSync(this.work, { recursive: true, force: true });
    console.log(code === 0 ? '1 passed, 0 failed' : '0 passed, 1 failed');
    process.exit(code);
  }
}

export const logOf = (child) => { try { return readFileSync(child.logFile, 'utf8'); } catch { return ''; } };

// fetch with the console's user header; the answer as {status, headers, text, json}.
export async function http(base, method, path, body, headers = {}) {
  const init = { method, headers: { 'X-Capstan-User': 'e2e-script', ...headers } };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await fetch(base + path, init);
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// A page that records script errors and failed requests (`expected`
// matches console errors a test provokes), with helpers bound to it.
export async function openPage(browser, artifacts, expected = /$^/) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !expected.test(m.text())) errors.push(m.text());
  });
  page.on('response', (r) => { if (r.status() === 404) errors.push(`404 for ${r.url()}`); });
  return {
    page,
    errors,
    shot: (name) => page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true }),
    h1: () => page.$eval('h1', (e) => e.textContent.trim()).catch(() => ''),
    bodyText: () => page.evaluate(() => document.body.innerText),
    // Fills the control whose <label> reads `text` exactly (so the test
    // also checks that the control is labelled).
    fillByLabel: async (text, value) => {
      const id = await waitFor(`a control labelled "${text}"`, () => page.evaluate((t) => {
        const label = Array.from(document.querySelectorAll('label')).find((l) => l.textContent.trim() === t);
        return label && label.control ? label.control.id : null;
      }, text));
      await page.locator(`#${id}`).fill(value);
    },
  };
}
