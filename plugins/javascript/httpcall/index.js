// One HTTP request through the host: the JavaScript twin of `fetch` in plugins/rust/httpcall
// (and plugins/python/httpcall).
//
// The data document's `request` is {"method": "GET", "url": "http://...", "body": "..."}; the
// host sends it (wasi:http/outgoing-handler) only if the flow's `http:` grant allows it. The raw
// bindings are used synchronously, not `fetch()`, whose errors do not say which error-code the
// host gave: an HTTP-layer error is fatal when the host denied the request (HTTP-request-denied),
// retryable otherwise; the message names the method and URL, never the token.

import { getEnvironment } from 'wasi:cli/environment@0.2.12';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, httpErrorCode } from 'wasi:http/types@0.2.12';

const CHUNK = 4096; // the most one blocking-write-and-flush may take
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'];
// A resource is dropped when collected, or at once with this method: a child resource (a
// stream, a pollable) must be dropped before its parent is used up or dropped.
const dispose = Symbol.dispose ?? Symbol.for('dispose');

// A request failed at the HTTP layer with `code`, a wasi:http error-code ({ tag, val }).
class HttpError {
  constructor(code) {
    this.code = code;
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const internal = (val) => ({ tag: 'internal-error', val });

// The error-code for what a failed wasi:http or wasi:io call threw (its `payload`).
function codeOf(e, doing) {
  if (!isObject(e) || !Object.prototype.hasOwnProperty.call(e, 'payload')) throw e; // a bug: trap
  const p = e.payload;
  if (p?.tag === 'last-operation-failed') {
    return httpErrorCode(p.val) ?? internal(`${doing}: ${p.val.toDebugString()}`);
  }
  if (p?.tag === 'closed') return internal(`${doing}: stream closed`);
  return typeof p?.tag === 'string' ? p : internal(`invalid ${doing}`);
}

// `HttpRequestDenied`, `ConnectionRefused`, `InternalError("...")`: the Rust plugin's words.
function describe(code) {
  const name = code.tag.split('-').map((w) => w[0].toUpperCase() + w.slice(1).toLowerCase()).join('');
  return code.val === undefined ? name : `${name}(${JSON.stringify(code.val)})`;
}

// [scheme, authority, path with query] of an absolute http(s) URL, or undefined.
function splitUrl(url) {
  const m = /^(https?):\/\/([^/?#]+)([^#]*)/i.exec(url);
  return m && [m[1].toLowerCase(), m[2], m[3] || '/'];
}

// Sends one request and reads the whole response: { status, text }. Throws HttpError.
function send(method, url, headers, body) {
  const parts = splitUrl(url);
  if (!parts) throw new HttpError({ tag: 'HTTP-request-URI-invalid' });
  const [scheme, authority, path] = parts;
  let doing = 'request';
  try {
    const enc = new TextEncoder();
    let fields;
    try {
      fields = Fields.fromList(headers.map(([k, v]) => [k, enc.encode(v)]));
    } catch (e) {
      throw new HttpError(internal(`a request header: ${describe(e.payload)}`));
    }
    const request = new OutgoingRequest(fields);
    request.setMethod(METHODS.includes(method) ? { tag: method.toLowerCase() } : { tag: 'other', val: method });
    request.setScheme({ tag: scheme.toUpperCase() });
    request.setAuthority(authority);
    request.setPathWithQuery(path);
    const outgoing = request.body();
    const pending = handle(request, undefined);
    let result;
    try {
      doing = 'writing the request body';
      if (body !== undefined) {
        const stream = outgoing.write();
        try {
          const bytes = enc.encode(body);
          for (let i = 0; i < bytes.length; i += CHUNK) {
            stream.blockingWriteAndFlush(bytes.subarray(i, i + CHUNK));
          }
        } finally {
          stream[dispose]();
        }
      }
      OutgoingBody.finish(outgoing, undefined);
      while ((result = pending.get()) === undefined) {
        const ready = pending.subscribe();
        ready.block();
        ready[dispose]();
      }
    } finally {
      pending[dispose]();
    }
    if (result.tag !== 'ok') throw new HttpError(internal('invalid response (taken twice)'));
    if (result.val.tag !== 'ok') throw new HttpError(result.val.val);
    doing = 'reading the response body';
    const response = result.val.val;
    const incoming = response.consume();
    const stream = incoming.stream();
    const dec = new TextDecoder(); // invalid UTF-8 becomes U+FFFD
    let text = '';
    try {
      for (;;) text += dec.decode(stream.blockingRead(64n * 1024n), { stream: true });
    } catch (e) {
      if (e?.payload?.tag !== 'closed') throw e;
    } finally {
      stream[dispose]();
    }
    const status = response.status();
    incoming[dispose]();
    response[dispose]();
    return { status, text: text + dec.decode() };
  } catch (e) {
    throw e instanceof HttpError ? e : new HttpError(codeOf(e, doing));
  }
}

// [method, url, body] of the data document's `request`; a fatal step error if malformed.
function requestOf(d) {
  const r = isObject(d) && isObject(d.request) ? d.request : {};
  const method = r.method ?? 'GET';
  if (typeof method !== 'string' || method === '') throw { tag: 'fatal', val: '`request.method` must be a string' };
  if (typeof r.url !== 'string') throw { tag: 'fatal', val: '`request.url` must be a string' };
  const body = r.body ?? undefined;
  return [method.toUpperCase(), r.url, body === undefined || typeof body === 'string' ? body : JSON.stringify(body)];
}

// Sends `request`; patches {"response": {"status", "body"}}. (Not named `fetch` inside this
// module, where that would hide the global; exported as the world's `fetch`.)
function fetchStep(ctx) {
  let d;
  try {
    d = JSON.parse(ctx.data);
  } catch (e) {
    throw { tag: 'fatal', val: `the data document is not JSON: ${e.message}` };
  }
  const [method, url, body] = requestOf(d);
  const headers = [['x-idempotency-key', ctx.idempotencyKey]];
  const token = new Map(getEnvironment()).get('API_TOKEN');
  if (token !== undefined) headers.push(['authorization', `Bearer ${token}`]);
  if (body !== undefined) headers.push(['content-type', 'application/json']);
  try {
    const { status, text } = send(method, url, headers, body);
    return JSON.stringify({ response: { status, body: text } });
  } catch (e) {
    if (!(e instanceof HttpError)) throw e;
    const message = `${method} ${url} failed: ${describe(e.code)}`;
    throw { tag: e.code.tag === 'HTTP-request-denied' ? 'fatal' : 'retryable', val: message };
  }
}

export { fetchStep as fetch };
