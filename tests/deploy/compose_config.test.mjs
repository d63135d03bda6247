// deploy/compose: Debian's `docker-compose config` accepts the compose file alone and with the
// GPU override, and what it resolves is what compose_processes.test.mjs runs (same commands,
// variables and health checks); the kadr services' KADR_* variables and kadr.json's settings
// are ones the binary reads; Kafka is KRaft with room for 16 MiB frames; scaling, health
// checks, restart policies and the GPU reservation are in the form docker-compose 1.29 needs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';

import {
  allEnvNames, composeDir, composeFile, composeGpuFile, dockerfile, envNamesOf, environmentMap,
  isKadrImage, knownEnvNames, loadYaml, readComposeServices, readYamlDocuments, requireKadrBin,
} from './support.mjs';

const MIB = 1024 * 1024;

// docker-compose with no .env and a bare environment, so every ${VAR:-default} takes its
// default (what the other checks assume).
function dockerCompose(files, args) {
  const emptyEnv = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kadr-compose-')), 'empty.env');
  fs.writeFileSync(emptyEnv, '');
  const r = spawnSync('docker-compose',
    [...files.flatMap((f) => ['-f', f]), '--project-directory', composeDir, '--env-file', emptyEnv, ...args],
    { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: os.tmpdir() } });
  if (r.error) {
    throw new Error(`docker-compose cannot run (${r.error.message}): apt-get install docker-compose ` +
                    '(scripts/setup-debian.sh does)');
  }
  return r;
}

describe('deploy/compose', () => {
  let services;
  let known;

  before(async () => {
    services = await readComposeServices();
    known = knownEnvNames(requireKadrBin());
  });

  test('docker-compose config -q accepts docker-compose.yml', () => {
    const r = dockerCompose([composeFile], ['config', '-q']);
    assert.equal(r.status, 0, `docker-compose config failed:\n${r.stderr}`);
  });

  test('docker-compose config -q accepts it with the GPU override', () => {
    const r = dockerCompose([composeFile, composeGpuFile], ['config', '-q']);
    assert.equal(r.status, 0, `docker-compose config (gpu) failed:\n${r.stderr}`);
  });

  test('docker-compose resolves the same commands, variables and health checks that the process test runs', async () => {
    const r = dockerCompose([composeFile], ['config']);
    assert.equal(r.status, 0, r.stderr);
    const yaml = await loadYaml();
    const resolved = yaml.load(r.stdout).services;
    assert.deepEqual(Object.keys(resolved).sort(), Object.keys(services).sort());
    for (const [name, ours] of Object.entries(services)) {
      const theirs = resolved[name];
      assert.deepEqual(theirs.command ?? null, ours.command ?? null, `${name}: command`);
      assert.deepEqual(environmentMap(theirs.environment), ours.environment, `${name}: environment`);
      assert.deepEqual(theirs.healthcheck?.test ?? null, ours.healthcheck?.test ?? null, `${name}: healthcheck`);
      assert.equal(theirs.image, ours.image, `${name}: image`);
    }
  });

  test('the kadr services: one per role, health check `kadr health`, restart policies, start after the topics job', () => {
    const kadr = Object.entries(services).filter(([, s]) => isKadrImage(s.image));
    const commands = kadr.map(([, s]) => s.command?.[0]);
    for (const role of ['topics', 'gateway', 'viewer', 'camera', 'worker']) {
      assert.ok(commands.includes(role), `no service runs \`kadr ${role}\``);
    }
    for (const [name, s] of kadr) {
      if (s.command[0] === 'topics') {
        assert.equal(s.restart, 'on-failure', `${name}: a one-shot job restarts on failure only`);
        assert.equal(s.depends_on?.kafka?.condition, 'service_healthy', `${name}: waits for a healthy Kafka`);
        continue;
      }
      assert.equal(s.restart, 'unless-stopped', `${name}: restart`);
      assert.deepEqual(s.healthcheck?.test, ['CMD', 'kadr', 'health'], `${name}: health check`);
      assert.ok(s.environment.KADR_HTTP_PORT, `${name}: KADR_HTTP_PORT (what \`kadr health\` asks)`);
      assert.equal(s.depends_on?.topics?.condition, 'service_completed_successfully', `${name}: after topics`);
      assert.equal(s.environment.KADR_BROKERS, 'kafka:9092', `${name}: brokers`);
    }
  });

  test('workers and gateways scale with --scale: no container_name, no host ports; a model per worker, no fixed gateway id', () => {
    const scaled = Object.entries(services)
      .filter(([, s]) => isKadrImage(s.image) && ['worker', 'gateway'].includes(s.command?.[0]));
    assert.deepEqual([...new Set(scaled.map(([, s]) => s.command[0]))].sort(), ['gateway', 'worker']);
    for (const [name, s] of scaled) {
      assert.equal(s.container_name, undefined, `${name}: container_name prevents --scale`);
      assert.equal(s.ports, undefined, `${name}: host ports collide when scaled`);
      assert.ok((s.volumes ?? []).some((v) => /:\/models:ro$/.test(v)), `${name}: models read-only at /models`);
      if (s.command[0] === 'worker') {
        assert.ok(s.environment.KADR_MODEL, `${name}: KADR_MODEL`);
        assert.equal(s.environment.KADR_HTTP_PORT, '8083', `${name}: health and metrics on 8083`);
      } else {
        // Each replica's reply topic is kadr.replies.<instance id>: the default
        // <hostname>-<port> differs per container, a fixed id would be one topic for all.
        assert.equal(s.environment.KADR_INSTANCE_ID, undefined, `${name}: a fixed KADR_INSTANCE_ID is shared by every replica`);
        assert.equal(s.hostname, undefined, `${name}: a fixed hostname makes every replica's default instance id the same`);
      }
    }
  });

  test('gateway, camera and viewer share one named video volume, mounted where KADR_VIDEO_DIR points; the image makes it writable', async () => {
    const [doc] = await readYamlDocuments(composeFile);
    const mounts = {};
    for (const role of ['gateway', 'camera', 'viewer']) {
      const entries = Object.entries(services).filter(([, s]) => isKadrImage(s.image) && s.command?.[0] === role);
      assert.equal(entries.length, 1, `one ${role} service`);
      const [[name, s]] = entries;
      const dir = s.environment.KADR_VIDEO_DIR;
      assert.ok(dir, `${name}: no KADR_VIDEO_DIR (gateway: videos refused; camera: no video jobs; viewer: no /video)`);
      const mount = (s.volumes ?? []).map((v) => v.split(':')).find(([, target]) => target === dir);
      assert.ok(mount, `${name}: no volume mounted at KADR_VIDEO_DIR ${dir}`);
      assert.notEqual(mount[2], 'ro', `${name}: the video volume is read-only`);
      mounts[name] = { source: mount[0], target: dir };
    }
    const [first, ...rest] = Object.values(mounts);
    for (const [name, m] of Object.entries(mounts)) {
      assert.deepEqual(m, first, `${name}: another video folder than ${JSON.stringify(first)}`);
    }
    assert.ok(rest.length === 2);
    assert.match(first.source, /^[A-Za-z0-9][A-Za-z0-9_.-]*$/, `the video folder ${first.source} is not a named volume`);
    assert.ok(Object.hasOwn(doc.volumes ?? {}, first.source), `volume ${first.source} is not declared under volumes:`);
    // A new named volume takes the ownership of the image's folder at its mount point; with
    // none there it would be root's, and uid 10001 could not write it.
    const text = fs.readFileSync(dockerfile, 'utf8').replace(/\\\r?\n/g, ' ');
    const owned = [...text.matchAll(/install -d -o 10001 -g 10001(?: -m \d+)?((?: \/[^\s&;]+)+)/g)]
      .flatMap((m) => m[1].trim().split(/\s+/));
    assert.ok(owned.includes(first.target), `${path.basename(dockerfile)} does not create ${first.target} owned by 10001 (creates: ${owned})`);
  });

  test('every kadr HTTP service shares one named auth volume, mounted where KADR_AUTH_FILE is; the image makes it writable', async () => {
    const [doc] = await readYamlDocuments(composeFile);
    const mounts = {};
    for (const [name, s] of Object.entries(services)) {
      if (!isKadrImage(s.image) || !s.environment.KADR_HTTP_PORT) continue;
      const file = s.environment.KADR_AUTH_FILE;
      assert.ok(file, `${name}: no KADR_AUTH_FILE (a token made at one service would not work at the others)`);
      const dir = path.posix.dirname(file);
      const mount = (s.volumes ?? []).map((v) => v.split(':')).find(([, target]) => target === dir);
      assert.ok(mount, `${name}: no volume mounted at ${dir}, the folder of KADR_AUTH_FILE`);
      assert.notEqual(mount[2], 'ro', `${name}: the auth volume is read-only (the first admin token is written there)`);
      mounts[name] = { source: mount[0], target: dir };
    }
    const [first, ...rest] = Object.values(mounts);
    assert.ok(rest.length >= 3, `auth volume mounts: ${JSON.stringify(mounts)}`);
    for (const [name, m] of Object.entries(mounts)) assert.deepEqual(m, first, `${name}: another token folder`);
    assert.ok(Object.hasOwn(doc.volumes ?? {}, first.source), `volume ${first.source} is not declared under volumes:`);
    const text = fs.readFileSync(dockerfile, 'utf8').replace(/\\\r?\n/g, ' ');
    const owned = [...text.matchAll(/install -d -o 10001 -g 10001(?: -m \d+)?((?: \/[^\s&;]+)+)/g)]
      .flatMap((m) => m[1].trim().split(/\s+/));
    assert.ok(owned.includes(first.target), `${path.basename(dockerfile)} does not create ${first.target} owned by 10001 (creates: ${owned})`);
  });

  test('the proxy answers 404 to /metrics and passes credentials through', () => {
    const conf = fs.readFileSync(path.join(composeDir, 'proxy', 'kadr.conf.template'), 'utf8');
    assert.match(conf, /location = \/metrics \{\s*return 404;\s*\}/);
    // nginx passes request headers (Authorization, Cookie) unless told otherwise.
    assert.doesNotMatch(conf, /proxy_set_header\s+(Authorization|Cookie)\s+""/i);
    assert.doesNotMatch(conf, /proxy_hide_header\s+Set-Cookie/i);
    assert.doesNotMatch(conf, /proxy_pass_request_headers\s+off/);
  });

  test('every kadr service\'s KADR_* variables are ones its command reads; kadr.json\'s settings are known', () => {
    let checked = 0;
    for (const [name, s] of Object.entries(services)) {
      if (!isKadrImage(s.image)) continue;
      const command = s.command?.[0] ?? 'up';
      const readable = envNamesOf(known, command);
      assert.ok(readable, `${name} runs \`kadr ${command}\`, which the binary does not have`);
      for (const env of Object.keys(s.environment)) {
        assert.match(env, /^KADR_/, `${name}: ${env} is not a kadr variable`);
        assert.ok(readable.has(env), `${name}: \`kadr ${command}\` does not read ${env}`);
        checked++;
      }
    }
    assert.ok(checked > 10, `only ${checked} variables checked`);
    const all = allEnvNames(known);
    const settings = JSON.parse(fs.readFileSync(path.join(composeDir, 'kadr.json'), 'utf8')).settings;
    for (const key of Object.keys(settings)) {
      assert.ok(all.has(`KADR_${key.toUpperCase()}`), `kadr.json setting "${key}": no kadr command reads KADR_${key.toUpperCase()}`);
    }
  });

  test('Kafka: KRaft (no ZooKeeper), 16 MiB frames fit on every topic, health check with kafka-broker-api-versions.sh', () => {
    const kafka = services.kafka;
    assert.ok(kafka, 'no kafka service');
    assert.ok(!Object.keys(services).some((n) => /zookeeper/i.test(n)), 'a ZooKeeper service');
    const env = kafka.environment;
    assert.ok(!Object.keys(env).some((k) => /ZOOKEEPER/.test(k)), 'ZooKeeper settings');
    assert.deepEqual(env.KAFKA_PROCESS_ROLES.split(',').sort(), ['broker', 'controller']);
    assert.ok(env.KAFKA_NODE_ID && env.KAFKA_CONTROLLER_QUORUM_VOTERS && env.CLUSTER_ID);
    // The shared broker settings come from deploy/kafka/broker.properties (what the tests run
    // Apache Kafka with), mounted as the image's server.properties; the environment names only
    // this node (and may override num.partitions through KADR_PARTITIONS).
    const propsFile = path.join(composeDir, '..', 'kafka', 'broker.properties');
    const props = Object.fromEntries(fs.readFileSync(propsFile, 'utf8').split('\n')
      .map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    assert.ok((kafka.volumes ?? []).some((v) => v === '../kafka/broker.properties:/mnt/shared/config/server.properties:ro'),
      'broker.properties mounted as /mnt/shared/config/server.properties');
    for (const key of Object.keys(env).filter((k) => k.startsWith('KAFKA_'))) {
      const prop = key.slice('KAFKA_'.length).toLowerCase().replaceAll('_', '.');
      if (prop === 'num.partitions' || prop === 'heap.opts') continue;
      assert.ok(!(prop in props), `${key} repeats ${prop} of broker.properties: set it in one place`);
    }
    const messageMax = Number(props['message.max.bytes']);
    assert.ok(messageMax >= 17 * MIB, `message.max.bytes ${messageMax} < 17 MiB`);
    assert.ok(Number(props['replica.fetch.max.bytes']) >= messageMax, 'replica.fetch.max.bytes < message.max.bytes');
    assert.ok(Number(props['socket.request.max.bytes'] ?? 104857600) >= messageMax, 'socket.request.max.bytes');
    assert.equal(props['auto.create.topics.enable'], 'true', 'gateways\' reply topics are auto-created');
    assert.match(env.KAFKA_ADVERTISED_LISTENERS, /\/\/kafka:9092\b/, 'kadr services reach kafka:9092');
    assert.match(kafka.healthcheck.test.join(' '), /kafka-broker-api-versions\.sh --bootstrap-server localhost:9092/);
    assert.ok((kafka.volumes ?? []).some((v) => v.endsWith(':' + env.KAFKA_LOG_DIRS)), 'data volume on log.dirs');
  });

  test('the proxy is the one public origin; nothing else publishes a host port', () => {
    const published = Object.entries(services).filter(([, s]) => s.ports?.length);
    assert.deepEqual(published.map(([n]) => n), ['proxy']);
    assert.deepEqual(services.proxy.ports, ['8080:8080']);
    for (const [name, addr] of [['gateway', 'GATEWAY_ADDR'], ['viewer', 'VIEWER_ADDR'], ['camera', 'CAMERA_ADDR']]) {
      assert.equal(services.proxy.environment[addr], `${name}:${services[name].environment.KADR_HTTP_PORT}`, addr);
    }
  });

  test('the proxy template: every /api/v1/jobs/{id} route to the viewer, the list by method, no fallback from a gateway', () => {
    const template = fs.readFileSync(path.join(composeDir, 'proxy', 'kadr.conf.template'), 'utf8');
    const config = template.replace(/#.*$/gm, '');
    assert.doesNotMatch(config, /\berror_page\b|\bproxy_intercept_errors\b/, 'a fallback on a backend\'s error status');
    const jobs = config.match(/location \/api\/v1\/jobs\/ \{([^}]*)\}/);
    assert.ok(jobs, 'no prefix location /api/v1/jobs/ (the job, its result, image, thumbnail, video; DELETE)');
    assert.match(jobs[1], /proxy_pass http:\/\/\$kadr_viewer;/);
    const otherJobs = [...config.matchAll(/location\s+(?:[=~^*]+\s+)?(\S*jobs\S*)\s*\{/g)].map((m) => m[1]);
    assert.deepEqual(otherJobs.sort(), ['/api/v1/jobs', '/api/v1/jobs/'], 'other locations for job routes');
    const list = config.match(/map \$request_method \$kadr_jobs_list_backend \{([\s\S]*?)\n\}/);
    assert.ok(list, 'no method map for /api/v1/jobs');
    assert.match(list[1], /^\s*GET\s+\$\{VIEWER_ADDR\};/m);
    assert.match(list[1], /^\s*HEAD\s+\$\{VIEWER_ADDR\};/m);
    assert.match(list[1], /^\s*default\s+\$\{GATEWAY_ADDR\};/m);
  });

  test('the proxy template: live view unbuffered with a long read timeout, uploads up to the video limit', () => {
    // The viewer also sends `X-Accel-Buffering: no`, so the process test cannot tell whether
    // the template turns buffering off; other proxies in front need it said here.
    const template = fs.readFileSync(path.join(composeDir, 'proxy', 'kadr.conf.template'), 'utf8');
    const live = template.match(/location ~ \^\/api\/v1\/streams\/\[\^\/\]\+\/\(live\|events\|frame\)\$ \{([^}]*)\}/);
    assert.ok(live, 'no location for /api/v1/streams/{id}/live|events|frame');
    assert.match(live[1], /^\s*proxy_buffering off;/m);
    const timeout = live[1].match(/proxy_read_timeout (\d+)(s|m|h);/);
    assert.ok(timeout, 'no proxy_read_timeout on the live view');
    const seconds = Number(timeout[1]) * { s: 1, m: 60, h: 3600 }[timeout[2]];
    assert.ok(seconds >= 600, `live view read timeout ${seconds} s: an idle stream sends a keep-alive every 10 s, but a client waits longer for a connecting one`);
    const body = template.match(/client_max_body_size (\d+)m;/);
    const settings = JSON.parse(fs.readFileSync(path.join(composeDir, 'kadr.json'), 'utf8')).settings;
    assert.ok(body && Number(body[1]) >= settings.max_video_mb, `client_max_body_size below max_video_mb ${settings.max_video_mb}`);
  });

  test('the GPU override: CUDA image, KADR_DEVICE=cuda, an nvidia device reservation docker-compose 1.29 can start', async () => {
    const gpu = await readComposeServices(composeGpuFile);
    assert.ok(Object.keys(gpu).length >= 1);
    for (const [name, s] of Object.entries(gpu)) {
      assert.ok(services[name], `${name} overrides a service the base file does not have`);
      assert.equal(services[name].command?.[0], 'worker', `${name}: only workers get a GPU`);
      assert.ok(isKadrImage(s.image) && s.image !== services[name].image, `${name}: CUDA image`);
      assert.equal(s.environment.KADR_DEVICE, 'cuda');
      assert.ok(envNamesOf(known, 'worker').has('KADR_DEVICE'), '`kadr worker` does not read KADR_DEVICE');
      const devices = s.deploy?.resources?.reservations?.devices;
      assert.ok(Array.isArray(devices) && devices.length === 1, `${name}: one device reservation`);
      const [d] = devices;
      assert.equal(d.driver, 'nvidia');
      assert.ok(d.capabilities.includes('gpu'));
      // compose 1.29's Project.get_device_requests: an int or "all", checked only at `up`.
      assert.ok(Number.isInteger(d.count) || d.count === 'all', `${name}: count ${JSON.stringify(d.count)} must be an integer or "all"`);
    }
  });
});
