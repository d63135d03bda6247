// Browser test of kadr's web UI: starts `kadr up` with the real yolox_nano model, drives
// Debian's chromium through playwright-core and checks the Detect and History views.
//
//   KADR_BIN=build/release/src/cli/kadr KADR_TEST_DATA=../shared node --test tests/browser/ui.test.mjs
//
// Environment:
//   KADR_BIN            the kadr binary (CTest passes $<TARGET_FILE:kadr>)
//   KADR_TEST_DATA      folder with models/yolox_nano.onnx and media/bus.jpg; the test skips
//                       when it is unset or bus.jpg is missing
//   KADR_CHROMIUM       the browser (default /usr/bin/chromium)
//   KADR_ARTIFACTS_DIR  where screenshots and kadr's log go (default tests/browser/artifacts)
// The UI's elements are found by their data-testid attributes (web/index.html).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = process.env.KADR_TEST_DATA || '';
const busJpg = dataDir ? path.join(dataDir, 'media', 'bus.jpg') : '';
const artifacts = path.resolve(process.env.KADR_ARTIFACTS_DIR || path.join(here, 'artifacts'));
const chromiumPath = process.env.KADR_CHROMIUM || '/usr/bin/chromium';

const URL_LINE = 'kadr: web UI and API on ';
const START_TIMEOUT_MS = 60_000;
const READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 10_000;

function skipReason() {
  if (!dataDir) {
    return 'KADR_TEST_DATA is not set (point it at the shared folder with models/ and media/, e.g. KADR_TEST_DATA=../shared)';
  }
  if (!fs.existsSync(busJpg)) return `${busJpg} is missing`;
  return false;
}
const skip = skipReason();
if (skip) console.log(`kadr browser test skipped: ${skip}`);

let kadr = null; // the `kadr up` child process
let kadrLog = '';
let tmpDir = '';
let browser = null;
let page = null;
let baseUrl = '';
let step = 0;
let busJobId = '';
const pageErrors = [];

async function screenshot(name) {
  step += 1;
  const file = path.join(artifacts, `${String(step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// Starts `kadr up` and resolves with the URL from its announcement line on stdout.
function startKadr() {
  const bin = process.env.KADR_BIN;
  if (!bin) throw new Error('KADR_BIN is not set (the kadr binary to test)');
  if (!fs.existsSync(bin)) throw new Error(`KADR_BIN=${bin} does not exist; build kadr first`);
  const args = ['up', '--http-port', '0', '--models', 'yolox_nano',
    '--models-dir', path.join(dataDir, 'models'), '--data-dir', path.join(tmpDir, 'data')];
  kadrLog += `$ ${bin} ${args.join(' ')}\n`;
  kadr = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(
      () => reject(new Error(`no "${URL_LINE}" line from kadr up within ${START_TIMEOUT_MS} ms\n${kadrLog}`)),
      START_TIMEOUT_MS,
    );
    kadr.stdout.on('data', (chunk) => {
      kadrLog += chunk;
      stdout += chunk;
      const line = stdout.split('\n').find((l) => l.startsWith(URL_LINE));
      const match = line && line.slice(URL_LINE.length).match(/^(http:\/\/\S+?)\/?\s*$/);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    kadr.stderr.on('data', (chunk) => {
      kadrLog += chunk;
    });
    kadr.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    kadr.on('exit', (code, signal) => {
      kadrLog += `[kadr exited code=${code} signal=${signal}]\n`;
      clearTimeout(timer);
      reject(new Error(`kadr up exited early (code=${code} signal=${signal})\n${kadrLog}`));
    });
  });
}

async function waitReady(url) {
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
  throw new Error(`GET /readyz not 200 within ${READY_TIMEOUT_MS} ms (last: ${last})\n${kadrLog}`);
}

// SIGTERM, then SIGKILL when kadr has not exited after STOP_GRACE_MS.
async function stopKadr() {
  if (!kadr || kadr.exitCode !== null || kadr.signalCode !== null) return;
  const exited = new Promise((resolve) => kadr.once('exit', resolve));
  kadr.kill('SIGTERM');
  const timer = setTimeout(() => {
    kadrLog += `[kadr still running ${STOP_GRACE_MS} ms after SIGTERM; SIGKILL]\n`;
    kadr.kill('SIGKILL');
  }, STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

// Last resort when the runner dies without running after(): never leave kadr behind.
process.on('exit', () => {
  if (kadr && kadr.exitCode === null && kadr.signalCode === null) kadr.kill('SIGKILL');
});

// The element with data-testid `id` inside the view `view` ("detect" or "history").
const inView = (view, id) => page.locator(`[data-testid="view-${view}"] [data-testid="${id}"]`);

async function imageLoaded(locator) {
  await locator.waitFor({ state: 'visible' });
  const handle = await locator.elementHandle();
  await page.waitForFunction((img) => img.complete && img.naturalWidth > 0, handle, {
    timeout: 15_000,
  });
  return handle.evaluate((img) => img.naturalWidth);
}

describe('kadr web UI', { skip, concurrency: false }, () => {
  before(async () => {
    fs.mkdirSync(artifacts, { recursive: true });
    for (const name of fs.readdirSync(artifacts)) {
      if (/^\d\d-.+\.png$|^kadr\.log$/.test(name)) fs.rmSync(path.join(artifacts, name));
    }
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kadr-browser-'));
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
    baseUrl = (await startKadr()).replace(/\/$/, '');
    await waitReady(baseUrl);
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
    page.on('pageerror', (error) => pageErrors.push(error.message));
  }, { timeout: START_TIMEOUT_MS + READY_TIMEOUT_MS + 30_000 });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    await stopKadr();
    if (kadrLog) fs.writeFileSync(path.join(artifacts, 'kadr.log'), kadrLog);
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  }, { timeout: STOP_GRACE_MS + 10_000 });

  test('the page loads and lists yolox_nano', async () => {
    await page.goto(`${baseUrl}/`);
    assert.match(await page.title(), /kadr/);
    assert.equal((await page.getByTestId('brand').innerText()).trim(), 'kadr');
    const option = page.locator('[data-testid="model-select"] option[value="yolox_nano"]');
    await option.waitFor({ state: 'attached' });
    // The model is available once its worker is live (readyz said so).
    await page.waitForFunction(() => {
      const o = document.querySelector('[data-testid="model-select"] option[value="yolox_nano"]');
      return o && !o.disabled;
    });
    await screenshot('loaded');
  });

  test('bus.jpg shows the annotated image, a bus and the timings', async () => {
    await page.getByTestId('model-select').selectOption('yolox_nano');
    await page.getByTestId('file-input').setInputFiles(busJpg);
    const responsePromise = page.waitForResponse(
      (r) => r.url().includes('/api/v1/detect') && r.request().method() === 'POST',
    );
    await page.getByTestId('submit').click();
    const response = await responsePromise;
    assert.equal(response.status(), 200, `POST /api/v1/detect answered ${response.status()}`);

    const width = await imageLoaded(inView('detect', 'result-image'));
    assert.ok(width > 0);
    const table = inView('detect', 'detections-table');
    await table.locator('[data-testid="detection-row"][data-label="bus"]').first().waitFor();
    const busRow = table.locator('[data-testid="detection-row"][data-label="bus"]').first();
    assert.match(await busRow.innerText(), /bus\s+\d+(\.\d)?%/);

    busJobId = (await inView('detect', 'result-job-id').innerText()).trim();
    assert.match(busJobId, /^\S+$/, 'the result names its job');

    const timings = inView('detect', 'timings');
    await timings.waitFor({ state: 'visible' });
    assert.match(await timings.getByTestId('timing-total').innerText(), /total [\d.]+ ms/);
    for (const stage of ['gateway', 'queue', 'inference']) {
      assert.match(await timings.getByTestId(`timing-${stage}`).innerText(), /[\d.]+ ms/, stage);
    }
    assert.ok(await page.getByTestId('error').isHidden(), 'no error after a good image');
    await screenshot('bus-detected');
  });

  test('a truncated JPEG and random bytes show the error alert', async () => {
    const bus = fs.readFileSync(busJpg);
    const truncated = path.join(tmpDir, 'truncated.jpg');
    fs.writeFileSync(truncated, bus.subarray(0, Math.floor(bus.length / 3)));
    const garbage = path.join(tmpDir, 'garbage.jpg');
    fs.writeFileSync(garbage, randomBytes(4096));

    for (const [file, name] of [[truncated, 'truncated'], [garbage, 'garbage']]) {
      await page.getByTestId('file-input').setInputFiles(file);
      await page.getByTestId('submit').click();
      const alert = page.getByRole('alert');
      await alert.waitFor({ state: 'visible' });
      assert.equal(await alert.getAttribute('data-testid'), 'error');
      const code = await page.getByTestId('error-code').innerText();
      assert.match(code, /(invalid_argument|unsupported) · HTTP (400|415)/, `${name}: ${code}`);
      const message = await page.getByTestId('error-message').innerText();
      assert.ok(message.trim().length > 10, `${name}: a meaningful message, got "${message}"`);
      if (name === 'truncated') assert.match(message, /truncat|corrupt|decod/i, message);
      await screenshot(`error-${name}`);
      await page.getByTestId('error-close').click();
      await alert.waitFor({ state: 'hidden' });
    }
  });

  test('History lists the bus job with a thumbnail and shows its result', async () => {
    assert.ok(busJobId, 'needs the job of the bus test');
    await page.getByTestId('nav-history').click();
    const list = page.getByTestId('history-list');
    const item = list.locator(`[data-testid="history-item"][data-job-id="${busJobId}"]`);
    await item.waitFor({ state: 'visible' });
    assert.match(await item.getByTestId('history-model').innerText(), /yolox_nano/);
    assert.equal((await item.getByTestId('history-state').innerText()).trim(), 'done');
    assert.match(await item.getByTestId('history-detections').innerText(), /^[1-9]\d* detections?$/);
    assert.ok((await imageLoaded(item.getByTestId('history-thumbnail'))) > 0);
    await screenshot('history');

    await item.click();
    assert.ok((await imageLoaded(inView('history', 'result-image'))) > 0);
    await inView('history', 'detections-table')
      .locator('[data-testid="detection-row"][data-label="bus"]')
      .first()
      .waitFor();
    assert.match(page.url(), new RegExp(`#/history/${busJobId}$`));
    await screenshot('history-result');
  });

  test('no script errors on the page', () => {
    assert.deepEqual(pageErrors, []);
  });
});
