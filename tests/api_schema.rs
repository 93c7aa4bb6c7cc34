//! The HTTP API against its own OpenAPI document: schemathesis (pinned, from PyPI) generates
//! requests from the `/openapi.json` of a real `stepflow server` whose database holds a
//! completed, a failed and a few waiting runs, and checks every answer: no 5xx, and no status,
//! content type, body or header that the document does not allow (`tests/schemathesis/run`
//! says how, and how it is bounded).
//!
//! `tests/schemathesis/install` makes the pinned environment when it is missing; where it
//! cannot (no Python 3.11, no network), the test says `skipped: why`, and under `CI` a skip
//! fails.

mod common;

use std::process::Command;

use common::{
    APPROVAL, Sandbox, ServerProcess, failed_run, install_tools, message, repo, stderr, stdout,
};

/// How many runs wait for the approval signal when schemathesis starts.
const WAITING: usize = 3;

#[test]
fn every_answer_of_the_api_is_one_its_openapi_document_allows() {
    if let Err(why) = install_tools("tests/schemathesis/install") {
        assert!(!stepflow_testkit::in_ci(), "skipped under CI: {why}");
        eprintln!("skipped: the API against its OpenAPI document: {why}");
        return;
    }
    let s = Sandbox::new();
    // A completed run.
    let done = s.flow(
        "done.yaml",
        "flow: done.v1\nplugins:\n  n: { wasm: {plugins}/noop.wasm }\nsteps:\n  - { name: a, do: n.noop }\n  - { name: b, do: n.noop }\n",
    );
    let out = s.run(&["run", done.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A failed run.
    failed_run(&s);
    // Runs that will wait for their approval signal once the server drives them.
    let approval = s.flow("approval.yaml", APPROVAL);
    let mut waiting: Vec<String> = (0..WAITING)
        .map(|_| {
            let out = s.run(&["submit", approval.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            stdout(&out).trim().to_string()
        })
        .collect();

    let mut server = ServerProcess::start(&s, &[]);
    // The API's address, and every submitted run waiting, whichever the server logs first.
    let mut addr = None;
    while addr.is_none() || !waiting.is_empty() {
        let event = server.wait_for("the API to listen and the submitted runs to wait", |e| {
            message(e).starts_with("api listening") || message(e) == "run waits for a signal"
        });
        if message(&event).starts_with("api listening") {
            addr = Some(
                event["addr"]
                    .as_str()
                    .expect("the bound address")
                    .to_string(),
            );
        } else {
            waiting.retain(|run| event["run"] != run.as_str());
        }
    }
    let addr = addr.unwrap_or_default();
    let mut token_file = s.db().into_os_string();
    token_file.push(".api-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file");

    let started = std::time::Instant::now();
    let out = Command::new(repo().join("tests/schemathesis/run"))
        .arg(format!("http://{addr}/openapi.json"))
        .arg(token.trim())
        .env("STEPFLOW_SCHEMATHESIS_WORK", s.path("schemathesis"))
        .env("STEPFLOW_SIGNAL_NAMES", "approve")
        .output()
        .expect("run tests/schemathesis/run");
    let took = started.elapsed();
    // The server stops first, so that a failure shows its whole log and leaves no process.
    server.terminate();
    let (code, server_out, log) = server.finish();
    let tail = log[log.len().saturating_sub(60)..].join("\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "schemathesis found answers that the OpenAPI document does not allow (or could not \
         run):\n{}\n{}\nthe server's last log lines:\n{tail}",
        stdout(&out),
        stderr(&out),
    );
    eprintln!("{}", stdout(&out).trim());
    eprintln!("schemathesis passed in {:.1} s", took.as_secs_f64());
    assert_eq!(
        code,
        Some(0),
        "the server stops cleanly after the run: {server_out}\n{tail}"
    );
    let panics: Vec<&String> = log.iter().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");
}
