// Shared by the browser tests: a `kadr up` child process (start, wait for /readyz, stop),
// chromium through playwright-core, and BrowserSession, which holds both for one test file.
//
//   const kadr = new KadrProcess({ dataDir, tmpDir });
//   const baseUrl = await kadr.start(['--models', 'yolox_nano']);
//   ...
//   await kadr.stop();   // SIGTERM, SIGKILL after a grace period
//   kadr.log             // the command line, stdout and stderr, for the artifacts
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';

const URL_LINE = 'kadr: web UI and API on ';
export const START_TIMEOUT_MS = 60_000;
export const READY_TIMEOUT_MS = 60_000;
export const STOP_GRACE_MS = 10_000;

const running = new Set();
// Last resort when the runner dies without running after(): never leave kadr behind.
process.on('exit', () => {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

export class KadrProcess {
  constructor({ dataDir, tmpDir }) {
    this.dataDir = dataDir;
    this.tmpDir = tmpDir;
    this.child = null;
    this.log = '';
  }

  // Starts `kadr up` on a free port with the shared models and a fresh data dir, plus
  // `extraArgs`; resolves with the base URL (no trailing slash) once /readyz answers 200.
  async start(extraArgs = []) {
    const bin = process.env.KADR_BIN;
    if (!bin) throw new Error('KADR_BIN is not set (the kadr binary to test)');
    if (!fs.existsSync(bin)) throw new Error(`KADR_BIN=${bin} does not exist; build kadr first`);
    const args = ['up', '--http-port', '0', '--models-dir', path.join(this.dataDir, 'models'),
      '--data-dir', path.join(this.tmpDir, 'data'), ...extraArgs];
    this.log += `$ ${bin} ${args.join(' ')}\n`;
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    const url = await new Promise((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(
        () => reject(new Error(`no "${URL_LINE}" line from kadr up within ${START_TIMEOUT_MS} ms\n${this.log}`)),
        START_TIMEOUT_MS,
      );
      child.stdout.on('data', (chunk) => {
        this.log += chunk;
        stdout += chunk;
        const line = stdout.split('\n').find((l) => l.startsWith(URL_LINE));
        const match = line && line.slice(URL_LINE.length).match(/^(http:\/\/\S+?)\/?\s*$/);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.stderr.on('data', (chunk) => {
        this.log += chunk;
      });
      child.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.on('exit', (code, signal) => {
        this.log += `[kadr exited code=${code} signal=${signal}]\n`;
        running.delete(child);
        clearTimeout(timer);
        reject(new Error(`kadr up exited early (code=${code} signal=${signal})\n${this.log}`));
      });
    });
    await this.waitReady(url);
    return url;
  }

  async waitReady(url) {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    let last = '';
    while (Date.now() < deadline) {
      try {
        const response = await fetch(`${url}/readyz`);
        if (response.status === 200) return;
        last = `${response.status} ${await response.text()}`;
      } catch (error) {
        last = error.message;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`GET /readyz not 200 within ${READY_TIMEOUT_MS} ms (last: ${last})\n${this.log}`);
  }

  // SIGTERM, then SIGKILL when kadr has not exited after STOP_GRACE_MS.
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      this.log += `[kadr still running ${STOP_GRACE_MS} ms after SIGTERM; SIGKILL]\n`;
      child.kill('SIGKILL');
    }, STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
    running.delete(child);
  }
}

// chromium from KADR_CHROMIUM (default Debian's), through playwright-core.
export async function launchChromium() {
  const chromiumPath = process.env.KADR_CHROMIUM || '/usr/bin/chromium';
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (error) {
    throw new Error(`playwright-core is not installed: run \`npm ci --prefix tests/browser\` ` +
                    `(scripts/setup-debian.sh does) [${error.message}]`);
  }
  if (!fs.existsSync(chromiumPath)) {
    throw new Error(`no browser at ${chromiumPath}: apt-get install chromium ` +
                    `(scripts/setup-debian.sh does) or set KADR_CHROMIUM`);
  }
  return chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
}

// Clicks `locator` on `page` and resolves with the response to the `method` request for URL
// path `pathname`; fails, with the response body, when its status is not `status`.
export async function clickForResponse(page, locator, { method = 'POST', pathname, status }) {
  const responded = page.waitForResponse(
    (r) => new URL(r.url()).pathname === pathname && r.request().method() === method,
  );
  await locator.click();
  const response = await responded;
  if (response.status() !== status) {
    assert.fail(`${method} ${pathname} answered ${response.status()}: ${await response.text().catch(() => '')}`);
  }
  return response;
}

// Polls `probe` (async, returns a value or a falsy one) until it returns something truthy.
export async function eventually(probe, { timeoutMs = 30_000, intervalMs = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`${what}: not true within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

// Waits until the <img> `locator` (on `page`) is visible and decoded; resolves with its
// naturalWidth.
export async function imageLoaded(page, locator, { timeoutMs = 30_000 } = {}) {
  await locator.waitFor({ state: 'visible' });
  const handle = await locator.elementHandle();
  await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, handle, {
    timeout: timeoutMs,
  });
  return handle.evaluate((img) => img.naturalWidth);
}

// One test file's world: a temp dir, `kadr up` on it and a chromium page. Artifacts are
// `${prefix}NN-name.png` and `${prefix}kadr.log` in `artifactsDir`; open() deletes old ones.
//
//   const session = new BrowserSession({ dataDir, artifactsDir, prefix: 'streams-' });
//   describe('...', () => {
//     session.hooks({ kadrArgs: ['--models', 'yolox_nano'] });  // before(): open, after(): close
//     test('...', () => session.page ...);
//   session.page, session.baseUrl, session.tmpDir, session.pageErrors, session.screenshot('x')
export const OPEN_TIMEOUT_MS = START_TIMEOUT_MS + READY_TIMEOUT_MS + 30_000;
export const CLOSE_TIMEOUT_MS = STOP_GRACE_MS + 10_000;

export class BrowserSession {
  constructor({ dataDir, artifactsDir, prefix = '' }) {
    this.dataDir = dataDir;
    this.artifactsDir = artifactsDir;
    this.prefix = prefix;
    this.tmpDir = '';
    this.kadr = null;
    this.browser = null;
    this.page = null;
    this.baseUrl = '';
    this.pageErrors = []; // uncaught script errors on the page
    this.step = 0;
  }

  async open({ kadrArgs = [], viewport = { width: 1366, height: 768 } } = {}) {
    fs.mkdirSync(this.artifactsDir, { recursive: true });
    const stale = new RegExp(`^${this.prefix}(\\d\\d-.+\\.png|kadr\\.log)$`);
    for (const name of fs.readdirSync(this.artifactsDir)) {
      if (stale.test(name)) fs.rmSync(path.join(this.artifactsDir, name));
    }
    this.tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), `kadr-browser-${this.prefix}`));
    this.kadr = new KadrProcess({ dataDir: this.dataDir, tmpDir: this.tmpDir });
    this.baseUrl = (await this.kadr.start(kadrArgs)).replace(/\/$/, '');
    this.browser = await launchChromium();
    const context = await this.browser.newContext({ viewport });
    this.page = await context.newPage();
    this.page.setDefaultTimeout(30_000);
    this.page.on('pageerror', (error) => this.pageErrors.push(error.message));
  }

  // Registers before() to open (then `onOpen(this)`) and after() to close, in the current suite.
  hooks(options, onOpen = () => {}) {
    before(async () => {
      await this.open(options);
      onOpen(this);
    }, { timeout: OPEN_TIMEOUT_MS });
    after(() => this.close(), { timeout: CLOSE_TIMEOUT_MS });
  }

  // Closes chromium, stops kadr (its log goes to the artifacts) and removes the temp dir.
  async close() {
    if (this.browser) await this.browser.close().catch(() => {});
    if (this.kadr) {
      await this.kadr.stop();
      if (this.kadr.log) {
        fs.writeFileSync(path.join(this.artifactsDir, `${this.prefix}kadr.log`), this.kadr.log);
      }
    }
    if (this.tmpDir) fs.rmSync(this.tmpDir, { recursive: true, force: true });
  }

  // The path of the next numbered artifact `${prefix}NN-name.png`.
  nextArtifact(name) {
    this.step += 1;
    return path.join(this.artifactsDir, `${this.prefix}${String(this.step).padStart(2, '0')}-${name}.png`);
  }

  async screenshot(name) {
    await this.page.screenshot({ path: this.nextArtifact(name), fullPage: true });
  }
}
