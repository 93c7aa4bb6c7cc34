//! Outbound HTTP from plugins against a real server on 127.0.0.1: what a grant lets through
//! arrives with its secret as a bearer token, in every language; everything else (another host,
//! loopback when a public host is granted, a redirect out of the grants, a 1 GiB response, a
//! server that never answers, 10,000 requests in one call) is contained as a step error, and
//! the process goes on running steps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stepflow_model::{ErrorKind, RunContext, State, StepFlow, Steps};
use stepflow_plugin::{
    Grants, HttpGrant, HttpLimits, Plugin, PluginOptions, Runtime, RuntimeConfig, Secrets,
};
use stepflow_testkit::{in_ci, language_plugin};

const TOKEN: &str = "tok-5ecret-7d1f9a";

/// What the test server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    body: String,
}

/// A real HTTP server on 127.0.0.1 that records what it is sent.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start() -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("an address").port();
        let app = Router::new()
            .fallback(answer)
            .with_state((seen.clone(), port));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A grant for this server's `/v1/*` with `methods`.
    fn grant(&self, methods: &[&str]) -> HttpGrant {
        HttpGrant {
            plain: true,
            host: "127.0.0.1".into(),
            port: Some(self.port),
            path: "/v1/*".into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

async fn answer(
    Extract((seen, port)): Extract<(Arc<Mutex<Vec<Seen>>>, u16)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    seen.lock().expect("not poisoned").push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: text("authorization"),
        idempotency_key: text("x-idempotency-key"),
        body,
    });
    match uri.path() {
        "/v1/redirect-out" => redirect(format!("http://127.0.0.1:{port}/admin")),
        "/v1/redirect-in" => redirect("/v1/echo".into()),
        // 1 GiB, streamed without a length, made as it is read.
        "/v1/huge" => {
            let chunk = bytes::Bytes::from(vec![b'x'; 64 << 10]);
            let chunks = futures_util::stream::iter(
                (0..(1u64 << 30) / (64 << 10)).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Body::from_stream(chunks).into_response()
        }
        _ => (StatusCode::OK, "{\"ok\":true}").into_response(),
    }
}

fn redirect(to: String) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)], "").into_response()
}

/// A server that accepts connections and never answers.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("an address").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (port, task)
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("test-component-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn grants(http: Vec<HttpGrant>) -> Grants {
    Grants {
        http,
        secrets: Secrets::new(vec![("API_TOKEN".into(), TOKEN.into())]).expect("a secret"),
        ..Grants::default()
    }
}

/// `httpcall` of `language`, or `None` (said loudly; under CI a failure) when this machine
/// cannot build that language.
fn httpcall(rt: &Runtime, language: &str, grants: Grants) -> Option<Plugin> {
    match language_plugin(language, "httpcall") {
        Ok(path) => {
            let options = PluginOptions {
                grants,
                reuse_instances: false,
            };
            let plugin = Plugin::load(rt, "httpcall", &path, options)
                .unwrap_or_else(|e| panic!("{language}: {e}"));
            assert!(
                plugin.imports_http(),
                "{language}: httpcall imports wasi:http"
            );
            Some(plugin)
        }
        Err(why) => {
            assert!(!in_ci(), "CI must build every language: {language}: {why}");
            eprintln!("skipped: {language}: {why}");
            None
        }
    }
}

/// A flow of one step, `name`, that calls `function` of `plugin`.
fn one_step(plugin: &Plugin, name: &str, function: &str) -> StepFlow {
    let action = plugin.action(function).expect("an action");
    StepFlow::new(Steps::named("http.v1").step_shared(name, Arc::new(action))).expect("a flow")
}

/// Runs `function` as the one step of a flow, then a second step of the same plugin that
/// fetches `/v1/echo`, and returns the state after the first: the plugin's host is still
/// up and its next step runs whatever the first did.
async fn step(plugin: &Plugin, function: &str, data: Value, server: &Server) -> State {
    let flow = one_step(plugin, "call", function);
    let state = flow
        .apply(&RunContext::new("http-run"), flow.new_state(data))
        .await;
    let next = one_step(plugin, "next", "fetch");
    let after = next
        .apply(
            &RunContext::new("http-run-2"),
            next.new_state(json!({ "request": { "url": server.url("/v1/echo") } })),
        )
        .await;
    assert_eq!(after.error, None, "the next step runs");
    assert_eq!(after.data["response"]["status"], 200);
    state
}

/// The step error `state` ended in: it names the plugin, the function and the step.
fn failure(state: &State, function: &str) -> (String, ErrorKind) {
    let failure = state
        .error
        .clone()
        .unwrap_or_else(|| panic!("{function} did not fail: {:?}", state.data));
    assert!(
        failure.message.contains(&format!(
            "plugin `httpcall` function `{function}` at step `http.v1/call`"
        )),
        "{}",
        failure.message
    );
    assert!(!failure.message.contains(TOKEN), "{}", failure.message);
    (failure.message, failure.kind)
}

fn request(url: String) -> Value {
    json!({ "request": { "method": "POST", "url": url, "body": "{\"version\":\"2.0\"}" } })
}

#[tokio::test]
async fn a_granted_request_arrives_with_its_secret_as_a_bearer_token_in_every_language() {
    let rt = runtime();
    let server = Server::start().await;
    for language in ["rust", "python", "javascript"] {
        let Some(plugin) = httpcall(&rt, language, grants(vec![server.grant(&["GET", "POST"])]))
        else {
            continue;
        };
        let before = server.seen().len();
        let state = step(&plugin, "fetch", request(server.url("/v1/echo")), &server).await;
        assert_eq!(state.error, None, "{language}");
        assert_eq!(state.data["response"]["status"], 200, "{language}");
        assert_eq!(
            state.data["response"]["body"], "{\"ok\":true}",
            "{language}"
        );
        let seen = server.seen();
        let got = &seen[before];
        assert_eq!(
            (got.method.as_str(), got.path.as_str()),
            ("POST", "/v1/echo"),
            "{language}"
        );
        assert_eq!(
            got.authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}")),
            "{language}"
        );
        assert_eq!(got.body, "{\"version\":\"2.0\"}", "{language}");
        let key = got.idempotency_key.as_deref().unwrap_or_default();
        assert!(
            key.contains("http-run"),
            "{language}: the step's idempotency key, got {key:?}"
        );
    }
}

#[tokio::test]
async fn a_plugin_without_a_grant_can_call_nothing() {
    let rt = runtime();
    let server = Server::start().await;
    let Some(plugin) = httpcall(&rt, "rust", grants(vec![])) else {
        return;
    };
    let flow = one_step(&plugin, "call", "fetch");
    let state = flow
        .apply(
            &RunContext::new("r"),
            flow.new_state(request(server.url("/v1/echo"))),
        )
        .await;
    let (message, kind) = failure(&state, "fetch");
    assert!(message.contains("HttpRequestDenied"), "{message}");
    assert_eq!(kind, ErrorKind::Fatal);
    assert!(server.seen().is_empty(), "no request reached the server");
}

#[tokio::test]
async fn hosts_methods_and_paths_outside_the_grant_are_refused_before_connecting() {
    let rt = runtime();
    let server = Server::start().await;
    let public = HttpGrant {
        plain: false,
        host: "api.example.com".into(),
        port: None,
        path: "/v1/*".into(),
        methods: vec!["GET".into(), "POST".into()],
    };
    let Some(plugin) = httpcall(&rt, "rust", grants(vec![public, server.grant(&["GET"])])) else {
        return;
    };
    for (why, data) in [
        ("another host", request("http://127.0.0.2:9/v1/echo".into())),
        (
            "127.0.0.1 on a port no grant names",
            request("http://127.0.0.1:9/v1/echo".into()),
        ),
        (
            "a path outside the grant",
            json!({ "request": { "url": server.url("/admin") } }),
        ),
        ("a method not granted", request(server.url("/v1/echo"))),
        (
            "a path that climbs out",
            json!({ "request": { "url": server.url("/v1/../admin") } }),
        ),
    ] {
        let before = server.seen().len();
        let state = step(&plugin, "fetch", data, &server).await;
        let (message, kind) = failure(&state, "fetch");
        assert!(message.contains("HttpRequestDenied"), "{why}: {message}");
        assert_eq!(kind, ErrorKind::Fatal, "{why}");
        assert_eq!(
            server.seen().len(),
            before + 1,
            "{why}: only the next step's request arrived"
        );
    }
}

#[tokio::test]
async fn loopback_is_refused_when_only_a_public_host_is_granted() {
    let rt = runtime();
    let server = Server::start().await;
    let public = HttpGrant {
        plain: true,
        host: "api.example.com".into(),
        port: Some(server.port),
        path: "/*".into(),
        methods: vec!["GET".into()],
    };
    let Some(plugin) = httpcall(&rt, "rust", grants(vec![public])) else {
        return;
    };
    let flow = one_step(&plugin, "call", "fetch");
    let data = json!({ "request": { "url": server.url("/v1/echo") } });
    let state = flow
        .apply(&RunContext::new("r"), flow.new_state(data))
        .await;
    let (message, _) = failure(&state, "fetch");
    assert!(message.contains("HttpRequestDenied"), "{message}");
    assert!(server.seen().is_empty(), "nothing reached 127.0.0.1");
}

#[tokio::test]
async fn a_redirect_out_of_the_grant_is_refused_and_one_inside_it_is_followed() {
    let rt = runtime();
    let server = Server::start().await;
    let Some(plugin) = httpcall(&rt, "rust", grants(vec![server.grant(&["GET"])])) else {
        return;
    };
    let data = json!({ "request": { "url": server.url("/v1/redirect-in") } });
    let state = step(&plugin, "follow", data, &server).await;
    assert_eq!(state.error, None);
    assert_eq!(
        (
            state.data["hops"].clone(),
            state.data["response"]["status"].clone()
        ),
        (json!(1), json!(200))
    );

    let before = server.seen().len();
    let data = json!({ "request": { "url": server.url("/v1/redirect-out") } });
    let state = step(&plugin, "follow", data, &server).await;
    let (message, _) = failure(&state, "follow");
    assert!(message.contains("HttpRequestDenied"), "{message}");
    let paths: Vec<String> = server.seen()[before..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["/v1/redirect-out", "/v1/echo"],
        "/admin was never asked"
    );
}

#[tokio::test]
async fn a_1_gib_response_is_cut_off_at_the_cap() {
    let rt = runtime();
    let server = Server::start().await;
    let mut g = grants(vec![server.grant(&["GET"])]);
    g.http_limits = HttpLimits {
        max_response_bytes: 1 << 20,
        ..HttpLimits::default()
    };
    let Some(plugin) = httpcall(&rt, "rust", g) else {
        return;
    };
    let data = json!({ "request": { "url": server.url("/v1/huge") } });
    let state = step(&plugin, "fetch", data, &server).await;
    let (message, kind) = failure(&state, "fetch");
    // The plugin reads the cut-off as a failed body stream, whose error says why.
    assert!(
        message.contains("HttpResponseBodySize") || message.contains("body size exceeds limit"),
        "{message}"
    );
    assert_eq!(kind, ErrorKind::Retryable);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let rt = runtime();
    let server = Server::start().await;
    let (silent, _task) = silent_server().await;
    let mut silent_grant = server.grant(&["GET"]);
    silent_grant.port = Some(silent);
    let mut g = grants(vec![server.grant(&["GET"]), silent_grant]);
    g.http_limits = HttpLimits {
        timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let Some(plugin) = httpcall(&rt, "rust", g) else {
        return;
    };
    let data = json!({ "request": { "url": format!("http://127.0.0.1:{silent}/v1/wait") } });
    let state = step(&plugin, "fetch", data, &server).await;
    let (message, kind) = failure(&state, "fetch");
    assert!(message.contains("Timeout"), "{message}");
    assert_eq!(kind, ErrorKind::Retryable, "a time-out may be retried");
}

#[tokio::test]
async fn ten_thousand_requests_in_one_call_stop_at_the_limit() {
    let rt = runtime();
    let server = Server::start().await;
    let mut g = grants(vec![server.grant(&["GET"])]);
    g.http_limits = HttpLimits {
        max_requests: 50,
        ..HttpLimits::default()
    };
    let Some(plugin) = httpcall(&rt, "rust", g) else {
        return;
    };
    let data = json!({ "count": 10_000, "request": { "url": server.url("/v1/echo") } });
    let state = step(&plugin, "flood", data, &server).await;
    let (message, _) = failure(&state, "flood");
    assert!(message.contains("HttpRequestDenied"), "{message}");
    assert_eq!(
        server.seen().len(),
        50 + 1,
        "50 from the flood, then the next step's one"
    );
}
