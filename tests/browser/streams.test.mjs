// Browser test of the Streams page and of video jobs: starts `kadr up` with the real
// yolox_nano model and drives Debian's chromium through playwright-core.
//
//   KADR_BIN=build/release/kadr KADR_TEST_DATA=../shared node --test tests/browser/streams.test.mjs
//
// Streams: a stream whose source is media/vtest.avi (looped, live mode, 5 fps) shows live
// annotated frames that change (MJPEG in an <img>, SSE sequence numbers that grow), its stats
// update, and Remove makes it disappear and closes its live connections.
// Video jobs: a 30-frame H.264 clip (cut from media/cars.mp4 with ffmpeg) uploaded on the
// Detect page shows a progress bar, then a <video> served as video/mp4 and a summary; the
// same clip with Draw off becomes a results-only job (no player, in Detect and History); a
// truncated clip shows the error alert.
//
// Environment: as ui.test.mjs (KADR_BIN, KADR_TEST_DATA, KADR_CHROMIUM, KADR_ARTIFACTS_DIR);
// also needs ffmpeg on the PATH. Screenshots are streams-NN-*.png, the log streams-kadr.log.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  BrowserSession, clickForResponse, eventually, imageLoaded as imageLoadedIn,
} from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dataDir = process.env.KADR_TEST_DATA || '';
const vtest = dataDir ? path.join(dataDir, 'media', 'vtest.avi') : '';
const cars = dataDir ? path.join(dataDir, 'media', 'cars.mp4') : '';
const artifacts = path.resolve(process.env.KADR_ARTIFACTS_DIR || path.join(here, 'artifacts'));
const VIDEO_FRAMES = 30;

function skipReason() {
  if (!dataDir) {
    return 'KADR_TEST_DATA is not set (point it at the shared folder with models/ and media/, e.g. KADR_TEST_DATA=../shared)';
  }
  for (const file of [vtest, cars, path.join(dataDir, 'models', 'yolox_nano.onnx')]) {
    if (!fs.existsSync(file)) return `${file} is missing`;
  }
  try {
    execFileSync('ffmpeg', ['-version'], { stdio: 'ignore' });
  } catch {
    return 'ffmpeg is not installed (scripts/setup-debian.sh installs it)';
  }
  return false;
}
const skip = skipReason();
if (skip) console.log(`kadr browser test skipped: ${skip}`);

const session = new BrowserSession({ dataDir, artifactsDir: artifacts, prefix: 'streams-' });
let tmpDir = '';
let page = null;
let baseUrl = '';

const screenshot = (name) => session.screenshot(name);

// The value of Prometheus series `name` (no labels) from /metrics.
async function metric(name) {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : NaN;
}

const imageLoaded = (locator) => imageLoadedIn(page, locator);

describe('kadr streams and video jobs', { skip, concurrency: false }, () => {
  // The stream reads media/vtest.avi: files are sources only in the operator's directories.
  const sourceDir = vtest ? ['--source-dir', path.dirname(vtest)] : [];
  session.hooks({ kadrArgs: ['--models', 'yolox_nano', ...sourceDir], viewport: { width: 1366, height: 900 } },
    () => ({ page, baseUrl, tmpDir } = session));

  test('a looping video stream shows changing live frames, detections and stats', async () => {
    await page.goto(`${baseUrl}/#/streams`);
    await page.getByTestId('view-streams').waitFor({ state: 'visible' });
    await page.waitForFunction(() => {
      const o = document.querySelector('[data-testid="stream-model"] option[value="yolox_nano"]');
      return o && !o.disabled;
    });
    await page.getByTestId('stream-source').fill(vtest);
    await page.getByTestId('stream-name').fill('vtest');
    await page.getByTestId('stream-model').selectOption('yolox_nano');
    await page.getByTestId('stream-fps').fill('5');
    await page.getByTestId('stream-mode').selectOption('live');
    const response = await clickForResponse(page, page.getByTestId('stream-add'),
      { pathname: '/api/v1/streams', status: 201 });
    const streamId = (await response.json()).id;
    assert.ok(streamId, 'the new stream has an id');

    const item = page.locator(`[data-testid="stream-item"][data-stream-id="${streamId}"]`);
    await item.waitFor({ state: 'visible' });
    assert.equal((await item.getByTestId('stream-title').innerText()).trim(), 'vtest');
    const live = item.getByTestId('stream-live');
    assert.match(await live.getAttribute('src'), new RegExp(`/api/v1/streams/${streamId}/live$`));
    assert.ok((await imageLoaded(live)) > 0, 'the MJPEG <img> shows a frame');

    // Detections arrive over SSE: the frame sequence shown grows.
    const seqAbove = (min) => async () => {
      const value = await item.getAttribute('data-seq');
      return value !== null && Number(value) > min ? { seq: Number(value) } : null;
    };
    const first = (await eventually(seqAbove(-1), { what: 'a first SSE result' })).seq;
    const later = (await eventually(seqAbove(first), { what: 'a later SSE result' })).seq;
    assert.ok(later > first, `sequence ${first} -> ${later}`);

    // The live image itself changes (people walk through vtest.avi).
    const shotA = await live.screenshot();
    await screenshot('stream-live');
    const shotB = await eventually(async () => {
      await new Promise((r) => setTimeout(r, 500));
      const shot = await live.screenshot();
      return Buffer.compare(shot, shotA) !== 0 ? shot : null;
    }, { what: 'a different live frame', timeoutMs: 30_000 });
    assert.notEqual(Buffer.compare(shotA, shotB), 0);
    fs.writeFileSync(session.nextArtifact('live-frame-a'), shotA);
    fs.writeFileSync(session.nextArtifact('live-frame-b'), shotB);

    // Stats come from GET /api/v1/streams every second: state, fps, processed frames grow.
    await eventually(async () => (await item.getByTestId('stream-state').innerText()).trim() === 'running',
      { what: 'state running' });
    const done0 = Number(await item.getAttribute('data-frames-done'));
    await eventually(async () => Number(await item.getAttribute('data-frames-done')) > done0,
      { what: 'frames_done growing', timeoutMs: 30_000 });
    assert.match(await item.getByTestId('stat-input-fps').innerText(), /^\d+(\.\d)? fps$/);
    assert.match(await item.getByTestId('stat-output-fps').innerText(), /^\d+(\.\d)? fps$/);
    assert.match(await item.getByTestId('stat-p50').innerText(), /^[\d.]+ ms$/);
    assert.match(await item.getByTestId('stat-dropped').innerText(), /^\d+$/);
    assert.ok(await item.getByTestId('stream-detection').count() > 0, 'live detections are listed');
    assert.ok((await metric('kadr_viewer_live_clients')) >= 2, 'MJPEG and SSE connections open');
    await screenshot('stream-stats');

    // Remove: the card goes, the stream is gone from the API, the live connections close.
    await clickForResponse(page, item.getByTestId('stream-remove'),
      { method: 'DELETE', pathname: `/api/v1/streams/${streamId}`, status: 204 });
    await item.waitFor({ state: 'detached' });
    const list = await (await fetch(`${baseUrl}/api/v1/streams`)).json();
    assert.deepEqual(list.streams.map((s) => s.id).filter((id) => id === streamId), []);
    await eventually(async () => (await metric('kadr_viewer_live_clients')) === 0,
      { what: 'live connections closed after Remove', timeoutMs: 15_000 });
    assert.ok(await page.getByTestId('streams-empty').isVisible());
    assert.ok(await page.getByTestId('error').isHidden(), 'no error alert');
    await screenshot('stream-removed');
  });

  test('a video upload becomes a video job with progress, an MP4 and a summary', async () => {
    const clip = path.join(tmpDir, 'cars-30.mp4');
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', cars, '-frames:v', String(VIDEO_FRAMES),
      '-an', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', clip]);

    await page.getByTestId('nav-detect').click();
    await page.getByTestId('view-detect').waitFor({ state: 'visible' });
    await page.getByTestId('model-select').selectOption('yolox_nano');
    await page.getByTestId('file-input').setInputFiles(clip);
    assert.ok(await page.getByTestId('file-video-badge').isVisible(), 'the file is taken as a video');
    assert.equal((await page.getByTestId('submit').innerText()).trim(), 'Process video');
    await clickForResponse(page, page.getByTestId('submit'), { pathname: '/api/v1/jobs', status: 202 });
    // The UI has the job's id; the response body may be gone from the inspector's cache.
    const job = page.locator('[data-testid="view-detect"] [data-testid="video-job"]');
    await job.waitFor({ state: 'visible' });
    const jobId = await job.getAttribute('data-job-id');
    assert.ok(jobId, 'the video job shows its id');

    const progress = job.getByTestId('video-progress');
    assert.ok(await progress.isVisible(), 'a progress bar');
    await screenshot('video-progress');
    await page.waitForFunction(
      (id) => document.querySelector(`[data-testid="video-job"][data-job-id="${id}"]`)?.dataset.state === 'done',
      jobId, { timeout: 120_000 },
    );
    const [value, max] = await progress.evaluate((p) => [p.value, p.max]);
    assert.equal(value, max, 'the bar is full when done');
    assert.match(await job.getByTestId('video-progress-text').innerText(), new RegExp(`${VIDEO_FRAMES} / ${VIDEO_FRAMES} frames`));

    const player = job.getByTestId('video-player');
    await player.waitFor({ state: 'visible' });
    const src = await player.evaluate((v) => v.currentSrc || v.src);
    assert.match(src, new RegExp(`/api/v1/jobs/${jobId}/video$`));
    const mp4 = await page.request.get(src);
    assert.equal(mp4.status(), 200);
    assert.match(mp4.headers()['content-type'], /^video\/mp4/);
    const bytes = await mp4.body();
    assert.equal(bytes.subarray(4, 8).toString('latin1'), 'ftyp', 'an MP4 file');
    assert.equal(mp4.headers()['accept-ranges'], 'bytes');
    // Players read the MP4 in byte ranges: chromium asks for bytes=0-, then for the moov box,
    // which OpenCV's writer puts at the end of the file; a wrong answer to that second range
    // leaves the <video> without metadata. Each range gets exactly its bytes.
    const size = bytes.length;
    for (const range of ['0-99', '100-199', `${size - 1000}-`]) {
      const [first, last] = [Number(range.split('-')[0]), Number(range.split('-')[1] || size - 1)];
      const part = await page.request.get(src, { headers: { Range: `bytes=${range}` } });
      assert.equal(part.status(), 206, `Range: bytes=${range}`);
      assert.equal(part.headers()['content-range'], `bytes ${first}-${last}/${size}`, range);
      assert.ok((await part.body()).equals(bytes.subarray(first, last + 1)), `the bytes ${range}`);
    }
    // Debian's chromium plays H.264; a build without it still has the element and the file.
    const playable = await player.evaluate((v) => v.canPlayType('video/mp4; codecs="avc1.42E01E"'));
    if (playable) {
      const handle = await player.elementHandle();
      await page.waitForFunction((v) => (v.readyState >= 1 && v.duration > 0) || v.error,
        handle, { timeout: 30_000 }).catch(() => {});
      const state = await handle.evaluate((v) => ({
        readyState: v.readyState, networkState: v.networkState, duration: v.duration,
        error: v.error ? `${v.error.code} ${v.error.message}` : null,
      }));
      assert.ok(state.readyState >= 1 && state.duration > 0, `the <video> loads: ${JSON.stringify(state)}`);
    }
    await job.getByTestId('video-summary').waitFor({ state: 'visible' });
    assert.equal((await job.getByTestId('video-summary-frames').locator('dd').innerText()).trim(),
      String(VIDEO_FRAMES));
    assert.ok(await job.getByTestId('video-cancel').isHidden(), 'no Cancel once done');
    assert.ok(await page.getByTestId('error').isHidden(), 'no error alert');
    await screenshot('video-done');
  });

  test('a video with Draw off becomes a results-only job: results and no player, in History too', async () => {
    const clip = path.join(tmpDir, 'cars-30.mp4');
    await page.getByTestId('nav-detect').click();
    await page.getByTestId('draw-enabled').uncheck();
    await page.getByTestId('file-input').setInputFiles(clip);
    const posted = await clickForResponse(page, page.getByTestId('submit'), { pathname: '/api/v1/jobs', status: 202 });
    assert.equal(new URL(posted.url()).searchParams.get('draw'), '0', 'the upload asks for draw=0');
    await page.getByTestId('draw-enabled').check();
    const job = page.locator('[data-testid="view-detect"] [data-testid="video-job"]');
    await job.waitFor({ state: 'visible' });
    const jobId = await job.getAttribute('data-job-id');
    assert.ok(jobId, 'the video job shows its id');
    const selector = (view) => `[data-testid="view-${view}"] [data-testid="video-job"][data-job-id="${jobId}"]`;
    await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.state === 'done',
      selector('detect'), { timeout: 120_000 });
    await job.getByTestId('video-results-only').waitFor({ state: 'visible' });
    assert.ok(await job.getByTestId('video-player').isHidden(), 'no player without an MP4');
    assert.equal(await job.getByTestId('video-download').count(), 0, 'no MP4 link');
    await job.getByTestId('video-summary').waitFor({ state: 'visible' });
    assert.equal((await job.getByTestId('video-summary-frames').locator('dd').innerText()).trim(),
      String(VIDEO_FRAMES));
    const body = await (await page.request.get(`${baseUrl}/api/v1/jobs/${jobId}`)).json();
    assert.equal(body.annotated, false);
    assert.equal((await page.request.get(`${baseUrl}/api/v1/jobs/${jobId}/video`)).status(), 404);
    await screenshot('video-results-only');

    // The same job opened from History.
    await page.goto(`${baseUrl}/#/history/${jobId}`);
    const again = page.locator(selector('history'));
    await again.waitFor({ state: 'visible' });
    await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.state === 'done',
      selector('history'), { timeout: 30_000 });
    await again.getByTestId('video-results-only').waitFor({ state: 'visible' });
    assert.ok(await again.getByTestId('video-player').isHidden(), 'no player in History either');
    assert.ok(await page.getByTestId('error').isHidden(), 'no error alert');
    await page.getByTestId('nav-detect').click();
    await page.getByTestId('view-detect').waitFor({ state: 'visible' });
  });

  test('a truncated video shows the error alert', async () => {
    const clip = path.join(tmpDir, 'cars-30.mp4');
    const truncated = path.join(tmpDir, 'truncated.mp4');
    fs.writeFileSync(truncated, fs.readFileSync(clip).subarray(0, 2048));
    await page.getByTestId('file-input').setInputFiles(truncated);
    await page.getByTestId('submit').click();
    const alert = page.getByRole('alert');
    await alert.waitFor({ state: 'visible' });
    const code = await page.getByTestId('error-code').innerText();
    assert.match(code, /· HTTP (400|415)$/, code);
    const message = await page.getByTestId('error-message').innerText();
    assert.ok(message.trim().length > 10, `a meaningful message, got "${message}"`);
    await screenshot('video-truncated');
    await page.getByTestId('error-close').click();
  });

  test('no script errors on the page', () => {
    assert.deepEqual(session.pageErrors, []);
  });
});
