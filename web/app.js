// kadr web UI: the Detect and History views over the REST API of docs/api.md.
// Plain ES module, no framework, no build step, no network access beyond kadr's own API.
//
// Views are <section data-view="NAME"> elements switched by the URL hash (#/detect,
// #/history, #/history/<job id>); a new page (Streams) adds a nav link, a section and an
// entry in `views` below.

const API = '/api/v1';

// ---- small helpers -----------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const formatMs = (ms) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
const formatPx = (v) => (Number.isFinite(v) ? Math.round(v).toString() : '–');

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
function formatWhen(ms) {
  if (!Number.isFinite(ms)) return '';
  const seconds = Math.round((ms - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 60) return relativeFormat.format(seconds, 'second');
  if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), 'minute');
  if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), 'hour');
  return new Date(ms).toLocaleString();
}

// ---- API access --------------------------------------------------------------------------

// A failed request: the HTTP status and the code/message of kadr's JSON error body
// ({"error": {"code", "message"}}), or a client-side description when there is none.
class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {
      ...options,
      headers: { Accept: 'application/json', ...(options.headers || {}) },
    });
  } catch (error) {
    throw new ApiError(0, 'unreachable', `Cannot reach the kadr server (${error.message}).`);
  }
  const text = await response.text();
  let body = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const error = body && typeof body.error === 'object' ? body.error : null;
    const fallback = text && !body ? text.trim().slice(0, 300) : response.statusText;
    throw new ApiError(
      response.status,
      (error && error.code) || `http_${response.status}`,
      (error && error.message) || fallback || `HTTP ${response.status}`,
      response.headers.get('Retry-After'),
    );
  }
  return { status: response.status, body };
}

// ---- the error alert ---------------------------------------------------------------------

// What each error code of docs/api.md means for the user.
const ERROR_HINTS = {
  invalid_argument: 'The server could not use this input.',
  not_found: 'Not found.',
  too_large: 'The image is too large.',
  unsupported: 'This is not an image format kadr reads.',
  resource_exhausted: 'The server is busy.',
  unavailable: 'The model or a service it needs is not available right now.',
  deadline_exceeded: 'No result in time.',
  internal: 'Server error.',
  unreachable: 'Check that kadr is running.',
};

const alertBox = byTestId('error');

const sentence = (text) => {
  const trimmed = String(text).trim();
  if (!trimmed) return '';
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
};

// Shows `error` (an ApiError or any Error) in the alert; `context` says what failed.
function showError(error, context = 'Something went wrong.') {
  const code = error.code || 'error';
  byTestId('error-title').textContent = context;
  const parts = [sentence(error.message || String(error))];
  if (ERROR_HINTS[code]) parts.push(ERROR_HINTS[code]);
  if (error.retryAfter) parts.push(`Try again in ${error.retryAfter} s.`);
  byTestId('error-message').textContent = parts.join(' ');
  byTestId('error-code').textContent = error.status ? `${code} · HTTP ${error.status}` : code;
  alertBox.dataset.code = code;
  alertBox.hidden = false;
}

function clearError() {
  alertBox.hidden = true;
  delete alertBox.dataset.code;
}

byTestId('error-close').addEventListener('click', clearError);

// ---- result rendering (shared by Detect and History) -------------------------------------

const STAGES = [
  ['gateway', 'Gateway'],
  ['queue', 'Queue'],
  ['decode', 'Decode'],
  ['preprocess', 'Preprocess'],
  ['inference', 'Inference'],
  ['postprocess', 'Postprocess'],
  ['draw', 'Draw'],
  ['encode', 'Encode'],
];

function renderTimings(root, timings = {}) {
  const known = new Set(STAGES.map(([key]) => key).concat('total'));
  const stages = STAGES.filter(([key]) => Number.isFinite(timings[key]));
  for (const [key, value] of Object.entries(timings)) {
    if (!known.has(key) && Number.isFinite(value)) stages.push([key, key]);
  }
  const sum = stages.reduce((acc, [key]) => acc + Math.max(0, timings[key]), 0);
  const total = Number.isFinite(timings.total) ? timings.total : sum;

  const bar = byTestId('timing-bar', root);
  const list = $('.timing-list', root);
  bar.replaceChildren();
  list.replaceChildren();
  bar.setAttribute(
    'aria-label',
    stages.map(([key, name]) => `${name} ${formatMs(timings[key])} ms`).join(', '),
  );
  stages.forEach(([key, name], index) => {
    const value = timings[key];
    const share = sum > 0 ? (Math.max(0, value) / sum) * 100 : 0;
    bar.append(
      el('span', {
        class: `segment s${index % 8}`,
        style: `flex-basis: ${share.toFixed(2)}%`,
        title: `${name}: ${formatMs(value)} ms`,
        dataset: { stage: key },
      }),
    );
    list.append(
      el(
        'li',
        { 'data-testid': `timing-${key}`, dataset: { stage: key } },
        el('span', { class: `swatch s${index % 8}`, 'aria-hidden': 'true' }),
        el('span', { class: 'stage', text: name }),
        el('span', { class: 'ms', text: `${formatMs(value)} ms` }),
      ),
    );
  });
  byTestId('timing-total', root).textContent = stages.length
    ? `total ${formatMs(total)} ms`
    : 'not reported';
}

function renderDetections(root, result) {
  const detections = [...(result.detections || [])].sort((a, b) => (b.score ?? 0) - (a.score ?? 0));
  const tbody = $('tbody', byTestId('detections-table', root));
  byTestId('detections-count', root).textContent = `(${detections.length})`;
  tbody.replaceChildren();
  if (detections.length === 0) {
    tbody.append(
      el('tr', { class: 'empty' }, el('td', { colspan: '6', text: 'No objects above the threshold.' })),
    );
    return;
  }
  const frame = byTestId('image-frame', root);
  const highlight = $('.box-highlight', frame);
  const size = result.image || {};
  for (const d of detections) {
    const box = d.box || {};
    const label = d.label || `class ${d.class_id ?? '?'}`;
    const row = el(
      'tr',
      { 'data-testid': 'detection-row', dataset: { label }, tabindex: '0' },
      el('td', { class: 'label', 'data-testid': 'detection-label', text: label }),
      el('td', { class: 'num', text: `${((d.score ?? 0) * 100).toFixed(1)}%` }),
      el('td', { class: 'num', text: formatPx(box.x) }),
      el('td', { class: 'num', text: formatPx(box.y) }),
      el('td', { class: 'num', text: formatPx(box.width) }),
      el('td', { class: 'num', text: formatPx(box.height) }),
    );
    // Hovering a row outlines its box on the image (coordinates are in image pixels).
    const show = () => {
      if (!size.width || !size.height || !Number.isFinite(box.x)) return;
      Object.assign(highlight.style, {
        left: `${(box.x / size.width) * 100}%`,
        top: `${(box.y / size.height) * 100}%`,
        width: `${(box.width / size.width) * 100}%`,
        height: `${(box.height / size.height) * 100}%`,
      });
      highlight.hidden = false;
    };
    const hide = () => {
      highlight.hidden = true;
    };
    row.addEventListener('mouseenter', show);
    row.addEventListener('focus', show);
    row.addEventListener('mouseleave', hide);
    row.addEventListener('blur', hide);
    tbody.append(row);
  }
}

// Replaces `container`'s content with the result of one job.
function renderResult(container, result, { sourceName } = {}) {
  const fragment = $('#result-template').content.cloneNode(true);
  const root = fragment.firstElementChild;
  const image = byTestId('result-image', root);
  const caption = byTestId('result-caption', root);
  const size = result.image || {};
  const parts = [result.model, size.width && size.height ? `${size.width}×${size.height}` : null];
  if (sourceName) parts.unshift(sourceName);
  caption.textContent = parts.filter(Boolean).join(' · ');

  if (result.annotated_image) {
    image.src = result.annotated_image;
    image.alt = `Annotated result of ${result.model || 'the model'}`;
    image.addEventListener('error', () => {
      caption.textContent = 'The annotated image could not be loaded.';
    });
  } else {
    byTestId('image-frame', root).replaceChildren(
      el('div', { class: 'no-image', text: 'No annotated image for this job (draw=0).' }),
    );
  }

  renderTimings(root, result.timings_ms);
  renderDetections(root, result);

  const links = byTestId('result-links', root);
  if (result.job_id) {
    const jobPath = `${API}/jobs/${encodeURIComponent(result.job_id)}`;
    links.append(
      'Job ',
      el('code', { 'data-testid': 'result-job-id', text: result.job_id }),
      ' · ',
      el('a', { href: `${jobPath}/result`, target: '_blank', rel: 'noopener', text: 'JSON' }),
    );
    if (result.annotated_image) {
      links.append(
        ' · ',
        el('a', { href: result.annotated_image, target: '_blank', rel: 'noopener', text: 'image' }),
      );
    }
  }
  container.replaceChildren(root);
}

function renderPlaceholder(container, ...lines) {
  container.replaceChildren(
    el('div', { class: 'placeholder' }, ...lines.map((line) => el('p', { text: line }))),
  );
}

function setBusy(container, busy, text) {
  container.setAttribute('aria-busy', String(busy));
  if (busy) {
    container.replaceChildren(
      el('div', { class: 'placeholder busy' }, el('span', { class: 'spinner', 'aria-hidden': 'true' }), el('p', { text })),
    );
  }
}

// ---- Detect view -------------------------------------------------------------------------

const detectForm = byTestId('detect-form');
const modelSelect = byTestId('model-select');
const modelInfo = byTestId('model-info');
const fileInput = byTestId('file-input');
const dropZone = byTestId('drop-zone');
const filePreview = byTestId('file-preview');
const fileNameLabel = byTestId('file-name');
const confEnabled = byTestId('conf-enabled');
const confSlider = byTestId('conf-slider');
const confValue = byTestId('conf-value');
const submitButton = byTestId('submit');
const detectResult = byTestId('result');

let models = [];
let chosenFile = null;
let previewUrl = null;
let detecting = false;

function modelReason(model) {
  if (model.available) return '';
  if (model.state === 'failed') {
    const error = model.error;
    const text = typeof error === 'string' ? error : error && error.message;
    return text ? `failed to load: ${text}` : 'failed to load';
  }
  if (model.reason) return model.reason;
  return 'no live worker serves it';
}

function describeModel(model) {
  if (!model) return '';
  const parts = [];
  if (model.family) parts.push(model.family);
  if (model.task) parts.push(model.task);
  if (model.input && model.input.width) parts.push(`${model.input.width}×${model.input.height}`);
  if (Array.isArray(model.labels)) parts.push(`${model.labels.length} classes`);
  if (Number.isFinite(model.workers)) {
    parts.push(`${model.workers} worker${model.workers === 1 ? '' : 's'}`);
  }
  return parts.join(' · ');
}

function updateModelInfo() {
  const model = models.find((m) => m.name === modelSelect.value);
  modelInfo.classList.toggle('warn', Boolean(model && !model.available));
  if (!model) {
    modelInfo.textContent = models.length ? '' : 'No models are configured.';
  } else if (!model.available) {
    modelInfo.textContent = `Unavailable: ${modelReason(model)}.`;
  } else {
    modelInfo.textContent = describeModel(model);
  }
  updateSubmit();
}

async function loadModels() {
  let body;
  try {
    ({ body } = await request(`${API}/models`));
  } catch (error) {
    if (!models.length) {
      modelSelect.replaceChildren(el('option', { value: '', text: 'Models unavailable' }));
      showError(error, 'Could not load the model list.');
    }
    return;
  }
  const fresh = Array.isArray(body && body.models) ? body.models : [];
  // Rebuilding the options closes an open picker, so only do it when something changed.
  const signature = (list) => JSON.stringify(list.map((m) => [m.name, m.available, m.state, m.workers]));
  if (models.length && signature(fresh) === signature(models)) return;
  models = fresh;
  const previous = modelSelect.value;
  modelSelect.replaceChildren(
    ...models.map((m) =>
      el('option', {
        value: m.name,
        disabled: !m.available,
        'data-available': String(Boolean(m.available)),
        title: m.available ? describeModel(m) : modelReason(m),
        text: m.available ? m.name : `${m.name} (unavailable: ${modelReason(m)})`,
      }),
    ),
  );
  if (!models.length) {
    modelSelect.append(el('option', { value: '', text: 'No models configured' }));
  }
  const pick = [previous, body && body.default, ...models.map((m) => m.name)].find((name) =>
    models.some((m) => m.name === name && m.available),
  );
  modelSelect.value = pick || (models[0] ? models[0].name : '');
  updateModelInfo();
}

function chooseFile(file) {
  if (!file) return;
  chosenFile = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  filePreview.src = previewUrl;
  filePreview.hidden = false;
  filePreview.onerror = () => {
    filePreview.hidden = true;
  };
  fileNameLabel.textContent = `${file.name || 'pasted image'} · ${formatBytes(file.size)}`;
  dropZone.dataset.state = 'chosen';
  clearError();
  updateSubmit();
}

function updateSubmit() {
  const model = models.find((m) => m.name === modelSelect.value);
  submitButton.disabled = detecting || !chosenFile || !model || !model.available;
}

async function detect() {
  if (!chosenFile || detecting) return;
  clearError();
  const params = new URLSearchParams();
  if (modelSelect.value) params.set('model', modelSelect.value);
  if (confEnabled.checked) params.set('conf', confSlider.value);
  detecting = true;
  updateSubmit();
  submitButton.textContent = 'Detecting…';
  setBusy(detectResult, true, `Running ${modelSelect.value || 'the default model'}…`);
  try {
    const { body } = await request(`${API}/detect?${params}`, {
      method: 'POST',
      body: chosenFile,
      headers: {
        'Content-Type': chosenFile.type || 'application/octet-stream',
        // The gateway keeps the name for the history (source_name). Header values must be
        // Latin-1 and the name is quoted, so anything else becomes '_'.
        ...(chosenFile.name
          ? { 'Content-Disposition': `attachment; filename="${chosenFile.name.replace(/[^\x20-\x7e]|["\\]/g, '_')}"` }
          : {}),
      },
    });
    renderResult(detectResult, body, { sourceName: chosenFile.name });
    historyStale = true;
  } catch (error) {
    renderPlaceholder(detectResult, 'No result: see the message above.');
    showError(error, 'Detection failed.');
  } finally {
    detecting = false;
    detectResult.setAttribute('aria-busy', 'false');
    submitButton.textContent = 'Detect objects';
    updateSubmit();
  }
}

modelSelect.addEventListener('change', updateModelInfo);
fileInput.addEventListener('change', () => {
  chooseFile(fileInput.files[0]);
  fileInput.value = ''; // so that choosing the same file again fires 'change' again
});
confEnabled.addEventListener('change', () => {
  confSlider.disabled = !confEnabled.checked;
});
confSlider.addEventListener('input', () => {
  confValue.textContent = Number(confSlider.value).toFixed(2);
});
detectForm.addEventListener('submit', (event) => {
  event.preventDefault();
  detect();
});

for (const type of ['dragenter', 'dragover']) {
  dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    dropZone.classList.add('dragging');
  });
}
for (const type of ['dragleave', 'drop']) {
  dropZone.addEventListener(type, () => dropZone.classList.remove('dragging'));
}
dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) chooseFile(file);
});
// A file dropped beside the zone must not make the browser navigate away to it.
window.addEventListener('dragover', (event) => event.preventDefault());
window.addEventListener('drop', (event) => event.preventDefault());
document.addEventListener('paste', (event) => {
  if (currentView !== 'detect') return;
  const item = [...(event.clipboardData ? event.clipboardData.items : [])].find(
    (i) => i.kind === 'file',
  );
  if (item) chooseFile(item.getAsFile());
});

// ---- History view ------------------------------------------------------------------------

const HISTORY_PAGE = 30;
const historyList = byTestId('history-list');
const historyEmpty = byTestId('history-empty');
const historyCount = byTestId('history-count');
const historyMore = byTestId('history-more');
const historyDetail = byTestId('history-detail');
let historyLoaded = 0;
let historyStale = true;
let selectedJob = null;

function historyItem(job) {
  const thumb = job.links && job.links.thumbnail
    ? el('img', { src: job.links.thumbnail, alt: '', loading: 'lazy', 'data-testid': 'history-thumbnail' })
    : el('span', { class: 'no-thumb', 'aria-hidden': 'true', text: job.kind === 'image' ? '🖼' : '…' });
  const count = Number.isFinite(job.detections_count)
    ? `${job.detections_count} detection${job.detections_count === 1 ? '' : 's'}`
    : '';
  const created = job.created_ms ? new Date(job.created_ms) : null;
  const button = el(
    'button',
    {
      type: 'button',
      class: 'history-item',
      'data-testid': 'history-item',
      dataset: { jobId: job.id, state: job.state },
      'aria-current': job.id === selectedJob ? 'true' : false,
      onclick: () => {
        location.hash = `#/history/${encodeURIComponent(job.id)}`;
      },
    },
    el('span', { class: 'thumb' }, thumb),
    el(
      'span',
      { class: 'meta' },
      el('span', { class: 'title', text: job.source_name || job.id }),
      el(
        'span',
        { class: 'sub' },
        el('span', { 'data-testid': 'history-model', text: job.model || '' }),
        created
          ? el('time', { datetime: created.toISOString(), title: created.toLocaleString(), text: formatWhen(job.created_ms) })
          : null,
      ),
      el(
        'span',
        { class: 'sub' },
        el('span', { class: `badge state-${job.state}`, 'data-testid': 'history-state', text: job.state }),
        el('span', { 'data-testid': 'history-detections', text: count }),
      ),
    ),
  );
  if (job.state === 'failed' && job.error) button.title = `${job.error.code}: ${job.error.message}`;
  return el('li', {}, button);
}

async function loadHistory({ append = false } = {}) {
  const offset = append ? historyLoaded : 0;
  let body;
  try {
    ({ body } = await request(`${API}/jobs?limit=${HISTORY_PAGE}&offset=${offset}`));
  } catch (error) {
    showError(error, 'Could not load the history.');
    return;
  }
  const jobs = Array.isArray(body && body.jobs) ? body.jobs : [];
  const total = Number.isFinite(body && body.total) ? body.total : jobs.length;
  if (!append) historyList.replaceChildren();
  historyList.append(...jobs.map(historyItem));
  historyLoaded = offset + jobs.length;
  historyStale = false;
  historyEmpty.hidden = historyLoaded > 0;
  historyMore.hidden = historyLoaded >= total || jobs.length === 0;
  historyCount.textContent = total ? `${total} job${total === 1 ? '' : 's'}` : '';
}

async function showJob(id) {
  selectedJob = id;
  for (const item of historyList.querySelectorAll('[data-job-id]')) {
    if (item.dataset.jobId === id) item.setAttribute('aria-current', 'true');
    else item.removeAttribute('aria-current');
  }
  setBusy(historyDetail, true, 'Loading the result…');
  const path = `${API}/jobs/${encodeURIComponent(id)}`;
  try {
    const { status, body } = await request(`${path}/result`);
    if (selectedJob !== id) return;
    if (status === 202) {
      renderPlaceholder(historyDetail, `Job ${id} is ${body.state || 'still running'}; no result yet.`);
    } else {
      let sourceName;
      try {
        sourceName = (await request(path)).body.source_name;
      } catch {
        sourceName = undefined;
      }
      if (selectedJob !== id) return;
      renderResult(historyDetail, body, { sourceName });
    }
  } catch (error) {
    if (selectedJob !== id) return;
    renderPlaceholder(historyDetail, `No result for job ${id}.`);
    showError(error, 'This job has no result.');
  } finally {
    historyDetail.setAttribute('aria-busy', 'false');
  }
}

byTestId('history-refresh').addEventListener('click', () => loadHistory());
historyMore.addEventListener('click', () => loadHistory({ append: true }));

// ---- server status -----------------------------------------------------------------------

const serverStatus = byTestId('server-status');

async function pollReadiness() {
  let state;
  let text;
  try {
    const response = await fetch('/readyz', { headers: { Accept: 'application/json' } });
    state = response.ok ? 'ready' : 'degraded';
    text = response.ok ? 'ready' : 'not ready';
  } catch {
    state = 'down';
    text = 'offline';
  }
  serverStatus.dataset.state = state;
  $('.server-status-text', serverStatus).textContent = text;
}

// ---- views and routing -------------------------------------------------------------------

let currentView = null;

const views = {
  detect: { enter: () => {} },
  history: {
    enter: (param) => {
      if (historyStale || !param) loadHistory();
      if (param) showJob(param);
    },
  },
};

function route() {
  const [, name = 'detect', param] = location.hash.match(/^#\/([^/]+)?(?:\/(.+))?/) || [];
  const view = views[name] ? name : 'detect';
  for (const section of document.querySelectorAll('[data-view]')) {
    section.hidden = section.dataset.view !== view;
  }
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === view) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  currentView = view;
  views[view].enter(param ? decodeURIComponent(param) : undefined);
}

window.addEventListener('hashchange', route);
route();
loadModels();
pollReadiness();
// Workers come and go: keep the model availability and the readiness dot current.
setInterval(() => {
  if (document.visibilityState !== 'visible') return;
  pollReadiness();
  if (!detecting) loadModels();
}, 10000);
