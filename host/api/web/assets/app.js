// The page `stepflow server` serves: a list of runs and one run's details, over the JSON API
// under /api/v1. Plain ES module, no dependencies, nothing fetched from outside the server.
//
// Run data is untrusted: every string from the API goes into the page through textContent or
// attribute values (the `el` helper below), never through innerHTML.

const API = '/api/v1';
const STATUSES = ['running', 'waiting', 'completed', 'failed', 'cancelled'];
const TOKEN_KEY = 'stepflow-token';
const RUNS_PAGE = 50;
const HISTORY_PAGE = 100;
/** Pages of new history entries one live update appends at most; beyond, "load more" shows. */
const LIVE_PAGES = 5;

// ============================================================================================
// DOM helpers
// ============================================================================================

const $ = (id) => document.getElementById(id);

/**
 * Creates an element. `attrs`: `class`, `testid` (data-testid), `data` (dataset), `on<event>`
 * handlers, properties (`value`, `disabled`, `hidden`, ...) and other attributes. Children are
 * nodes or strings (added as text), null/undefined/false are skipped.
 */
function el(tag, attrs = {}, ...children) {
  const svg = tag.startsWith('svg:');
  const node = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.setAttribute('class', value);
    else if (key === 'testid') node.dataset.testid = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (!svg && key in node && typeof node[key] !== 'function') node[key] = value;
    else if (value !== false) node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function badge(status, testid) {
  const s = String(status ?? 'unknown');
  return el('span', { class: `badge s-${STATUSES.includes(s) ? s : 'unknown'}`, testid, data: { status: s } }, s);
}

// ============================================================================================
// Formatting
// ============================================================================================

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local time, `YYYY-MM-DD HH:MM:SS`. */
function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function timeCell(ms) {
  const iso = ms === null || ms === undefined ? '' : new Date(ms).toISOString();
  return el('time', { datetime: iso, title: iso }, fmtTime(ms));
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

function truncate(text, max) {
  const s = String(text ?? '');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

function pretty(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

// ============================================================================================
// API client
// ============================================================================================

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return localStorage.getItem(TOKEN_KEY) || '';
}

/** Calls the API; resolves to the parsed JSON body, rejects with an ApiError. */
async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // Writes need the token; a server started with --reads-need-token wants it on reads too.
  if (token()) headers.Authorization = `Bearer ${token()}`;
  let res;
  try {
    res = await fetch(API + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!res.ok) {
    const err = json && typeof json === 'object' ? json.error : null;
    throw new ApiError(res.status, err?.code ?? `http_${res.status}`,
      err?.message ?? (text.trim() || res.statusText || `HTTP ${res.status}`));
  }
  return json;
}

const runPath = (id) => `/runs/${encodeURIComponent(id)}`;

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A message for the user about a failed call. */
function explain(err, what) {
  const prefix = what ? `${what}: ` : '';
  if (err instanceof ApiError && err.status === 401) {
    return `${prefix}not authorized (${err.message}). Paste the token printed by \`stepflow server\` ` +
      '(it is also in the file api-token next to the database) into the token field at the top, then try again.';
  }
  if (err instanceof ApiError && err.status) return `${prefix}${err.message} (${err.status} ${err.code})`;
  return `${prefix}${err.message}`;
}

// ============================================================================================
// Banners: errors and notices
// ============================================================================================

function showError(message) {
  const box = $('error');
  replace(box, el('span', {}, message),
    el('button', { class: 'close', title: 'dismiss', 'aria-label': 'dismiss', onclick: clearError }, '×'));
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').replaceChildren();
}

function showNotice(...content) {
  const box = $('notice');
  replace(box, el('span', {}, ...content),
    el('button', { class: 'close', title: 'dismiss', 'aria-label': 'dismiss', onclick: clearNotice }, '×'));
  box.hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
  $('notice').replaceChildren();
}

function setLive(on) {
  $('live').hidden = !on;
}

// ============================================================================================
// Token (kept in localStorage; sent on writes)
// ============================================================================================

function initToken() {
  const input = $('token-input');
  const showState = () => {
    const set = token() !== '';
    $('token-state').textContent = set ? 'saved ✓' : 'none';
    input.placeholder = set ? 'token saved (paste to replace)' : 'paste API token';
  };
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    input.value = '';
    showState();
    clearError();
  });
  showState();
}

// ============================================================================================
// Confirm dialog (in-page, so that nothing acts before the user says so)
// ============================================================================================

let asking = null; // { resolve, validate }

/**
 * Asks the user; resolves to `{ value }` on Confirm (value of the optional input) or null on
 * Back / Escape. `input`: `{ label, value, type, validate(value) -> error string | null }`.
 */
function ask({ title, text, detail, input, okLabel = 'Confirm' }) {
  const dialog = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text ?? '';
  $('confirm-detail').hidden = detail === undefined;
  $('confirm-detail').textContent = detail ?? '';
  $('confirm-field').hidden = !input;
  $('confirm-invalid').hidden = true;
  $('confirm-ok').textContent = okLabel;
  const field = $('confirm-input');
  if (input) {
    $('confirm-label').textContent = input.label;
    field.type = input.type ?? 'text';
    field.value = input.value ?? '';
  }
  dialog.returnValue = '';
  return new Promise((resolve) => {
    asking = { resolve, validate: input?.validate, hasInput: !!input };
    dialog.showModal();
    (input ? field : $('confirm-ok')).focus();
  });
}

function initConfirm() {
  const dialog = $('confirm');
  $('confirm-ok').value = 'ok';
  $('confirm-back').addEventListener('click', () => dialog.close(''));
  $('confirm-input').addEventListener('input', () => { $('confirm-invalid').hidden = true; });
  dialog.querySelector('form').addEventListener('submit', (e) => {
    const problem = asking?.hasInput && asking.validate ? asking.validate($('confirm-input').value) : null;
    if (problem) {
      e.preventDefault();
      $('confirm-invalid').textContent = problem;
      $('confirm-invalid').hidden = false;
      return;
    }
    // Enter in the input submits without a submitter: close as Confirm as well.
    e.preventDefault();
    dialog.close('ok');
  });
  dialog.addEventListener('close', () => {
    const pending = asking;
    asking = null;
    if (pending) pending.resolve(dialog.returnValue === 'ok' ? { value: $('confirm-input').value } : null);
  });
}

// ============================================================================================
// Router: #/runs (list, with ?status=&q=&cursor=) and #/runs/<id>
// ============================================================================================

let view = null;   // { dispose() } of the shown view
let flash = null;  // a notice to show after the next navigation

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, qs = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean);
  return { parts, params: new URLSearchParams(qs) };
}

function route() {
  view?.dispose?.();
  view = null;
  setLive(false);
  clearError();
  clearNotice();
  if (flash) { showNotice(...flash); flash = null; }
  const { parts, params } = parseHash();
  const main = $('view');
  if (parts[0] === 'runs' && parts.length >= 2) {
    view = runView(main, decodeURIComponent(parts.slice(1).join('/')));
  } else {
    view = runsView(main, params);
  }
}

// ============================================================================================
// View: runs list
// ============================================================================================

function runsView(main, params) {
  const state = {
    status: STATUSES.includes(params.get('status')) ? params.get('status') : '',
    q: params.get('q') ?? '',
    cursor: params.get('cursor') ?? '',
    prev: [],      // cursors of the pages before this one ('' = first page)
    next: null,
    seq: 0,        // discards answers to superseded requests
    disposed: false,
  };

  const counts = el('div', { class: 'counts', testid: 'counts' },
    el('button', { class: 'count all', testid: 'count-all', onclick: () => setStatus('') },
      el('span', { class: 'label' }, 'all'), el('span', { class: 'n' }, '…')),
    STATUSES.map((s) => el('button', {
      class: `count s-${s}`, testid: `count-${s}`, data: { status: s },
      onclick: () => setStatus(state.status === s ? '' : s),
    }, el('span', { class: 'dot' }), el('span', { class: 'label' }, s), el('span', { class: 'n' }, '…'))));

  const filter = el('select', { testid: 'status-filter', 'aria-label': 'status', onchange: () => setStatus(filter.value) },
    el('option', { value: '' }, 'all statuses'), STATUSES.map((s) => el('option', { value: s }, s)));
  filter.value = state.status;

  let debounce = null;
  const search = el('input', {
    type: 'search', testid: 'search', placeholder: 'run id prefix or flow name', value: state.q,
    'aria-label': 'search', spellcheck: false,
    oninput: () => {
      clearTimeout(debounce);
      table.setAttribute('aria-busy', 'true');
      debounce = setTimeout(() => { state.q = search.value.trim(); firstPage(); }, 250);
    },
  });

  const refresh = el('button', { testid: 'refresh', onclick: () => load() }, 'Refresh');
  const tbody = el('tbody');
  const table = el('table', { class: 'runs', testid: 'runs-table' },
    el('thead', {}, el('tr', {}, ['id', 'flow', 'status', 'created', 'updated', 'error'].map((h) => el('th', {}, h)))),
    tbody);
  const info = el('span', { class: 'muted', testid: 'runs-info' });
  const firstBtn = el('button', { testid: 'first-page', onclick: () => firstPage() }, '⇤ first page');
  const prevBtn = el('button', { testid: 'prev-page', onclick: () => prevPage() }, '← previous page');
  const nextBtn = el('button', { testid: 'next-page', onclick: () => nextPage() }, 'next page →');

  replace(main,
    el('section', { class: 'runs-view' },
      counts,
      el('div', { class: 'toolbar' }, filter, search, refresh),
      el('div', { class: 'scroll' }, table),
      el('div', { class: 'pager' }, info, el('span', { class: 'spacer' }), firstBtn, prevBtn, nextBtn)));

  function syncHash() {
    const q = query({ status: state.status, q: state.q, cursor: state.cursor });
    history.replaceState(null, '', `#/runs${q}`);
  }

  function setStatus(status) {
    state.status = status;
    filter.value = status;
    firstPage();
  }

  function firstPage() {
    state.cursor = '';
    state.prev = [];
    load();
  }

  function nextPage() {
    if (!state.next) return;
    state.prev.push(state.cursor);
    state.cursor = state.next;
    load().then(() => window.scrollTo(0, 0));
  }

  function prevPage() {
    if (!state.prev.length) return;
    state.cursor = state.prev.pop();
    load().then(() => window.scrollTo(0, 0));
  }

  async function load() {
    const seq = ++state.seq;
    syncHash();
    for (const b of counts.querySelectorAll('.count')) {
      b.setAttribute('aria-pressed', String((b.dataset.status ?? '') === state.status));
    }
    nextBtn.disabled = true;
    info.textContent = 'loading…';
    table.setAttribute('aria-busy', 'true');
    const list = api(`/runs${query({ status: state.status, q: state.q, limit: RUNS_PAGE, cursor: state.cursor })}`);
    const totals = api('/runs/counts').catch((e) => ({ error: e }));
    try {
      const page = await list;
      if (seq !== state.seq || state.disposed) return;
      renderRows(page.runs ?? []);
      state.next = page.next_cursor ?? null;
      clearError();
      // What the rows shown answer (for tests and scripts): filter, search, page.
      table.dataset.status = state.status;
      table.dataset.q = state.q;
      table.dataset.page = String(state.prev.length + 1);
    } catch (e) {
      if (seq !== state.seq || state.disposed) return;
      tbody.replaceChildren();
      state.next = null;
      info.textContent = '';
      showError(explain(e, 'loading runs'));
    }
    if (seq === state.seq && search.value.trim() === state.q) table.setAttribute('aria-busy', 'false');
    nextBtn.disabled = !state.next;
    prevBtn.disabled = state.prev.length === 0;
    firstBtn.hidden = !state.cursor;
    const c = await totals;
    if (seq !== state.seq || state.disposed) return;
    renderCounts(c);
  }

  function renderCounts(c) {
    let total = 0;
    for (const s of STATUSES) {
      const n = c.error ? '?' : Number(c[s] ?? 0);
      if (typeof n === 'number') total += n;
      counts.querySelector(`[data-testid="count-${s}"] .n`).textContent = String(n);
    }
    counts.querySelector('[data-testid="count-all"] .n').textContent = c.error ? '?' : String(total);
  }

  function renderRows(runs) {
    replace(tbody, runs.map(runRow));
    if (!runs.length) {
      tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: 6 }, 'No runs match.')));
    }
    const page = state.prev.length + 1;
    info.textContent = `page ${page} · ${runs.length} run${runs.length === 1 ? '' : 's'}` +
      (state.status ? ` · ${state.status}` : '') + (state.q ? ` · matching “${state.q}”` : '');
  }

  function runRow(r) {
    return el('tr', { testid: 'run-row', data: { runId: r.id, status: r.status } },
      el('td', { class: 'mono' }, el('a', { href: `#/runs/${encodeURIComponent(r.id)}`, testid: 'run-link' }, r.id)),
      el('td', {}, r.flow ?? ''),
      el('td', {}, badge(r.status)),
      el('td', { class: 'nowrap' }, timeCell(r.created_ms)),
      el('td', { class: 'nowrap' }, timeCell(r.updated_ms)),
      el('td', { class: 'error-cell', title: r.error ?? '', testid: 'run-row-error' }, truncate(r.error, 120)));
  }

  load();
  const timer = setInterval(() => {
    if (document.visibilityState === 'visible') api('/runs/counts').then(renderCounts, () => {});
  }, 10000);
  return {
    dispose() {
      state.disposed = true;
      clearInterval(timer);
      clearTimeout(debounce);
    },
  };
}

// ============================================================================================
// View: one run
// ============================================================================================

function runView(main, id) {
  const state = {
    id,
    run: null,
    entries: 0,          // entries shown
    lastSeq: null,       // seq of the last entry shown
    nextAfter: null,     // `after` for the next page; null = nothing more
    history: Promise.resolve(), // serialises history fetches
    refreshing: false,
    dirty: false,
    busy: false,
    nameTouched: false,
    headerKey: null,     // what the header and the diagram show, to skip redrawing them
    diagramKey: null,
    es: null,
    retry: null,
    disposed: false,
  };

  // --- skeleton ---
  const header = el('section', { class: 'run-header', testid: 'run-header' }, el('p', { class: 'muted' }, 'loading…'));
  const actions = buildActions();
  const diagram = el('div', { class: 'diagram scroll', testid: 'diagram' });
  const dataDoc = el('pre', { class: 'json', testid: 'data-document' });
  const timeline = buildTimeline();
  replace(main,
    el('p', { class: 'crumbs' }, el('a', { href: '#/runs' }, '← runs')),
    header,
    actions.section,
    el('div', { class: 'two' },
      el('section', { class: 'card' }, el('h2', {}, 'Flow'), diagram),
      el('section', { class: 'card' }, el('h2', {}, 'Data document'), dataDoc)),
    timeline.section);

  // --- loading ---
  async function start() {
    try {
      const run = await api(runPath(id));
      if (state.disposed) return;
      renderRun(run);
      await loadHistory();
      if (!state.disposed) connect();
    } catch (e) {
      if (state.disposed) return;
      replace(header, el('h1', {}, 'Run ', el('code', {}, id)));
      showError(explain(e, 'loading the run'));
    }
  }

  /** Shows the run; redraws only the parts that changed (keeps selections and scroll). */
  function renderRun(run) {
    state.run = run;
    const headerKey = JSON.stringify([run.id, run.status, run.flow, run.owner, run.deployment, run.created_ms,
      run.updated_ms, run.next_check_ms, run.history_count, run.awaits_signal, run.error]);
    if (headerKey !== state.headerKey) { state.headerKey = headerKey; renderHeader(run); }
    actions.update(run);
    const text = pretty(run.data);
    if (dataDoc.textContent !== text) dataDoc.textContent = text;
    const diagramKey = JSON.stringify([run.transitions ?? [], run.cursor ?? []]);
    if (diagramKey !== state.diagramKey) {
      state.diagramKey = diagramKey;
      renderDiagram(diagram, run.transitions ?? [], run.cursor ?? []);
    }
    timeline.updateInfo();
  }

  function renderHeader(run) {
    const dep = run.deployment ?? null;
    const facts = [
      ['flow', run.flow ?? '—'],
      ['owner', run.owner ?? '—'],
      ['deployment', dep ? el('code', { title: dep }, truncate(dep, 13)) : '—'],
      ['created', timeCell(run.created_ms)],
      ['updated', timeCell(run.updated_ms)],
      run.next_check_ms ? ['next check', timeCell(run.next_check_ms)] : null,
      ['history', `${run.history_count ?? 0} entries`],
    ].filter(Boolean);
    replace(header,
      el('h1', {}, 'Run ', el('code', { testid: 'run-id' }, run.id ?? id), ' ',
        badge(run.status, 'run-status')),
      el('dl', { class: 'facts' }, facts.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', { data: { fact: k } }, v)))),
      run.awaits_signal
        ? el('p', { class: 'awaits', testid: 'awaits-signal' }, 'waits for signal ', el('code', {}, run.awaits_signal))
        : null,
      run.error
        ? el('div', { class: 'run-error' }, el('strong', {}, 'error'), el('pre', { testid: 'run-error' }, run.error))
        : null);
  }

  // --- actions: signal, cancel, resume, rerun ---
  function buildActions() {
    const list = el('datalist', { id: 'signal-names' });
    const name = el('input', {
      testid: 'signal-name', placeholder: 'signal name', spellcheck: false, 'aria-label': 'signal name',
      oninput: () => { state.nameTouched = true; },
    });
    name.setAttribute('list', 'signal-names');
    const payload = el('textarea', {
      testid: 'signal-payload', rows: 3, spellcheck: false, 'aria-label': 'signal payload (JSON)', value: '{}',
    });
    const signalBtn = el('button', { class: 'primary', testid: 'signal-button', onclick: onSignal }, 'Send signal');
    const cancelBtn = el('button', { class: 'danger', testid: 'cancel-button', onclick: onCancel }, 'Cancel');
    const resumeBtn = el('button', { testid: 'resume-button', onclick: onResume }, 'Resume');
    const rerunBtn = el('button', { testid: 'rerun-button', onclick: onRerun }, 'Rerun from step…');

    const section = el('section', { class: 'card actions', testid: 'actions' },
      el('div', { class: 'signal' },
        el('label', {}, 'signal', name, list),
        el('label', { class: 'grow' }, 'payload (JSON)', payload),
        signalBtn),
      el('div', { class: 'buttons' }, resumeBtn, rerunBtn, cancelBtn));

    function update(run) {
      const st = run.status;
      const signals = run.signals ?? [];
      replace(list, signals.map((s) => el('option', { value: s })));
      if (!state.nameTouched) name.value = run.awaits_signal ?? signals[0] ?? '';
      const live = st === 'running' || st === 'waiting';
      signalBtn.disabled = state.busy || !live;
      cancelBtn.disabled = state.busy || !(live || st === 'failed');
      resumeBtn.disabled = state.busy || st !== 'failed';
      rerunBtn.disabled = state.busy || !(run.history_count > 0);
      resumeBtn.title = st === 'failed' ? 'retry the failed step and go on' : 'only a failed run can be resumed';
      rerunBtn.title = 'start a new run from one of this run’s history entries';
    }

    async function onSignal() {
      clearError();
      const signal = name.value.trim();
      if (!signal) { showError('Enter the name of the signal to send.'); name.focus(); return; }
      let body;
      try {
        body = payload.value.trim() === '' ? null : JSON.parse(payload.value);
      } catch (e) {
        showError(`The payload is not valid JSON: ${e.message}`);
        payload.focus();
        return;
      }
      const ok = await ask({
        title: 'Send signal?',
        text: `Send signal “${signal}” to run ${id} with this payload:`,
        detail: pretty(body),
        okLabel: 'Send signal',
      });
      if (!ok) return;
      await act('sending the signal', () => api(`${runPath(id)}/signals`, { method: 'POST', body: { name: signal, payload: body } }),
        (res) => [`Signal “${signal}” ${res?.duplicate ? 'was a duplicate (already received)' : 'sent'}` +
          (res?.status ? `; run is ${res.status}.` : '.')]);
    }

    async function onCancel() {
      clearError();
      const ok = await ask({ title: 'Cancel run?', text: `Cancel run ${id}? It will not run any further step.`, okLabel: 'Cancel run' });
      if (!ok) return;
      await act('cancelling', () => api(`${runPath(id)}/cancel`, { method: 'POST' }), () => ['Run cancelled.']);
    }

    async function onResume() {
      clearError();
      const ok = await ask({ title: 'Resume run?', text: `Resume run ${id}? Its failed step is tried again.`, okLabel: 'Resume' });
      if (!ok) return;
      await act('resuming', () => api(`${runPath(id)}/resume`, { method: 'POST' }), () => ['Run resumed.']);
    }

    async function onRerun() {
      clearError();
      const max = state.run?.history_count ?? 0;
      const ok = await ask({
        title: 'Rerun from step',
        text: `Start a new run from run ${id}: it keeps the history up to the entry you name and runs again from there.`,
        input: {
          label: `history entry # (1–${max})`, type: 'number', value: '',
          validate: (v) => (/^\d+$/.test(v.trim()) && Number(v) >= 1 && Number(v) <= max
            ? null : `Enter a history entry number from 1 to ${max}.`),
        },
        okLabel: 'Start new run',
      });
      if (!ok) return;
      const from = Number(ok.value.trim());
      setBusy(true);
      try {
        const res = await api(`${runPath(id)}/rerun`, { method: 'POST', body: { from_seq: from } });
        flash = [`New run started from entry #${from} of ${id}.`];
        location.hash = `#/runs/${encodeURIComponent(res.id)}`;
      } catch (e) {
        showError(explain(e, 'rerun'));
      } finally {
        setBusy(false);
      }
    }

    return { section, update };
  }

  function setBusy(busy) {
    state.busy = busy;
    if (state.run) actions.update(state.run);
  }

  /** Runs a write; shows its outcome, then refreshes the run. */
  async function act(what, call, success) {
    setBusy(true);
    try {
      const res = await call();
      if (state.disposed) return;
      showNotice(...success(res));
      refresh();
    } catch (e) {
      if (state.disposed) return;
      showError(explain(e, what));
      if (e.status === 401) $('token-input').focus();
    } finally {
      setBusy(false);
    }
  }

  // --- timeline ---
  function buildTimeline() {
    const tbody = el('tbody');
    const table = el('table', { class: 'timeline', testid: 'timeline' },
      el('thead', {}, el('tr', {}, ['#', 'step', 'kind', 'attempt', 'outcome', 'started', 'duration', 'error', 'patch', '']
        .map((h) => el('th', {}, h)))),
      tbody);
    const info = el('span', { class: 'muted', testid: 'timeline-info' });
    const more = el('button', { testid: 'load-more', hidden: true, onclick: () => loadHistory() }, 'load more');
    const section = el('section', { class: 'card' },
      el('h2', {}, 'Timeline'),
      el('div', { class: 'scroll' }, table),
      el('div', { class: 'pager' }, info, el('span', { class: 'spacer' }), more));

    function appendEntries(entries) {
      const rows = [];
      for (const e of entries) {
        if (state.lastSeq !== null && e.seq <= state.lastSeq) continue; // already shown
        rows.push(entryRow(e));
        state.lastSeq = e.seq;
        state.entries += 1;
      }
      if (rows.length) tbody.querySelector('.empty')?.remove();
      tbody.append(...rows);
    }

    function updateInfo() {
      const total = state.run?.history_count;
      more.hidden = state.nextAfter === null;
      if (!state.entries && state.nextAfter === null) {
        if (!tbody.querySelector('.empty')) tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: 10 }, 'No history yet.')));
      }
      info.textContent = `showing ${state.entries}` + (total !== undefined ? ` of ${total}` : '') + ' entries';
    }

    return { section, appendEntries, updateInfo, more };
  }

  function entryRow(e) {
    const outcome = typeof e.outcome === 'string' ? e.outcome : JSON.stringify(e.outcome);
    return el('tr', { testid: 'timeline-row', class: `o-${outcome}`, data: { seq: e.seq, step: e.step ?? '', outcome } },
      el('td', { class: 'num', data: { col: 'seq' } }, e.seq),
      el('td', { class: 'mono', data: { col: 'step' } }, e.step ?? ''),
      el('td', { data: { col: 'kind' }, title: e.handlers?.length ? `handlers: ${JSON.stringify(e.handlers)}` : null }, e.kind ?? ''),
      el('td', { class: 'num', data: { col: 'attempt' } }, e.attempt ?? ''),
      el('td', { data: { col: 'outcome' } }, el('span', { class: `outcome o-${outcome}` }, outcome)),
      el('td', { class: 'nowrap', data: { col: 'started' } }, timeCell(e.started_ms)),
      el('td', { class: 'num nowrap', data: { col: 'duration' } }, fmtDuration(e.duration_ms)),
      el('td', { class: 'error-cell', data: { col: 'error' } }, e.error ? collapsible(e.error, 100, false) : ''),
      el('td', { class: 'patch', data: { col: 'patch' } }, e.patch === null || e.patch === undefined ? '' : collapsible(e.patch, 60, true)),
      el('td', { class: 'nowrap', data: { col: 'redelivered' } },
        e.redelivered ? el('span', { class: 'redelivered', testid: 'redelivered', title: 'delivered again after a restart' }, '↺ redelivered') : ''));
  }

  /** Text (or JSON) shown whole if short, else as a collapsed <details>. */
  function collapsible(value, max, json) {
    const oneLine = json ? JSON.stringify(value) : String(value);
    if (oneLine.length <= max) return el(json ? 'code' : 'span', {}, oneLine);
    return el('details', {},
      el('summary', {}, truncate(oneLine, max)),
      el('pre', {}, json ? pretty(value) : oneLine));
  }

  /** Loads the next page of history (the first if none is shown). */
  function loadHistory() {
    state.history = state.history.then(async () => {
      if (state.disposed) return;
      timeline.more.disabled = true;
      try {
        const after = state.lastSeq === null ? undefined : (state.nextAfter ?? state.lastSeq);
        const res = await api(`${runPath(id)}/history${query({ after, limit: HISTORY_PAGE })}`);
        if (state.disposed) return;
        timeline.appendEntries(res.entries ?? []);
        state.nextAfter = res.next_after ?? null;
      } catch (e) {
        if (!state.disposed) showError(explain(e, 'loading the history'));
      } finally {
        timeline.more.disabled = false;
        timeline.updateInfo();
      }
    });
    return state.history;
  }

  /** Appends entries newer than the last shown, when every older one is shown. */
  function appendNewest() {
    state.history = state.history.then(async () => {
      if (state.disposed || state.nextAfter !== null) return; // "load more" will reach them
      if ((state.run?.history_count ?? 0) <= state.entries && state.lastSeq !== null) return;
      for (let page = 0; page < LIVE_PAGES; page += 1) {
        const res = await api(`${runPath(id)}/history${query({ after: state.lastSeq ?? undefined, limit: HISTORY_PAGE })}`);
        if (state.disposed) return;
        timeline.appendEntries(res.entries ?? []);
        if (res.next_after === null || res.next_after === undefined || !(res.entries ?? []).length) break;
        if (page === LIVE_PAGES - 1) state.nextAfter = res.next_after;
      }
      timeline.updateInfo();
    }).catch((e) => { if (!state.disposed) showError(explain(e, 'loading new history')); });
    return state.history;
  }

  // --- live updates ---
  /** Re-fetches the run and the new history; coalesces calls made while one is under way. */
  async function refresh() {
    if (state.refreshing) { state.dirty = true; return; }
    state.refreshing = true;
    try {
      do {
        state.dirty = false;
        const run = await api(runPath(id));
        if (state.disposed) return;
        renderRun(run);
        await appendNewest();
      } while (state.dirty && !state.disposed);
    } catch (e) {
      if (!state.disposed) showError(explain(e, 'refreshing'));
    } finally {
      state.refreshing = false;
    }
  }

  function connect() {
    if (state.disposed || typeof EventSource === 'undefined') return;
    // EventSource cannot send headers: the token, if any, goes in the query.
    const auth = token() ? `?token=${encodeURIComponent(token())}` : '';
    const es = new EventSource(`${API}${runPath(id)}/events${auth}`);
    state.es = es;
    es.addEventListener('open', () => { setLive(true); refresh(); });
    es.addEventListener('run', () => refresh());
    es.addEventListener('message', () => refresh()); // an unnamed event: refresh all the same
    es.addEventListener('error', () => {
      setLive(false);
      if (['completed', 'cancelled'].includes(state.run?.status)) {
        es.close(); // the stream ended and the run will not change: do not reconnect
        return;
      }
      if (es.readyState === EventSource.CLOSED && !state.disposed) {
        // The browser gives up on some failures (e.g. a non-stream answer): try again later.
        state.retry = setTimeout(connect, 5000);
      }
    });
  }

  start();
  return {
    dispose() {
      state.disposed = true;
      state.es?.close();
      clearTimeout(state.retry);
      setLive(false);
    },
  };
}

// ============================================================================================
// Flow diagram: events as boxes in layers, top to bottom in definition order
// ============================================================================================

const CHAR_W = 7.3;   // width of one character of the 12px monospace font, roughly
const NODE_PAD = 12;
const LAYER_GAP = 46;
const NODE_GAP = 28;
const MARGIN = 16;

/** Nodes (events, in order of first appearance), edges, and a layer per node. */
function flowGraph(transitions) {
  const nodes = new Map(); // event -> { event, index, call, layer }
  const node = (event) => {
    if (!nodes.has(event)) nodes.set(event, { event, index: nodes.size, call: null, layer: 0 });
    return nodes.get(event);
  };
  const edges = [];
  for (const t of transitions) {
    const src = node(String(t.source));
    if (t.call) src.call = t.call;
    for (const d of t.destinations ?? []) edges.push({ from: src, to: node(String(d.event)), reason: d.reason ?? '' });
  }
  // A forward edge goes to a node defined later; nodes are final when visited in order.
  for (const n of nodes.values()) {
    for (const e of edges) {
      if (e.from === n && e.to.index > n.index) e.to.layer = Math.max(e.to.layer, n.layer + 1);
    }
  }
  return { nodes: [...nodes.values()], edges };
}

function layoutFlow(graph) {
  const layers = [];
  for (const n of graph.nodes) {
    n.label = n.event;
    n.sub = n.call ? `${n.call.kind ?? ''} ${n.call.label ?? ''}`.trim() : '';
    n.w = Math.max(110, Math.ceil(Math.max(n.label.length, n.sub.length) * CHAR_W) + 2 * NODE_PAD);
    n.h = n.sub ? 40 : 26;
    (layers[n.layer] ??= []).push(n);
  }
  const rows = layers.filter(Boolean);
  const widths = rows.map((r) => r.reduce((w, n) => w + n.w, 0) + NODE_GAP * (r.length - 1));
  const inner = Math.max(0, ...widths);
  let y = MARGIN;
  rows.forEach((row, i) => {
    let x = MARGIN + (inner - widths[i]) / 2;
    const h = Math.max(...row.map((n) => n.h));
    for (const n of row) {
      n.x = x;
      n.y = y + (h - n.h) / 2;
      x += n.w + NODE_GAP;
    }
    y += h + LAYER_GAP;
  });
  const hasBack = graph.edges.some((e) => e.to.index <= e.from.index);
  return { width: inner + 2 * MARGIN + (hasBack ? 90 : 0), height: y - LAYER_GAP + MARGIN };
}

function renderDiagram(container, transitions, cursor) {
  if (!transitions.length && !cursor.length) {
    replace(container, el('p', { class: 'muted' }, 'No flow definition to draw.'));
    return;
  }
  const graph = flowGraph(transitions);
  // An event of the cursor that no transition names still shows, on a layer of its own.
  const known = new Set(graph.nodes.map((n) => n.event));
  const lastLayer = Math.max(-1, ...graph.nodes.map((n) => n.layer));
  for (const event of new Set(cursor.map(String))) {
    if (!known.has(event)) graph.nodes.push({ event, index: graph.nodes.length, call: null, layer: lastLayer + 1 });
  }
  const size = layoutFlow(graph);
  const current = new Set(cursor.map(String));
  const svg = el('svg:svg', {
    class: 'flow', width: size.width, height: size.height, viewBox: `0 0 ${size.width} ${size.height}`,
    role: 'img', 'aria-label': 'flow diagram',
  },
  el('svg:defs', {}, el('svg:marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
  }, el('svg:path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))),
  graph.edges.map(edgeShape),
  graph.nodes.map((n) => nodeShape(n, current.has(n.event))));
  replace(container,
    // Without a flow definition (a run from before deployments) only the cursor can be drawn: say so.
    transitions.length ? null : el('p', { class: 'muted' }, 'No flow definition to draw; the run is at:'),
    svg,
    cursor.length ? el('p', { class: 'muted legend' }, el('span', { class: 'swatch' }), ' where the run is now') : null);
}

function nodeShape(n, isCurrent) {
  const kind = n.event.split(':')[0];
  return el('svg:g', {
    class: `node k-${kind.replace(/[^a-z0-9_-]/gi, '')}${isCurrent ? ' current' : ''}`,
    transform: `translate(${n.x},${n.y})`, 'data-event': n.event,
  },
  el('svg:title', {}, n.sub ? `${n.event}\n${n.sub}` : n.event),
  el('svg:rect', { width: n.w, height: n.h, rx: 6 }),
  el('svg:text', { x: n.w / 2, y: 17, class: 'label' }, n.label),
  n.sub ? el('svg:text', { x: n.w / 2, y: 32, class: 'sub' }, n.sub) : null);
}

function edgeShape(e) {
  const a = e.from;
  const b = e.to;
  let d;
  let mid;
  if (b.index > a.index) {
    const x1 = a.x + a.w / 2; const y1 = a.y + a.h;
    const x2 = b.x + b.w / 2; const y2 = b.y;
    const dy = Math.max(20, (y2 - y1) / 2);
    d = `M${x1},${y1} C${x1},${y1 + dy} ${x2},${y2 - dy} ${x2},${y2}`;
    mid = { x: (x1 + x2) / 2, y: (y1 + y2) / 2 };
  } else {
    // Back edge (a loop, e.g. a retry): around the right-hand side.
    const x1 = a.x + a.w; const y1 = a.y + a.h / 2;
    const x2 = b.x + b.w; const y2 = b.y + b.h / 2;
    const out = Math.max(x1, x2) + 50;
    d = a === b
      ? `M${x1},${y1 - 6} C${x1 + 40},${y1 - 26} ${x1 + 40},${y1 + 26} ${x1},${y1 + 6}`
      : `M${x1},${y1} C${out},${y1} ${out},${y2} ${x2},${y2}`;
    mid = a === b ? { x: x1 + 34, y: y1 } : { x: out - 12, y: (y1 + y2) / 2 };
  }
  return el('svg:g', { class: 'edge', 'data-from': a.event, 'data-to': b.event },
    el('svg:path', { d, 'marker-end': 'url(#arrow)' }),
    e.reason ? el('svg:text', { x: mid.x, y: mid.y + 4, class: 'reason' }, e.reason) : null);
}

// ============================================================================================
// Start
// ============================================================================================

initToken();
initConfirm();
window.addEventListener('hashchange', route);
route();
