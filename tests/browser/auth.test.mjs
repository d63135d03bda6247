// Browser test of the web UI with access control on: `kadr up --auth on` (the built-in `null`
// model, so no test data is needed), a viewer token made by `kadr token create` on its data
// dir; the UI asks for a token, refuses a wrong one with a message, logs in with the right one
// (the models load, the role shows), and logs out.
//
//   KADR_BIN=build/release/kadr node --test tests/browser/auth.test.mjs
//
// Environment: KADR_BIN, KADR_CHROMIUM, KADR_ARTIFACTS_DIR as for ui.test.mjs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { BrowserSession } from './support.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const artifacts = path.resolve(process.env.KADR_ARTIFACTS_DIR || path.join(here, 'artifacts'));
// Models: only the built-in `null`; an empty models folder stands in for the shared one.
const modelsRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'kadr-browser-auth-models-'));
fs.mkdirSync(path.join(modelsRoot, 'models'));
process.on('exit', () => fs.rmSync(modelsRoot, { recursive: true, force: true }));

const session = new BrowserSession({ dataDir: modelsRoot, artifactsDir: artifacts, prefix: 'auth-' });
let page = null;
let baseUrl = '';
let tmpDir = '';

// `kadr token create` on the running server's data dir; the token it printed.
function createToken(role, name) {
  const r = spawnSync(process.env.KADR_BIN,
    ['token', 'create', '--role', role, '--name', name, '--data-dir', path.join(tmpDir, 'data')],
    { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `kadr token create exited ${r.status}: ${r.stdout}${r.stderr}`);
  const token = r.stdout.trim();
  assert.match(token, /^kadr_[0-9a-f]{12}_[0-9a-f]{64}$/);
  return token;
}

describe('kadr web UI with access control on', { concurrency: false }, () => {
  session.hooks({ kadrArgs: ['--models', 'null', '--auth', 'on'] },
    () => ({ page, baseUrl, tmpDir } = session));

  test('the first admin token was printed once and the API wants a token', async () => {
    assert.match(session.kadr.log, /kadr: first admin token: kadr_[0-9a-f]{12}_[0-9a-f]{64}/);
    const response = await fetch(`${baseUrl}/api/v1/models`);
    assert.equal(response.status, 401);
  });

  test('the page asks for a token and refuses a wrong one', async () => {
    await page.goto(`${baseUrl}/`);
    const login = page.getByTestId('login');
    await login.waitFor({ state: 'visible' });
    await page.getByTestId('login-token').fill(`kadr_000000000000_${'0'.repeat(64)}`);
    await page.getByTestId('login-submit').click();
    const error = page.getByTestId('login-error');
    await error.waitFor({ state: 'visible' });
    assert.match(await error.innerText(), /not valid/);
    assert.ok(await login.isVisible(), 'the login form stays');
    await session.screenshot('wrong-token');
  });

  test('a viewer token logs in: the models load and the role shows', async () => {
    const token = createToken('viewer', 'browser-test');
    await page.getByTestId('login-token').fill(token);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('login').waitFor({ state: 'hidden' });
    await page.locator('[data-testid="model-select"] option[value="null"]').waitFor({ state: 'attached' });
    assert.equal((await page.getByTestId('account-role').innerText()).trim(), 'viewer');
    assert.equal((await page.getByTestId('account-name').innerText()).trim(), 'browser-test');
    // The session cookie is HttpOnly: the page's script cannot read it.
    assert.equal(await page.evaluate(() => document.cookie.includes('kadr_session')), false);
    await session.screenshot('logged-in');
  });

  test('History loads with the session; logging out asks for a token again', async () => {
    await page.goto(`${baseUrl}/#/history`);
    await page.getByTestId('history-empty').waitFor({ state: 'visible' });
    assert.ok(await page.getByTestId('login').isHidden());
    await page.getByTestId('logout').click();
    await page.getByTestId('login').waitFor({ state: 'visible' });
    assert.ok(await page.getByTestId('account').isHidden());
    await session.screenshot('logged-out');
  });

  test('no script errors on the page', () => {
    assert.deepEqual(session.pageErrors, []);
  });
});
