// For the API benchmark (host/api/benches/api.rs): opens a run's event stream in headless
// chromium, as the web page does (EventSource), and prints one line per `run` event with the
// wall-clock time it reached the page, in microseconds since the Unix epoch:
//   ready
//   event <unix-us>
// Reads STEPFLOW_URL, RUN and CHROMIUM (default /usr/bin/chromium). Runs until its stdin
// closes.

import fs from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.STEPFLOW_URL.replace(/\/+$/, '');
const run = process.env.RUN;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(executablePath)) {
  console.error(`no browser at ${executablePath} (run tests/web/install)`);
  process.exit(3);
}
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
const page = await browser.newPage();
await page.exposeFunction('arrived', (us) => console.log(`event ${us}`));
await page.goto(`${base}/openapi.json`);
await page.evaluate((url) => new Promise((resolve) => {
  const source = new EventSource(url);
  let first = true;
  source.addEventListener('run', () => {
    // performance.timeOrigin + now(): wall-clock time with sub-millisecond resolution.
    const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
    if (first) { first = false; resolve(); return; }
    window.arrived(us);
  });
}), `${base}/api/v1/runs/${run}/events`);
console.log('ready');
process.stdin.resume();
process.stdin.on('end', async () => { await browser.close(); process.exit(0); });
