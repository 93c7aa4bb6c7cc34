//! Outbound HTTP from a plugin, for the sandbox tests: one request (`fetch`), the same request
//! many times (`flood`, to meet the host's request limit) and redirects followed by the plugin
//! itself (`follow`, to show that every hop is checked against the flow's `http:` grant).
//!
//! Each action reads `request: {"method": "GET", "url": "...", "body": "..."}` from the data
//! document. An HTTP-layer error is fatal when the host denied the request
//! (`HttpRequestDenied`), retryable otherwise; the message names the method and URL, never the
//! token.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:httpcall/httpcall",
    path: ["../../../wit", "wit"],
    generate_all,
});

use http_client::{ErrorCode, Response};
use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct HttpCall;

/// The most redirects `follow` takes.
const MAX_HOPS: u32 = 5;

/// The `request` of the data document.
struct Request {
    method: String,
    url: String,
    body: Option<String>,
}

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

fn request_of(d: &Value) -> Result<Request, StepError> {
    let r = &d["request"];
    let method = match &r["method"] {
        Value::Null => "GET".to_string(),
        Value::String(m) if !m.is_empty() => m.to_ascii_uppercase(),
        _ => return Err(StepError::Fatal("`request.method` must be a string".into())),
    };
    let Some(url) = r["url"].as_str() else {
        return Err(StepError::Fatal("`request.url` must be a string".into()));
    };
    let body = match &r["body"] {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    };
    Ok(Request {
        method,
        url: url.to_string(),
        body,
    })
}

/// Sends `req` with the step's headers; `with_token` adds the bearer token when `API_TOKEN` is
/// set.
fn send(ctx: &StepContext, req: &Request, with_token: bool) -> Result<Response, StepError> {
    let token = std::env::var("API_TOKEN").ok().filter(|_| with_token);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-idempotency-key", ctx.idempotency_key.as_str())];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    if req.body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    http_client::request(
        &req.method,
        &req.url,
        &headers,
        req.body.as_deref().map(str::as_bytes),
    )
    .map_err(|e| failed(req, &e))
}

/// `<METHOD> <URL> failed: <code>`: fatal when the host denied the request, else retryable.
fn failed(req: &Request, error: &ErrorCode) -> StepError {
    let message = format!(
        "{} {} failed: {}",
        req.method,
        req.url,
        http_client::describe(error)
    );
    match error {
        ErrorCode::HttpRequestDenied => StepError::Fatal(message),
        _ => StepError::Retryable(message),
    }
}

fn response_json(response: &Response) -> Value {
    json!({ "status": response.status, "body": response.text() })
}

/// Where a redirect from `base` to `location` goes: absolute, scheme-relative (`//host/..`),
/// absolute-path (`/..`), query (`?..`) or relative to `base`'s directory.
fn resolve(base: &str, location: &str) -> Option<String> {
    let absolute = location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if absolute {
        return http_client::split_url(location).map(|_| location.to_string());
    }
    let (scheme, authority, path) = http_client::split_url(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    let path = path
        .split('?')
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    if location.starts_with('?') {
        return Some(format!("{scheme}://{authority}{path}{location}"));
    }
    let dir = &path[..=path.rfind('/').unwrap_or(0)];
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

fn authority(url: &str) -> Option<String> {
    http_client::split_url(url).map(|(_, a, _)| a.to_ascii_lowercase())
}

impl Guest for HttpCall {
    fn fetch(ctx: StepContext) -> Result<Option<String>, StepError> {
        let req = request_of(&data(&ctx)?)?;
        let response = send(&ctx, &req, true)?;
        Ok(Some(
            json!({ "response": response_json(&response) }).to_string(),
        ))
    }

    fn flood(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let req = request_of(&d)?;
        let count = match &d["count"] {
            Value::Null => 1,
            v => v
                .as_u64()
                .ok_or_else(|| StepError::Fatal("`count` must be a whole number".into()))?,
        };
        for sent in 0..count {
            if let Err(e) = send(&ctx, &req, true) {
                log(
                    Level::Warn,
                    &format!("flood stopped after {sent} of {count} requests"),
                    &[],
                );
                return Err(e);
            }
        }
        Ok(Some(json!({ "flood": { "sent": count } }).to_string()))
    }

    fn follow(ctx: StepContext) -> Result<Option<String>, StepError> {
        let mut req = request_of(&data(&ctx)?)?;
        let origin = authority(&req.url);
        let mut hops = 0;
        loop {
            // The token goes only to the host the flow asked for, not to where it redirects.
            let response = send(&ctx, &req, authority(&req.url) == origin)?;
            let location = response.header("location");
            let (true, Some(location)) = ((300..400).contains(&response.status), location) else {
                let patch = json!({ "response": response_json(&response), "hops": hops });
                return Ok(Some(patch.to_string()));
            };
            if hops == MAX_HOPS {
                return Err(StepError::Fatal(format!(
                    "{} {}: more than {MAX_HOPS} redirects",
                    req.method, req.url
                )));
            }
            let Some(next) = resolve(&req.url, location) else {
                return Err(StepError::Fatal(format!(
                    "{} {}: cannot follow the redirect to `{location}`",
                    req.method, req.url
                )));
            };
            log(
                Level::Info,
                &format!("{} redirects to {next}", response.status),
                &[],
            );
            // 303, and 301/302 after anything but GET or HEAD, continue with a GET (as browsers do).
            let to_get = response.status == 303
                || (matches!(response.status, 301 | 302)
                    && !matches!(&*req.method, "GET" | "HEAD"));
            if to_get {
                req.method = "GET".into();
                req.body = None;
            }
            req.url = next;
            hops += 1;
        }
    }
}

export!(HttpCall);
