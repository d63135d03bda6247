// The containers of deploy/compose/docker-compose.yml, run as plain processes: for each kadr
// service the same command and environment (the image's ENV, then the service's), against
// Apache Kafka with the compose file's broker settings (scripts/kafka.sh, which runs a node with
// deploy/kafka/broker.properties, the file the compose file mounts), with each service's KADR_HTTP_PORT on
// a free port, KADR_HOST on 127.0.0.1 and every container path mapped to what its volume
// provides: named volumes to temp dirs (the shared `videos` volume to one folder that gateway,
// camera and viewer all see), the models to $KADR_TEST_DATA/models, bind mounts to the files
// next to the compose file. The topics job must exit 0; every service's compose health check
// (`kadr health` with the service's environment) must pass; an image sent to the gateway must
// come back with detections from the worker process. The proxy's nginx template, rendered as
// the nginx image does and run by Debian's nginx, must send detect and job submissions to the
// gateway and every job read to the viewer: an image job's record, result, image, thumbnail
// and the list; a video job (a clip made with ffmpeg) that the camera process runs through the
// shared folder, its MP4 (and a Range of it); cancel. The gateway itself answers 404 to job
// reads, and jobs stay readable while it is stopped (no fallback: the viewer's recorder has
// them). A second gateway process (what `--scale gateway=2` starts: same environment, its own
// default instance id) takes a job that is read through the proxy. The stream API goes to the
// camera and the live view (an SSE event and a frame of a looping video) to the viewer.
// SIGTERM must stop every process with exit status 0.
//
// Not exercised (no Docker engine here): the images themselves (the apache/kafka image too:
// the same Kafka version runs from Maven Central's jars), docker-compose's scheduling,
// volumes' ownership, the GPU override.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  composeDir, imageEnvironment, isKadrImage, readComposeServices, requireKadrBin,
} from './support.mjs';

const dataDir = process.env.KADR_TEST_DATA || '';
const modelsDir = dataDir ? path.join(dataDir, 'models') : '';
const busJpg = dataDir ? path.join(dataDir, 'media', 'bus.jpg') : '';
const streamVideo = dataDir ? path.join(dataDir, 'media', 'vtest.avi') : '';
const START_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 30_000;

function skipReason() {
  if (!dataDir) {
    return 'KADR_TEST_DATA is not set (point it at the shared folder with models/ and media/, e.g. KADR_TEST_DATA=../shared)';
  }
  for (const file of [path.join(modelsDir, 'yolox_nano.onnx'), busJpg, streamVideo]) {
    if (!fs.existsSync(file)) return `${file} is missing`;
  }
  return false;
}
const repoRoot = path.resolve(composeDir, '..', '..');
const kafkaScript = path.join(repoRoot, 'scripts', 'kafka.sh');
function kafkaMissing() {
  const home = spawnSync(path.join(repoRoot, 'scripts', 'setup-kafka.sh'), ['--home'], { encoding: 'utf8' });
  const libs = path.join((home.stdout || '').trim(), 'libs');
  return home.status === 0 && fs.existsSync(libs) ? false
    : `Apache Kafka is not installed in ${libs} (run scripts/setup-kafka.sh)`;
}
const skip = skipReason() || kafkaMissing();
if (skip) console.log(`kadr deploy test skipped: ${skip}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// A bare environment for every child: nothing KADR_* leaks in from the caller's shell.
const baseEnv = () => ({ PATH: process.env.PATH, HOME: os.tmpdir(), LANG: 'C.UTF-8' });

// One long-running child process with its output kept for the failure messages.
class Child {
  constructor(name, bin, args, { env, cwd }) {
    this.name = name;
    this.log = `$ ${[bin, ...args].join(' ')}  (cwd ${cwd})\n`;
    this.exit = null;
    this.child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        this.log += `[exited code=${code} signal=${signal}]\n`;
        resolve(this.exit);
      });
      this.child.on('error', (error) => {
        this.log += `[spawn error: ${error.message}]\n`;
        this.exit = { code: null, signal: null, error };
        resolve(this.exit);
      });
    });
    this.child.stdout.on('data', (d) => { this.log += d; });
    this.child.stderr.on('data', (d) => { this.log += d; });
  }

  get running() {
    return this.exit === null;
  }

  tail(n = 40) {
    return `--- ${this.name} ---\n${this.log.split('\n').slice(-n).join('\n')}`;
  }

  // SIGTERM; SIGKILL after `graceMs`. Resolves with the exit ({code, signal, killed}).
  async stop(graceMs = STOP_GRACE_MS) {
    if (!this.running) return { ...this.exit, killed: false };
    this.child.kill('SIGTERM');
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      this.log += `[still running ${graceMs} ms after SIGTERM: SIGKILL]\n`;
      this.child.kill('SIGKILL');
    }, graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { ...exit, killed };
  }
}

// Runs a command to completion (bounded); resolves with {code, signal, output}.
function runOnce(bin, args, { env, cwd, timeoutMs }) {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, output: `${output}[spawn error: ${error.message}]` });
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

async function eventually(probe, { timeoutMs, intervalMs = 250, what }) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (last && last.ok !== false) return last;
    } catch (error) {
      last = { error: error.message };
    }
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)?.slice(0, 500)})`);
}

// Reads a streamed response until `pattern` appears in it; resolves with the text so far.
async function readUntil(url, pattern, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let text = '';
  try {
    const response = await fetch(url, { signal: controller.signal });
    assert.equal(response.status, 200, `${url}: ${response.status}`);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    while (!pattern.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    return { text, contentType: response.headers.get('content-type') };
  } catch (error) {
    throw new Error(`${url}: no ${pattern} within ${timeoutMs} ms (${error.message}); got ${JSON.stringify(text.slice(0, 300))}`);
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

function findNginx() {
  const candidates = [process.env.KADR_NGINX, 'nginx', '/usr/sbin/nginx'].filter(Boolean);
  for (const c of candidates) {
    const r = spawnSync(c, ['-v'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return c;
  }
  return null;
}

describe('deploy/compose services as processes', { skip, concurrency: false }, () => {
  let bin;
  let services;
  let image;
  let tmp;
  let broker;
  let bootstrap;
  const ports = {};            // service → its remapped KADR_HTTP_PORT
  const volumes = {};          // named volume → temp dir
  const children = [];         // every Child, in start order
  const long = {};             // service → Child
  const launches = {};         // service → {args, env, cwd}
  let proxy = null;
  let proxyPort = 0;
  let jobId = '';

  let failed = false;
  const dumpLogs = () => children.map((c) => c.tail()).join('\n');
  // A test that marks the run failed, so after() keeps and prints the processes' logs.
  const step = (name, fn) => test(name, async (t) => {
    try {
      await fn(t);
    } catch (error) {
      failed = true;
      throw error;
    }
  });

  // The command line, environment and working directory of compose service `name`.
  function launchOf(name) {
    const service = services[name];
    const scratch = path.join(tmp, 'containers', name);  // the container's writable layer
    fs.mkdirSync(scratch, { recursive: true });
    const mounts = [];
    for (const volume of service.volumes ?? []) {
      const [source, target] = volume.split(':');
      let host;
      if (target === '/models') {
        host = modelsDir;
      } else if (source.startsWith('.') || source.startsWith('/')) {
        host = path.resolve(composeDir, source);
        assert.ok(fs.existsSync(host), `${name}: bind mount ${source} → ${target}: ${host} does not exist`);
      } else {
        volumes[source] ??= fs.mkdtempSync(path.join(tmp, `volume-${source}-`));
        host = volumes[source];
      }
      mounts.push({ target, host });
    }
    mounts.sort((a, b) => b.target.length - a.target.length);
    // A container path → where it is here. The service's own settings must name a path a
    // volume provides (or the image's WORKDIR); the image's ENV may name folders of the image
    // that this service does not use (the viewer has no /models): an empty folder stands in.
    const toHost = (containerPath, fromImage) => {
      for (const m of mounts) {
        if (containerPath === m.target || containerPath.startsWith(`${m.target}/`)) {
          return m.host + containerPath.slice(m.target.length);
        }
      }
      if (containerPath === image.workdir || containerPath.startsWith(`${image.workdir}/`)) {
        return scratch + containerPath.slice(image.workdir.length);
      }
      assert.ok(fromImage, `${name}: ${containerPath} is a container path that no volume provides`);
      const standIn = path.join(scratch, 'image', containerPath);
      fs.mkdirSync(standIn, { recursive: true });
      return standIn;
    };

    const env = { ...image.env, ...service.environment };
    assert.equal(env.KADR_BROKERS, 'kafka:9092', `${name}: KADR_BROKERS`);
    env.KADR_BROKERS = bootstrap;
    env.KADR_HOST = '127.0.0.1';
    if (env.KADR_HTTP_PORT) env.KADR_HTTP_PORT = String(ports[name]);
    for (const [key, value] of Object.entries(env)) {
      const parts = value.split(':');
      const fromImage = !Object.hasOwn(service.environment, key);
      if (value.startsWith('/') && parts.every((p) => p.startsWith('/'))) {
        env[key] = parts.map((p) => toHost(p, fromImage)).join(':');
      }
    }
    // The stream step reads media/vtest.avi: file sources only from an operator's directory
    // (in a container, a volume mounted there with KADR_SOURCE_DIRS; here the host folder).
    if (name === 'camera' && streamVideo) env.KADR_SOURCE_DIRS = path.dirname(streamVideo);
    return { args: service.command ?? ['up'], env: { ...baseEnv(), ...env }, cwd: scratch };
  }

  // The service's compose health check, run once with its environment.
  async function healthCheck(name) {
    const test = services[name].healthcheck?.test;
    assert.ok(Array.isArray(test) && test[0] === 'CMD' && test[1] === 'kadr',
      `${name}: health check ${JSON.stringify(test)} is not ["CMD", "kadr", ...]`);
    const { env, cwd } = launches[name] ?? launchOf(name);
    return runOnce(bin, test.slice(2), { env, cwd, timeoutMs: 15_000 });
  }

  before(async () => {
    bin = requireKadrBin();
    services = await readComposeServices();
    image = imageEnvironment();
    console.log(`image environment from ${image.source}: ${JSON.stringify(image.env)}, workdir ${image.workdir}`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kadr-deploy-'));
    for (const [name, s] of Object.entries(services)) {
      if (isKadrImage(s.image) && s.environment.KADR_HTTP_PORT) ports[name] = await freePort();
    }
    broker = new Child('broker', kafkaScript,
      ['--dir', path.join(tmp, 'kafka'), '--port', '0', '--set', 'num.partitions=4'],
      { env: baseEnv(), cwd: tmp });
    children.push(broker);
    bootstrap = await eventually(() => {
      if (!broker.running) throw new Error(`scripts/kafka.sh exited\n${broker.log}`);
      return broker.log.match(/^bootstrap: (127\.0\.0\.1:\d+)$/m)?.[1];
    }, { timeoutMs: 120_000, what: 'bootstrap line from scripts/kafka.sh' });
  });

  after(async () => {
    for (const c of [...children].reverse()) await c.stop(5_000);
    if (!tmp) return;
    if (failed) {
      const logFile = path.join(tmp, 'processes.log');
      fs.writeFileSync(logFile, children.map((c) => `--- ${c.name} ---\n${c.log}`).join('\n'));
      console.log(`${dumpLogs()}\nfull logs and data: ${logFile}`);
    } else {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  step('a health check fails while its service is not running', async () => {
    const r = await healthCheck('gateway');
    assert.notEqual(r.code, 0, `kadr health passed with nothing on port ${ports.gateway}: ${r.output}`);
  });

  step('the topics job exits 0, and again when the topics exist', async () => {
    const jobs = Object.entries(services).filter(([, s]) => isKadrImage(s.image) && s.restart === 'on-failure');
    assert.deepEqual(jobs.map(([n]) => n), ['topics']);
    const { args, env, cwd } = launchOf('topics');
    for (const attempt of ['first', 'second']) {
      const r = await runOnce(bin, args, { env, cwd, timeoutMs: 60_000 });
      assert.equal(r.code, 0, `${attempt} \`kadr ${args.join(' ')}\` exited ${r.code} (${r.signal}):\n${r.output}`);
    }
  });

  step('every service starts with its compose command and environment, and its health check passes', async () => {
    const names = Object.entries(services)
      .filter(([, s]) => isKadrImage(s.image) && s.restart !== 'on-failure')
      .map(([n]) => n);
    assert.ok(names.length >= 4, `services: ${names}`);
    for (const name of names) {
      launches[name] = launchOf(name);
      const { args, env, cwd } = launches[name];
      long[name] = new Child(name, bin, args, { env, cwd });
      children.push(long[name]);
    }
    await Promise.all(names.map((name) => eventually(async () => {
      if (!long[name].running) throw new Error(`${name} exited`);
      const r = await healthCheck(name);
      return r.code === 0 ? r : { ok: false, code: r.code, output: r.output.trim() };
    }, { timeoutMs: START_TIMEOUT_MS, intervalMs: 500, what: `${name}: health check` })
      .catch((error) => assert.fail(`${error.message}\n${long[name].tail()}`))));
  });

  step('an image sent to the gateway comes back with detections from the worker process', async () => {
    const gateway = `http://127.0.0.1:${ports.gateway}`;
    await eventually(async () => (await fetch(`${gateway}/readyz`)).status === 200,
      { timeoutMs: START_TIMEOUT_MS, what: 'gateway /readyz (broker and a live worker)' })
      .catch((error) => assert.fail(`${error.message}\n${dumpLogs()}`));
    const body = await detect(gateway);
    jobId = body.job_id;
    assert.ok(body.detections.length > 0, `no detections: ${JSON.stringify(body)}`);
    assert.ok(body.detections.some((d) => d.label === 'bus'), `no bus in bus.jpg: ${JSON.stringify(body.detections)}`);
    const workers = Object.keys(long).filter((n) => services[n].command?.[0] === 'worker');
    let processed = 0;
    for (const w of workers) {
      const health = await (await fetch(`http://127.0.0.1:${ports[w]}/healthz`)).json();
      processed += health.processed ?? 0;
    }
    assert.ok(processed >= 1, 'the worker processes report no processed frame');
  });

  async function detect(base) {
    const image = fs.readFileSync(busJpg);
    return eventually(async () => {
      const response = await fetch(`${base}/api/v1/detect?timeout_ms=20000`, {
        method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: image,
      });
      const text = await response.text();
      // 504/503 while the worker is still joining its consumer group.
      if (response.status !== 200) return { ok: false, status: response.status, text };
      return JSON.parse(text);
    }, { timeoutMs: 90_000, intervalMs: 500, what: `POST ${base}/api/v1/detect` });
  }

  // The proxy's origin once the first proxy step has started it; the jobs the steps share.
  let origin = '';
  let imageJobId = '';
  const gatewayUrl = () => `http://127.0.0.1:${ports.gateway}`;
  const needProxy = () => assert.ok(origin, 'the proxy did not start (see the first proxy step)');
  const needImageJob = () => assert.ok(imageJobId, 'no image job was submitted (see the image job step)');

  // POST /api/v1/jobs: 202 with the job and its Location.
  async function submitJob(base, body, contentType) {
    const response = await fetch(`${base}/api/v1/jobs`, {
      method: 'POST', headers: { 'content-type': contentType }, body,
    });
    const text = await response.text();
    assert.equal(response.status, 202, `POST ${base}/api/v1/jobs (${contentType}): ${text}`);
    const job = JSON.parse(text);
    assert.ok(job.id, `no job id: ${text}`);
    assert.equal(response.headers.get('location'), `/api/v1/jobs/${job.id}`);
    return job;
  }

  // Polls GET {base}/api/v1/jobs/{id} until the job is finished; it must be done.
  async function waitDone(base, id, timeoutMs = 60_000) {
    const job = await eventually(async () => {
      const r = await fetch(`${base}/api/v1/jobs/${id}`);
      if (r.status !== 200) return { ok: false, status: r.status, text: await r.text() };
      const body = await r.json();
      return ['done', 'failed', 'cancelled'].includes(body.state) ? body : { ok: false, state: body.state, progress: body.progress };
    }, { timeoutMs, what: `job ${id} finished, read at ${base}` });
    assert.equal(job.state, 'done', `job ${id}: ${JSON.stringify(job)}`);
    return job;
  }

  // GET {origin}{path}: the status (and content type) expected, the response returned.
  async function expectGet(route, status, contentType = null, init = {}) {
    const r = await fetch(`${origin}${route}`, init);
    const what = `${init.method ?? 'GET'} ${route} through the proxy`;
    assert.equal(r.status, status, `${what}: ${r.status} ${(await r.clone().text()).slice(0, 400)}`);
    if (contentType) assert.match(r.headers.get('content-type') ?? '', contentType, `${what}: content type`);
    return r;
  }

  // An image job's record, result, annotated image and thumbnail, read through the proxy.
  async function expectImageJobReadable(id) {
    const job = await waitDone(origin, id);
    assert.equal(job.kind, 'image');
    const result = await (await expectGet(`/api/v1/jobs/${id}/result`, 200, /^application\/json/)).json();
    assert.ok(result.detections.some((d) => d.label === 'bus'), `no bus in the result: ${JSON.stringify(result).slice(0, 300)}`);
    await expectGet(`/api/v1/jobs/${id}/image`, 200, /^image\/jpeg/);
    await expectGet(`/api/v1/jobs/${id}/thumbnail`, 200, /^image\/jpeg/);
  }

  step('the proxy (Debian\'s nginx, the compose template) starts and sends POST /api/v1/detect to the gateway', async () => {
    const nginx = findNginx();
    assert.ok(nginx, 'nginx not found: apt-get install nginx (scripts/setup-debian.sh does) or set KADR_NGINX');
    const service = services.proxy;
    assert.ok(service, 'no proxy service');
    const mount = service.volumes.find((v) => v.split(':')[1].startsWith('/etc/nginx/templates/'));
    assert.ok(mount, 'proxy: no template under /etc/nginx/templates');
    const [source, target] = mount.split(':');
    assert.match(target, /\.conf\.template$/);
    let conf = fs.readFileSync(path.resolve(composeDir, source), 'utf8');
    // As the image's envsubst step: only variables set in the environment are replaced.
    const env = { ...service.environment, NGINX_RESOLVER: '127.0.0.1' };
    for (const [key, value] of Object.entries(env)) {
      const [host, port] = value.split(':');
      const mapped = services[host] && ports[host] && String(services[host].environment.KADR_HTTP_PORT) === port
        ? `127.0.0.1:${ports[host]}` : value;
      conf = conf.replaceAll(`\${${key}}`, mapped);
    }
    assert.doesNotMatch(conf, /\$\{[A-Z_]+\}/, 'a template variable the proxy service does not set');
    const [published] = service.ports;
    const containerPort = published.split(':').pop();
    const listen = new RegExp(`^(\\s*)listen ${containerPort};`, 'm');
    assert.match(conf, listen, `the template does not listen on ${containerPort}, the port compose publishes`);
    proxyPort = await freePort();
    conf = conf.replace(listen, `$1listen 127.0.0.1:${proxyPort};`);
    const dir = fs.mkdtempSync(path.join(tmp, 'nginx-'));
    fs.writeFileSync(path.join(dir, 'default.conf'), conf);
    fs.writeFileSync(path.join(dir, 'nginx.conf'), [
      'daemon off;', 'worker_processes 1;', `pid ${dir}/nginx.pid;`, 'error_log stderr warn;',
      'events { worker_connections 256; }',
      'http {', '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`),
      `  include ${dir}/default.conf;`, '}', ''].join('\n'));
    const check = spawnSync(nginx, ['-t', '-p', dir, '-c', `${dir}/nginx.conf`, '-e', 'stderr'], { encoding: 'utf8' });
    assert.equal(check.status, 0, `nginx -t:\n${check.stderr}`);
    proxy = new Child('proxy', nginx, ['-p', dir, '-c', `${dir}/nginx.conf`, '-e', 'stderr'], { env: baseEnv(), cwd: dir });
    children.push(proxy);
    const healthUrl = service.healthcheck.test.at(-1).replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${proxyPort}`);
    await eventually(async () => (await fetch(healthUrl)).status === 200, { timeoutMs: 10_000, what: `proxy ${healthUrl}` });
    origin = `http://127.0.0.1:${proxyPort}`;

    const body = await detect(origin);
    assert.ok(body.detections.length > 0);
    jobId = body.job_id;
  });

  step('an image job POSTed through the proxy is read through the proxy from the viewer: job, result, image, thumbnail, list', async () => {
    needProxy();
    const job = await submitJob(origin, fs.readFileSync(busJpg), 'image/jpeg');
    assert.equal(job.kind, 'image');
    imageJobId = job.id;
    await expectImageJobReadable(imageJobId);
    // The gateway has no job list: a 200 with the job in it comes from the viewer.
    const list = await eventually(async () => {
      const r = await fetch(`${origin}/api/v1/jobs?limit=50`);
      if (r.status !== 200) return { ok: false, status: r.status, text: await r.text() };
      const body = await r.json();
      return [imageJobId, jobId].every((id) => body.jobs.some((j) => j.id === id)) ? body : { ok: false, body };
    }, { timeoutMs: 30_000, what: `jobs ${imageJobId} and ${jobId} in the list through the proxy` });
    assert.ok(list.total >= 2);
    await expectGet('/api/v1/jobs?limit=1', 200, null, { method: 'HEAD' });
  });

  step('no fallback: the gateway answers 404 to the job routes, the proxy sends them to the viewer', async () => {
    needProxy();
    needImageJob();
    for (const suffix of ['', '/result', '/image', '/thumbnail']) {
      const direct = await fetch(`${gatewayUrl()}/api/v1/jobs/${imageJobId}${suffix}`);
      assert.equal(direct.status, 404, `GET /api/v1/jobs/{id}${suffix} at the gateway's own port: the gateway answers job reads`);
      await expectGet(`/api/v1/jobs/${imageJobId}${suffix}`, 200);
    }
    // The synchronous detect's job too, and cancel: the viewer's answer (an image job cannot
    // be cancelled: 409), where the gateway has no such route.
    await expectGet(`/api/v1/jobs/${jobId}`, 200, /^application\/json/);
    const direct = await fetch(`${gatewayUrl()}/api/v1/jobs/${imageJobId}`, { method: 'DELETE' });
    assert.equal(direct.status, 404, 'DELETE /api/v1/jobs/{id} at the gateway\'s own port');
    await expectGet(`/api/v1/jobs/${imageJobId}`, 409, null, { method: 'DELETE' });
  });

  step('a video job POSTed through the proxy runs in the camera service through the shared video folder; its MP4 is served through the proxy', async () => {
    needProxy();
    const videoDir = services.gateway.environment.KADR_VIDEO_DIR;
    assert.ok(videoDir, 'gateway: no KADR_VIDEO_DIR');
    for (const name of ['camera', 'viewer']) {
      assert.equal(launches[name].env.KADR_VIDEO_DIR, launches.gateway.env.KADR_VIDEO_DIR,
        `${name}: KADR_VIDEO_DIR is not the gateway's folder (${services[name].environment.KADR_VIDEO_DIR} vs ${videoDir})`);
    }
    const clip = path.join(tmp, 'clip.mp4');
    const ffmpeg = spawnSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=10', '-t', '1',
      '-pix_fmt', 'yuv420p', '-y', clip], { encoding: 'utf8' });
    assert.ok(!ffmpeg.error && ffmpeg.status === 0, `ffmpeg (apt-get install ffmpeg) could not make a test video: ${ffmpeg.error?.message ?? ffmpeg.stderr}`);
    const job = await submitJob(origin, fs.readFileSync(clip), 'video/mp4');
    assert.equal(job.kind, 'video');
    const done = await waitDone(origin, job.id, 90_000);
    assert.equal(done.progress.frames_total, 10, `frames: ${JSON.stringify(done.progress)}`);
    assert.equal(done.progress.frames_done, 10, `frames: ${JSON.stringify(done.progress)}`);
    assert.ok(fs.existsSync(path.join(launches.gateway.env.KADR_VIDEO_DIR, `${job.id}.mp4`)),
      `no ${job.id}.mp4 in the shared video folder`);

    const mp4 = await expectGet(`/api/v1/jobs/${job.id}/video`, 200, /^video\/mp4/);
    const bytes = Buffer.from(await mp4.arrayBuffer());
    assert.equal(bytes.subarray(4, 8).toString('latin1'), 'ftyp', 'the video is not an MP4');
    const slice = await expectGet(`/api/v1/jobs/${job.id}/video`, 206, /^video\/mp4/, { headers: { range: 'bytes=0-15' } });
    assert.deepEqual(Buffer.from(await slice.arrayBuffer()), bytes.subarray(0, 16), 'Range bytes=0-15');
    const result = await (await expectGet(`/api/v1/jobs/${job.id}/result`, 200, /^application\/json/)).json();
    assert.equal(result.frames.length, 10, `result frames: ${JSON.stringify(result).slice(0, 300)}`);
    const direct = await fetch(`${gatewayUrl()}/api/v1/jobs/${job.id}/video`);
    assert.equal(direct.status, 404, 'GET /api/v1/jobs/{id}/video at the gateway\'s own port');
    await expectGet(`/api/v1/jobs/${job.id}`, 409, null, { method: 'DELETE' });  // finished
  });

  step('a second gateway (--scale gateway=2: same command and environment, another port) takes a job that is read through the proxy', async () => {
    needProxy();
    assert.equal(services.gateway.environment.KADR_INSTANCE_ID, undefined,
      'gateway: a fixed KADR_INSTANCE_ID gives every replica one reply topic');
    const port = await freePort();
    const cwd = path.join(tmp, 'containers', 'gateway-2');
    fs.mkdirSync(cwd, { recursive: true });
    const env = { ...launches.gateway.env, KADR_HTTP_PORT: String(port) };
    const second = new Child('gateway-2', bin, launches.gateway.args, { env, cwd });
    children.push(second);
    const base = `http://127.0.0.1:${port}`;
    let secondJob = '';
    let exit = null;
    try {
      await eventually(async () => {
        if (!second.running) throw new Error('gateway-2 exited');
        return (await runOnce(bin, services.gateway.healthcheck.test.slice(2), { env, cwd, timeoutMs: 15_000 })).code === 0;
      }, { timeoutMs: START_TIMEOUT_MS, intervalMs: 500, what: 'gateway-2: health check' });
      const instance = (c) => c.log.match(/gateway instance=(\S+)/)?.[1];
      assert.ok(instance(second) && instance(long.gateway), 'no "gateway instance=" log line');
      assert.notEqual(instance(second), instance(long.gateway), 'both gateways have one instance id (one reply topic)');
      await eventually(async () => (await fetch(`${base}/readyz`)).status === 200,
        { timeoutMs: START_TIMEOUT_MS, what: 'gateway-2 /readyz' });
      secondJob = (await submitJob(base, fs.readFileSync(busJpg), 'image/jpeg')).id;
      await expectImageJobReadable(secondJob);
      assert.equal((await fetch(`${gatewayUrl()}/api/v1/jobs/${secondJob}`)).status, 404, 'the first gateway knows gateway-2\'s job');
    } finally {
      exit = await second.stop();
    }
    assert.ok(exit.code === 0 && !exit.killed, `gateway-2 exited ${exit.code} (${exit.signal}) on SIGTERM\n${second.tail()}`);
    await expectGet(`/api/v1/jobs/${secondJob}`, 200);  // its gateway is gone
  });

  step('the proxy does not publish /metrics (the gateway itself serves it)', async () => {
    needProxy();
    await expectGet('/metrics', 404);
    assert.equal((await fetch(`${gatewayUrl()}/metrics`)).status, 200);
  });

  step('jobs stay readable through the proxy while the gateway that took them is stopped, and the restarted gateway serves', async () => {
    needProxy();
    needImageJob();
    const exit = await long.gateway.stop();
    assert.equal(exit.code, 0, `gateway exited ${exit.code} (${exit.signal}) on SIGTERM`);
    const down = await fetch(`${origin}/api/v1/models`);
    assert.equal(down.status, 502, 'a gateway route through the proxy while the gateway is stopped');
    await expectImageJobReadable(imageJobId);
    await expectGet(`/api/v1/jobs/${jobId}`, 200, /^application\/json/);
    const { args, env, cwd } = launches.gateway;
    long.gateway = new Child('gateway', bin, args, { env, cwd });
    children.push(long.gateway);
    await eventually(async () => (await healthCheck('gateway')).code === 0,
      { timeoutMs: START_TIMEOUT_MS, intervalMs: 500, what: 'restarted gateway: health check' });
    const again = await detect(origin);  // the restarted gateway serves (same reply topic)
    assert.ok(again.detections.length > 0);
    await expectGet(`/api/v1/jobs/${again.job_id}`, 200);
  });

  step('the proxy sends /api/v1/streams to the camera and /api/v1/streams/{id}/events and /frame to the viewer, streamed', async () => {
    needProxy();
    const empty = await fetch(`${origin}/api/v1/streams`);
    assert.equal(empty.status, 200, await empty.clone().text());
    assert.deepEqual((await empty.json()).streams, []);
    const created = await fetch(`${origin}/api/v1/streams`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ source: streamVideo, name: 'deploy-test', fps: 2, mode: 'live', loop: true }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const stream = await created.json();
    try {
      // SSE through the proxy: an event arrives while the response is still open (it would
      // sit in nginx's buffer with proxy_buffering on).
      const events = await readUntil(`${origin}/api/v1/streams/${stream.id}/events`, /event: result\ndata: \{/, 45_000);
      assert.match(events.contentType, /^text\/event-stream/);
      const frame = await eventually(async () => {
        const r = await fetch(`${origin}/api/v1/streams/${stream.id}/frame`);
        return r.status === 200 ? r : { ok: false, status: r.status };
      }, { timeoutMs: 30_000, what: 'a live frame through the proxy' });
      assert.match(frame.headers.get('content-type'), /^image\/jpeg/);
      assert.ok(frame.headers.get('kadr-seq'), 'no kadr-seq header on the live frame');
      const one = await fetch(`${origin}/api/v1/streams/${stream.id}`);
      assert.equal(one.status, 200);
      assert.equal((await one.json()).id, stream.id);
    } finally {
      const deleted = await fetch(`${origin}/api/v1/streams/${stream.id}`, { method: 'DELETE' });
      assert.equal(deleted.status, 204, await deleted.text());
    }
  });

  step('SIGTERM stops every process with exit status 0', async () => {
    const order = [proxy, ...['gateway', 'camera', 'viewer'].map((n) => long[n]),
      ...Object.keys(long).filter((n) => !['gateway', 'camera', 'viewer'].includes(n)).map((n) => long[n]),
      broker].filter(Boolean);
    const expected = ['proxy', 'broker', ...Object.entries(services)
      .filter(([, s]) => isKadrImage(s.image) && s.restart !== 'on-failure').map(([n]) => n)];
    assert.deepEqual(order.map((c) => c.name).sort(), expected.sort(), 'processes to stop');
    const exits = [];
    for (const child of order) {
      const wasRunning = child.running;
      const exit = await child.stop();
      exits.push({ name: child.name, wasRunning, ...exit });
    }
    for (const e of exits) {
      assert.ok(e.wasRunning, `${e.name} had already exited (${e.code}, ${e.signal}) before SIGTERM\n${dumpLogs()}`);
      assert.ok(!e.killed, `${e.name} did not exit within ${STOP_GRACE_MS} ms of SIGTERM`);
      // The JVM reports a SIGTERM it handled (Kafka's clean shutdown) as 128 + 15.
      const clean = e.name === 'broker' ? [0, 143] : [0];
      assert.ok(clean.includes(e.code), `${e.name} exited with ${e.code} (signal ${e.signal}) on SIGTERM\n${dumpLogs()}`);
    }
  });
});
