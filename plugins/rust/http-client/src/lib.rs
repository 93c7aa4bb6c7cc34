//! One blocking HTTP request over `wasi:http`, for the plugins that call HTTP (`httpcall`,
//! `deployer`).
//!
//! It uses the raw WASI 0.2 bindings of the [`wasi`] crate synchronously: send the request with
//! `wasi:http/outgoing-handler`, write the body, then wait on each pollable with `.block()`. The
//! host decides what may be reached (the flow file's `http:` grant) and applies its limits; a
//! request it refuses fails with [`ErrorCode::HttpRequestDenied`].

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

pub use wasi::http::types::ErrorCode;

/// A response: its status, headers (names in lower case) and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, read to its end.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The parts of an absolute `http` or `https` URL: scheme, authority and path with query.
pub fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((scheme, authority, if path.is_empty() { "/" } else { path }))
}

/// A short name for an error code: `HttpRequestDenied`, `ConnectionRefused`,
/// `DnsError(DnsErrorPayload { .. })`.
pub fn describe(error: &ErrorCode) -> String {
    let text = format!("{error:?}");
    text.strip_prefix("ErrorCode::")
        .unwrap_or(&text)
        .to_string()
}

/// Sends one request and reads the whole response. `method` is e.g. `GET`; `url` an absolute
/// `http(s)` URL; `headers` are sent as given; `body`, if any, is sent as it is (with a
/// `content-length` unless `headers` has one).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ErrorCode> {
    let (scheme, authority, path) = split_url(url).ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let mut fields = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect::<Vec<_>>();
    // A known length rather than a chunked body: some servers read only the former.
    if let Some(bytes) = body
        && !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        let length = bytes.len().to_string().into_bytes();
        fields.push(("content-length".into(), length));
    }
    let fields = Fields::from_list(&fields)
        .map_err(|e| ErrorCode::InternalError(Some(format!("a request header: {e}"))))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| ErrorCode::InternalError(Some(format!("invalid {what}")));
    request
        .set_method(&method_of(method))
        .map_err(|()| invalid("method"))?;
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request
        .set_authority(Some(authority))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    let outgoing = request.body().map_err(|()| invalid("request body"))?;

    let pending = outgoing_handler::handle(request, None)?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| invalid("request body"))?;
        // At most 4096 bytes per blocking write (the WASI limit).
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| stream_error(e, "writing the request body"))?;
        }
    }
    OutgoingBody::finish(outgoing, None)?;

    let response = loop {
        match pending.get() {
            Some(result) => break result.map_err(|()| invalid("response (taken twice)"))??,
            None => pending.subscribe().block(),
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response.consume().map_err(|()| invalid("response body"))?;
    let body = read_all(&incoming)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_all(incoming: &IncomingBody) -> Result<Vec<u8>, ErrorCode> {
    let stream = incoming
        .stream()
        .map_err(|()| ErrorCode::InternalError(Some("invalid response body".into())))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e, "reading the response body")),
        }
    }
}

fn stream_error(error: StreamError, doing: &str) -> ErrorCode {
    match error {
        StreamError::Closed => ErrorCode::InternalError(Some(format!("{doing}: stream closed"))),
        StreamError::LastOperationFailed(e) => wasi::http::types::http_error_code(&e)
            .unwrap_or_else(|| ErrorCode::InternalError(Some(format!("{doing}: {e}")))),
    }
}

fn method_of(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(method.to_string()),
    }
}
