//! The HTTP API over a real socket, a real SQLite store and real plugins: writes need the
//! token (and a refused write changes nothing), every error has the one JSON shape, listings
//! page, a signal moves a deployed run's inbox, a run's event stream follows it, and the
//! OpenAPI document describes every route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use stepflow_api::{ApiConfig, Token};
use stepflow_store::{RunRecord, RunStatus, SqliteStore, Store};

/// A server on a free port of 127.0.0.1 over the database at `db`; it stops with the test.
async fn serve(db: &Path, reads_need_token: bool) -> (String, Token) {
    let token = Token::generate().expect("token");
    let config = ApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        db: stepflow_store::Database::File(db.to_path_buf()),
        token: token.clone(),
        reads_need_token,
        submissions: Some(stepflow_api::Submissions {
            engine: std::sync::Arc::new(engine()),
            policy: stepflow_engine::SubmitPolicy::default(),
        }),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(stepflow_api::serve(
        config,
        move |addr| {
            let _ = tx.send(addr);
        },
        std::future::pending(),
    ));
    let addr = rx.await.expect("bound");
    (format!("http://{addr}"), token)
}

fn engine() -> stepflow_engine::Engine {
    stepflow_engine::Engine::new(Some(
        stepflow_testkit::target_dir().join("test-component-cache"),
    ))
    .expect("engine")
}

fn run(id: &str, created_ms: u64, status: RunStatus) -> RunRecord {
    RunRecord {
        id: id.into(),
        flow: "f.v1".into(),
        flow_file: "/flows/f.yaml".into(),
        definition: "d".into(),
        deployment: None,
        status,
        state: stepflow_model::State::default(),
        next_check_ms: None,
        last_error: None,
        created_ms,
        updated_ms: created_ms,
        lease: None,
    }
}

fn database(dir: &tempfile::TempDir, runs: &[RunRecord]) -> PathBuf {
    let db = dir.path().join("runs.db");
    let mut store = SqliteStore::open(&db).expect("store");
    for r in runs {
        store.create_run(r).expect("create");
    }
    db
}

/// Asserts the one error shape, and returns the message.
async fn error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

#[tokio::test]
async fn a_write_without_the_token_gets_401_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir, &[run("r1", 1, RunStatus::Waiting)]);
    let (base, token) = serve(&db, false).await;
    let http = reqwest::Client::new();
    let cancel = format!("{base}/api/v1/runs/r1/cancel");
    let message = error(
        http.post(&cancel).send().await.expect("post"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert!(message.contains("Authorization: Bearer"), "{message}");
    error(
        http.post(&cancel)
            .bearer_auth("0".repeat(64))
            .send()
            .await
            .expect("post"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let store = SqliteStore::open(&db).expect("store");
    assert_eq!(store.run("r1").expect("run").status, RunStatus::Waiting);

    let done = http
        .post(&cancel)
        .bearer_auth(token.as_str())
        .send()
        .await
        .expect("post");
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(store.run("r1").expect("run").status, RunStatus::Cancelled);
    let again = http
        .post(&cancel)
        .bearer_auth(token.as_str())
        .send()
        .await
        .expect("post");
    error(again, StatusCode::CONFLICT, "conflict").await;
    // Reads are open unless the server says otherwise.
    let read = http
        .get(format!("{base}/api/v1/runs/r1"))
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::OK);
}

#[tokio::test]
async fn reads_can_be_made_to_need_the_token_and_the_page_stays_public() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir, &[run("r1", 1, RunStatus::Waiting)]);
    let (base, token) = serve(&db, true).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/runs");
    error(
        http.get(&url).send().await.expect("get"),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let ok = http
        .get(&url)
        .bearer_auth(token.as_str())
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
    let by_query = http
        .get(format!("{url}?token={}", token.as_str()))
        .send()
        .await
        .expect("get");
    assert_eq!(
        by_query.status(),
        StatusCode::OK,
        "EventSource cannot send headers"
    );
    let page = http.get(&base).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("html").contains("<html"));
}

#[tokio::test]
async fn runs_are_listed_newest_first_a_page_at_a_time_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs: Vec<RunRecord> = (1..=7)
        .map(|i| {
            let status = if i % 2 == 0 {
                RunStatus::Failed
            } else {
                RunStatus::Waiting
            };
            run(&format!("r{i}"), i, status)
        })
        .collect();
    let db = database(&dir, &runs);
    let (base, _) = serve(&db, false).await;
    let http = reqwest::Client::new();
    let mut seen = Vec::new();
    let mut url = format!("{base}/api/v1/runs?limit=3");
    loop {
        let page: Value = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        for r in page["runs"].as_array().expect("runs") {
            seen.push(r["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{base}/api/v1/runs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["r7", "r6", "r5", "r4", "r3", "r2", "r1"]);
    let failed: Value = http
        .get(format!("{base}/api/v1/runs?status=failed"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(failed["runs"].as_array().map(Vec::len), Some(3));
    let counts: Value = http
        .get(format!("{base}/api/v1/runs/counts"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        counts,
        json!({"running": 0, "waiting": 4, "completed": 0, "failed": 3, "cancelled": 0})
    );

    for (url, status, code) in [
        ("/api/v1/runs/nobody", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/v1/runs?status=sleeping",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/runs?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/runs?cursor=zzz",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/runs/r1/history?after=-1",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("/api/v1/nothing", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let response = http.get(format!("{base}{url}")).send().await.expect("get");
        let message = error(response, status, code).await;
        assert!(
            !message.contains("runs.db"),
            "the server's paths are its own: {message}"
        );
    }
}

/// A deployed run of a flow that waits for signal `approve`, with its database.
async fn deployed_waiting_run(dir: &tempfile::TempDir) -> (PathBuf, String) {
    let plugins = stepflow_testkit::rust_plugin("quickstart");
    let flow = dir.path().join("approval.yaml");
    std::fs::write(
        &flow,
        format!(
            "flow: approval.v1\nplugins:\n  q: {{ wasm: {} }}\nsteps:\n  - {{ name: step1, do: q.step1 }}\n  - {{ name: approval, wait-for: {{ signal: approve }} }}\n",
            plugins.display()
        ),
    )
    .expect("flow");
    let engine = engine();
    let deployment = engine.deploy(&flow).expect("deploy");
    let db = dir.path().join("runs.db");
    let mut store = SqliteStore::open(&db).expect("store");
    store.put_deployment(&deployment).expect("put");
    let loaded = engine.load_deployment(&deployment).expect("load");
    let (id, state) = stepflow_engine::start_run(&mut store, &loaded, None).expect("start");
    let options = stepflow_engine::DriveOptions {
        stop_at_wait: true,
        ..Default::default()
    };
    stepflow_engine::Driver::new(
        &loaded.flow,
        &mut store,
        &mut (),
        stepflow_engine::StopRequests::never(),
    )
    .drive(&id, state, options)
    .await
    .expect("drive to the wait");
    (db, id)
}

#[tokio::test]
async fn a_signal_reaches_the_inbox_of_a_run_that_waits_for_it_and_its_stream_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, id) = deployed_waiting_run(&dir).await;
    let (base, token) = serve(&db, false).await;
    let http = reqwest::Client::new();
    let detail: Value = http
        .get(format!("{base}/api/v1/runs/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["awaits_signal"], "approve", "{detail}");
    assert_eq!(detail["signals"], json!(["approve"]));
    assert_eq!(detail["history_count"], 1);
    assert!(
        detail["transitions"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );

    let signals = format!("{base}/api/v1/runs/{id}/signals");
    let typo = http
        .post(&signals)
        .bearer_auth(token.as_str())
        .json(&json!({"name": "aprove"}))
        .send()
        .await
        .expect("post");
    let message = error(typo, StatusCode::UNPROCESSABLE_ENTITY, "unknown_signal").await;
    assert!(message.contains("it waits for `approve`"), "{message}");
    let bad = http
        .post(&signals)
        .bearer_auth(token.as_str())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    error(bad, StatusCode::BAD_REQUEST, "bad_request").await;

    let mut events = http
        .get(format!("{base}/api/v1/runs/{id}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), StatusCode::OK);
    let first = next_event(&mut events).await;
    assert_eq!(first["status"], "waiting", "{first}");

    for _ in 0..2 {
        let sent = http
            .post(&signals)
            .bearer_auth(token.as_str())
            .json(&json!({"name": "approve", "payload": {"by": "api"}, "id": "once"}))
            .send()
            .await
            .expect("post");
        assert_eq!(sent.status(), StatusCode::ACCEPTED);
    }
    let store = SqliteStore::open(&db).expect("store");
    let inbox = store.signals(&id, 0, 10).expect("signals");
    assert_eq!(inbox.len(), 1, "the same id twice is one signal");
    assert_eq!(inbox[0].payload, json!({"by": "api"}));

    let deployment = detail["deployment"].as_str().expect("deployment");
    let flows: Value = http
        .get(format!("{base}/api/v1/flows"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(flows[0]["name"], "approval.v1", "{flows}");
    assert_eq!(flows[0]["latest_deployment"], deployment, "{flows}");
    assert_eq!(flows[0]["runs"], 1, "{flows}");
    let plugins: Value = http
        .get(format!("{base}/api/v1/deployments/{deployment}/plugins"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let exports = plugins[0]["exports"].as_array().expect("exports");
    assert!(
        exports
            .iter()
            .any(|e| e["name"] == "step1" && e["kind"] == "action"),
        "{plugins}"
    );

    // A rerun from after the first step waits for its own approval, on the same deployment.
    let rerun = http
        .post(format!("{base}/api/v1/runs/{id}/rerun"))
        .bearer_auth(token.as_str())
        .json(&json!({"from_seq": 1}))
        .send()
        .await
        .expect("rerun");
    assert_eq!(rerun.status(), StatusCode::CREATED);
    let rerun: Value = rerun.json().await.expect("json");
    let again: Value = http
        .get(format!(
            "{base}/api/v1/runs/{}",
            rerun["id"].as_str().expect("id")
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(again["deployment"], detail["deployment"], "{again}");
    assert_eq!(again["cursor"], detail["cursor"], "{again}");
    let beyond = http
        .post(format!("{base}/api/v1/runs/{id}/rerun"))
        .bearer_auth(token.as_str())
        .json(&json!({"from_seq": 9}))
        .send()
        .await
        .expect("rerun");
    error(beyond, StatusCode::CONFLICT, "conflict").await;
    let array = http
        .post(&signals)
        .bearer_auth(token.as_str())
        .json(&json!(["approve", {}, "x"]))
        .send()
        .await
        .expect("post");
    error(array, StatusCode::BAD_REQUEST, "bad_request").await;

    let cancel = http
        .post(format!("{base}/api/v1/runs/{id}/cancel"))
        .bearer_auth(token.as_str())
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancel.status(), StatusCode::OK);
    let moved = next_event(&mut events).await;
    assert_eq!(moved["status"], "cancelled", "{moved}");
}

/// The data of the next `run` event of a server-sent event stream.
async fn next_event(response: &mut reqwest::Response) -> Value {
    let mut text = String::new();
    loop {
        if let Some(at) = text.find("\n\n") {
            let block: String = text.drain(..at + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                return serde_json::from_str(data.trim()).expect("event data");
            }
            continue;
        }
        let chunk = response
            .chunk()
            .await
            .expect("stream")
            .expect("open stream");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir, &[]);
    let (base, _) = serve(&db, false).await;
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/v1/runs",
        "/api/v1/runs/counts",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/history",
        "/api/v1/runs/{id}/events",
        "/api/v1/runs/{id}/signals",
        "/api/v1/runs/{id}/cancel",
        "/api/v1/runs/{id}/resume",
        "/api/v1/runs/{id}/rerun",
        "/api/v1/flows",
        "/api/v1/deployments",
        "/api/v1/deployments/{id}",
        "/api/v1/deployments/{id}/diagram",
        "/api/v1/deployments/{id}/plugins",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} is not in the document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
}

/// A submission of a one-step flow over the quickstart plugin, with `grants` in its plugin.
fn submission(grants: &str) -> Value {
    let wasm = std::fs::read(stepflow_testkit::rust_plugin("quickstart")).expect("wasm");
    use base64::Engine as _;
    json!({
        "flow": format!(
            "flow: sub.v1\nplugins:\n  q: {{ wasm: q.wasm{grants} }}\nsteps:\n  - {{ name: step1, do: q.step1 }}\n"
        ),
        "plugins": { "q": base64::engine::general_purpose::STANDARD.encode(wasm) },
        "input": { "from": "api" },
    })
}

#[tokio::test]
async fn a_submission_that_asks_for_more_than_the_policy_allows_is_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(&dir, &[]);
    let (base, token) = serve(&db, false).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/runs");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    for (grants, named) in [
        (
            ", dirs: [{ host: /, guest: /host }]".to_string(),
            "the directory `/`",
        ),
        (
            format!(", dirs: [{{ host: {home}/.ssh, guest: /keys }}]"),
            ".ssh`",
        ),
        (
            ", env: [HOME]".to_string(),
            "the environment variable `HOME`",
        ),
        (
            ", secrets: { T: { env: HOME } }".to_string(),
            "a secret from the environment variable `HOME`",
        ),
        (
            format!(", secrets: {{ T: {{ file: {home}/.ssh/id_rsa }} }}"),
            "a secret from the file",
        ),
    ] {
        let refused = http
            .post(&url)
            .bearer_auth(token.as_str())
            .json(&submission(&grants))
            .send()
            .await
            .expect("post");
        let message = error(refused, StatusCode::FORBIDDEN, "not_allowed").await;
        assert!(message.contains(named), "{message}");
        assert!(message.contains("stepflow server --allow-"), "{message}");
    }
    let store = SqliteStore::open(&db).expect("store");
    assert!(
        store.runs(None, 10).expect("runs").is_empty(),
        "nothing runs"
    );
    assert!(
        store.deployments(None, 10).expect("deployments").is_empty(),
        "nothing stored"
    );

    let unauthorised = http
        .post(&url)
        .json(&submission(""))
        .send()
        .await
        .expect("post");
    error(unauthorised, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let created = http
        .post(&url)
        .bearer_auth(token.as_str())
        .json(&submission(""))
        .send()
        .await
        .expect("post");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("json");
    let id = created["id"].as_str().expect("id");
    let run = store.run(id).expect("the run");
    assert_eq!(run.state.data["from"], "api");
    assert_eq!(run.deployment.as_deref(), created["deployment"].as_str());
}
