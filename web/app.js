// kadr web UI: the Detect (images and video jobs), Streams and History views over the REST
// API of docs/api.md. Plain ES module, no framework, no build step, no network access beyond
// kadr's own API.
//
// Views are <section data-view="NAME"> elements switched by the URL hash (#/detect,
// #/streams, #/history, #/history/<job id>); a new page adds a nav link, a section and an
// entry in `views` below (`enter`, and `leave` to release what the page holds open).

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

// A request to the API. A 401 (access control on, no or an ended session) shows the login
// form; once logged in, the request is sent again.
async function request(path, options = {}) {
  const { retried, ...fetchOptions } = options;
  let response;
  try {
    response = await fetch(path, {
      ...fetchOptions,
      headers: { Accept: 'application/json', ...(options.headers || {}) },
    });
  } catch (error) {
    throw new ApiError(0, 'unreachable', `Cannot reach the kadr server (${error.message}).`);
  }
  if (response.status === 401 && !retried) {
    await requireLogin();
    return request(path, { ...options, retried: true });
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
  too_large: 'The file is too large.',
  unsupported: 'This is not an image or video format kadr reads.',
  not_a_video: 'This file is not a video kadr reads (MP4, MOV, MKV, AVI).',
  no_such_device: 'There is no such capture device on the server.',
  source_unreachable: 'The server could not open the source.',
  failed_precondition: 'Not possible in the current state.',
  resource_exhausted: 'The server is busy.',
  unavailable: 'The model or a service it needs is not available right now.',
  deadline_exceeded: 'No result in time.',
  internal: 'Server error.',
  unreachable: 'Check that kadr is running.',
  unauthenticated: 'Log in with an API token.',
  permission_denied: 'Your token\'s role does not allow this; ask an admin.',
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
const drawEnabled = byTestId('draw-enabled');
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
  const streamPrevious = streamModelSelect.value;
  streamModelSelect.replaceChildren(...[...modelSelect.options].map((o) => o.cloneNode(true)));
  streamModelSelect.value =
    [streamPrevious, pick].find((name) => models.some((m) => m.name === name && m.available)) ||
    modelSelect.value;
  updateModelInfo();
}

// Videos go to POST /api/v1/jobs (a video job); the server sniffs the bytes, this only picks
// the path and the wording.
const VIDEO_EXTENSIONS = /\.(mp4|m4v|mov|qt|mkv|webm|avi)$/i;
const isVideo = (file) =>
  Boolean(file) && ((file.type || '').startsWith('video/') || VIDEO_EXTENSIONS.test(file.name || ''));

function chooseFile(file) {
  if (!file) return;
  chosenFile = file;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  const video = isVideo(file);
  byTestId('file-video-badge').hidden = !video;
  filePreview.hidden = true;
  filePreview.removeAttribute('src');
  if (!video) {
    previewUrl = URL.createObjectURL(file);
    filePreview.src = previewUrl;
    filePreview.hidden = false;
  }
  filePreview.onerror = () => {
    filePreview.hidden = true;
  };
  fileNameLabel.textContent = `${file.name || 'pasted image'} · ${formatBytes(file.size)}`;
  dropZone.dataset.state = 'chosen';
  dropZone.dataset.kind = video ? 'video' : 'image';
  clearError();
  updateSubmit();
}

const submitLabel = () => (isVideo(chosenFile) ? 'Process video' : 'Detect objects');

function updateSubmit() {
  const model = models.find((m) => m.name === modelSelect.value);
  submitButton.disabled = detecting || !chosenFile || !model || !model.available;
  if (!detecting) submitButton.textContent = submitLabel();
}

// The Content-Disposition that gives the gateway the file's name for the history
// (source_name). Header values must be Latin-1 and the name is quoted, so anything else
// becomes '_'.
const dispositionFor = (file) =>
  file.name
    ? { 'Content-Disposition': `attachment; filename="${file.name.replace(/[^\x20-\x7e]|["\\]/g, '_')}"` }
    : {};

async function detect() {
  if (!chosenFile || detecting) return;
  if (isVideo(chosenFile)) {
    submitVideo();
    return;
  }
  clearError();
  const params = new URLSearchParams();
  if (modelSelect.value) params.set('model', modelSelect.value);
  if (confEnabled.checked) params.set('conf', confSlider.value);
  if (!drawEnabled.checked) params.set('draw', '0');
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
        ...dispositionFor(chosenFile),
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
    updateSubmit();
  }
}

// ---- video jobs ----------------------------------------------------------------------------

const VIDEO_POLL_MS = 500;
const FINAL_STATES = new Set(['done', 'failed', 'cancelled']);
// The video job shown in the Detect view; a new upload stops following the previous one.
let detectVideoJob = null;

function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}

// Counts frames, detections and distinct track ids in a video job's per-frame result:
// {"frames":[{"index","detections":[...]}]} or JSON lines of such frames.
function summarizeFrames(text) {
  let frames = [];
  try {
    const body = JSON.parse(text);
    frames = Array.isArray(body) ? body : Array.isArray(body && body.frames) ? body.frames : [];
  } catch {
    frames = text
      .split('\n')
      .filter((line) => line.trim())
      .map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          return null;
        }
      })
      .filter(Boolean);
  }
  const tracks = new Set();
  let detections = 0;
  for (const frame of frames) {
    for (const d of frame.detections || []) {
      detections += 1;
      if (d.track_id !== undefined && d.track_id !== null) tracks.add(`${d.label}:${d.track_id}`);
    }
  }
  return { frames: frames.length, detections, tracks: tracks.size };
}

// Follows video job `job` (its JSON) inside `container`: polls it until it ends, then shows the
// annotated MP4 and a summary. Returns a handle whose stop() ends the polling.
function followVideoJob(container, job, { sourceName } = {}) {
  const fragment = $('#video-job-template').content.cloneNode(true);
  const root = fragment.firstElementChild;
  container.replaceChildren(root);
  const id = job.id;
  const path = `${API}/jobs/${encodeURIComponent(id)}`;
  const title = byTestId('video-title', root);
  const stateBadge = byTestId('video-state', root);
  const bar = byTestId('video-progress', root);
  const barText = byTestId('video-progress-text', root);
  const cancel = byTestId('video-cancel', root);
  const player = byTestId('video-player', root);
  const summary = byTestId('video-summary', root);
  const links = byTestId('video-links', root);
  root.dataset.jobId = id;
  title.textContent = sourceName || job.source_name || `Video job ${id}`;
  links.replaceChildren(
    'Job ',
    el('code', { 'data-testid': 'video-job-id', text: id }),
    ' · ',
    el('a', { href: path, target: '_blank', rel: 'noopener', text: 'status' }),
  );

  let stopped = false;
  let timer = null;
  const handle = {
    id,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };

  const render = (current) => {
    const state = current.state || 'queued';
    root.dataset.state = state;
    stateBadge.textContent = state;
    stateBadge.className = `badge state-${state}`;
    const progress = current.progress || {};
    const total = Number(progress.frames_total) || 0;
    const done = Number(progress.frames_done) || 0;
    bar.max = Math.max(total, 1);
    bar.value = Math.min(done, bar.max);
    const parts = [total ? `${done} / ${total} frames` : `${done} frames`];
    if (total) parts.push(`${Math.floor((done / total) * 100)}%`);
    if (Number.isFinite(progress.fps) && progress.fps > 0) parts.push(`${progress.fps.toFixed(1)} fps`);
    if (state === 'running' && Number.isFinite(progress.eta_ms)) parts.push(`ETA ${formatDuration(progress.eta_ms)}`);
    barText.textContent = parts.join(' · ');
    cancel.hidden = FINAL_STATES.has(state);
  };

  const finish = async (current) => {
    render(current);
    if (current.state === 'failed') {
      const error = current.error || {};
      showError(new ApiError(0, error.code || 'failed', error.message || 'the video job failed'),
        'The video job failed.');
      return;
    }
    if (current.state !== 'done') return;
    const resultLink = (current.links && current.links.result) || `${path}/result`;
    if (current.annotated === false) {
      // Submitted with draw=0: per-frame results only, no MP4 was written.
      links.append(' · ', el('span', { 'data-testid': 'video-results-only', text: 'results only (draw=0), no video' }));
    } else {
      const videoLink = (current.links && current.links.video) || `${path}/video`;
      player.src = videoLink;
      player.hidden = false;
      links.append(
        ' · ',
        el('a', { href: videoLink, download: '', 'data-testid': 'video-download', text: 'MP4' }),
      );
    }
    links.append(
      ' · ',
      el('a', { href: resultLink, target: '_blank', rel: 'noopener', text: 'per-frame JSON' }),
    );
    const facts = [];
    const info = current.video || {};
    if (info.width && info.height) facts.push(['Size', `${info.width}×${info.height}`]);
    if (Number.isFinite(info.fps)) facts.push(['Frame rate', `${info.fps.toFixed(2)} fps`]);
    const frames = info.frames ?? (current.progress || {}).frames_total;
    if (Number.isFinite(frames)) facts.push(['Frames', String(frames)]);
    try {
      const response = await fetch(resultLink);
      if (response.ok) {
        const counted = summarizeFrames(await response.text());
        facts.push(['Detections', String(counted.detections)], ['Tracks', String(counted.tracks)]);
      }
    } catch {
      // The summary is a convenience; the video is what matters.
    }
    if (stopped) return;
    summary.replaceChildren(
      ...facts.map(([name, value]) =>
        el('div', { 'data-testid': `video-summary-${name.toLowerCase().replace(/\s+/g, '-')}` },
          el('dt', { text: name }), el('dd', { text: value }))),
    );
    summary.hidden = facts.length === 0;
  };

  const poll = async () => {
    if (stopped) return;
    let current;
    try {
      ({ body: current } = await request(path));
    } catch (error) {
      if (stopped) return;
      showError(error, 'Lost track of the video job.');
      timer = setTimeout(poll, VIDEO_POLL_MS * 4);
      return;
    }
    if (stopped) return;
    if (FINAL_STATES.has(current.state)) {
      historyStale = true;
      await finish(current);
      return;
    }
    render(current);
    timer = setTimeout(poll, VIDEO_POLL_MS);
  };

  cancel.addEventListener('click', async () => {
    cancel.disabled = true;
    try {
      const { body } = await request(path, { method: 'DELETE' });
      if (body && body.state) render(body);
    } catch (error) {
      showError(error, 'Could not cancel the video job.');
    } finally {
      cancel.disabled = false;
    }
  });

  render(job);
  if (FINAL_STATES.has(job.state)) finish(job);
  else poll();
  return handle;
}

async function submitVideo() {
  clearError();
  if (detectVideoJob) detectVideoJob.stop();
  detectVideoJob = null;
  const file = chosenFile;
  const params = new URLSearchParams();
  if (modelSelect.value) params.set('model', modelSelect.value);
  if (confEnabled.checked) params.set('conf', confSlider.value);
  if (!drawEnabled.checked) params.set('draw', '0');
  detecting = true;
  updateSubmit();
  submitButton.textContent = 'Uploading…';
  setBusy(detectResult, true, `Uploading ${file.name || 'the video'} (${formatBytes(file.size)})…`);
  try {
    const { body } = await request(`${API}/jobs?${params}`, {
      method: 'POST',
      body: file,
      headers: { 'Content-Type': file.type || 'application/octet-stream', ...dispositionFor(file) },
    });
    detectVideoJob = followVideoJob(detectResult, body, { sourceName: file.name });
    historyStale = true;
  } catch (error) {
    renderPlaceholder(detectResult, 'No video job: see the message above.');
    showError(error, 'The video upload failed.');
  } finally {
    detecting = false;
    detectResult.setAttribute('aria-busy', 'false');
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
let historyVideoJob = null;

function historyItem(job) {
  const thumb = job.links && job.links.thumbnail
    ? el('img', { src: job.links.thumbnail, alt: '', loading: 'lazy', 'data-testid': 'history-thumbnail' })
    : el('span', { class: 'no-thumb', 'aria-hidden': 'true', text: job.kind === 'image' ? '🖼' : job.kind === 'video' ? '🎞' : '…' });
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
  if (historyVideoJob) historyVideoJob.stop();
  historyVideoJob = null;
  const path = `${API}/jobs/${encodeURIComponent(id)}`;
  try {
    const { body: job } = await request(path);
    if (selectedJob !== id) return;
    if (job && job.kind === 'video') {
      historyVideoJob = followVideoJob(historyDetail, job);
      return;
    }
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

// ---- Streams view ------------------------------------------------------------------------

// A browser opens at most 6 HTTP/1.1 connections per host, and a watched stream holds two
// (the MJPEG <img> and the EventSource): watching more would starve the page's own requests.
// The other streams show their latest frame (GET .../frame), refreshed with the list.
const MAX_WATCHED = 2;
const STREAMS_POLL_MS = 1000;
const LIVE_RETRY_MS = 3000;
const MAX_LIVE_DETECTIONS = 12;

const streamForm = byTestId('stream-form');
const streamSource = byTestId('stream-source');
const streamName = byTestId('stream-name');
const streamModelSelect = byTestId('stream-model');
const streamFps = byTestId('stream-fps');
const streamMode = byTestId('stream-mode');
const streamAdd = byTestId('stream-add');
const streamList = byTestId('stream-list');
const streamsEmpty = byTestId('streams-empty');
const streamsCount = byTestId('streams-count');

// id -> {root, stream, watched, source (EventSource), retry timers, ...}; cards are updated in
// place so that an open live view is not restarted by the refresh.
const streamCards = new Map();
let watchOrder = []; // ids of watched streams, oldest first
let streamsTimer = null;
let streamsActive = false;
let streamsErrorShown = false;

const streamPath = (id) => `${API}/streams/${encodeURIComponent(id)}`;
const fmtFps = (v) => (Number.isFinite(v) ? `${v.toFixed(1)} fps` : '–');
const fmtLatency = (v) => (Number.isFinite(v) ? `${formatMs(v)} ms` : '–');

function stopLive(card) {
  if (card.events) {
    card.events.close();
    card.events = null;
  }
  clearTimeout(card.liveRetry);
  clearTimeout(card.eventsRetry);
  // Removing src aborts the multipart response, which frees the server's connection.
  card.img.removeAttribute('src');
  card.img.onload = null;
  card.img.onerror = null;
}

function renderLiveDetections(card, result) {
  const detections = [...(result.detections || [])].sort((a, b) => (b.score ?? 0) - (a.score ?? 0));
  byTestId('stream-detections-count', card.root).textContent = `(${detections.length})`;
  card.detections.replaceChildren(
    ...detections.slice(0, MAX_LIVE_DETECTIONS).map((d) => {
      const label = d.label || `class ${d.class_id ?? '?'}`;
      const track = d.track_id !== undefined && d.track_id !== null ? `#${d.track_id} ` : '';
      return el(
        'li',
        { 'data-testid': 'stream-detection', dataset: { label, track: d.track_id ?? '' } },
        el('span', { class: 'label', text: `${track}${label}` }),
        el('span', { class: 'num', text: `${((d.score ?? 0) * 100).toFixed(0)}%` }),
      );
    }),
  );
  if (detections.length > MAX_LIVE_DETECTIONS) {
    card.detections.append(el('li', { class: 'hint', text: `+${detections.length - MAX_LIVE_DETECTIONS} more` }));
  }
}

function startMjpeg(card) {
  const img = card.img;
  img.onload = () => {
    card.frameBox.dataset.state = 'live';
  };
  img.onerror = () => {
    // 503 past the server's live-connection cap, or the connection dropped: try again.
    card.frameBox.dataset.state = 'error';
    card.placeholder.textContent = 'Live view unavailable; retrying…';
    img.removeAttribute('src');
    clearTimeout(card.liveRetry);
    card.liveRetry = setTimeout(() => {
      if (card.watched && streamsActive) startMjpeg(card);
    }, LIVE_RETRY_MS);
  };
  img.src = `${streamPath(card.id)}/live`;
}

function startEvents(card) {
  const source = new EventSource(`${streamPath(card.id)}/events`);
  card.events = source;
  source.addEventListener('result', (event) => {
    let result;
    try {
      result = JSON.parse(event.data);
    } catch {
      return;
    }
    card.eventCount += 1;
    card.root.dataset.events = String(card.eventCount);
    const seq = result.frame && Number.isFinite(result.frame.sequence) ? result.frame.sequence : event.lastEventId;
    card.seq.textContent = `#${seq}`;
    card.root.dataset.seq = String(seq);
    renderLiveDetections(card, result);
  });
  source.onerror = () => {
    // EventSource reconnects by itself after a dropped connection, but gives up on an HTTP
    // error (503 past the cap): then start over later.
    if (source.readyState === EventSource.CLOSED) {
      card.events = null;
      clearTimeout(card.eventsRetry);
      card.eventsRetry = setTimeout(() => {
        if (card.watched && streamsActive) startEvents(card);
      }, LIVE_RETRY_MS);
    }
  };
}

function setWatched(card, watched) {
  card.watched = watched;
  card.root.dataset.watched = String(watched);
  card.watchButton.textContent = watched ? 'Stop watching' : 'Watch';
  card.watchButton.setAttribute('aria-pressed', String(watched));
  watchOrder = watchOrder.filter((id) => id !== card.id);
  stopLive(card);
  if (watched) {
    watchOrder.push(card.id);
    while (watchOrder.length > MAX_WATCHED) {
      const oldest = streamCards.get(watchOrder[0]);
      if (oldest) setWatched(oldest, false);
      else watchOrder.shift();
    }
    if (streamsActive) {
      startMjpeg(card);
      startEvents(card);
    }
  } else {
    card.frameBox.dataset.state = 'snapshot';
    refreshSnapshot(card);
  }
}

function refreshSnapshot(card) {
  if (card.watched || !streamsActive) return;
  const stats = (card.stream && card.stream.stats) || {};
  // Only when there is something new (the camera counts results).
  const marker = `${stats.frames_done ?? ''}:${stats.last_result_ms ?? ''}`;
  if (marker === card.snapshotMarker) return;
  card.snapshotMarker = marker;
  card.img.onload = () => {
    card.frameBox.dataset.state = 'snapshot-loaded';
  };
  card.img.onerror = () => {
    card.frameBox.dataset.state = 'snapshot';
    card.img.removeAttribute('src');
  };
  card.img.src = `${streamPath(card.id)}/frame?t=${Date.now()}`;
}

async function removeStream(card) {
  card.removeButton.disabled = true;
  try {
    await request(streamPath(card.id), { method: 'DELETE' });
    dropCard(card.id);
    updateStreamsEmpty();
  } catch (error) {
    showError(error, 'Could not remove the stream.');
  } finally {
    card.removeButton.disabled = false;
  }
}

function dropCard(id) {
  const card = streamCards.get(id);
  if (!card) return;
  stopLive(card);
  watchOrder = watchOrder.filter((w) => w !== id);
  card.root.remove();
  streamCards.delete(id);
}

function createCard(stream) {
  const root = $('#stream-template').content.cloneNode(true).firstElementChild;
  const card = {
    id: stream.id,
    root,
    stream,
    watched: false,
    events: null,
    eventCount: 0,
    img: byTestId('stream-live', root),
    frameBox: byTestId('stream-frame', root),
    placeholder: byTestId('stream-live-placeholder', root),
    seq: byTestId('stream-seq', root),
    detections: byTestId('stream-detections', root),
    watchButton: byTestId('stream-watch', root),
    removeButton: byTestId('stream-remove', root),
  };
  root.dataset.streamId = stream.id;
  card.img.alt = `Live annotated frames of ${stream.name || stream.id}`;
  card.watchButton.addEventListener('click', () => setWatched(card, !card.watched));
  card.removeButton.addEventListener('click', () => removeStream(card));
  streamCards.set(stream.id, card);
  return card;
}

function updateCard(card, stream) {
  card.stream = stream;
  const root = card.root;
  const stats = stream.stats || {};
  const latency = stats.latency_ms || {};
  const state = stream.state || 'unknown';
  root.dataset.state = state;
  byTestId('stream-title', root).textContent = stream.name || stream.id;
  const badge = byTestId('stream-state', root);
  badge.textContent = state;
  badge.className = `badge state-${state}`;
  const details = [stream.model, stream.mode, Number.isFinite(stream.fps) ? `${stream.fps} fps` : null, stream.source];
  byTestId('stream-source-text', root).textContent = details.filter(Boolean).join(' · ');
  byTestId('stat-input-fps', root).textContent = fmtFps(stats.input_fps);
  byTestId('stat-output-fps', root).textContent = fmtFps(stats.output_fps);
  byTestId('stat-p50', root).textContent = fmtLatency(latency.p50);
  byTestId('stat-p95', root).textContent = fmtLatency(latency.p95);
  byTestId('stat-done', root).textContent = Number.isFinite(stats.frames_done) ? String(stats.frames_done) : '–';
  const dropped = byTestId('stat-dropped', root);
  dropped.textContent = Number.isFinite(stats.dropped_frames) ? String(stats.dropped_frames) : '–';
  const reasons = stats.dropped || {};
  dropped.title = Object.entries(reasons).map(([k, v]) => `${k}: ${v}`).join(', ');
  byTestId('stat-reconnects', root).textContent = Number.isFinite(stats.reconnects) ? String(stats.reconnects) : '–';
  root.dataset.framesDone = String(stats.frames_done ?? '');
  const error = byTestId('stream-error', root);
  const last = stats.last_error;
  if (last && last.message) {
    const when = Number.isFinite(last.at_ms) ? ` (${formatWhen(last.at_ms)})` : '';
    error.textContent = `${last.code ? `${last.code}: ` : ''}${last.message}${when}`;
    error.hidden = false;
  } else {
    error.hidden = true;
  }
  if (!card.watched) refreshSnapshot(card);
}

function updateStreamsEmpty() {
  const n = streamCards.size;
  streamsEmpty.hidden = n > 0;
  streamsCount.textContent = n ? `${n} stream${n === 1 ? '' : 's'}` : '';
}

async function loadStreams() {
  let body;
  try {
    ({ body } = await request(`${API}/streams`));
  } catch (error) {
    if (!streamsErrorShown) showError(error, 'Could not load the streams.');
    streamsErrorShown = true;
    return;
  }
  streamsErrorShown = false;
  if (!streamsActive) return;
  const streams = Array.isArray(body && body.streams) ? body.streams : [];
  const seen = new Set();
  for (const stream of streams) {
    seen.add(stream.id);
    let card = streamCards.get(stream.id);
    const fresh = !card;
    if (fresh) card = createCard(stream);
    updateCard(card, stream);
    streamList.append(card.root); // keeps the server's order (creation)
    if (fresh && watchOrder.length < MAX_WATCHED) setWatched(card, true);
  }
  for (const id of [...streamCards.keys()]) if (!seen.has(id)) dropCard(id);
  updateStreamsEmpty();
}

function pollStreams() {
  clearTimeout(streamsTimer);
  if (!streamsActive) return;
  loadStreams().finally(() => {
    if (streamsActive) streamsTimer = setTimeout(pollStreams, STREAMS_POLL_MS);
  });
}

function enterStreams() {
  if (streamsActive) return;
  streamsActive = true;
  for (const card of streamCards.values()) {
    if (card.watched) {
      startMjpeg(card);
      startEvents(card);
    }
  }
  pollStreams();
}

// Leaving the page closes every live connection (and stops the polling).
function leaveStreams() {
  streamsActive = false;
  clearTimeout(streamsTimer);
  for (const card of streamCards.values()) stopLive(card);
}

async function addStream() {
  clearError();
  const source = streamSource.value.trim();
  if (!source) {
    showError(new ApiError(0, 'invalid_argument', 'the source is empty: give a URL, a device or a file'),
      'Could not add the stream.');
    streamSource.focus();
    return;
  }
  const spec = { source, mode: streamMode.value };
  if (streamModelSelect.value) spec.model = streamModelSelect.value;
  if (streamName.value.trim()) spec.name = streamName.value.trim();
  if (streamFps.value !== '') {
    const fps = Number(streamFps.value);
    if (!Number.isFinite(fps) || fps <= 0) {
      showError(new ApiError(0, 'invalid_argument', `frame rate must be a positive number, not "${streamFps.value}"`),
        'Could not add the stream.');
      return;
    }
    spec.fps = fps;
  }
  streamAdd.disabled = true;
  streamAdd.textContent = 'Opening the source…';
  try {
    const { body } = await request(`${API}/streams`, {
      method: 'POST',
      body: JSON.stringify(spec),
      headers: { 'Content-Type': 'application/json' },
    });
    if (body && body.id && streamsActive && !streamCards.has(body.id)) {
      const card = createCard(body);
      updateCard(card, body);
      streamList.append(card.root);
      setWatched(card, true);
      updateStreamsEmpty();
    }
    streamName.value = '';
  } catch (error) {
    showError(error, 'Could not add the stream.');
  } finally {
    streamAdd.disabled = false;
    streamAdd.textContent = 'Add stream';
  }
}

streamForm.addEventListener('submit', (event) => {
  event.preventDefault();
  addStream();
});

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

// ---- access control: login, logout, who is logged in -------------------------------------

const loginBox = byTestId('login');
const loginForm = byTestId('login-form');
const loginToken = byTestId('login-token');
const loginError = byTestId('login-error');
const loginSubmit = byTestId('login-submit');
const account = byTestId('account');
let loginWait = null; // {promise, resolve} while the login form is shown

function showAccount(who) {
  const on = Boolean(who && who.auth);
  account.hidden = !on;
  if (!on) return;
  byTestId('account-name').textContent = who.name;
  byTestId('account-role').textContent = who.role;
  account.dataset.role = who.role;
}

// Shows the login form (once, however many requests wait) and resolves when logged in.
function requireLogin() {
  if (!loginWait) {
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    loginWait = { promise, resolve };
    showAccount(null);
    loginError.hidden = true;
    loginToken.value = '';
    loginBox.hidden = false;
    loginToken.focus();
  }
  return loginWait.promise;
}

loginForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = loginToken.value.trim();
  if (!token) {
    loginToken.focus();
    return;
  }
  loginSubmit.disabled = true;
  let response;
  let body = null;
  try {
    response = await fetch(`${API}/login`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
    });
    body = await response.json().catch(() => null);
  } catch (error) {
    response = null;
    body = { error: { message: `Cannot reach the kadr server (${error.message})` } };
  } finally {
    loginSubmit.disabled = false;
  }
  if (!response || !response.ok) {
    const message = (body && body.error && body.error.message) || `HTTP ${response.status}`;
    const retry = response && response.headers.get('Retry-After');
    loginError.textContent =
      response && response.status === 401
        ? 'That token is not valid: mistyped, or revoked.'
        : `${sentence(message)}${retry ? ` Try again in ${retry} s.` : ''}`;
    loginError.hidden = false;
    loginToken.select();
    return;
  }
  loginBox.hidden = true;
  loginToken.value = '';
  showAccount(body);
  clearError();
  const wait = loginWait;
  loginWait = null;
  if (wait) wait.resolve();
});

byTestId('logout').addEventListener('click', async () => {
  try {
    await fetch(`${API}/logout`, { method: 'POST' });
  } catch {
    // The cookie stays until it expires; the form still asks for a token.
  }
  await requireLogin();
  loadModels();
});

// Who is logged in; the login form when nobody is and the server wants someone.
async function checkLogin() {
  let response;
  try {
    response = await fetch(`${API}/whoami`, { headers: { Accept: 'application/json' } });
  } catch {
    return;
  }
  if (response.status === 401) {
    await requireLogin();
    return;
  }
  if (response.ok) showAccount(await response.json().catch(() => null));
}

// ---- views and routing -------------------------------------------------------------------

let currentView = null;

const views = {
  detect: { enter: () => {} },
  streams: { enter: enterStreams, leave: leaveStreams },
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
  if (currentView && currentView !== view && views[currentView].leave) views[currentView].leave();
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
checkLogin();
route();
loadModels();
pollReadiness();
// Workers come and go: keep the model availability and the readiness dot current.
setInterval(() => {
  if (document.visibilityState !== 'visible') return;
  pollReadiness();
  if (!detecting) loadModels();
}, 10000);
