// Real-browser scenario for the page `stepflow server` serves: headless Debian chromium driven
// by playwright-core. Reads:
//   STEPFLOW_URL    the server, e.g. http://127.0.0.1:PORT
//   STEPFLOW_TOKEN  the API token (for writes)
//   WAITING_RUN     a run that waits for signal `approve`
//   FAILED_RUN      a failed run whose failing step succeeds when retried
//   SCREENSHOTS     a directory for the screenshots (created if missing)
//   CHROMIUM        optional, the browser (default /usr/bin/chromium)
// Exits 0 after printing `web scenario: N checks passed`, or 1 with the first mismatch.
// It waits on the page (Playwright's auto-waiting), never for a fixed time.
//
// With BIG_RUN set, it checks instead that the page stays usable on a large store, from what
// the page fetches and draws (never from timings); WAITING_RUN, FAILED_RUN and STEPFLOW_TOKEN
// are then not needed:
//   BIG_RUN         a run with a long history (thousands of entries)
//   BIG_FLOW        the name of a flow with runs in the store, e.g. f3.v1
//   MIN_RUNS        optional, how many runs the store holds at least (default 100000)
// and it prints `web scenario (large store): N checks passed`.

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';

const LIVE_TIMEOUT = 60_000;  // for what live updates must bring
const UI_TIMEOUT = 15_000;    // for what the page shows on its own

// ============================================================================================
// Checks
// ============================================================================================

class Mismatch extends Error {}

let passed = 0;

function check(condition, what) {
  const text = typeof what === 'function' ? what() : what;
  if (!condition) throw new Mismatch(text);
  passed += 1;
  console.log(`  ok ${passed} - ${text}`);
}

function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') throw new Mismatch(`environment variable ${name} is not set`);
  return v;
}

// ============================================================================================
// A tiny PNG decoder (8-bit RGB/RGBA, non-interlaced: what Chromium writes)
// ============================================================================================

function decodePng(buf) {
  const sig = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(sig)) throw new Mismatch('screenshot is not a PNG');
  let off = 8;
  let ihdr = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      ihdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], color: data[9], interlace: data[12] };
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  if (!ihdr) throw new Mismatch('PNG without IHDR');
  const channels = { 2: 3, 6: 4 }[ihdr.color];
  if (ihdr.depth !== 8 || !channels || ihdr.interlace !== 0) {
    throw new Mismatch(`PNG format not handled: depth ${ihdr.depth}, colour type ${ihdr.color}, interlace ${ihdr.interlace}`);
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const { width, height } = ihdr;
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y += 1) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : null;
    for (let x = 0; x < stride; x += 1) {
      const a = x >= channels ? out[x - channels] : 0;
      const b = prev ? prev[x] : 0;
      const c = prev && x >= channels ? prev[x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a); const pb = Math.abs(p - b); const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (filter !== 0) throw new Mismatch(`PNG filter ${filter} unknown`);
      out[x] = v & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

/** The most common colour (averaged within 16-level buckets) and its share of the pixels. */
function dominantColour(png) {
  const buckets = new Map();
  const n = png.width * png.height;
  for (let i = 0; i < n; i += 1) {
    const o = i * png.channels;
    const [r, g, b] = [png.pixels[o], png.pixels[o + 1], png.pixels[o + 2]];
    const key = ((r >> 4) << 8) | ((g >> 4) << 4) | (b >> 4);
    const s = buckets.get(key) ?? { count: 0, r: 0, g: 0, b: 0 };
    s.count += 1; s.r += r; s.g += g; s.b += b;
    buckets.set(key, s);
  }
  const best = [...buckets.values()].sort((x, y) => y.count - x.count)[0];
  return {
    r: Math.round(best.r / best.count), g: Math.round(best.g / best.count), b: Math.round(best.b / best.count),
    share: best.count / n,
  };
}

const isGreen = ({ r, g, b }) => g > r + 50 && g > b + 30;
const isRed = ({ r, g, b }) => r > g + 80 && r > b + 60;
const rgb = ({ r, g, b, share }) => `rgb(${r},${g},${b}) on ${(share * 100).toFixed(0)}% of the pixels`;

/** GET from the API in node (to compare the page with what the server says). */
async function apiGet(base, p) {
  const res = await fetch(`${base}/api/v1${p}`);
  if (!res.ok) throw new Mismatch(`GET /api/v1${p}: ${res.status} ${await res.text()}`);
  return res.json();
}

// ============================================================================================
// Page helpers
// ============================================================================================

function helpers(page, shots) {
  const byId = (id) => page.getByTestId(id);

  /** Waits until the locator has the text (string = whole text, trimmed; or a RegExp). */
  async function waitText(locator, expected, what, timeout = UI_TIMEOUT) {
    const re = expected instanceof RegExp ? expected : new RegExp(`^\\s*${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`);
    try {
      await locator.filter({ hasText: re }).first().waitFor({ state: 'visible', timeout });
    } catch {
      const now = await locator.first().textContent({ timeout: 1000 }).catch(() => '(not on the page)');
      const err = await byId('error-message').textContent({ timeout: 500 }).catch(() => '');
      throw new Mismatch(`${what}: expected ${re} within ${timeout / 1000} s, found ${JSON.stringify(now?.trim())}` +
        (err ? `; page error banner: ${err.trim()}` : ''));
    }
    passed += 1;
    console.log(`  ok ${passed} - ${what}`);
  }

  async function visible(locator, what, timeout = UI_TIMEOUT) {
    try {
      await locator.first().waitFor({ state: 'visible', timeout });
    } catch {
      throw new Mismatch(`${what}: not visible within ${timeout / 1000} s`);
    }
    passed += 1;
    console.log(`  ok ${passed} - ${what}`);
  }

  async function hidden(locator, what, timeout = UI_TIMEOUT) {
    try {
      await locator.first().waitFor({ state: 'hidden', timeout });
    } catch {
      throw new Mismatch(`${what}: still visible after ${timeout / 1000} s`);
    }
    passed += 1;
    console.log(`  ok ${passed} - ${what}`);
  }

  /** Waits until the runs table shows the answer for this filter and search. */
  async function listShows(status, q) {
    const sel = `[data-testid="runs-table"][aria-busy="false"][data-status="${status}"][data-q="${q}"]`;
    await visible(page.locator(sel), `the runs list shows the ${status} runs matching "${q}"`);
  }

  /** Clicks "load more" until every history entry is shown. */
  async function loadAllHistory() {
    for (let i = 0; i < 200; i += 1) {
      const more = byId('load-more');
      if (!(await more.isVisible())) return;
      const before = await byId('timeline-row').count();
      await more.click();
      await page.waitForFunction((n) => document.querySelectorAll('[data-testid="timeline-row"]').length > n ||
        document.querySelector('[data-testid="load-more"]')?.hidden, before, { timeout: UI_TIMEOUT });
    }
  }

  /** Screenshot of an element, decoded; saved as SCREENSHOTS/<name>.png. */
  async function shot(locator, name) {
    const file = path.join(shots, `${name}.png`);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return decodePng(await locator.screenshot({ path: file, animations: 'disabled' }));
      } catch (e) {
        // A live update may redraw the element while it is captured: capture it again.
        if (attempt >= 3 || e instanceof Mismatch) throw e;
      }
    }
  }

  async function fullPage(name) {
    await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  }

  /** Clicks an action button, then Confirm in the page's own dialog. */
  async function confirmAction(button, what) {
    await button.click();
    await visible(byId('confirm'), `${what} asks before it acts`);
    await byId('confirm-ok').click();
    await hidden(byId('confirm'), `${what}: the dialog closes on Confirm`);
  }

  return { byId, waitText, visible, hidden, listShows, loadAllHistory, shot, fullPage, confirmAction };
}

// ============================================================================================
// The scenario
// ============================================================================================

async function runsList(page, h, base, waiting) {
  console.log('runs list');
  await page.goto(`${base}/#/runs`);
  await h.visible(h.byId('runs-table'), 'the runs table is shown');
  for (const s of ['running', 'waiting', 'completed', 'failed', 'cancelled']) {
    await h.waitText(h.byId(`count-${s}`), new RegExp(`${s}\\s*\\d+`), `the count of ${s} runs is shown`);
  }
  const nWaiting = Number((await h.byId('count-waiting').locator('.n').textContent()).trim());
  check(nWaiting >= 1, `at least one waiting run is counted (${nWaiting})`);

  await h.byId('status-filter').selectOption('waiting');
  await h.byId('search').fill(waiting.slice(0, 10));
  await h.listShows('waiting', waiting.slice(0, 10));
  const row = page.locator(`[data-testid="run-row"][data-run-id="${waiting}"]`);
  await h.visible(row, `filtered to waiting and searched by id prefix, the row of ${waiting} is there`);
  const statuses = await h.byId('run-row').evaluateAll((rows) => rows.map((r) => r.dataset.status));
  const others = statuses.filter((s) => s !== 'waiting');
  check(statuses.length > 0 && others.length === 0,
    `every row shown is waiting (${statuses.length} rows${others.length ? `, also: ${others.join(',')}` : ''})`);
  await h.waitText(row.locator('.badge'), 'waiting', 'the row shows a waiting badge');
  check(/[?&]status=waiting/.test(page.url()), `the filter is kept in the address (${page.url()})`);
  await row.getByTestId('run-link').click();
}

async function approveWaitingRun(page, h, base, token, waiting) {
  console.log(`waiting run ${waiting}`);
  await h.waitText(h.byId('run-id'), waiting, 'the run page shows the run id');
  await h.waitText(h.byId('run-status'), 'waiting', 'the status badge says waiting');
  await h.waitText(h.byId('awaits-signal'), /waits for signal\s+approve/, 'the header says "waits for signal approve"');
  await h.visible(h.byId('diagram').locator('.node'), 'the flow diagram has nodes');
  const cursor = new Set((await apiGet(base, `/runs/${encodeURIComponent(waiting)}`)).cursor ?? []);
  const highlighted = await h.byId('diagram').locator('.node.current')
    .evaluateAll((nodes) => nodes.map((n) => n.getAttribute('data-event')));
  check(highlighted.length === cursor.size && highlighted.every((e) => cursor.has(e)),
    `the flow diagram highlights the run's cursor (${[...cursor].join(', ') || 'empty'}): ${highlighted.join(', ') || 'none'}`);
  await h.visible(h.byId('timeline-row'), 'the timeline has entries');
  await h.visible(h.byId('live-indicator'), 'the live indicator shows a live connection', LIVE_TIMEOUT);

  await h.byId('token-input').fill(token);
  await h.byId('token-save').click();
  const stored = await page.evaluate(() => localStorage.getItem('stepflow-token'));
  check(stored === token, 'the token is kept in localStorage');

  check((await h.byId('signal-name').inputValue()) === 'approve', 'the signal name is prefilled with approve');
  // Marks this document: a reload would lose the mark.
  await page.evaluate(() => { window.__scenarioMark = 'same page'; });

  // Invalid JSON is refused before any dialog.
  await h.byId('signal-payload').fill('{"by": browser}');
  await h.byId('signal-button').click();
  await h.waitText(h.byId('error-message'), /not valid JSON/, 'invalid JSON in the payload is refused with a message');
  check(!(await h.byId('confirm').isVisible()), 'no confirm dialog for an invalid payload');

  // Back sends nothing.
  await h.byId('signal-payload').fill('{"by":"browser"}');
  await h.byId('signal-button').click();
  await h.visible(h.byId('confirm'), 'Send signal asks before it acts');
  await h.byId('confirm-back').click();
  await h.hidden(h.byId('confirm'), 'Back closes the dialog');
  await h.waitText(h.byId('run-status'), 'waiting', 'after Back the run still waits');

  await h.confirmAction(h.byId('signal-button'), 'Send signal');
  await h.waitText(h.byId('run-status'), 'completed', 'the status badge turns completed through live updates', LIVE_TIMEOUT);
  check(await page.evaluate(() => window.__scenarioMark === 'same page'), 'the page was not reloaded');

  await h.loadAllHistory();
  const approval = h.byId('timeline-row')
    .filter({ has: page.locator('[data-col="step"]', { hasText: 'approval' }) })
    .filter({ has: page.locator('[data-col="outcome"]', { hasText: /^\s*done\s*$/ }) });
  await h.visible(approval, 'the timeline shows the approval step with outcome done', LIVE_TIMEOUT);
  await h.waitText(h.byId('data-document'), /"by": "browser"/, 'the data document contains "by": "browser"', LIVE_TIMEOUT);

  const badge = await h.shot(h.byId('run-status'), 'waiting-run-completed-badge');
  const colour = dominantColour(badge);
  check(isGreen(colour), `the completed badge looks green: ${rgb(colour)}`);
  await h.fullPage('waiting-run-completed');
}

async function resumeFailedRun(page, h, base, failed) {
  console.log(`failed run ${failed}`);
  // Through the list: the failed count is a filter button.
  await page.goto(`${base}/#/runs`);
  await h.byId('count-failed').click();
  await h.byId('search').fill(failed.slice(0, 10));
  await h.listShows('failed', failed.slice(0, 10));
  check((await h.byId('status-filter').inputValue()) === 'failed', 'the failed count button set the status filter');
  const row = page.locator(`[data-testid="run-row"][data-run-id="${failed}"]`);
  await h.visible(row, `filtered by the failed count, the row of ${failed} is there`);
  const listed = (await row.getByTestId('run-row-error').getAttribute('title')) ?? '';
  check(listed.trim() !== '', 'the row shows the run’s error');
  await row.getByTestId('run-link').click();

  await h.waitText(h.byId('run-status'), 'failed', 'the status badge says failed');
  await h.visible(h.byId('run-error'), 'the header shows the error');
  const error = (await h.byId('run-error').textContent()).trim();
  check(error === listed.trim(), `the header's error is the list's error: ${JSON.stringify(error.slice(0, 80))}`);
  const redBadge = dominantColour(await h.shot(h.byId('run-status'), 'failed-run-badge'));
  check(isRed(redBadge), `the failed badge looks red: ${rgb(redBadge)}`);
  await h.fullPage('failed-run');

  await h.loadAllHistory();
  await h.visible(h.byId('timeline-row'), 'the timeline has entries');
  const failedRow = h.byId('timeline-row').filter({ has: page.locator('[data-col="outcome"]', { hasText: /^\s*failed\s*$/ }) });
  if (await failedRow.count()) {
    const rowError = ((await failedRow.last().locator('[data-col="error"]').textContent()) ?? '').trim();
    check(rowError !== '', `the timeline's failed entry shows an error: ${JSON.stringify(rowError.slice(0, 80))}`);
  } else {
    console.log('  (the timeline has no entry with outcome failed; the header shows the error)');
  }
  await h.visible(h.byId('live-indicator'), 'the live indicator shows a live connection', LIVE_TIMEOUT);

  const resume = h.byId('resume-button');
  check(await resume.isEnabled(), 'Resume is enabled for a failed run');
  await page.evaluate(() => { window.__scenarioMark = 'same page'; });
  await h.confirmAction(resume, 'Resume');
  await h.waitText(h.byId('run-status'), 'completed', 'the resumed run turns completed through live updates', LIVE_TIMEOUT);
  check(await page.evaluate(() => window.__scenarioMark === 'same page'), 'the page was not reloaded');
  check(!(await resume.isEnabled()), 'Resume is disabled once completed');

  const badge = dominantColour(await h.shot(h.byId('run-status'), 'failed-run-completed-badge'));
  check(isGreen(badge), `the completed badge looks green: ${rgb(badge)}`);
  await h.fullPage('failed-run-completed');
}

// ============================================================================================
// The large-store scenario (BIG_RUN set): what the page fetches and draws on a big store
// ============================================================================================

const BIG_TIMEOUT = 60_000;   // an upper bound for the server's answers on a large store, not a timing
const STATUSES = ['running', 'waiting', 'completed', 'failed', 'cancelled'];
const MAX_PAGE = 500;         // the API's largest page
const RUNS_SHOWN = 50;        // the most rows one page of the runs list may show

/** What an API request is, from its path. */
function kindOf(pathname) {
  if (pathname === '/api/v1/runs') return 'list';
  if (pathname === '/api/v1/runs/counts') return 'counts';
  if (/^\/api\/v1\/runs\/[^/]+\/history$/.test(pathname)) return 'history';
  if (/^\/api\/v1\/runs\/[^/]+\/events$/.test(pathname)) return 'events';
  if (/^\/api\/v1\/runs\/[^/]+$/.test(pathname)) return 'detail';
  return 'other';
}

/**
 * Records every request the page makes (`page.on('request')`): the API's, in order, with the
 * parsed body of each answer (taken as it arrives, except for the event stream).
 */
function recordRequests(page, origin, problems) {
  const log = { all: [], api: [] };
  const byRequest = new Map();
  page.on('request', (r) => {
    log.all.push(r.url());
    const url = new URL(r.url());
    if (url.origin !== origin || !url.pathname.startsWith('/api/')) return;
    let settle;
    const entry = {
      n: log.api.length, url, kind: kindOf(url.pathname), params: url.searchParams, method: r.method(),
      body: new Promise((resolve) => { settle = resolve; }),
    };
    entry.settle = settle;
    log.api.push(entry);
    byRequest.set(r, entry);
    if (entry.kind === 'events') settle({ stream: true });
  });
  page.on('response', (res) => {
    const entry = byRequest.get(res.request());
    if (!entry || entry.kind === 'events') return;
    const what = `${entry.method} ${entry.url.pathname}${entry.url.search}`;
    if (res.status() >= 400) problems.push(`${what} answered ${res.status()}`);
    res.json().then(entry.settle, (e) => entry.settle({ error: `${what}: the answer is not JSON (${e.message})` }));
  });
  page.on('requestfailed', (r) => {
    const entry = byRequest.get(r);
    if (!entry || entry.kind === 'events') return;
    const what = `${entry.method} ${entry.url.pathname}${entry.url.search}`;
    problems.push(`${what} failed: ${r.failure()?.errorText}`);
    entry.settle({ error: `${what} failed` });
  });
  return log;
}

async function bodyOf(entry) {
  const body = await entry.body;
  if (body?.error) throw new Mismatch(body.error);
  return body;
}

const since = (log, mark, kind) => log.api.slice(mark).filter((e) => e.kind === kind);
const shortUrl = (e) => `${e.url.pathname}${e.url.search}`;
const listUrls = (entries) => entries.map(shortUrl).join(', ') || 'none';

/** Each request asks for at most one page: a `limit` of at most 500, or none (the default). */
function checkLimits(entries, what) {
  const bad = entries.filter((e) => {
    const limit = e.params.get('limit');
    return limit !== null && !(/^\d+$/.test(limit) && Number(limit) >= 1 && Number(limit) <= MAX_PAGE);
  });
  check(bad.length === 0, () => `${what}: every request asks for at most ${MAX_PAGE} (limit ≤ ${MAX_PAGE} or none)` +
    (bad.length ? `; not: ${listUrls(bad)}` : ` (${entries.map((e) => e.params.get('limit') ?? 'none').join(', ')})`));
}

/**
 * Every `cursor` the page sent to the runs list was the `next_cursor` of an earlier answer, and
 * every `after` it sent for a history was where an earlier page of that history ended: the
 * page walks the pages, it never jumps or loads everything.
 */
async function checkFollows(log) {
  const cursors = new Set();
  const ends = new Map(); // history path -> seqs an earlier page ended at
  const jumps = [];
  let lists = 0;
  let histories = 0;
  for (const e of log.api) {
    if (e.kind === 'list') {
      lists += 1;
      const c = e.params.get('cursor');
      if (c !== null && c !== '' && !cursors.has(c)) jumps.push(shortUrl(e));
      const body = await bodyOf(e);
      if (body.next_cursor) cursors.add(body.next_cursor);
    } else if (e.kind === 'history') {
      histories += 1;
      const seen = ends.get(e.url.pathname) ?? new Set();
      ends.set(e.url.pathname, seen);
      const after = e.params.get('after');
      if (after !== null && after !== '0' && !seen.has(after)) jumps.push(shortUrl(e));
      const body = await bodyOf(e);
      if (body.next_after !== null && body.next_after !== undefined) seen.add(String(body.next_after));
      const last = (body.entries ?? []).at(-1);
      if (last) seen.add(String(last.seq));
    }
  }
  check(jumps.length === 0, () => `all ${lists} runs-list and ${histories} history requests follow the cursor of an earlier answer` +
    (jumps.length ? `; these do not: ${jumps.join(', ')}` : ''));
}

/** The part of a decoded PNG inside `rect` (document pixels = image pixels at scale 1). */
function region(png, rect) {
  const x0 = Math.max(0, Math.floor(rect.x));
  const y0 = Math.max(0, Math.floor(rect.y));
  const x1 = Math.min(png.width, Math.ceil(rect.x + rect.width));
  const y1 = Math.min(png.height, Math.ceil(rect.y + rect.height));
  const width = Math.max(0, x1 - x0);
  const height = Math.max(0, y1 - y0);
  const pixels = Buffer.alloc(width * height * png.channels);
  for (let y = 0; y < height; y += 1) {
    const from = ((y0 + y) * png.width + x0) * png.channels;
    png.pixels.copy(pixels, y * width * png.channels, from, from + width * png.channels);
  }
  return { width, height, channels: png.channels, pixels };
}

/** How many pixels differ clearly from the region's most common colour (its background). */
function ink(png) {
  if (!png.width || !png.height) return { count: 0, share: 0 };
  const bg = dominantColour(png);
  let count = 0;
  const n = png.width * png.height;
  for (let i = 0; i < n; i += 1) {
    const o = i * png.channels;
    const d = Math.abs(png.pixels[o] - bg.r) + Math.abs(png.pixels[o + 1] - bg.g) + Math.abs(png.pixels[o + 2] - bg.b);
    if (d > 96) count += 1;
  }
  return { count, share: count / n, bg };
}

/** Rectangles in document coordinates (what a full-page screenshot maps one to one). */
const rectsOf = (locator) => locator.evaluateAll((els) => els.map((e) => {
  const r = e.getBoundingClientRect();
  return { x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height };
}));

/**
 * A full-page screenshot, decoded, with a check that each of `rows` (a locator) has text drawn
 * and that `area` is not blank.
 */
async function checkPainted(page, shots, name, area, rows, what) {
  const file = path.join(shots, `${name}.png`);
  const png = decodePng(await page.screenshot({ path: file, fullPage: true, animations: 'disabled' }));
  const [box] = await rectsOf(area);
  const boxes = await rectsOf(rows);
  const whole = ink(region(png, box));
  check(whole.share > 0.01, `${what}: the screenshot (${file}) is not blank there: ` +
    `${(whole.share * 100).toFixed(1)}% of ${Math.round(box.width)}×${Math.round(box.height)} px differ from the background`);
  const blank = boxes.map((b, i) => ({ i, n: ink(region(png, b)).count })).filter((r) => r.n < 20);
  check(boxes.length > 0 && blank.length === 0, () => `${what}: each of the ${boxes.length} rows has text drawn in the screenshot` +
    (blank.length ? `; blank rows: ${blank.slice(0, 10).map((r) => r.i + 1).join(', ')}${blank.length > 10 ? '…' : ''}` : ''));
}

/** Waits until the runs table shows the answer for this filter, search and page. */
async function listSettled(page, h, { status = '', q = '', pageNo = 1 }, what) {
  const sel = `[data-testid="runs-table"][aria-busy="false"][data-status=${JSON.stringify(status)}]` +
    `[data-q=${JSON.stringify(q)}][data-page="${pageNo}"]`;
  await h.visible(page.locator(sel), what, BIG_TIMEOUT);
}

const shownRuns = (h) => h.byId('run-row').evaluateAll((rows) => rows.map((r) => ({
  id: r.dataset.runId, status: r.dataset.status, flow: (r.cells[1]?.textContent ?? '').trim(),
})));

async function bigRunsList(page, h, base, log, shots, minRuns) {
  console.log('runs list (large store)');
  const mark = log.api.length;
  await page.goto(`${base}/#/runs`);
  await listSettled(page, h, {}, 'the runs list shows its first page');
  for (const s of ['all', ...STATUSES]) {
    await h.waitText(h.byId(`count-${s}`), new RegExp(`${s}\\s*\\d+`), `the count of ${s} runs is shown`, BIG_TIMEOUT);
  }
  // All read at once: the counts refresh on their own every few seconds.
  const counts = await h.byId('counts').evaluate((box) => Object.fromEntries(
    [...box.querySelectorAll('.count')].map((b) => [b.dataset.testid.slice('count-'.length), Number(b.querySelector('.n').textContent)])));
  const sum = STATUSES.reduce((t, s) => t + counts[s], 0);
  check(sum === counts.all, `the status counts add up to the "all" count (${STATUSES.map((s) => `${s} ${counts[s]}`).join(', ')}: ${sum})`);
  check(sum >= minRuns, `the counts add up to at least ${minRuns} runs (${sum})`);
  const server = await apiGet(base, '/runs/counts');
  const serverSum = STATUSES.reduce((t, s) => t + Number(server[s] ?? 0), 0);
  check(serverSum === sum, `the page counts as many runs as the server (${serverSum})`);

  const first = await shownRuns(h);
  check(first.length >= 1 && first.length <= RUNS_SHOWN, `the table shows one page: ${first.length} rows (1 to ${RUNS_SHOWN})`);
  const lists = since(log, mark, 'list');
  check(lists.length >= 1 && lists.length <= 2, `the list was loaded with ${lists.length} request(s) to /api/v1/runs (at most 2): ${listUrls(lists)}`);
  checkLimits(lists, 'the runs list');
  check(lists.every((e) => !e.params.get('cursor')), 'the first page was asked for without a cursor');
  const answers = await Promise.all(lists.map(bodyOf));
  const received = answers.reduce((t, a) => t + (a.runs ?? []).length, 0);
  check(received <= lists.length * RUNS_SHOWN, `the page received ${received} run summaries (one page), not the store's ${sum}`);
  const last = answers.at(-1);
  check(JSON.stringify(first.map((r) => r.id)) === JSON.stringify((last.runs ?? []).map((r) => r.id)),
    'the rows are the runs of the last answer, in its order');
  const others = log.api.slice(mark).filter((e) => !['list', 'counts'].includes(e.kind));
  check(others.length === 0, () => `the list asks for nothing per row (requests besides the list and the counts: ${listUrls(others)})`);
  check(typeof last.next_cursor === 'string' && last.next_cursor !== '', 'the server offers a next page');

  console.log('next page');
  const mark2 = log.api.length;
  await h.byId('next-page').click();
  await listSettled(page, h, { pageNo: 2 }, 'the runs list shows page 2');
  const second = await shownRuns(h);
  check(second.length >= 1 && second.length <= RUNS_SHOWN, `page 2 shows ${second.length} rows (1 to ${RUNS_SHOWN})`);
  const firstIds = new Set(first.map((r) => r.id));
  const again = second.filter((r) => firstIds.has(r.id));
  check(again.length === 0, () => `page 2 shows other runs than page 1${again.length ? `; also on page 1: ${again.map((r) => r.id).join(', ')}` : ''}`);
  const lists2 = since(log, mark2, 'list');
  check(lists2.length === 1, `page 2 took one more request to /api/v1/runs: ${listUrls(lists2)}`);
  check(lists2[0].params.get('cursor') === last.next_cursor, `that request carries the cursor of page 1 (${last.next_cursor})`);
  checkLimits(lists2, 'page 2');
  const answer2 = await bodyOf(lists2[0]);
  check(JSON.stringify(second.map((r) => r.id)) === JSON.stringify((answer2.runs ?? []).map((r) => r.id)),
    'page 2 shows the runs of its answer, in its order');
  check(new URL(page.url()).hash.includes('cursor='), `the address keeps the page (${new URL(page.url()).hash})`);
  await checkPainted(page, shots, 'large-store-runs-page-2', h.byId('runs-table'), h.byId('run-row'), 'runs list, page 2');
  return counts;
}

async function bigFilter(page, h, base, log, flow, counts) {
  console.log(`filter and search (flow ${flow})`);
  // A status that runs of `flow` have, the most common first (found through the API).
  let status = null;
  for (const s of [...STATUSES].sort((a, b) => counts[b] - counts[a])) {
    if (!counts[s]) continue;
    const found = await apiGet(base, `/runs?status=${s}&q=${encodeURIComponent(flow)}&limit=1`);
    if ((found.runs ?? []).length) { status = s; break; }
  }
  if (!status) throw new Mismatch(`the store has no run of flow ${flow} (BIG_FLOW)`);
  const mark = log.api.length;
  await h.byId('status-filter').selectOption(status);
  await listSettled(page, h, { status }, `filtered to ${status}, the list shows its first page`);
  await h.byId('search').fill(flow);
  await listSettled(page, h, { status, q: flow }, `searched for ${flow}, the list shows its first page`);
  const shown = await shownRuns(h);
  check(shown.length >= 1 && shown.length <= RUNS_SHOWN, `still one page: ${shown.length} rows (1 to ${RUNS_SHOWN})`);
  const notFlow = shown.filter((r) => r.flow !== flow);
  check(notFlow.length === 0, () => `every row is of flow ${flow}${notFlow.length ? `; not: ${notFlow.map((r) => `${r.id} (${r.flow})`).join(', ')}` : ''}`);
  const notStatus = shown.filter((r) => r.status !== status);
  check(notStatus.length === 0, () => `every row is ${status}${notStatus.length ? `; not: ${notStatus.map((r) => `${r.id} (${r.status})`).join(', ')}` : ''}`);
  const lists = since(log, mark, 'list');
  check(lists.length >= 1 && lists.length <= 2, `filter and search took ${lists.length} request(s) to /api/v1/runs (at most 2): ${listUrls(lists)}`);
  checkLimits(lists, 'filter and search');
  check(lists.every((e) => !e.params.get('cursor')), 'a new filter or search starts from the first page (no cursor)');
  const lastReq = lists.at(-1);
  check(lastReq.params.get('status') === status && lastReq.params.get('q') === flow,
    `the server did the filtering: ${shortUrl(lastReq)}`);
  const h2 = new URLSearchParams(new URL(page.url()).hash.split('?')[1] ?? '');
  check(h2.get('status') === status && h2.get('q') === flow, `the address keeps the filter and the search (${new URL(page.url()).hash})`);
}

async function bigRun(page, h, base, log, shots, runId) {
  console.log(`run ${runId} (long history)`);
  const detail = await apiGet(base, `/runs/${encodeURIComponent(runId)}`);
  const total = Number(detail.history_count);

  // Found through the list: all statuses, searched by its id.
  await h.byId('status-filter').selectOption('');
  await h.byId('search').fill(runId);
  await listSettled(page, h, { q: runId }, `searched for ${runId}, the list shows it`);
  const row = page.locator(`[data-testid="run-row"][data-run-id=${JSON.stringify(runId)}]`);
  await h.visible(row, `the row of ${runId} is there`);
  const mark = log.api.length;
  await row.getByTestId('run-link').click();

  await h.waitText(h.byId('run-id'), runId, 'the run page shows the run id', BIG_TIMEOUT);
  await h.waitText(h.byId('run-header').locator('dd[data-fact="history"]'), `${total} entries`,
    `the header says the run has ${total} history entries`, BIG_TIMEOUT);
  await h.visible(h.byId('load-more'), '"load more" is offered', BIG_TIMEOUT);
  const hist1 = since(log, mark, 'history');
  check(hist1.length === 1, `the timeline was loaded with one /history request: ${listUrls(hist1)}`);
  checkLimits(hist1, 'the first page of the timeline');
  const after1 = hist1[0].params.get('after');
  check(after1 === null || after1 === '0', `it asks for the first entries (after=${after1 ?? 'none'})`);
  const limit = Number(hist1[0].params.get('limit') ?? 100); // the server's default: 100
  const b1 = await bodyOf(hist1[0]);
  const pageSize = (b1.entries ?? []).length;
  check(pageSize === Math.min(limit, total) && pageSize >= 1 && pageSize <= MAX_PAGE,
    `the first page has ${pageSize} entries (the page asks for ${limit}; at most ${MAX_PAGE})`);
  check(Number(b1.total) === total, `the history answer counts ${b1.total} entries in all, as the run does`);
  check(total > 2 * pageSize, `the run has more history (${total}) than two pages of ${pageSize}`);
  await h.waitText(h.byId('timeline-info'), `showing ${pageSize} of ${total} entries`, `the timeline says "showing ${pageSize} of ${total} entries"`);

  const seqs = () => h.byId('timeline-row').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  const consecutive = (xs) => xs.every((x, i) => i === 0 || x === xs[i - 1] + 1);
  const s1 = await seqs();
  const want1 = b1.entries.map((e) => Number(e.seq));
  check(JSON.stringify(s1) === JSON.stringify(want1) && consecutive(s1),
    `the timeline shows that page: ${s1.length} rows, #${s1[0]} to #${s1.at(-1)}, without a gap`);

  console.log('load more');
  const mark2 = log.api.length;
  await h.byId('load-more').click();
  const expected = Math.min(2 * pageSize, total);
  await h.waitText(h.byId('timeline-info'), `showing ${expected} of ${total} entries`,
    `after "load more" the timeline says "showing ${expected} of ${total} entries"`, BIG_TIMEOUT);
  const s2 = await seqs();
  check(s2.length === expected, `the next page was appended: ${s1.length} + ${s2.length - s1.length} = ${s2.length} rows`);
  check(JSON.stringify(s2.slice(0, s1.length)) === JSON.stringify(s1), 'the first page is still there, unchanged');
  check(consecutive(s2) && s2[s1.length] === s1.at(-1) + 1,
    `the numbers go on without a gap: #${s1.at(-1)}, #${s2[s1.length]} … #${s2.at(-1)}`);
  const hist2 = since(log, mark2, 'history');
  check(hist2.length === 1, `"load more" took exactly one more /history request: ${listUrls(hist2)}`);
  checkLimits(hist2, '"load more"');
  check(hist2[0].params.get('after') === String(b1.next_after),
    `it carries after=${b1.next_after}, where the first page ended (${shortUrl(hist2[0])})`);
  await h.visible(h.byId('load-more'), '"load more" is still offered (more entries remain)');

  const dom = await page.evaluate(() => ({
    rows: document.querySelectorAll('[data-testid="timeline-row"]').length,
    trs: document.querySelectorAll('tr').length,
    nodes: document.getElementsByTagName('*').length,
  }));
  check(dom.rows < 1000 && dom.trs < 1000,
    `the page holds ${dom.rows} timeline rows (${dom.trs} table rows, ${dom.nodes} elements), far below the run's ${total} entries`);
  const received = (await Promise.all(log.api.filter((e) => e.kind === 'history').map(bodyOf)))
    .reduce((t, b) => t + (b.entries ?? []).length, 0);
  check(received === expected, `the page received ${received} history entries in all, the ${expected} it shows`);

  // The flow diagram and the data document.
  const transitions = detail.transitions ?? [];
  const cursor = [...new Set((detail.cursor ?? []).map(String))];
  if (!transitions.length && !cursor.length) {
    await h.waitText(h.byId('diagram'), /No flow definition to draw/, 'without a flow definition, the diagram area says so');
  } else if (!transitions.length) {
    await h.waitText(h.byId('diagram'), /No flow definition to draw/, 'without a flow definition, the diagram area says so');
    const drawn = await h.byId('diagram').locator('.node').evaluateAll((ns) => ns.map((n) => n.getAttribute('data-event')));
    check(drawn.length === cursor.length && drawn.every((e) => cursor.includes(e)),
      `without a flow definition, the diagram shows only where the run is (${cursor.join(', ')}): ${drawn.join(', ')}`);
  } else {
    await h.visible(h.byId('diagram').locator('.node'), `the flow diagram has nodes (${transitions.length} transitions)`);
  }
  const want = JSON.stringify(detail.data === undefined ? null : detail.data, null, 2);
  try {
    await page.waitForFunction((w) => document.querySelector('[data-testid="data-document"]')?.textContent === w, want, { timeout: UI_TIMEOUT });
  } catch {
    const got = await h.byId('data-document').textContent();
    throw new Mismatch(`the data document is not the run's data: ${JSON.stringify(got.slice(0, 200))} vs ${JSON.stringify(want.slice(0, 200))}`);
  }
  check(true, `the data document shows the run's data (${want.length} characters)`);
  const banner = await h.byId('error-message').isVisible() ? (await h.byId('error-message').textContent()).trim() : '';
  check(banner === '', `no error banner on the run page${banner ? `: ${banner}` : ''}`);
  await checkPainted(page, shots, 'large-store-run', h.byId('timeline'), h.byId('timeline-row'), 'timeline');
}

async function largeStore(page, h, base, log, shots, problems) {
  const runId = env('BIG_RUN');
  const flow = env('BIG_FLOW');
  const minRuns = Number(env('MIN_RUNS', '100000'));
  if (!Number.isInteger(minRuns) || minRuns < 1) throw new Mismatch(`MIN_RUNS is not a positive whole number: ${process.env.MIN_RUNS}`);
  const counts = await bigRunsList(page, h, base, log, shots, minRuns);
  await bigFilter(page, h, base, log, flow, counts);
  await bigRun(page, h, base, log, shots, runId);
  await checkFollows(log);
  checkLimits(log.api.filter((e) => e.kind === 'list' || e.kind === 'history'), 'the whole visit');
  const byKind = {};
  for (const e of log.api) byKind[e.kind] = (byKind[e.kind] ?? 0) + 1;
  console.log(`  (requests: ${log.all.length} in all; to the API: ${Object.entries(byKind).map(([k, n]) => `${k} ${n}`).join(', ')})`);
  check(!byKind.other, () => `no request to another API path (${listUrls(log.api.filter((e) => e.kind === 'other'))})`);
  check(problems.length === 0, () => `no page error, console error or failed request${problems.length ? `: ${problems.join('; ')}` : ''}`);
}

async function main() {
  const base = env('STEPFLOW_URL').replace(/\/+$/, '');
  const big = (process.env.BIG_RUN ?? '') !== '';
  const token = big ? '' : env('STEPFLOW_TOKEN');
  const waiting = big ? '' : env('WAITING_RUN');
  const failed = big ? '' : env('FAILED_RUN');
  const shots = env('SCREENSHOTS');
  const executablePath = env('CHROMIUM', '/usr/bin/chromium');
  if (!fs.existsSync(executablePath)) throw new Mismatch(`no browser at ${executablePath} (run tests/web/install)`);
  fs.mkdirSync(shots, { recursive: true });

  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.setDefaultTimeout(UI_TIMEOUT);
  const problems = [];
  const origin = new URL(base).origin;
  page.on('pageerror', (e) => problems.push(`uncaught error in the page: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    console.log(`  (browser console) ${m.text()}`);
    if (big) problems.push(`console error: ${m.text()}`);
  });
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('data:')) problems.push(`the page fetched from outside the server: ${u}`);
  });
  const log = big ? recordRequests(page, origin, problems) : null;

  const h = helpers(page, shots);
  try {
    if (big) {
      await largeStore(page, h, base, log, shots, problems);
    } else {
      await runsList(page, h, base, waiting);
      await approveWaitingRun(page, h, base, token, waiting);
      await resumeFailedRun(page, h, base, failed);
      check(problems.length === 0, () => `no page errors and no outside requests${problems.length ? `: ${problems.join('; ')}` : ''}`);
    }
  } catch (e) {
    await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    e.message += `\n  at ${page.url()} (screenshot: ${path.join(shots, 'failure.png')})` +
      (problems.length ? `\n  page problems: ${problems.join('; ')}` : '');
    throw e;
  } finally {
    await browser.close();
  }
  console.log(big ? `web scenario (large store): ${passed} checks passed` : `web scenario: ${passed} checks passed`);
}

main().catch((e) => {
  const mode = process.env.BIG_RUN ? 'web scenario (large store)' : 'web scenario';
  console.error(`${mode} FAILED after ${passed} checks: ${e instanceof Mismatch ? e.message : e.stack ?? e}`);
  process.exit(1);
});
