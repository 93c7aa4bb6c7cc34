//! Outbound HTTP (`wasi:http/outgoing-handler`): what a flow lets a plugin call, the limits on
//! each call, and the hook every request a plugin makes passes through before a connection is
//! opened.
//!
//! Denied by default: a plugin without grants has the interface linked, but every request is
//! answered `HTTP-request-denied`. A request is let through only when one grant covers its
//! scheme, host, port, path and method; a redirect whose target no grant covers is refused as
//! well, so a granted host cannot hand the plugin on to another. wasi:http never follows a
//! redirect itself, and a plugin that follows one makes a new request, which is checked again.
//! The grant trusts the DNS of the host it names: names are not resolved here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::LogTag;

/// One thing a plugin may call: a scheme, a host, a port, a path pattern and methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGrant {
    /// Whether this grant is for plain `http://` (only when the flow says so) instead of
    /// `https://`.
    pub plain: bool,
    /// The host, lowercase: a name, an IP address (`[::1]` for IPv6) or `*.example.com` for
    /// every subdomain of `example.com`.
    pub host: String,
    /// The port; `None` is the scheme's own (443, or 80 for plain HTTP).
    pub port: Option<u16>,
    /// The path the request's path must match; `*` stands for any run of characters,
    /// `/` included (`/v1/*`).
    pub path: String,
    /// The methods allowed, uppercase (`GET`, `POST`).
    pub methods: Vec<String>,
}

impl HttpGrant {
    /// The grant as a flow writes it, e.g. `https://api.example.com/v1/*`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{scheme}://{}{port}{}", self.host, self.path)
    }

    fn port(&self) -> u16 {
        self.port.unwrap_or(if self.plain { 80 } else { 443 })
    }

    fn covers_host(&self, host: &str) -> bool {
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.host == host,
        }
    }

    /// Whether the grant covers a request's place, its method aside.
    fn covers(&self, target: &Target<'_>) -> bool {
        self.plain == target.plain
            && self.port() == target.port
            && self.covers_host(&target.host)
            && glob(&self.path, target.path)
    }
}

/// How far one call's HTTP may go; every limit has a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a connection to be set up.
    pub connect_timeout: Duration,
    /// Longest one request may take, from sending it to the last byte of the response.
    pub timeout: Duration,
    /// Largest response body one request may receive.
    pub max_response_bytes: u64,
    /// Most requests one call may make.
    pub max_requests: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 << 20,
            max_requests: 100,
        }
    }
}

/// The hook wasmtime-wasi-http sends every request of one store through: the grants, the
/// limits, and how many requests the current call made.
pub(crate) struct HttpPolicy {
    grants: std::sync::Arc<[HttpGrant]>,
    limits: HttpLimits,
    sent: u32,
    tag: LogTag,
}

impl HttpPolicy {
    /// A policy for `grants`, shared by every instance of a plugin (a fresh instance per call
    /// copies nothing).
    pub fn new(grants: std::sync::Arc<[HttpGrant]>, limits: HttpLimits) -> Self {
        HttpPolicy {
            grants,
            limits,
            sent: 0,
            tag: LogTag::default(),
        }
    }

    /// A new call begins: its requests are counted from zero and logged under its step.
    pub fn start_call(&mut self, tag: LogTag) {
        self.sent = 0;
        self.tag = tag;
    }

    /// Why `method uri` may not be sent, if it may not.
    fn refusal(&mut self, method: &Method, uri: &Uri) -> Option<String> {
        self.sent = self.sent.saturating_add(1);
        if self.grants.is_empty() {
            return Some(
                "the plugin has no `http` grant; list what it may call under `http:`".into(),
            );
        }
        if self.sent > self.limits.max_requests {
            return Some(format!(
                "the call already made {} requests, its limit (`http-limits: {{max-requests}}`)",
                self.limits.max_requests
            ));
        }
        let target = match Target::of(uri) {
            Ok(target) => target,
            Err(why) => return Some(why),
        };
        let covering: Vec<&HttpGrant> = self.grants.iter().filter(|g| g.covers(&target)).collect();
        if covering.is_empty() {
            return Some(format!(
                "no `http` grant covers it (granted: {})",
                self.granted()
            ));
        }
        if !covering
            .iter()
            .any(|g| g.methods.iter().any(|m| m == method.as_str()))
        {
            let allowed: Vec<&str> = covering
                .iter()
                .flat_map(|g| g.methods.iter().map(String::as_str))
                .collect();
            return Some(format!(
                "the method {method} is not granted there (allowed: {})",
                allowed.join(", ")
            ));
        }
        None
    }

    fn granted(&self) -> String {
        self.grants
            .iter()
            .map(|g| format!("{} {}", g.methods.join("|"), g.url()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a redirect from `from` to `location` is refused, if it is: a plugin may only be sent on
/// to a place a grant covers.
fn redirect_refusal(grants: &[HttpGrant], from: &Uri, location: &str) -> Option<String> {
    let to = resolve(from, location)?;
    let refused = match Target::of(&to) {
        Err(why) => Some(why),
        Ok(target) if !grants.iter().any(|g| g.covers(&target)) => {
            Some("no `http` grant covers it".to_string())
        }
        Ok(_) => None,
    };
    refused.map(|why| format!("it redirects to {to}, and {why}"))
}

/// Where a request goes, as the grants compare it.
struct Target<'a> {
    plain: bool,
    host: String,
    port: u16,
    path: &'a str,
}

impl<'a> Target<'a> {
    fn of(uri: &'a Uri) -> Result<Self, String> {
        let plain = match uri.scheme_str() {
            Some("https") => false,
            Some("http") => true,
            other => {
                return Err(format!(
                    "the scheme {} is not HTTP",
                    other.unwrap_or("(none)")
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| "the URL names no host".to_string())?
            .to_ascii_lowercase();
        let path = uri.path();
        if has_dot_segment(path) {
            return Err(
                "its path has `.` or `..` segments, which could leave a granted path".into(),
            );
        }
        Ok(Target {
            plain,
            port: uri.port_u16().unwrap_or(if plain { 80 } else { 443 }),
            host,
            path,
        })
    }
}

/// `location` (absolute, or relative to `from`) as a URI; `None` if it is not one.
fn resolve(from: &Uri, location: &str) -> Option<Uri> {
    if let Ok(uri) = location.parse::<Uri>()
        && uri.scheme().is_some()
    {
        return Some(uri);
    }
    let mut parts = from.clone().into_parts();
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = from.path();
        format!(
            "{}{location}",
            &base[..base.rfind('/').map_or(0, |i| i + 1)]
        )
    };
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Whether `path`, its escaped dots and slashes decoded, has a `.` or `..` segment.
fn has_dot_segment(path: &str) -> bool {
    let decoded = path
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    decoded.split('/').any(|s| s == "." || s == "..")
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let refusal = self.refusal(&method, &uri);
        let limits = self.limits;
        let tag = self.tag.clone();
        let grants = self.grants.clone();
        let refuse = move |why: &str| {
            let url = tag.secrets.redact(&uri.to_string()).into_owned();
            tracing::warn!(
                plugin = &*tag.plugin,
                run = &*tag.run,
                step = &*tag.step,
                "HTTP request refused: {method} {url}: {why}"
            );
        };
        Box::new(async move {
            if let Some(why) = refusal {
                refuse(&why);
                return Err(Error::HttpRequestDenied);
            }
            let uri = request.uri().clone();
            let shorter =
                |asked: Option<Duration>, most: Duration| Some(asked.map_or(most, |a| a.min(most)));
            let asked = options.unwrap_or_default();
            let options = RequestOptions {
                connect_timeout: shorter(asked.connect_timeout, limits.connect_timeout),
                first_byte_timeout: shorter(asked.first_byte_timeout, limits.timeout),
                between_bytes_timeout: shorter(asked.between_bytes_timeout, limits.timeout),
            };
            let deadline = Instant::now() + limits.timeout;
            let sent = tokio::time::timeout_at(
                deadline,
                wasmtime_wasi_http::default_send_request(request, Some(options)),
            )
            .await;
            let (response, io) = match sent {
                Err(_) => {
                    refuse(&format!(
                        "no answer within {:?} (`http-limits: {{timeout}}`)",
                        limits.timeout
                    ));
                    return Err(Error::HttpResponseTimeout);
                }
                Ok(sent) => sent?,
            };
            if response.status().is_redirection()
                && let Some(location) = response.headers().get(http::header::LOCATION)
                && let Some(why) =
                    redirect_refusal(&grants, &uri, &String::from_utf8_lossy(location.as_bytes()))
            {
                refuse(&why);
                return Err(Error::HttpRequestDenied);
            }
            let cap = limits.max_response_bytes;
            if let Some(len) = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                && len > cap
            {
                refuse(&format!(
                    "its response of {len} bytes is larger than the {cap} bytes allowed \
                     (`http-limits: {{max-response}}`)"
                ));
                return Err(Error::HttpResponseBodySize(Some(len)));
            }
            let response = response.map(|body| {
                CappedBody {
                    body: body.boxed_unsync(),
                    left: cap,
                    cap,
                    deadline: Box::pin(tokio::time::sleep_until(deadline)),
                    timeout: limits.timeout,
                    refuse: Box::new(refuse),
                }
                .boxed_unsync()
            });
            Ok((response, Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// A response body cut off at the size cap and at the request's deadline, with a log line
/// saying which.
struct CappedBody {
    body: WasiBody,
    left: u64,
    cap: u64,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    refuse: Box<dyn Fn(&str) + Send>,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            (this.refuse)(&format!(
                "its response did not end within {:?} (`http-limits: {{timeout}}`)",
                this.timeout
            ));
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        let frame = std::task::ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, |d| d.len() as u64);
            if len > this.left {
                (this.refuse)(&format!(
                    "its response is larger than the {} bytes allowed (`http-limits: \
                     {{max-response}}`)",
                    this.cap
                ));
                this.left = 0;
                return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
            }
            this.left -= len;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(url: &str, methods: &[&str]) -> HttpGrant {
        let plain = url.starts_with("http://");
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()),
            None => (authority, None),
        };
        HttpGrant {
            plain,
            host: host.into(),
            port,
            path: path.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn refused(grants: &[HttpGrant], method: &str, url: &str) -> Option<String> {
        let mut policy = HttpPolicy::new(grants.into(), HttpLimits::default());
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        policy.refusal(&method, &url.parse().expect("a URI"))
    }

    #[test]
    fn only_what_a_grant_covers_is_let_through() {
        let g = [grant("https://api.example.com/v1/*", &["GET", "POST"])];
        assert_eq!(
            refused(&g, "GET", "https://api.example.com/v1/items?x=1"),
            None
        );
        assert_eq!(
            refused(&g, "POST", "https://API.example.com:443/v1/a/b"),
            None
        );
        for (method, url) in [
            ("DELETE", "https://api.example.com/v1/items"),
            ("GET", "http://api.example.com/v1/items"),
            ("GET", "https://api.example.com:8443/v1/items"),
            ("GET", "https://api.example.com/v2/items"),
            ("GET", "https://api.example.com/v1"),
            ("GET", "https://127.0.0.1/v1/items"),
            ("GET", "https://evil.com/v1/items"),
            ("GET", "https://api.example.com.evil.com/v1/items"),
            ("GET", "https://api.example.com/v1/../admin"),
            ("GET", "https://api.example.com/v1/%2e%2e/admin"),
            ("GET", "https://api.example.com/v1/..%2Fadmin"),
        ] {
            assert!(
                refused(&g, method, url).is_some(),
                "{method} {url} was let through"
            );
        }
        assert!(refused(&[], "GET", "https://api.example.com/v1/x").is_some());
    }

    #[test]
    fn the_refusal_says_what_is_missing() {
        let g = [grant("http://127.0.0.1:8700/v1/*", &["GET"])];
        let why = refused(&g, "POST", "http://127.0.0.1:8700/v1/x").expect("refused");
        assert!(
            why.contains("POST is not granted") && why.contains("GET"),
            "{why}"
        );
        let why = refused(&g, "GET", "http://127.0.0.1:8701/v1/x").expect("refused");
        assert!(
            why.contains("no `http` grant covers it") && why.contains("http://127.0.0.1:8700/v1/*"),
            "{why}"
        );
    }

    #[test]
    fn a_wildcard_host_covers_subdomains_only() {
        let g = [grant("https://*.example.com/*", &["GET"])];
        assert_eq!(refused(&g, "GET", "https://a.b.example.com/x"), None);
        assert!(refused(&g, "GET", "https://example.com/x").is_some());
        assert!(refused(&g, "GET", "https://badexample.com/x").is_some());
    }

    #[test]
    fn a_call_makes_at_most_its_share_of_requests() {
        let g = [grant("https://api.example.com/*", &["GET"])];
        let limits = HttpLimits {
            max_requests: 2,
            ..HttpLimits::default()
        };
        let mut policy = HttpPolicy::new(g.as_slice().into(), limits);
        let uri: Uri = "https://api.example.com/x".parse().expect("a URI");
        assert_eq!(policy.refusal(&Method::GET, &uri), None);
        assert_eq!(policy.refusal(&Method::GET, &uri), None);
        let why = policy
            .refusal(&Method::GET, &uri)
            .expect("the third is refused");
        assert!(why.contains("max-requests"), "{why}");
        policy.start_call(LogTag::default());
        assert_eq!(
            policy.refusal(&Method::GET, &uri),
            None,
            "a new call starts from zero"
        );
    }

    #[test]
    fn a_redirect_must_stay_inside_the_grants() {
        let g = [grant("http://127.0.0.1:8700/v1/*", &["GET"])];
        let from: Uri = "http://127.0.0.1:8700/v1/a/b".parse().expect("a URI");
        assert_eq!(redirect_refusal(&g, &from, "/v1/c"), None);
        assert_eq!(redirect_refusal(&g, &from, "c"), None);
        assert!(redirect_refusal(&g, &from, "/admin").is_some());
        assert!(redirect_refusal(&g, &from, "http://169.254.169.254/v1/x").is_some());
        assert!(redirect_refusal(&g, &from, "../../admin").is_some());
    }

    #[test]
    fn glob_matches_runs_of_characters() {
        assert!(glob("/v1/*", "/v1/"));
        assert!(glob("/v1/*/health", "/v1/d/1/health"));
        assert!(!glob("/v1/*/health", "/v1/d/1/healthy"));
        assert!(glob("/exact", "/exact"));
        assert!(!glob("/exact", "/exactly"));
        assert!(glob("*", "/anything"));
    }
}
