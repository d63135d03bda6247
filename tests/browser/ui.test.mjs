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
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  BrowserSession, clickForResponse, imageLoaded as imageLoadedIn,
} from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = process.env.KADR_TEST_DATA || '';
const busJpg = dataDir ? path.join(dataDir, 'media', 'bus.jpg') : '';
const artifacts = path.resolve(process.env.KADR_ARTIFACTS_DIR || path.join(here, 'artifacts'));

function skipReason() {
  if (!dataDir) {
    return 'KADR_TEST_DATA is not set (point it at the shared folder with models/ and media/, e.g. KADR_TEST_DATA=../shared)';
  }
  if (!fs.existsSync(busJpg)) return `${busJpg} is missing`;
  return false;
}
const skip = skipReason();
if (skip) console.log(`kadr browser test skipped: ${skip}`);

const session = new BrowserSession({ dataDir, artifactsDir: artifacts });
let tmpDir = '';
let page = null;
let baseUrl = '';
let busJobId = '';

const screenshot = (name) => session.screenshot(name);

// The element with data-testid `id` inside the view `view` ("detect" or "history").
const inView = (view, id) => page.locator(`[data-testid="view-${view}"] [data-testid="${id}"]`);

const imageLoaded = (locator) => imageLoadedIn(page, locator, { timeoutMs: 15_000 });

describe('kadr web UI', { skip, concurrency: false }, () => {
  session.hooks({ kadrArgs: ['--models', 'yolox_nano'], viewport: { width: 1366, height: 768 } },
    () => ({ page, baseUrl, tmpDir } = session));

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
    await clickForResponse(page, page.getByTestId('submit'), { pathname: '/api/v1/detect', status: 200 });

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
    assert.deepEqual(session.pageErrors, []);
  });
});
