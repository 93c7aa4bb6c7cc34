//! `stepflow server` with the real binary, real plugins and real SQLite (and each test again on
//! PostgreSQL, in `postgres::`): submitted runs complete
//! as foreground runs do, SIGKILLs at random moments skip and repeat nothing, a run the server
//! drives is refused to a foreground `resume` and stopped by `cancel`, and a run no longer needs
//! its files once submitted.
//!
//! The tests wait for what the server logs (one JSON line per step and per drive's end), never
//! for a time; each holds `HEAVY` so that two of them do not load the machine at once.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use stepflow_testkit::{MIXED_INPUTS as INPUTS, mixed_flow};

use common::{APPROVAL, Lcg, Sandbox, ServerProcess, json, message, stderr, stdout};

thread_local! {
    /// Whether this test's runs go to PostgreSQL (the `postgres::` copies of the tests).
    static ON_POSTGRES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The test's sandbox: its runs in a SQLite file, or, for the `postgres::` copy of the test,
/// in a scratch PostgreSQL database; `None` (after `skipped: why`) when there is none.
fn sandbox() -> Option<Sandbox> {
    let s = Sandbox::durable();
    if ON_POSTGRES.with(|p| p.get()) {
        s.on_postgres("server")
    } else {
        Some(s)
    }
}

/// Runs `test` with its runs in PostgreSQL.
fn on_postgres(test: fn()) {
    ON_POSTGRES.with(|p| p.set(true));
    test();
}

/// Serialises the tests of this file: each starts many runs.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run's history as (step, attempt, outcome, redelivered), from `show --json`.
fn history(s: &Sandbox, run: &str) -> Vec<(String, u64, String, bool)> {
    let shown = json(&s.run(&["show", run, "--json"]));
    shown["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history for {run}: {shown}"))
        .iter()
        .map(|h| {
            (
                h["step"].as_str().unwrap_or_default().to_string(),
                h["attempt"].as_u64().unwrap_or_default(),
                h["outcome"].to_string(),
                h["redelivered"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// Without the redelivered marks.
fn steps(history: &[(String, u64, String, bool)]) -> Vec<(String, u64, String)> {
    history
        .iter()
        .map(|(s, a, o, _)| (s.clone(), *a, o.clone()))
        .collect()
}

/// `stepflow submit FLOW --input INPUT`: the run id it printed.
fn submit(s: &Sandbox, flow: &std::path::Path, input: &str) -> String {
    let out = s.run(&["submit", flow.to_str().unwrap(), "--input", input]);
    assert_eq!(out.status.code(), Some(0), "submit: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert_eq!(id.len(), 22, "submit prints the run id alone: {id:?}");
    id
}

/// The statuses of every run in the database, by id.
fn statuses(s: &Sandbox) -> HashMap<String, String> {
    let listed = json(&s.run(&["runs", "--json", "--limit", "100000"]));
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["run"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Reads the server's log until `n` more runs have completed; fails if one fails.
fn wait_for_completions(server: &mut ServerProcess, n: usize) {
    let mut completed = 0;
    while completed < n {
        let event = server.wait_for("the runs completed", |e| {
            matches!(message(e), "run completed" | "run failed")
        });
        assert_eq!(
            message(&event),
            "run completed",
            "a run failed: {event}\n{}",
            server.tail()
        );
        completed += 1;
    }
}

#[test]
fn two_hundred_submitted_runs_complete_with_the_histories_of_foreground_runs() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let flow = s.flow("mixed.yaml", &mixed_flow());
    let ids: Vec<String> = (0..200).map(|i| submit(&s, &flow, INPUTS[i % 3])).collect();
    // Submitted, not driven: nothing has run yet.
    assert!(
        statuses(&s).values().all(|st| st == "running"),
        "{:?}",
        statuses(&s)
    );

    let mut server = ServerProcess::start(&s, &["--concurrency", "50"]);
    let step = server.wait_for("a step line", |e| message(e) == "step finished");
    for field in ["run", "step", "kind", "outcome", "duration_ms", "attempt"] {
        assert!(
            !step[field].is_null(),
            "the step line has `{field}`: {step}"
        );
    }
    // Readers work while the server writes.
    let listed = s.run(&["runs", "--json", "--limit", "500"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    wait_for_completions(&mut server, 200);
    server.terminate();
    let (code, out, _) = server.finish();
    assert_eq!(code, Some(0), "a SIGTERM is a clean stop: {out}");
    assert!(out.contains("200 runs completed"), "the summary: {out}");

    // The same inputs in the foreground, in another database.
    let fg = Sandbox::durable();
    let fg_flow = fg.flow("mixed.yaml", &mixed_flow());
    for (i, input) in INPUTS.iter().enumerate() {
        let out = fg.run(&["run", fg_flow.to_str().unwrap(), "--input", input, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let expected = history(&fg, json(&out)["run"].as_str().unwrap());
        assert!(expected.len() > 10, "{expected:?}");
        for id in ids.iter().skip(i).step_by(3) {
            assert_eq!(history(&s, id), expected, "run {id} (input {input})");
        }
    }
}

/// Checkpoints (which record every idempotency key they see in WORK), a wait, a loop and
/// retries with back-off; nothing depends on the clock, so every run's history is known.
const KILLS: &str = r#"flow: kills.v1
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    dirs: [{ host: "WORK", guest: /work, writable: true }]
  deploy:
    wasm: {plugins}/deploy.wasm
  d:
    wasm: {plugins}/dataproc.wasm
data: { pages: 3, flaky: true }
steps:
  - { name: c1, do: h.checkpoint }
  - do: deploy.prepare
  - name: ready
    wait-for: deploy.checks/ready
    every: 50ms
  - { name: c2, do: h.checkpoint }
  - name: pages
    loop-until: d.last-page
    steps:
      - { name: fetch, do: d.fetch-page }
      - name: stage
        retry: { max-attempts: 4, backoff: { initial: 20ms, max: 40ms } }
        steps:
          - do: d.transform
  - { name: c3, do: h.checkpoint }
  - { name: c4, do: h.checkpoint }
  - do: d.summarize
  - { name: c5, do: h.checkpoint }
"#;

#[test]
fn twenty_kills_with_fifty_runs_in_flight_skip_nothing_and_repeat_only_redelivered_steps() {
    let _heavy = heavy();
    let seed = common::seed();
    eprintln!("kill schedule seed: {seed} (replay with STEPFLOW_TEST_SEED={seed})");
    let mut rng = Lcg(seed);
    let Some(s) = sandbox() else { return };
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    let yaml = KILLS.replace("WORK", &work.display().to_string());
    let flow = s.flow("kills.yaml", &yaml);
    let ids: Vec<String> = (0..50).map(|_| submit(&s, &flow, "{}")).collect();

    for kill in 0..20 {
        let mut server = ServerProcess::start(&s, &["--concurrency", "50"]);
        // At most 20 * 30 steps in all, fewer than the runs have (50 * 17): the runs never
        // all finish before the last kill.
        let steps_before_kill = 1 + rng.below(30);
        for _ in 0..steps_before_kill {
            let event = server.wait_for("steps to kill it in", |e| {
                matches!(message(e), "step finished" | "run failed")
            });
            assert_eq!(message(&event), "step finished", "kill {kill}: {event}");
        }
        server.kill();
    }
    let finished_before = statuses(&s)
        .values()
        .filter(|st| *st == "completed")
        .count();
    let mut server = ServerProcess::start(&s, &["--concurrency", "50"]);
    wait_for_completions(&mut server, 50 - finished_before);
    server.terminate();
    let (code, out, _) = server.finish();
    assert_eq!(code, Some(0), "{out}");

    // What an uninterrupted run does, in the foreground.
    let fg = Sandbox::durable();
    let fg_work = fg.path("work");
    std::fs::create_dir(&fg_work).unwrap();
    let fg_flow = fg.flow(
        "kills.yaml",
        &KILLS.replace("WORK", &fg_work.display().to_string()),
    );
    let out = fg.run(&["run", fg_flow.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = history(&fg, json(&out)["run"].as_str().unwrap());
    assert!(expected.iter().all(|h| !h.3), "{expected:?}");

    let mut redelivered = 0;
    let mut seen_twice = 0;
    for id in &ids {
        let got = history(&s, id);
        assert_eq!(
            steps(&got),
            steps(&expected),
            "run {id}: every step once, in order (seed {seed})"
        );
        redelivered += got.iter().filter(|h| h.3).count();
        let shown = json(&s.run(&["show", id, "--json"]));
        assert_eq!(shown["status"], "completed", "{shown}");
        for c in ["c1", "c2", "c3", "c4", "c5"] {
            let cp = &shown["data"]["checkpoints"][c];
            let key = cp["key"].as_str().unwrap_or_default();
            assert!(key.starts_with(&format!("{id}/kills.v1/{c}#")), "{cp}");
            // A key the plugin saw before is a call repeated: only ever a redelivered one.
            if cp["seen_before"] == true {
                seen_twice += 1;
                assert_eq!(cp["redelivered"], true, "run {id} step {c}: {cp}");
            }
        }
    }
    assert!(
        redelivered > 0,
        "20 kills with 50 runs in flight redelivered no step (seed {seed})"
    );
    eprintln!("{redelivered} steps redelivered, {seen_twice} checkpoints seen twice");
}

/// A run whose step `slow` blocks in the server until the file `release` appears in WORK.
const BLOCKED: &str = r#"flow: blocked.v1
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    dirs: [{ host: "WORK", guest: /work, writable: true }]
steps:
  - { name: first, do: h.checkpoint }
  - { name: slow, do: h.checkpoint }
  - { name: last, do: h.checkpoint }
"#;

/// Submits a blocked run, starts a server and returns once `slow` is blocked in it.
fn blocked_in_server(s: &Sandbox) -> (ServerProcess, String, std::path::PathBuf) {
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    let flow = s.flow(
        "blocked.yaml",
        &BLOCKED.replace("WORK", &work.display().to_string()),
    );
    let run = submit(s, &flow, r#"{"block_in": "blocked.v1/slow"}"#);
    let mut server = ServerProcess::start(s, &[]);
    server.wait_for("slow to block", |e| {
        e.to_string().contains("waiting for release")
    });
    (server, run, work)
}

#[test]
fn a_foreground_resume_is_refused_while_the_server_drives_the_run_and_succeeds_after() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let (mut server, run, work) = blocked_in_server(&s);

    let out = s.run(&["resume", &run]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is being driven by"), "{err}");
    assert!(
        err.contains("stepflow server"),
        "the hint names the server: {err}"
    );
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert!(shown["owner"].is_string(), "show names the driver: {shown}");

    // SIGTERM: the step in flight finishes and is saved, then the server exits.
    server.terminate();
    server.wait_for("the server to drain", |e| {
        message(e).starts_with("stopping")
    });
    std::fs::write(work.join("release"), "go").unwrap();
    let (code, out, _) = server.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 stopped (resumable)"), "{out}");
    let done = history(&s, &run);
    assert_eq!(
        steps(&done)
            .iter()
            .map(|h| h.0.as_str())
            .collect::<Vec<_>>(),
        ["blocked.v1/first", "blocked.v1/slow"],
        "the step in flight was saved before the server stopped"
    );

    let out = s.run(&["resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = &json(&out)["data"]["checkpoints"];
    assert_eq!(data["last"]["redelivered"], false, "a clean stop: {data}");
    assert_eq!(history(&s, &run).len(), 3);
}

#[test]
fn a_second_sigterm_abandons_the_step_in_flight_and_the_next_start_redelivers_it() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let (mut server, run, work) = blocked_in_server(&s);
    server.terminate();
    server.wait_for("the server to drain", |e| {
        message(e).starts_with("stopping")
    });
    // `slow` still blocks: the second signal leaves without it.
    server.terminate();
    let (code, out, _) = server.finish();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 steps in flight were abandoned"), "{out}");
    assert_eq!(steps(&history(&s, &run)).len(), 1, "only `first` was saved");

    std::fs::write(work.join("release"), "go").unwrap();
    let mut server = ServerProcess::start(&s, &[]);
    wait_for_completions(&mut server, 1);
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
    let shown = json(&s.run(&["show", &run, "--json"]));
    let slow = &shown["data"]["checkpoints"]["slow"];
    assert_eq!(slow["redelivered"], true, "{slow}");
    assert_eq!(
        slow["seen_before"], true,
        "the same key as the abandoned call: {slow}"
    );
    let marks: Vec<bool> = history(&s, &run).iter().map(|h| h.3).collect();
    assert_eq!(marks, [false, true, false]);
}

#[test]
fn a_cancel_stops_a_run_the_server_drives_at_its_next_step() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let (mut server, run, work) = blocked_in_server(&s);

    let out = s.run(&["cancel", &run]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(work.join("release"), "go").unwrap();
    let event = server.wait_for("the drive to end", |e| {
        message(e).starts_with("run ") && e["run"] == run.as_str()
    });
    assert_eq!(message(&event), "run cancelled", "{event}");
    server.terminate();
    let (code, _, _) = server.finish();
    assert_eq!(code, Some(0));

    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(shown["status"], "cancelled", "{shown}");
    let steps: Vec<String> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        steps,
        ["blocked.v1/first"],
        "nothing saved after the cancel"
    );
    assert!(
        !work.join(format!("{}_blocked.v1_last#1", run)).exists(),
        "`last` never ran"
    );
}

#[test]
fn a_submitted_run_completes_after_its_flow_file_moved_and_its_wasm_was_deleted() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let wasm = s.path("noop.wasm");
    std::fs::copy(common::plugins_dir().join("noop.wasm"), &wasm).unwrap();
    let flow = s.path("moving.yaml");
    std::fs::write(
        &flow,
        format!(
            "flow: moving.v1\nplugins:\n  n: {{ wasm: {} }}\nsteps:\n  - {{ name: a, do: n.noop }}\n  - {{ name: b, do: n.noop }}\n",
            wasm.display()
        ),
    )
    .unwrap();
    let run = submit(&s, &flow, "{}");
    std::fs::rename(&flow, s.path("moved.yaml")).unwrap();
    std::fs::remove_file(&wasm).unwrap();

    let mut server = ServerProcess::start(&s, &[]);
    wait_for_completions(&mut server, 1);
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
    assert_eq!(history(&s, &run).len(), 2);
}

#[test]
fn submit_refuses_a_broken_flow_and_stores_no_run() {
    let Some(s) = sandbox() else { return };
    let flow = s.flow(
        "broken.yaml",
        "flow: broken.v1\nplugins:\n  n: { wasm: {plugins}/noop.wasm }\nsteps:\n  - { name: a, do: n.missing }\n",
    );
    let out = s.run(&["submit", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.yaml:5"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no run id: {}", stdout(&out));
    assert!(!s.db().exists(), "refused before the database was touched");

    let out = s.run(&["submit", flow.to_str().unwrap(), "--input", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--input must be a JSON object"),
        "{}",
        stderr(&out)
    );

    let out = s.run(&["server", "--concurrency", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--concurrency"), "{}", stderr(&out));
}

/// Runs left waiting by `run --no-wait` are the server's too.
#[test]
fn the_server_finishes_a_run_left_waiting_by_run_no_wait() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let flow = s.flow("mixed.yaml", &mixed_flow());
    let out = s.run(&["run", flow.to_str().unwrap(), "--no-wait", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = json(&out)["run"].as_str().unwrap().to_string();
    assert_eq!(json(&s.run(&["show", &run, "--json"]))["status"], "waiting");

    let mut server = ServerProcess::start(&s, &[]);
    let event = server.wait_for("the run to end", |e| {
        matches!(message(e), "run completed" | "run failed")
    });
    assert_eq!(event["run"], run.as_str(), "{event}");
    assert_eq!(message(&event), "run completed", "{event}");
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
}

#[test]
fn submitted_runs_wait_for_their_approval_signal_and_one_sent_early_is_kept() {
    let _heavy = heavy();
    let Some(s) = sandbox() else { return };
    let flow = s.flow("approval.yaml", APPROVAL);
    let waits = submit(&s, &flow, "{}");
    let early = submit(&s, &flow, "{}");
    let out = s.run(&["signal", &early, "approve", "--data", r#"{"by": "bob"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let mut server = ServerProcess::start(&s, &[]);
    let mut waiting = false;
    let mut early_done = false;
    while !(waiting && early_done) {
        let event = server.wait_for("a wait and a completion", |e| {
            matches!(
                message(e),
                "run waits for a signal" | "run completed" | "run failed"
            )
        });
        match (message(&event), event["run"].as_str()) {
            ("run waits for a signal", Some(run)) if run == waits => {
                assert_eq!(event["signal"], "approve", "{event}");
                waiting = true;
            }
            ("run completed", Some(run)) if run == early => early_done = true,
            _ => panic!("unexpected: {event}\n{}", server.tail()),
        }
    }
    let shown = json(&s.run(&["show", &waits, "--json"]));
    assert_eq!(shown["status"], "waiting", "{shown}");

    // A name the flow never waits for, and an unknown run, are refused; nothing is stored.
    let out = s.run(&["signal", &waits, "aprove"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("it waits for `approve`"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&["signal", "20260101-000000-000000", "approve"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The same id twice is one signal.
    for _ in 0..2 {
        let out = s.run(&[
            "signal",
            &waits,
            "approve",
            "--id",
            "ticket-1",
            "--data",
            r#"{"by": "ana"}"#,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(json(&out)["seq"], 1, "{}", stdout(&out));
    }
    let event = server.wait_for("the approved run to end", |e| {
        matches!(message(e), "run completed" | "run failed") && e["run"] == waits.as_str()
    });
    assert_eq!(message(&event), "run completed", "{event}");
    server.terminate();
    assert_eq!(server.finish().0, Some(0));

    for (run, by) in [(&waits, "ana"), (&early, "bob")] {
        let shown = json(&s.run(&["show", run, "--json"]));
        assert_eq!(shown["data"]["signals"]["approve"]["by"], by, "{shown}");
        let approvals: Vec<_> = shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["step"] == "approval.v1/approval")
            .collect();
        assert_eq!(approvals.len(), 1, "one signal, one wait: {shown}");
        assert_eq!(approvals[0]["outcome"], "done", "{shown}");
    }
    let out = s.run(&["signal", &waits, "approve"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is completed"), "{}", stderr(&out));
}

/// The same tests with `--db postgres://...`: the server behaves the same on either store.
mod postgres {
    #[test]
    fn two_hundred_submitted_runs_complete_with_the_histories_of_foreground_runs() {
        super::on_postgres(
            super::two_hundred_submitted_runs_complete_with_the_histories_of_foreground_runs,
        );
    }
    #[test]
    fn twenty_kills_with_fifty_runs_in_flight_skip_nothing_and_repeat_only_redelivered_steps() {
        super::on_postgres(super::twenty_kills_with_fifty_runs_in_flight_skip_nothing_and_repeat_only_redelivered_steps);
    }
    #[test]
    fn a_foreground_resume_is_refused_while_the_server_drives_the_run_and_succeeds_after() {
        super::on_postgres(super::a_foreground_resume_is_refused_while_the_server_drives_the_run_and_succeeds_after);
    }
    #[test]
    fn a_second_sigterm_abandons_the_step_in_flight_and_the_next_start_redelivers_it() {
        super::on_postgres(
            super::a_second_sigterm_abandons_the_step_in_flight_and_the_next_start_redelivers_it,
        );
    }
    #[test]
    fn a_cancel_stops_a_run_the_server_drives_at_its_next_step() {
        super::on_postgres(super::a_cancel_stops_a_run_the_server_drives_at_its_next_step);
    }
    #[test]
    fn a_submitted_run_completes_after_its_flow_file_moved_and_its_wasm_was_deleted() {
        super::on_postgres(
            super::a_submitted_run_completes_after_its_flow_file_moved_and_its_wasm_was_deleted,
        );
    }
    #[test]
    fn submit_refuses_a_broken_flow_and_stores_no_run() {
        super::on_postgres(super::submit_refuses_a_broken_flow_and_stores_no_run);
    }
    #[test]
    fn the_server_finishes_a_run_left_waiting_by_run_no_wait() {
        super::on_postgres(super::the_server_finishes_a_run_left_waiting_by_run_no_wait);
    }
    #[test]
    fn submitted_runs_wait_for_their_approval_signal_and_one_sent_early_is_kept() {
        super::on_postgres(
            super::submitted_runs_wait_for_their_approval_signal_and_one_sent_early_is_kept,
        );
    }
}
