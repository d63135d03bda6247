// deploy/k8s: every manifest validates against its kind's Kubernetes OpenAPI schema
// (kubernetes-models), with fields the schema does not know refused too, and the manifests
// agree with each other and with the kadr binary: ConfigMaps, PVCs and Services that are
// referenced exist, Service selectors and Ingress backends point at something, every kadr
// container's KADR_* variables are ones its command reads (`$KADR_BIN <cmd> --help`), and the
// proxy's routes are the compose file's. When kubectl is installed, `kubectl kustomize`'s
// output is validated the same way.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';

import {
  allEnvNames, composeDir, envNamesOf, isKadrImage, k8sDir, knownEnvNames, loadYaml,
  readYamlDocuments, requireKadrBin,
} from './support.mjs';

// Validates `doc` against the schema of its apiVersion/kind. The schemas do not forbid unknown
// fields (Kubernetes' OpenAPI has no additionalProperties: false), so the validator runs on a
// proxy that records every property it reads: a property it never read is one the schema does
// not define (a typo such as `readinessprobe` would otherwise pass). Returns those paths.
export async function validateStrict(doc) {
  let module;
  try {
    module = await import(`kubernetes-models/${doc.apiVersion}`);
  } catch (error) {
    throw new Error(`no schema for apiVersion ${doc.apiVersion} (${error.message}); ` +
                    'is kubernetes-models installed (`npm ci --prefix tests/deploy`)?');
  }
  const Kind = module[doc.kind];
  if (!Kind) throw new Error(`no kind ${doc.kind} in ${doc.apiVersion}`);
  const reads = new WeakMap();
  const tracked = [];
  const wrap = (value, where) => {
    if (value === null || typeof value !== 'object') return value;
    if (!reads.has(value)) {
      reads.set(value, new Set());
      tracked.push({ value, where });
    }
    return new Proxy(value, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver);
        if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v;
        reads.get(target).add(key);
        return wrap(v, `${where}/${key}`);
      },
    });
  };
  Kind.prototype.validate.call(wrap(doc, ''));  // throws with the schema errors
  const unknown = [];
  for (const { value, where } of tracked) {
    for (const key of Object.keys(value)) if (!reads.get(value).has(key)) unknown.push(`${where}/${key}`);
  }
  return unknown;
}

const label = (doc) => `${doc.kind}/${doc.metadata?.name}`;
const podSpecOf = (doc) => {
  if (doc.kind === 'Deployment' || doc.kind === 'Job') return doc.spec?.template?.spec;
  return null;
};
const podLabelsOf = (doc) => doc.spec?.template?.metadata?.labels ?? {};
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);

// The documents of the kustomization's resources, and the names of its generated ConfigMaps.
async function readKustomization() {
  const yaml = await loadYaml();
  const kustomization = yaml.load(fs.readFileSync(path.join(k8sDir, 'kustomization.yaml'), 'utf8'));
  const docs = [];
  for (const resource of kustomization.resources ?? []) {
    for (const doc of await readYamlDocuments(path.join(k8sDir, resource))) docs.push({ doc, file: resource });
  }
  const generated = (kustomization.configMapGenerator ?? []).map((g) => g.name);
  return { kustomization, docs, generated };
}

describe('deploy/k8s manifests', () => {
  let kustomization;
  let docs;
  let generated;
  let known;

  before(async () => {
    ({ kustomization, docs, generated } = await readKustomization());
    known = knownEnvNames(requireKadrBin());
  });

  test('the kustomization lists every manifest in the folder, and those files exist', () => {
    const listed = new Set(kustomization.resources);
    for (const file of listed) assert.ok(fs.existsSync(path.join(k8sDir, file)), `${file} is listed but missing`);
    const present = fs.readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml');
    for (const file of present) assert.ok(listed.has(file), `${file} is not in kustomization.yaml's resources`);
    for (const generator of kustomization.configMapGenerator ?? []) {
      for (const file of generator.files ?? []) {
        const source = file.includes('=') ? file.split('=')[1] : file;
        assert.ok(fs.existsSync(path.join(k8sDir, source)), `configMapGenerator file ${source} is missing`);
      }
    }
  });

  test('every document validates against its kind\'s schema, with no unknown fields', async () => {
    assert.ok(docs.length >= 10, `only ${docs.length} documents`);
    for (const { doc, file } of docs) {
      let unknown;
      try {
        unknown = await validateStrict(doc);
      } catch (error) {
        assert.fail(`${file}: ${label(doc)} does not validate: ${error.message}`);
      }
      assert.deepEqual(unknown, [], `${file}: ${label(doc)} has fields its schema does not define`);
    }
  });

  test('the roles are all there: gateway (2+, instance id = pod name), viewer and camera (1, Recreate, PVC), workers, topics Job', () => {
    const byName = (kind, name) => docs.map((d) => d.doc).find((d) => d.kind === kind && d.metadata.name === name);
    const container = (doc) => podSpecOf(doc).containers[0];
    const env = (doc) => Object.fromEntries((container(doc).env ?? []).map((e) => [e.name, e]));

    const gateway = byName('Deployment', 'gateway');
    assert.ok(gateway, 'no Deployment gateway');
    assert.ok(gateway.spec.replicas >= 2, `gateway: ${gateway.spec.replicas} replica(s); gateways are stateless (ADR 0008), run several`);
    assert.deepEqual(container(gateway).args, ['gateway']);
    assert.equal(env(gateway).KADR_INSTANCE_ID?.valueFrom?.fieldRef?.fieldPath, 'metadata.name');

    for (const name of ['viewer', 'camera']) {
      const d = byName('Deployment', name);
      assert.ok(d, `no Deployment ${name}`);
      assert.equal(d.spec.replicas, 1, `${name}: one replica (it owns its volume; the viewer's recorder is one per deployment)`);
      assert.equal(d.spec.strategy?.type, 'Recreate', `${name}: Recreate`);
      assert.deepEqual(container(d).args, [name]);
      const pvcs = podSpecOf(d).volumes.filter((v) => v.persistentVolumeClaim).map((v) => v.persistentVolumeClaim.claimName);
      assert.ok(pvcs.includes(`${name}-data`), `${name}: no ${name}-data PVC`);
    }

    const workers = docs.map((d) => d.doc).filter((d) => d.kind === 'Deployment' && container(d).args?.[0] === 'worker');
    assert.ok(workers.length >= 1, 'no worker Deployment');
    for (const w of workers) {
      const c = container(w);
      assert.ok(env(w).KADR_MODEL?.value, `${label(w)}: no KADR_MODEL`);
      assert.equal(env(w).KADR_HTTP_PORT?.value, '8083', `${label(w)}: health/metrics on 8083`);
      assert.ok(c.livenessProbe && c.readinessProbe, `${label(w)}: probes`);
      assert.ok(c.resources?.requests && c.resources?.limits, `${label(w)}: resources`);
    }

    const job = docs.map((d) => d.doc).find((d) => d.kind === 'Job');
    assert.ok(job, 'no topics Job');
    assert.deepEqual(container(job).args, ['topics']);
  });

  test('gateway, camera and viewer mount one ReadWriteMany video volume where KADR_VIDEO_DIR points; the gateway keeps nothing big on its pod', () => {
    const all = docs.map((d) => d.doc);
    const pvcs = Object.fromEntries(all.filter((d) => d.kind === 'PersistentVolumeClaim').map((d) => [d.metadata.name, d]));
    const mounts = {};
    for (const role of ['gateway', 'camera', 'viewer']) {
      const d = all.find((x) => x.kind === 'Deployment' && podSpecOf(x).containers[0].args?.[0] === role);
      assert.ok(d, `no ${role} Deployment`);
      const spec = podSpecOf(d);
      const c = spec.containers[0];
      const dir = (c.env ?? []).find((e) => e.name === 'KADR_VIDEO_DIR')?.value;
      assert.ok(dir, `${label(d)}: no KADR_VIDEO_DIR (gateway: videos refused; camera: no video jobs; viewer: no /video)`);
      const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === dir);
      assert.ok(mount, `${label(d)}: nothing mounted at KADR_VIDEO_DIR ${dir}`);
      assert.notEqual(mount.readOnly, true, `${label(d)}: the video volume is read-only`);
      const claim = spec.volumes.find((v) => v.name === mount.name)?.persistentVolumeClaim;
      assert.ok(claim, `${label(d)}: ${dir} is not a PVC (pods on other nodes would not see it)`);
      assert.notEqual(claim.readOnly, true, `${label(d)}: the video PVC is read-only`);
      mounts[role] = { claim: claim.claimName, dir };
      if (role === 'gateway') {
        for (const v of spec.volumes.filter((x) => x.emptyDir)) {
          const limit = v.emptyDir.sizeLimit;
          assert.ok(limit && /^\d+(Ki|Mi)$|^1Gi$/.test(limit), `${label(d)}: emptyDir ${v.name} (${limit ?? 'unlimited'}): videos go to the shared volume, keep scratch small`);
        }
      }
    }
    assert.deepEqual(mounts.camera, mounts.gateway, 'camera: another video folder than the gateway\'s');
    assert.deepEqual(mounts.viewer, mounts.gateway, 'viewer: another video folder than the gateway\'s');
    const pvc = pvcs[mounts.gateway.claim];
    assert.ok(pvc, `PVC ${mounts.gateway.claim} does not exist`);
    assert.deepEqual(pvc.spec.accessModes, ['ReadWriteMany'], `${label(pvc)}: gateways, camera and viewer on different nodes share it`);
  });

  test('pods run as uid 10001 (nginx: 101), non-root, RuntimeDefault seccomp, read-only root filesystem, no privilege escalation or capabilities', () => {
    for (const { doc, file } of docs) {
      const spec = podSpecOf(doc);
      if (!spec) continue;
      assert.equal(spec.securityContext?.runAsNonRoot, true, `${file}: ${label(doc)} runAsNonRoot`);
      assert.equal(spec.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${file}: ${label(doc)} seccomp`);
      for (const c of spec.containers) {
        const uid = c.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
        assert.equal(uid, isKadrImage(c.image) ? 10001 : 101, `${file}: ${label(doc)}/${c.name} runAsUser`);
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${file}: ${label(doc)}/${c.name} readOnlyRootFilesystem`);
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${file}: ${label(doc)}/${c.name} allowPrivilegeEscalation`);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${file}: ${label(doc)}/${c.name} drops all capabilities`);
      }
    }
  });

  test('referenced ConfigMaps, PVCs and ports exist; every volume mount names a volume', () => {
    const configMaps = new Set([...generated,
      ...docs.filter((d) => d.doc.kind === 'ConfigMap').map((d) => d.doc.metadata.name)]);
    const configMapKeys = Object.fromEntries(docs.filter((d) => d.doc.kind === 'ConfigMap')
      .map((d) => [d.doc.metadata.name, new Set(Object.keys(d.doc.data ?? {}))]));
    const pvcs = new Set(docs.filter((d) => d.doc.kind === 'PersistentVolumeClaim').map((d) => d.doc.metadata.name));
    for (const { doc, file } of docs) {
      const spec = podSpecOf(doc);
      if (!spec) continue;
      const where = `${file}: ${label(doc)}`;
      const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
      for (const v of spec.volumes ?? []) {
        if (v.configMap) {
          assert.ok(configMaps.has(v.configMap.name), `${where}: volume ${v.name} names ConfigMap ${v.configMap.name}, which does not exist`);
          for (const item of v.configMap.items ?? []) {
            const keys = configMapKeys[v.configMap.name];
            if (keys) assert.ok(keys.has(item.key), `${where}: ConfigMap ${v.configMap.name} has no key ${item.key}`);
          }
        }
        if (v.persistentVolumeClaim) {
          assert.ok(pvcs.has(v.persistentVolumeClaim.claimName), `${where}: PVC ${v.persistentVolumeClaim.claimName} does not exist`);
        }
      }
      for (const c of spec.containers) {
        for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name), `${where}/${c.name}: mount of unknown volume ${m.name}`);
        for (const e of c.envFrom ?? []) {
          if (e.configMapRef) assert.ok(configMaps.has(e.configMapRef.name), `${where}: envFrom ConfigMap ${e.configMapRef.name} does not exist`);
        }
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.configMapKeyRef;
          if (!ref) continue;
          assert.ok(configMaps.has(ref.name), `${where}: env ${e.name} names ConfigMap ${ref.name}, which does not exist`);
          assert.ok(configMapKeys[ref.name]?.has(ref.key), `${where}: ConfigMap ${ref.name} has no key ${ref.key}`);
        }
        const portNames = new Set((c.ports ?? []).map((p) => p.name));
        for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
          const port = probe?.httpGet?.port;
          if (typeof port === 'string') assert.ok(portNames.has(port), `${where}/${c.name}: probe on unknown port ${port}`);
        }
      }
    }
  });

  test('every Service selects a Deployment\'s pods, on a port they declare; the Ingress names existing Services and ports', () => {
    const deployments = docs.map((d) => d.doc).filter((d) => d.kind === 'Deployment');
    const services = docs.map((d) => d.doc).filter((d) => d.kind === 'Service');
    assert.ok(services.length >= 3);
    for (const s of services) {
      const targets = deployments.filter((d) => matches(s.spec.selector, podLabelsOf(d)));
      assert.ok(targets.length > 0, `Service ${s.metadata.name}: selector ${JSON.stringify(s.spec.selector)} matches no Deployment's pods`);
      for (const d of targets) {
        assert.ok(matches(d.spec.selector.matchLabels, podLabelsOf(d)), `${label(d)}: selector does not match its own pods`);
        const ports = podSpecOf(d).containers.flatMap((c) => c.ports ?? []);
        for (const p of s.spec.ports) {
          const target = p.targetPort ?? p.port;
          const found = ports.some((cp) => cp.name === target || cp.containerPort === target);
          assert.ok(found, `Service ${s.metadata.name} port ${p.port} → ${target}: ${label(d)} declares no such port`);
        }
      }
    }
    const ingresses = docs.map((d) => d.doc).filter((d) => d.kind === 'Ingress');
    assert.ok(ingresses.length >= 1, 'no Ingress');
    for (const ing of ingresses) {
      for (const rule of ing.spec.rules) {
        for (const p of rule.http.paths) {
          const backend = p.backend.service;
          const service = services.find((s) => s.metadata.name === backend.name);
          assert.ok(service, `Ingress ${ing.metadata.name}: ${p.path} → unknown Service ${backend.name}`);
          const port = service.spec.ports.find((sp) => sp.name === backend.port.name || sp.port === backend.port.number);
          assert.ok(port, `Ingress ${ing.metadata.name}: ${p.path} → Service ${backend.name} has no port ${JSON.stringify(backend.port)}`);
        }
      }
    }
  });

  test('every kadr container\'s KADR_* variables are ones its command reads; the ConfigMaps hold only known names', () => {
    const all = allEnvNames(known);
    const configMapData = Object.fromEntries(docs.filter((d) => d.doc.kind === 'ConfigMap')
      .map((d) => [d.doc.metadata.name, d.doc.data ?? {}]));
    let checked = 0;
    for (const { doc, file } of docs) {
      const spec = podSpecOf(doc);
      if (!spec) continue;
      for (const c of spec.containers) {
        if (!isKadrImage(c.image)) continue;
        const command = c.args?.[0] ?? 'up';
        const readable = envNamesOf(known, command);
        assert.ok(readable, `${file}: ${label(doc)} runs \`kadr ${command}\`, which the binary does not have`);
        for (const e of c.env ?? []) {
          assert.match(e.name, /^KADR_/, `${file}: ${label(doc)} sets ${e.name}`);
          assert.ok(readable.has(e.name), `${file}: ${label(doc)}: \`kadr ${command}\` does not read ${e.name}`);
          checked++;
        }
        for (const from of c.envFrom ?? []) {
          const data = configMapData[from.configMapRef?.name] ?? {};
          for (const name of Object.keys(data)) {
            assert.match(name, /^KADR_/, `ConfigMap ${from.configMapRef.name}: ${name}`);
            assert.ok(all.has(name), `ConfigMap ${from.configMapRef.name}: no kadr command reads ${name}`);
            checked++;
          }
        }
      }
    }
    assert.ok(checked > 10, `only ${checked} variables checked`);
  });

  test('kadr.json in the ConfigMap has only settings the binary knows, and matches deploy/compose/kadr.json', () => {
    const all = allEnvNames(known);
    const configMap = docs.map((d) => d.doc).find((d) => d.kind === 'ConfigMap' && d.data?.['kadr.json']);
    assert.ok(configMap, 'no ConfigMap with kadr.json');
    const settings = JSON.parse(configMap.data['kadr.json']).settings ?? {};
    for (const key of Object.keys(settings)) {
      assert.ok(all.has(`KADR_${key.toUpperCase()}`), `kadr.json setting "${key}": no KADR_${key.toUpperCase()}`);
    }
    const compose = JSON.parse(fs.readFileSync(path.join(composeDir, 'kadr.json'), 'utf8'));
    assert.deepEqual(settings, compose.settings, 'deploy/k8s kadr.json differs from deploy/compose/kadr.json');
  });

  test('the proxy routes as in compose: proxy/kadr.conf.template is the same file', () => {
    const k8s = fs.readFileSync(path.join(k8sDir, 'proxy', 'kadr.conf.template'), 'utf8');
    const compose = fs.readFileSync(path.join(composeDir, 'proxy', 'kadr.conf.template'), 'utf8');
    assert.equal(k8s, compose, 'deploy/k8s/proxy/kadr.conf.template differs from deploy/compose/proxy/kadr.conf.template');
  });

  test('kubectl kustomize renders documents that validate (skipped without kubectl)', async (t) => {
    const which = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
    if (which.error || which.status !== 0) {
      t.skip('kubectl is not installed (optional: the files were validated above)');
      return;
    }
    const rendered = spawnSync('kubectl', ['kustomize', k8sDir], { encoding: 'utf8' });
    assert.equal(rendered.status, 0, `kubectl kustomize failed: ${rendered.stderr}`);
    const yaml = await loadYaml();
    const out = yaml.loadAll(rendered.stdout).filter(Boolean);
    assert.equal(out.length, docs.length + generated.length, 'rendered document count');
    for (const doc of out) {
      assert.equal(doc.kind === 'Namespace' ? doc.metadata.name : doc.metadata.namespace, 'kadr', `${label(doc)}: namespace`);
      assert.deepEqual(await validateStrict(doc), [], `${label(doc)} (rendered): unknown fields`);
    }
  });
});
