//! Outbound HTTP with the real binary: a step calls a real server on 127.0.0.1 with a secret as
//! its bearer token, and the secret is nowhere a reader could look afterwards; a refused request
//! is a log line naming plugin, step, method and URL; `validate` fails a flow whose plugin
//! imports wasi:http without a grant, and `inspect` says which plugins import it.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use common::{Sandbox, json, plugins_dir, stderr, stdout};

const SECRET: &str = "bearer-s3cr3t-41c7-77aa";

/// A real HTTP server on 127.0.0.1, on a runtime of its own, that keeps each request's
/// `authorization` header and answers with that header echoed back (so a plugin's patch would
/// carry the secret if the host did not redact it).
struct Server {
    port: u16,
    authorizations: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("an address").port();
        let app = Router::new().fallback(move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            seen.lock().expect("not poisoned").push(auth.clone());
            format!("{{\"you_sent\": \"{auth}\"}}")
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            port,
            authorizations,
            _runtime: runtime,
        }
    }
}

fn flow(port: u16) -> String {
    format!(
        "flow: http.v1
plugins:
  api:
    wasm: {{plugins}}/httpcall.wasm
    secrets:
      API_TOKEN: {{ env: STEPFLOW_TEST_SECRET }}
    http:
      - {{ url: \"http://127.0.0.1:{port}/v1/*\", methods: [GET] }}
steps:
  - {{ name: call, do: api.fetch }}
"
    )
}

fn run(s: &Sandbox, flow: &std::path::Path, url: &str) -> (Option<i32>, String, String) {
    let input = format!("{{\"request\": {{\"url\": \"{url}\"}}}}");
    let out = s
        .cmd()
        .env("STEPFLOW_LOG", "info")
        .env("STEPFLOW_TEST_SECRET", SECRET)
        .args(["run", flow.to_str().unwrap(), "--input", &input, "--json"])
        .output()
        .expect("run");
    let id = json(&out)["run"].as_str().unwrap_or_default().to_string();
    let shown = stdout(&s.run(&["show", &id, "--json"]));
    (
        out.status.code(),
        format!("{}\n{}", stdout(&out), stderr(&out)),
        shown,
    )
}

#[test]
fn a_step_calls_a_granted_server_with_its_secret_and_the_secret_stays_out_of_everything() {
    let server = Server::start();
    let s = Sandbox::new();
    let path = s.flow("http.yaml", &flow(server.port));

    let url = format!("http://127.0.0.1:{}/v1/echo", server.port);
    let (code, output, shown) = run(&s, &path, &url);
    assert_eq!(code, Some(0), "{output}");
    assert_eq!(
        *server.authorizations.lock().expect("not poisoned"),
        [format!("Bearer {SECRET}")],
        "the server got the secret as a bearer token"
    );
    let shown_json: serde_json::Value = serde_json::from_str(&shown).expect("show");
    assert_eq!(
        shown_json["data"]["response"]["body"], "{\"you_sent\": \"Bearer [secret API_TOKEN]\"}",
        "the echoed secret is redacted in the data document"
    );

    // A request the grant does not cover: refused, with a log line that says what and where.
    let refused = format!("http://127.0.0.1:{}/admin?page=2", server.port);
    let (code, failed, failed_shown) = run(&s, &path, &refused);
    assert_eq!(code, Some(1), "{failed}");
    let line = failed
        .lines()
        .find(|l| l.contains("HTTP request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {failed}"));
    for part in [
        "plugin=\"api\"",
        "step=\"http.v1/call\"",
        &format!("GET http://127.0.0.1:{}/admin?page=2", server.port),
        "no `http` grant covers it",
    ] {
        assert!(line.contains(part), "`{part}` missing from: {line}");
    }
    assert!(failed_shown.contains("HttpRequestDenied"), "{failed_shown}");
    assert_eq!(
        server.authorizations.lock().expect("not poisoned").len(),
        1,
        "nothing more arrived"
    );

    let mut everything = output + &shown + &failed + &failed_shown;
    for entry in std::fs::read_dir(s.dir.path()).expect("the sandbox") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with("runs.db") {
            everything.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("read"),
            ));
        }
    }
    assert!(!everything.contains(SECRET), "the secret leaked");
}

#[test]
fn validate_fails_a_plugin_that_imports_http_without_a_grant_and_inspect_says_so() {
    let s = Sandbox::new();
    let path = s.flow(
        "nogrant.yaml",
        "flow: nogrant.v1
plugins:
  api:
    wasm: {plugins}/httpcall.wasm
steps:
  - { name: call, do: api.fetch }
",
    );
    let out = s.run(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nogrant.yaml:3:3"),
        "the error points at the plugin: {err}"
    );
    assert!(err.contains("imports wasi:http"), "{err}");
    assert!(
        err.contains("http:") && err.contains("methods: [GET, POST]"),
        "the hint shows the key: {err}"
    );

    let wasm = plugins_dir().join("httpcall.wasm");
    let out = s.run(&["inspect", wasm.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("imports wasi:http"),
        "{}",
        stdout(&out)
    );
    let out = s.run(&[
        "inspect",
        plugins_dir().join("noop.wasm").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(json(&out)["imports_http"], false, "{}", stdout(&out));
}

#[test]
fn a_broken_http_grant_is_refused_where_it_is_written() {
    let s = Sandbox::new();
    for (grant, place, says) in [
        (
            "{ url: \"api.example.com/v1/*\", methods: [GET] }",
            "7:16",
            "does not start with `https://`",
        ),
        (
            "{ url: \"https://api.example.com/v1/*\", methods: [GETT] }",
            "7:58",
            "did you mean `GET`?",
        ),
        (
            "{ url: \"https://api.example.com:99999/\", methods: [GET] }",
            "7:16",
            "not a port number",
        ),
        (
            "{ url: \"https://a*.example.com/\", methods: [GET] }",
            "7:16",
            "not a host name",
        ),
        (
            "{ url: \"https://api.example.com/\", methods: [] }",
            "7:9",
            "allows no method",
        ),
        (
            "{ url: \"https://api.example.com/\", method: [GET] }",
            "7:",
            "method",
        ),
    ] {
        let yaml = format!(
            "flow: bad.v1
plugins:
  api:
    wasm: {{plugins}}/httpcall.wasm
    build: \"true\"
    http:
      - {grant}
steps:
  - {{ name: call, do: api.fetch }}
"
        );
        let path = s.flow("bad.yaml", &yaml);
        let out = s.run(&["validate", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{grant}: {err}");
        assert!(
            err.contains(&format!("bad.yaml:{place}")),
            "{grant}: at {place}: {err}"
        );
        assert!(err.contains(says), "{grant}: {says}: {err}");
    }
}

#[test]
fn the_deploy_example_deploys_through_the_deployment_api() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("an address").port();
    let token_file = common::repo().join("examples/deployment-api.token");
    let token = std::fs::read_to_string(&token_file).expect("the demo token");
    let app = deployment_api::router(deployment_api::Config {
        token: token.trim_end().to_string(),
        rollout: std::time::Duration::from_millis(100),
        flaky_checks: 1,
    });
    runtime.spawn(async move { axum::serve(listener, app).await });

    // The example as shipped, pointed at this test's API and the plugins already built.
    let example = std::fs::read_to_string(common::repo().join("examples/deploy.yaml"))
        .expect("examples/deploy.yaml");
    let yaml = example
        .replace("8700", &port.to_string())
        .replace("../plugins/rust/target/wasm32-wasip2/release", "{plugins}")
        .replace("build: ../plugins/rust/build", "")
        .replace("deployment-api.token", &token_file.display().to_string());
    let s = Sandbox::new();
    let path = s.flow("deploy.yaml", &yaml);
    let out = s.run(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = show(&s, &out);
    assert_eq!(shown["data"]["current"], "2.0", "{shown}");
    assert_eq!(
        shown["data"]["validated_on_attempt"], 2,
        "the flaky health check was retried"
    );

    // Run again: the API already runs 2.0, so the case skips the deployment.
    let out = s.run(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = show(&s, &out);
    let steps: Vec<String> = common::history_steps(&shown)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert!(
        !steps.iter().any(|s| s.ends_with("/deploy")),
        "no second deployment: {steps:?}"
    );
}

/// `show --json` of the run a `run --json` started.
fn show(s: &Sandbox, run: &std::process::Output) -> serde_json::Value {
    let id = json(run)["run"].as_str().unwrap_or_default().to_string();
    serde_json::from_str(&stdout(&s.run(&["show", &id, "--json"]))).expect("show")
}
