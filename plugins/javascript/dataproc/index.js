// A multi-stage data-processing flow against a simulated paged source: the JavaScript twin of
// plugins/rust/dataproc, with the same patches, errors and log lines.
//
// The data document drives it: `pages` is how many pages the source has, `flaky` makes every
// page's transform fail on its first attempt. Everything is derived from the data document, so
// a run resumed after a crash ends exactly as an uninterrupted one.

import { log } from 'stepflow:plugin/host@0.1.0';

// The run's data document; a document that is not JSON is a fatal step error.
function data(ctx) {
  try {
    return JSON.parse(ctx.data);
  } catch (e) {
    throw { tag: 'fatal', val: `the data document is not JSON: ${e.message}` };
  }
}

// serde_json's `as_u64`: a non-negative integer, or undefined.
function u64(v) {
  return Number.isInteger(v) && v >= 0 ? v : undefined;
}

// Fetches the next page: ten records whose values depend only on the page number.
export function fetchPage(ctx) {
  const d = data(ctx);
  const page = (u64(d.page) ?? 0) + 1;
  const records = Array.from({ length: 10 }, (_, i) => page * 100 + i);
  log('info', `fetched page ${page}`, []);
  return JSON.stringify({ page, records });
}

// Transforms the current page's records and adds them to the running total; with `flaky` set,
// the first attempt on every page fails.
export function transform(ctx) {
  const d = data(ctx);
  if (d.flaky === true && ctx.attempt === 1) {
    const page = JSON.stringify(d.page ?? null);
    throw { tag: 'retryable', val: `the transform service timed out on page ${page}` };
  }
  const records = Array.isArray(d.records) ? d.records : [];
  const sum = records.map(u64).filter((v) => v !== undefined).reduce((a, v) => a + v * 2, 0);
  const total = (u64(d.total) ?? 0) + sum;
  const done = (u64(d.transformed_pages) ?? 0) + 1;
  return JSON.stringify({ records: null, total, transformed_pages: done });
}

export function lastPage(ctx) {
  const d = data(ctx);
  return (u64(d.page) ?? 0) >= (u64(d.pages) ?? 1);
}

export function summarize(ctx) {
  const d = data(ctx);
  const summary = `${u64(d.transformed_pages) ?? 0} pages, total ${u64(d.total) ?? 0}`;
  log('info', summary, []);
  return JSON.stringify({ summary });
}
