// A minimal stepflow plugin: one action, one condition, one error handler.
//
// WIT names map to JavaScript in camelCase: the export `should-retry` is `shouldRetry`, the
// record field `idempotency-key` is `ctx.idempotencyKey`. A step returns its value; it fails by
// throwing a `step-error`: { tag: 'retryable' | 'fatal', val: 'message' }.

import { log } from 'stepflow:plugin/host@0.1.0';

// The run's data document (JSON text in ctx.data) as an object.
function data(ctx) {
  try {
    return JSON.parse(ctx.data);
  } catch (e) {
    throw { tag: 'fatal', val: `the data document is not JSON: ${e.message}` };
  }
}

// Action: greets `name` and counts the greetings. The returned string is a JSON merge patch
// (RFC 7386): keys it sets are set, keys set to null are removed; return undefined for no change.
export function greet(ctx) {
  const d = data(ctx);
  if (typeof d.name !== 'string') {
    throw { tag: 'fatal', val: 'data.name must be a string' };
  }
  const greeted = (d.greeted ?? 0) + 1;
  log('info', `hello, ${d.name}`, [['greeted', String(greeted)], ['attempt', String(ctx.attempt)]]);
  return JSON.stringify({ greeting: `hello, ${d.name}`, greeted });
}

// Condition: true once `greeted` reaches `times` (default 1).
export function done(ctx) {
  const d = data(ctx);
  return (d.greeted ?? 0) >= (d.times ?? 1);
}

// Error handler: asked whether the enclosing `retry` group runs again after `error` (the
// message of the step's error); here, yes until the third attempt.
export function shouldRetry(ctx, error) {
  log('warn', `step failed: ${error}`, [['attempt', String(ctx.attempt)]]);
  return ctx.attempt < 3;
}
