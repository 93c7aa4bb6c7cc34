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

async function main() {
  const base = env('STEPFLOW_URL').replace(/\/+$/, '');
  const token = env('STEPFLOW_TOKEN');
  const waiting = env('WAITING_RUN');
  const failed = env('FAILED_RUN');
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
  page.on('console', (m) => { if (m.type() === 'error') console.log(`  (browser console) ${m.text()}`); });
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin) && !u.startsWith('data:')) problems.push(`the page fetched from outside the server: ${u}`);
  });

  const h = helpers(page, shots);
  try {
    await runsList(page, h, base, waiting);
    await approveWaitingRun(page, h, base, token, waiting);
    await resumeFailedRun(page, h, base, failed);
    check(problems.length === 0, () => `no page errors and no outside requests${problems.length ? `: ${problems.join('; ')}` : ''}`);
  } catch (e) {
    await page.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    e.message += `\n  at ${page.url()} (screenshot: ${path.join(shots, 'failure.png')})` +
      (problems.length ? `\n  page problems: ${problems.join('; ')}` : '');
    throw e;
  } finally {
    await browser.close();
  }
  console.log(`web scenario: ${passed} checks passed`);
}

main().catch((e) => {
  console.error(`web scenario FAILED after ${passed} checks: ${e instanceof Mismatch ? e.message : e.stack ?? e}`);
  process.exit(1);
});
