// Shared by the deploy checks (tests/deploy/*.test.mjs): where deploy/ is, YAML loading, the
// compose file as docker-compose reads it (variables with their defaults), and the KADR_*
// environment names the kadr binary knows (from its --help).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const composeDir = path.join(repoRoot, 'deploy', 'compose');
export const composeFile = path.join(composeDir, 'docker-compose.yml');
export const composeGpuFile = path.join(composeDir, 'docker-compose.gpu.yml');
export const k8sDir = path.join(repoRoot, 'deploy', 'k8s');
export const dockerfile = path.join(repoRoot, 'deploy', 'docker', 'Dockerfile');

export async function loadYaml() {
  try {
    return await import('js-yaml');
  } catch (error) {
    throw new Error(`js-yaml is not installed: run \`npm ci --prefix tests/deploy\` ` +
                    `(scripts/setup-debian.sh does) [${error.message}]`);
  }
}

// Every YAML document of `file` (empty ones dropped).
export async function readYamlDocuments(file) {
  const yaml = await loadYaml();
  return yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d !== null && d !== undefined);
}

// ${VAR}, ${VAR:-default}, ${VAR-default} and $$ as docker-compose interpolates them, with
// `vars` as the environment (the tests pass {}: every default, as with no .env file).
export function interpolate(value, vars = {}) {
  if (typeof value === 'string') {
    return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
      (match, name, op, fallback, bare) => {
        if (match === '$$') return '$';
        const key = name ?? bare;
        const set = Object.hasOwn(vars, key);
        if (op === ':-') return set && vars[key] !== '' ? vars[key] : fallback;
        if (op === '-') return set ? vars[key] : fallback;
        return set ? vars[key] : '';
      });
  }
  if (Array.isArray(value)) return value.map((v) => interpolate(v, vars));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, vars)]));
  }
  return value;
}

// The compose file's services, YAML anchors and merge keys resolved, variables interpolated
// with their defaults; `environment` always a {NAME: "value"} map.
export async function readComposeServices(file = composeFile, vars = {}) {
  const [doc] = await readYamlDocuments(file);
  const services = {};
  for (const [name, raw] of Object.entries(doc.services ?? {})) {
    const service = interpolate(raw, vars);
    service.environment = environmentMap(service.environment);
    services[name] = service;
  }
  return services;
}

export function environmentMap(env) {
  if (!env) return {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((line) => {
      const eq = line.indexOf('=');
      return eq < 0 ? [line, ''] : [line.slice(0, eq), line.slice(eq + 1)];
    }));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

// A kadr service: one that runs the kadr image (KADR_IMAGE or KADR_CUDA_IMAGE).
export function isKadrImage(image) {
  return /(^|\/)kadr(:|$)/.test(String(image ?? ''));
}

export function requireKadrBin() {
  const bin = process.env.KADR_BIN;
  if (!bin) throw new Error('KADR_BIN is not set (the kadr binary to test; CTest passes it)');
  if (!fs.existsSync(bin)) throw new Error(`KADR_BIN=${bin} does not exist; build kadr first`);
  return bin;
}

// The KADR_* names in `kadr [command] --help`: {global: Set, commands: {name: Set}}.
export function knownEnvNames(bin) {
  const help = (args) => {
    const r = spawnSync(bin, [...args, '--help'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} --help exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  const names = (text) => new Set(text.match(/KADR_[A-Z0-9_]+/g) ?? []);
  const top = help([]);
  const section = top.split(/^Subcommands:\s*$/m)[1] ?? '';
  const commands = {};
  for (const line of section.split('\n')) {
    const m = line.match(/^\s{2}(\S+)\s/);
    if (m) commands[m[1]] = names(help([m[1]]));
  }
  if (Object.keys(commands).length === 0) throw new Error(`no subcommands in ${bin} --help:\n${top}`);
  return { global: names(top), commands };
}

// The environment names `command` reads: the global options' and the command's own.
export function envNamesOf(known, command) {
  const own = known.commands[command];
  if (!own) return null;
  return new Set([...known.global, ...own]);
}

export function allEnvNames(known) {
  return new Set([known.global, ...Object.values(known.commands)].flatMap((s) => [...s]));
}

// The image's ENV (last stage of deploy/docker/Dockerfile) when the Dockerfile exists, else
// the layout decided for it (issue 6): KADR_MODELS_DIR=/models, KADR_DATA_DIR=/var/lib/kadr,
// KADR_HOST=0.0.0.0, WORKDIR /var/lib/kadr.
export function imageEnvironment() {
  const env = { KADR_MODELS_DIR: '/models', KADR_DATA_DIR: '/var/lib/kadr', KADR_HOST: '0.0.0.0' };
  let workdir = '/var/lib/kadr';
  if (!fs.existsSync(dockerfile)) return { env, workdir, source: 'the decided image layout' };
  const text = fs.readFileSync(dockerfile, 'utf8').replace(/\\\r?\n/g, ' ');
  const stages = text.split(/^\s*FROM\s/im);
  const last = stages[stages.length - 1];
  for (const line of last.split('\n')) {
    const m = line.match(/^\s*(ENV|WORKDIR)\s+(.*)$/i);
    if (!m) continue;
    if (m[1].toUpperCase() === 'WORKDIR') {
      workdir = m[2].trim();
      continue;
    }
    const body = m[2].trim();
    const pairs = [...body.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)];
    if (pairs.length > 0) {
      for (const [, k, v] of pairs) env[k] = v.replace(/^"|"$/g, '');
    } else {
      const [k, ...rest] = body.split(/\s+/);
      env[k] = rest.join(' ');
    }
  }
  return { env, workdir, source: path.relative(repoRoot, dockerfile) };
}
