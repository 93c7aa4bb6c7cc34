// A stepflow plugin in JavaScript: one action, one condition, one error handler.
//
// WIT names map to JavaScript in camelCase: the export `should-retry` is `shouldRetry`, the
// record field `idempotency-key` is `ctx.idempotencyKey`. A step returns its value; it fails by
// throwing a `step-error`: { tag: 'retryable' | 'fatal', val: 'message' }.

import { log } from 'stepflow:plugin/host@0.1.0';

// The run's data document (JSON text in ctx.data) as an object.
function data(ctx) {
  try {
    const d = JSON.parse(ctx.data);
    return d !== null && typeof d === 'object' ? d : {};
  } catch (e) {
    throw { tag: 'fatal', val: `the data document is not JSON: ${e.message}` };
  }
}

// Action: greets `name` and counts the greetings in a JSON merge patch (RFC 7386: keys it sets
// are set, nested objects merge, null deletes). Return undefined to leave the data alone.
export function greet(ctx) {
  const d = data(ctx);
  const name = d.name ?? 'world';
  if (typeof name !== 'string') {
    // Fatal: no retry can fix the input, so the run fails here (no handler is asked).
    throw { tag: 'fatal', val: '`name` must be a string' };
  }
  const greetings = (d.greetings ?? 0) + 1;
  if (d.fail_first && greetings === 1 && ctx.attempt === 1) {
    // Retryable: an enclosing `retry` may run the group again (its handler decides).
    throw { tag: 'retryable', val: 'the greeter is not ready yet' };
  }
  log('info', 'greeting', [['name', name]]);
  return JSON.stringify({ greeting: `hello, ${name}`, greetings });
}

// Condition: true once there are `want` greetings (1 when not set).
export function ready(ctx) {
  const d = data(ctx);
  return (d.greetings ?? 0) >= (d.want ?? 1);
}

// Error handler: asked only about retryable errors; retries while fewer than 3 attempts were
// made.
export function shouldRetry(ctx, error) {
  log('warn', 'the step failed', [['error', error], ['attempt', String(ctx.attempt)]]);
  return ctx.attempt < 3;
}
