//! Crash safety with the real binary: SIGKILL while a step runs, and many kills at random points;
//! every resume finishes the run without skipping or losing a step.

mod common;

use std::io::{BufRead, BufReader};

use common::{Sandbox, blocked_run, json, spawn, stderr};
use serde_json::Value;

#[test]
fn a_step_killed_in_flight_runs_again_with_the_same_key_and_is_marked_redelivered() {
    let s = Sandbox::durable();
    // The plugin has said it is inside `slow`: kill the process there.
    let mut blocked = blocked_run(&s, "crash.v1");
    let run = blocked.run.clone();
    blocked.child.kill().unwrap(); // SIGKILL
    blocked.child.wait().unwrap();

    let out = s.run(&["resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = json(&out)["data"].clone();
    let cp = &data["checkpoints"];
    assert_eq!(cp["first"]["redelivered"], false);
    assert_eq!(cp["slow"]["redelivered"], true, "{data}");
    assert_eq!(
        cp["slow"]["seen_before"], true,
        "the re-run got the same idempotency key: {data}"
    );
    assert_eq!(cp["last"]["redelivered"], false);
    let keys: Vec<&str> = ["first", "slow", "last"]
        .iter()
        .map(|k| cp[*k]["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys[1], format!("{run}/crash.v1/slow#1"));

    let shown = json(&s.run(&["show", &run, "--json"]));
    let history: Vec<(String, bool)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["step"].as_str().unwrap().to_string(),
                h["redelivered"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            ("crash.v1/first".to_string(), false),
            ("crash.v1/slow".to_string(), true),
            ("crash.v1/last".to_string(), false),
        ]
    );
    let text = common::stdout(&s.run(&["show", &run]));
    assert!(text.contains("redelivered"), "{text}");
}

#[test]
fn twenty_kills_at_random_points_end_in_the_same_data_as_an_uninterrupted_run() {
    let s = Sandbox::durable();
    let wasm = common::plugins_dir().join("dataproc.wasm");
    let flow = s.flow("pages.yaml", &common::pages_flow(&wasm));
    let input = r#"{"pages": 20, "flaky": true}"#;
    let out = s.run(&["run", flow.to_str().unwrap(), "--input", input, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected: Value = json(&out)["data"].clone();
    assert_eq!(expected["transformed_pages"], 20);

    let (id, kills) = common::run_with_kills(&s, &flow, input, 3);
    assert!(
        kills >= 20,
        "only {kills} kills; the flow is too short for the test"
    );
    let shown = json(&s.run(&["show", &id, "--json"]));
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["data"], expected, "after {kills} kills");
}

/// Three regions deployed side by side (`us` fails once and is retried inside its branch),
/// then 50 numbers squared eight at a time.
fn fan_out_flow(wasm: &std::path::Path) -> String {
    let region = |name: &str| {
        format!(
            "      - name: {name}\n        steps:\n          - name: attempts\n            retry: {{ max-attempts: 3 }}\n            steps:\n              - {{ name: push, do: d.deploy-region }}\n"
        )
    };
    format!(
        "flow: fanout.v1\nplugins:\n  d:\n    wasm: {}\n    memory: 256MiB\nsteps:\n  - name: regions\n    parallel:\n{}{}{}  - name: numbers\n    for-each: /numbers\n    results: /squares\n    concurrency: 8\n    steps:\n      - {{ name: square, do: d.square }}\n",
        wasm.display(),
        region("eu"),
        region("us"),
        region("ap")
    )
}

#[test]
fn kills_at_random_points_of_parallel_branches_and_a_for_each_end_in_the_same_data() {
    let s = Sandbox::durable();
    let wasm = common::plugins_dir().join("fanout.wasm");
    let flow = s.flow("fanout.yaml", &fan_out_flow(&wasm));
    let numbers: Vec<u64> = (0..50).collect();
    let input = serde_json::json!({
        "version": "2.0",
        "regions": ["eu", "us", "ap"],
        "flaky_regions": ["us"],
        "numbers": numbers,
    })
    .to_string();
    let out = s.run(&["run", flow.to_str().unwrap(), "--input", &input, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected: Value = json(&out)["data"].clone();
    for (region, attempt) in [("eu", 1), ("us", 2), ("ap", 1)] {
        assert_eq!(
            expected["deployed"][region]["attempt"], attempt,
            "{expected}"
        );
        assert_eq!(expected["deployed"][region]["version"], "2.0");
    }
    let squares: Vec<Value> = (0..50u64)
        .map(|i| serde_json::json!({ "square": i * i }))
        .collect();
    assert_eq!(expected["squares"], Value::Array(squares));

    // Up to eight steps end in one apply here, so a kill after 0 or 1 of them; three runs, for
    // enough kills.
    let mut kills = 0;
    for _ in 0..3 {
        let (id, killed) = common::run_with_kills(&s, &flow, &input, 2);
        kills += killed;
        let shown = json(&s.run(&["show", &id, "--json"]));
        assert_eq!(shown["status"], "completed");
        assert_eq!(shown["data"], expected, "after {killed} kills");
        // Each element's step is saved done exactly once: a call a kill cut short was never
        // saved, only its re-delivery.
        let history = shown["history"].as_array().unwrap();
        for i in 0..50 {
            let step = format!("fanout.v1/numbers#{i}/square");
            let done: Vec<&Value> = history
                .iter()
                .filter(|h| h["step"] == step.as_str() && h["outcome"] == "done")
                .collect();
            assert_eq!(done.len(), 1, "{step}: {done:?}");
        }
    }
    assert!(
        kills >= 20,
        "only {kills} kills; the flow is too short for the test"
    );
}

#[test]
fn ctrl_c_during_a_wait_saves_and_says_how_to_resume() {
    let s = Sandbox::durable();
    let yaml = r#"flow: wait.v1
plugins:
  d:
    wasm: {plugins}/dataproc.wasm
steps:
  - { name: fetch, do: d.fetch-page }
  - name: done
    wait-for: d.last-page
    every: 1h
  - { name: summary, do: d.summarize }
"#;
    let flow = s.flow("wait.yaml", yaml);
    let mut child = spawn(
        &s,
        &["run", flow.to_str().unwrap(), "--input", r#"{"pages": 2}"#],
        "warn",
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = lines.next().unwrap().unwrap();
    let run = header.split_whitespace().nth(1).unwrap().to_string();
    // Wait until the run says it is waiting, then press Ctrl-C.
    for line in lines.by_ref() {
        if line.unwrap().contains("waiting") {
            break;
        }
    }
    common::send_signal(child.id(), "INT");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(3), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("stepflow resume {run}"))),
        "{rest:?}"
    );
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(shown["status"], "waiting");
    assert_eq!(shown["data"]["page"], 1);
}

#[test]
fn a_run_cancelled_while_it_runs_stops_at_its_next_step() {
    let s = Sandbox::durable();
    let blocked = blocked_run(&s, "cancel.v1");
    let run = blocked.run.clone();
    // While `slow` is blocked, cancel the run from another process, then let `slow` finish.
    assert_eq!(s.run(&["cancel", &run]).status.code(), Some(0));
    let (code, rest) = blocked.release();
    assert_eq!(code, Some(5), "{rest:?}");
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(shown["status"], "cancelled");
    // `last` never ran: the cancel was honoured at the next step.
    assert!(
        shown["data"]["checkpoints"].get("last").is_none(),
        "{shown}"
    );
}

#[test]
fn sigterm_and_sighup_let_the_step_in_flight_finish_save_and_say_how_to_resume() {
    for signal in ["TERM", "HUP"] {
        let s = Sandbox::durable();
        let mut blocked = blocked_run(&s, "term.v1");
        let run = blocked.run.clone();
        // While `slow` is blocked, send the signal; once the process has counted it (it says
        // so), let `slow` finish. Releasing at once raced the signal's handling under load.
        common::send_signal(blocked.child.id(), signal);
        blocked.wait_for_stderr("stopping after the step in flight");
        let (code, rest) = blocked.release();
        assert_eq!(code, Some(3), "SIG{signal}: {rest:?}");
        assert!(
            rest.iter()
                .any(|l| l.contains(&format!("stepflow resume {run}"))),
            "SIG{signal}: {rest:?}"
        );
        let shown = json(&s.run(&["show", &run, "--json"]));
        assert_eq!(shown["status"], "waiting", "SIG{signal}");
        // `slow` finished and was saved; `last` did not start.
        let steps = common::history_steps(&shown);
        assert_eq!(steps, ["term.v1/first", "term.v1/slow"], "SIG{signal}");
        let out = s.run(&["resume", &run, "--json"]);
        assert_eq!(out.status.code(), Some(0), "SIG{signal}: {}", stderr(&out));
        let shown = json(&s.run(&["show", &run, "--json"]));
        let history = shown["history"].as_array().unwrap();
        assert_eq!(history.len(), 3, "SIG{signal}: each step once: {shown}");
        assert!(
            history.iter().all(|h| h["redelivered"] == false),
            "SIG{signal}: a clean stop redelivers nothing: {shown}"
        );
    }
}

/// `redelivered` means "this call may have run before": a run resumed after it failed, or
/// after a wait it was saved at, has its next call marked as a first delivery.
#[test]
fn a_failed_or_waiting_run_resumes_without_redelivery() {
    let s = Sandbox::durable();
    // `transform` fails on its first attempt and nothing retries it: the run fails.
    let yaml = r#"flow: fails.v1
plugins:
  d:
    wasm: {plugins}/dataproc.wasm
steps:
  - { name: fetch, do: d.fetch-page }
  - { name: transform, do: d.transform }
  - { name: summary, do: d.summarize }
"#;
    let flow = s.flow("fails.yaml", yaml);
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"flaky": true}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = json(&out)["run"].as_str().unwrap().to_string();
    // The cause fixed, the failing step runs again: a retry, not a redelivery.
    let out = s.run(&["resume", &run, "--json"]);
    let shown = json(&s.run(&["show", &run, "--json"]));
    let history = shown["history"].as_array().unwrap();
    assert!(history.len() >= 3, "{shown}: {}", stderr(&out));
    assert!(
        history.iter().all(|h| h["redelivered"] == false),
        "a failed run's resume redelivers nothing: {shown}"
    );

    // A run saved at a wait (`--no-wait`) and resumed.
    let wait = s.flow(
        "wait.yaml",
        "flow: wait.v1\nplugins:\n  d: { wasm: {plugins}/dataproc.wasm }\nsteps:\n  - { name: fetch, do: d.fetch-page }\n  - name: done\n    wait-for: d.last-page\n    every: 1h\n  - { name: summary, do: d.summarize }\n",
    );
    let input = r#"{"pages": 2}"#;
    let out = s.run(&[
        "run",
        wait.to_str().unwrap(),
        "--input",
        input,
        "--no-wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = json(&out)["run"].as_str().unwrap().to_string();
    // Checked once more at once (still not the last page), then saved at the wait again.
    let out = s.run(&["resume", &run, "--now", "--no-wait", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let shown = json(&s.run(&["show", &run, "--json"]));
    let history = shown["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{shown}");
    assert!(
        history.iter().all(|h| h["redelivered"] == false),
        "a waiting run's resume redelivers nothing: {shown}"
    );
}

/// The second Ctrl-C does not wait for a step that never ends: the process leaves at once
/// (exit 3), the step's result is never saved, and `resume` runs it again, marked redelivered.
#[test]
fn a_second_ctrl_c_abandons_the_step_in_flight_and_resume_redelivers_it() {
    let s = Sandbox::durable();
    let mut blocked = blocked_run(&s, "abandon.v1");
    let run = blocked.run.clone();
    common::send_signal(blocked.child.id(), "INT");
    // The first request is heard (and said) before the second is sent: two signals sent at
    // once may arrive as one.
    blocked.wait_for_stderr("stopping after the step in flight");
    common::send_signal(blocked.child.id(), "INT");
    // `slow` is still spinning (no release file): only abandoning it ends the process.
    let rest: Vec<String> = blocked.out.by_ref().map(|l| l.unwrap()).collect();
    let code = blocked.child.wait().unwrap().code();
    assert_eq!(code, Some(3), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("abandoned the step in flight")),
        "{rest:?}"
    );
    let shown = json(&s.run(&["show", &run, "--json"]));
    let steps = common::history_steps(&shown);
    assert_eq!(steps, ["abandon.v1/first"], "slow was not saved: {shown}");

    let out = s.run(&["resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = json(&s.run(&["show", &run, "--json"]));
    let history: Vec<(&str, bool)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["step"].as_str().unwrap(), h["redelivered"] == true))
        .collect();
    assert_eq!(
        history,
        [
            ("abandon.v1/first", false),
            ("abandon.v1/slow", true),
            ("abandon.v1/last", false)
        ],
        "{shown}"
    );
}
