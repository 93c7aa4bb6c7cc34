//! The web page in a real browser (Debian's chromium driven by playwright-core), against the
//! real `stepflow server`: the runs list, a run that waits for an approval signal approved
//! from the page and finishing live, a failed run resumed from the page; the scenario checks
//! its screenshots' colours, not only the page's elements (`tests/web/scenario.mjs`).
//!
//! `tests/web/install` installs chromium and playwright-core when they are missing; where it
//! cannot, the test says `skipped: why`, and under `CI` a skip fails.

mod common;

use std::process::Command;

use common::{
    APPROVAL, Sandbox, ServerProcess, failed_run, install_tools, json, message, repo, stderr,
    stdout,
};

/// Runs `tests/web/scenario.mjs` in headless chromium against the server at `addr`, with
/// `vars` saying which scenario and runs; fails with its output and the server's log.
fn scenario(s: &Sandbox, server: &ServerProcess, addr: &str, vars: &[(&str, &str)]) {
    let screenshots = s.path("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let out = Command::new("node")
        .arg(repo().join("tests/web/scenario.mjs"))
        .env("STEPFLOW_URL", format!("http://{addr}"))
        .env("SCREENSHOTS", &screenshots)
        .envs(vars.iter().copied())
        .output()
        .expect("node");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the browser scenario failed:\n{}\n{}\nserver log:\n{}",
        stdout(&out),
        stderr(&out),
        server.tail()
    );
    eprintln!("{}", stdout(&out).trim());
}

#[test]
fn an_operator_approves_a_waiting_run_and_resumes_a_failed_one_from_the_page() {
    if let Err(why) = install_tools("tests/web/install") {
        assert!(std::env::var_os("CI").is_none(), "skipped under CI: {why}");
        eprintln!("skipped: web page in a browser: {why}");
        return;
    }
    let s = Sandbox::durable();
    // A run that failed: it reads a file that is not there yet.
    let failed = failed_run(&s);
    let approval = s.flow("approval.yaml", APPROVAL);
    let out = s.run(&["submit", approval.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let waiting = stdout(&out).trim().to_string();

    let mut server = ServerProcess::start(&s, &[]);
    // The API listens before the scheduler starts, so this line comes first.
    let addr = server.api_addr();
    server.wait_for("the run to wait", |e| {
        message(e) == "run waits for a signal" && e["run"] == waiting.as_str()
    });
    let mut token_file = s.db().into_os_string();
    token_file.push(".api-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file");
    // The cause of the failure is fixed; the page resumes the run.
    std::fs::write(s.path("input.txt"), "now it exists").unwrap();

    scenario(
        &s,
        &server,
        &addr,
        &[
            ("STEPFLOW_TOKEN", token.trim()),
            ("WAITING_RUN", &waiting),
            ("FAILED_RUN", &failed),
        ],
    );
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
    for run in [&waiting, &failed] {
        let shown = json(&s.run(&["show", run, "--json"]));
        assert_eq!(shown["status"], "completed", "{shown}");
    }
    let shown = json(&s.run(&["show", &waiting, "--json"]));
    assert_eq!(
        shown["data"]["signals"]["approve"]["by"], "browser",
        "{shown}"
    );
}

/// Runs of five flows, newest last, with mixed statuses (none of them due, so the server only
/// serves the page), and one failed run (`busy`, flow `busy.v1`, no deployment) with `history`
/// entries, written straight into the store.
fn large_store(db: &std::path::Path, runs: usize, history: usize) -> String {
    use stepflow_model::{CallKind, Event, State};
    use stepflow_store::{
        HistoryEntry, RunRecord, RunStatus, SqliteStore, StepOutcome, StepSave, Store,
    };
    let statuses = [
        RunStatus::Completed,
        RunStatus::Waiting,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];
    let state = |i: usize| State {
        cursor: vec![Event::new(format!("start:f{}.v1/step", i % 5))],
        data: std::sync::Arc::new(serde_json::json!({ "n": i })),
        ..State::default()
    };
    let record = |id: String, flow: String, status, i: usize, created_ms: u64| RunRecord {
        id,
        flow,
        flow_file: "/flows/f.yaml".into(),
        definition: "d".into(),
        deployment: None,
        status,
        state: state(i),
        next_check_ms: (status == RunStatus::Waiting).then_some(stepflow_store::NEVER_DUE_MS),
        last_error: (status == RunStatus::Failed).then(|| "boom".to_string()),
        created_ms,
        updated_ms: created_ms,
        lease: None,
    };
    let mut store = SqliteStore::open(db).expect("store");
    for i in 0..runs {
        let status = statuses[i % statuses.len()];
        let id = format!("20261201-{:06}-{:06x}", i / 1000, i);
        let created = 1_700_000_000_000 + i as u64;
        store
            .create_run(&record(id, format!("f{}.v1", i % 5), status, i, created))
            .expect("create");
    }
    let busy = "20261201-busy".to_string();
    let created = 1_800_000_000_000;
    store
        .create_run(&record(
            busy.clone(),
            "busy.v1".into(),
            RunStatus::Failed,
            0,
            created,
        ))
        .expect("create");
    for i in 0..history {
        let entry = HistoryEntry {
            run_id: busy.clone(),
            seq: 0,
            step: format!("busy.v1/step{}", i % 7),
            kind: CallKind::Step,
            attempt: 1,
            outcome: StepOutcome::Done,
            started_ms: created + i as u64,
            duration_ms: 1,
            error: None,
            patch: Some(serde_json::json!({ "n": i })),
            redelivered: false,
            handlers: Vec::new(),
        };
        let state = state(i);
        store
            .save_step(&StepSave {
                run_id: &busy,
                status: RunStatus::Failed,
                state: &state,
                next_check_ms: None,
                last_error: Some("boom"),
                history: std::slice::from_ref(&entry),
                lease: None,
            })
            .expect("save");
    }
    busy
}

#[test]
fn the_page_stays_usable_with_100000_runs_and_a_history_of_10000_rows() {
    if let Err(why) = install_tools("tests/web/install") {
        assert!(std::env::var_os("CI").is_none(), "skipped under CI: {why}");
        eprintln!("skipped: web page in a browser: {why}");
        return;
    }
    let s = Sandbox::scratch();
    let busy = large_store(&s.db(), 100_000, 10_000);
    let mut server = ServerProcess::start(&s, &[]);
    // The API listens before the scheduler starts, so this line comes first.
    let addr = server.api_addr();
    scenario(
        &s,
        &server,
        &addr,
        &[
            ("BIG_RUN", &busy),
            ("BIG_FLOW", "f3.v1"),
            ("MIN_RUNS", "100000"),
        ],
    );
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
}
