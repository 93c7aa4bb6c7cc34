"""One HTTP request through the host: the Python twin of `fetch` in plugins/rust/httpcall.

The data document's `request` is {"method": "GET", "url": "http://...", "body": "..."}; the host
sends it (wasi:http/outgoing-handler) only if the flow's `http:` grant allows it. The raw
bindings are used synchronously: send, write the body, then block on each pollable. An
HTTP-layer error is fatal when the host denied the request (HTTP-request-denied), retryable
otherwise; the message names the method and URL, never the token.
"""

import json
import os
import typing

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, wasi_http_types as http
from wit_world.imports.stepflow_plugin_types import StepContext, StepError_Fatal, StepError_Retryable
from wit_world.imports.streams import StreamError_Closed, StreamError_LastOperationFailed

CHUNK = 4096  # the most one blocking-write-and-flush may take
ERROR_CODES = typing.get_args(http.ErrorCode)
METHODS = {"GET": http.Method_Get, "HEAD": http.Method_Head, "POST": http.Method_Post,
           "PUT": http.Method_Put, "DELETE": http.Method_Delete, "CONNECT": http.Method_Connect,
           "OPTIONS": http.Method_Options, "TRACE": http.Method_Trace, "PATCH": http.Method_Patch}


class HttpError(Exception):
    """A request failed at the HTTP layer with `code`, a wasi:http error-code."""

    def __init__(self, code):
        self.code = code


def fatal(message):
    return Err(StepError_Fatal(message))


def code_of(value, doing: str):
    """The error-code for the Err payload of a failed wasi:http or wasi:io call."""
    if isinstance(value, ERROR_CODES):
        return value
    if isinstance(value, StreamError_LastOperationFailed):
        return http.http_error_code(value.value) or http.ErrorCode_InternalError(
            f"{doing}: {value.value.to_debug_string()}")
    if isinstance(value, StreamError_Closed):
        return http.ErrorCode_InternalError(f"{doing}: stream closed")
    return http.ErrorCode_InternalError(f"invalid {doing}")


def describe(code) -> str:
    """`HttpRequestDenied`, `ConnectionRefused`, `InternalError("...")`: the Rust plugin's words."""
    name = type(code).__name__.split("_", 1)[-1]  # ErrorCode_HttpRequestDenied, HeaderError_...
    value = getattr(code, "value", None)
    return name if value is None else f"{name}({json.dumps(value, default=vars)})"


def split_url(url: str):
    """(scheme, authority, path with query) of an absolute http(s) URL, or None."""
    scheme, sep, rest = url.partition("://")
    rest = rest.split("#")[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    if not sep or scheme.lower() not in ("http", "https") or end == 0:
        return None
    return scheme.lower(), rest[:end], rest[end:] or "/"


def send(method: str, url: str, headers: list, body: bytes | None):
    """Sends one request and reads the whole response: (status, body). Raises HttpError."""
    parts = split_url(url)
    if parts is None:
        raise HttpError(http.ErrorCode_HttpRequestUriInvalid())
    scheme, authority, path = parts
    doing = "request"
    try:
        try:
            fields = http.Fields.from_list([(k, v.encode()) for k, v in headers])
        except Err as e:
            raise HttpError(http.ErrorCode_InternalError(f"a request header: {describe(e.value)}"))
        request = http.OutgoingRequest(fields)
        request.set_method(METHODS[method]() if method in METHODS else http.Method_Other(method))
        request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
        request.set_authority(authority)
        request.set_path_with_query(path)
        outgoing = request.body()
        with outgoing_handler.handle(request, None) as pending:
            doing = "writing the request body"
            if body is not None:
                with outgoing.write() as stream:  # a child of `outgoing`: dropped before finish
                    for i in range(0, len(body), CHUNK):
                        stream.blocking_write_and_flush(body[i:i + CHUNK])
            http.OutgoingBody.finish(outgoing, None)
            while (result := pending.get()) is None:
                with pending.subscribe() as ready:
                    ready.block()
        if not isinstance(result, Ok):
            raise HttpError(http.ErrorCode_InternalError("invalid response (taken twice)"))
        if not isinstance(result.value, Ok):
            raise HttpError(result.value.value)
        doing = "reading the response body"
        with result.value.value as response, response.consume() as incoming:
            with incoming.stream() as stream:
                received = bytearray()
                while True:
                    try:
                        received += stream.blocking_read(64 * 1024)
                    except Err as e:
                        if not isinstance(e.value, StreamError_Closed):
                            raise
                        break
            return response.status(), bytes(received)
    except Err as e:
        raise HttpError(code_of(e.value, doing))


def request_of(d):
    """(method, url, body) of the data document's `request`; a fatal step error if malformed."""
    r = d.get("request") if isinstance(d, dict) else None
    r = r if isinstance(r, dict) else {}
    method = "GET" if r.get("method") is None else r["method"]
    if not isinstance(method, str) or not method:
        raise fatal("`request.method` must be a string")
    url = r.get("url")
    if not isinstance(url, str):
        raise fatal("`request.url` must be a string")
    body = r.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return method.upper(), url, body


class WitWorld(wit_world.WitWorld):
    def fetch(self, ctx: StepContext) -> str | None:
        """Sends `request`; patches `{"response": {"status", "body"}}`."""
        try:
            d = json.loads(ctx.data)
        except ValueError as e:
            raise fatal(f"the data document is not JSON: {e}")
        method, url, body = request_of(d)
        headers = [("x-idempotency-key", ctx.idempotency_key)]
        token = os.environ.get("API_TOKEN")
        if token is not None:
            headers.append(("authorization", f"Bearer {token}"))
        if body is not None:
            headers.append(("content-type", "application/json"))
        try:
            status, received = send(method, url, headers, None if body is None else body.encode())
        except HttpError as e:
            message = f"{method} {url} failed: {describe(e.code)}"
            denied = isinstance(e.code, http.ErrorCode_HttpRequestDenied)
            raise Err(StepError_Fatal(message) if denied else StepError_Retryable(message))
        text = received.decode("utf-8", "replace")
        return json.dumps({"response": {"status": status, "body": text}}, ensure_ascii=False)
