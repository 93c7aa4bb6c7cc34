//! The `stepflow` binary end to end: every command, its exit codes and its errors.

mod common;

use common::{Sandbox, json, repo, stderr, stdout};
use serde_json::json;

const QUICKSTART: &str = r#"
flow: quickstart.v1
plugins:
  quickstart:
    wasm: {plugins}/quickstart.wasm
steps:
  - do: quickstart.step1
  - name: aCondition
    wait-for: quickstart.a-condition
  - do: quickstart.step2
"#;

#[test]
fn a_run_completes_and_its_timeline_shows_every_step() {
    let s = Sandbox::new();
    let flow = s.flow("q.yaml", QUICKSTART);
    let out = s.run(&["run", flow.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result = json(&out);
    assert_eq!(result["status"], "completed");
    assert_eq!(result["data"], json!({ "step1": "done", "step2": "done" }));
    let run = result["run"].as_str().unwrap().to_string();

    let shown = json(&s.run(&["show", &run, "--json"]));
    let steps: Vec<(&str, &str)> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["step"].as_str().unwrap(), h["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("quickstart.v1/step1", "done"),
            ("quickstart.v1/aCondition", "true"),
            ("quickstart.v1/step2", "done"),
        ]
    );
    assert_eq!(shown["status"], "completed");

    let text = stdout(&s.run(&["show", &run]));
    assert!(
        text.contains("quickstart.v1/aCondition") && text.contains("completed"),
        "{text}"
    );
    let listed = stdout(&s.run(&["runs"]));
    assert!(
        listed.contains(&run) && listed.contains("completed"),
        "{listed}"
    );
}

#[test]
fn the_example_flows_validate_and_run() {
    let s = Sandbox::new();
    common::plugins_dir();
    for example in ["quickstart", "deploy", "data-processing", "fan-out"] {
        let path = repo().join(format!("examples/{example}.yaml"));
        let out = s.run(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{example}: {}", stderr(&out));
    }
    let path = repo().join("examples/data-processing.yaml");
    let out = s.run(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = &json(&out)["data"];
    assert_eq!(data["transformed_pages"], 5);
    assert!(
        data["summary"].as_str().unwrap().starts_with("5 pages"),
        "{data}"
    );
    let path = repo().join("examples/fan-out.yaml");
    let out = s.run(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = &json(&out)["data"];
    assert_eq!(data["deployed"]["us"]["attempt"], 2, "{data}");
    assert_eq!(data["squares"][19]["square"], 361, "{data}");
}

#[test]
fn validate_reports_a_wrong_kind_at_its_place_in_the_file() {
    let s = Sandbox::new();
    let flow = s.flow(
        "bad.yaml",
        r#"flow: bad.v1
plugins:
  deploy:
    wasm: {plugins}/deploy.wasm
steps:
  - name: ready
    wait-for: deploy.prepare
"#,
    );
    let out = s.run(&["validate", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.yaml:7:"), "{err}");
    assert!(
        err.contains("`deploy.prepare` is used as a condition, but it is an action"),
        "{err}"
    );
}

#[test]
fn a_missing_plugin_file_says_how_to_build_it() {
    let s = Sandbox::new();
    let flow = s.flow(
        "missing.yaml",
        "flow: m.v1\nplugins:\n  p:\n    wasm: ./nowhere.wasm\n    build: ./build-it\nsteps:\n  - do: p.x\n",
    );
    let out = s.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("missing.yaml:4:") && err.contains("--build"),
        "{err}"
    );
}

#[test]
fn inspect_lists_step_functions_and_what_is_not_one() {
    let s = Sandbox::new();
    let wasm = common::plugins_dir().join("hostile.wasm");
    let out = s.run(&["inspect", wasm.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let functions = json(&out)["functions"].as_array().unwrap().clone();
    let find = |n: &str| {
        functions
            .iter()
            .find(|f| f["function"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("spin")["kind"], "action");
    assert_eq!(find("burn")["kind"], "condition");
    assert!(find("add")["kind"].is_null());
    let text = stdout(&s.run(&[
        "inspect",
        common::plugins_dir().join("deploy.wasm").to_str().unwrap(),
    ]));
    assert!(
        text.contains("checks/ready") && text.contains("condition"),
        "{text}"
    );
    assert!(
        text.contains("should-retry") && text.contains("error handler"),
        "{text}"
    );
}

#[test]
fn graph_draws_mermaid_and_dot() {
    let s = Sandbox::new();
    let path = repo().join("examples/deploy.yaml");
    let mermaid = stdout(&s.run(&["graph", path.to_str().unwrap()]));
    assert!(mermaid.starts_with("stateDiagram-v2"), "{mermaid}");
    assert!(mermaid.contains("deploy.v1/shouldDeploy"), "{mermaid}");
    let dot = stdout(&s.run(&["graph", path.to_str().unwrap(), "--format", "dot"]));
    assert!(dot.starts_with("digraph"), "{dot}");
}

#[test]
fn a_failed_run_exits_1_and_resumes_after_the_cause_is_fixed() {
    let s = Sandbox::new();
    let yaml = r#"flow: fail.v1
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    dirs: [{ host: "DIR", guest: /data }]
steps:
  - name: read
    do: h.read-file
"#
    .replace("DIR", &s.dir.path().display().to_string());
    let flow = s.flow("fail.yaml", &yaml);
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"path": "/data/input.txt"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let result = json(&out);
    assert_eq!(result["status"], "failed");
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("cannot read /data/input.txt"),
        "{result}"
    );
    let run = result["run"].as_str().unwrap().to_string();
    let failed = stdout(&s.run(&["runs", "--status", "failed"]));
    assert!(failed.contains(&run), "{failed}");

    std::fs::write(s.path("input.txt"), "now it exists").unwrap();
    let out = s.run(&["resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["data"]["content"], "now it exists");
}

#[test]
fn a_cancelled_run_is_not_resumed() {
    let s = Sandbox::new();
    let yaml = r#"flow: wait.v1
plugins:
  d:
    wasm: {plugins}/dataproc.wasm
steps:
  - name: done
    wait-for: d.last-page
    every: 1h
"#;
    let flow = s.flow("wait.yaml", yaml);
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--no-wait",
        "--input",
        r#"{"pages": 3}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = json(&out)["run"].as_str().unwrap().to_string();
    let waiting = stdout(&s.run(&["runs", "--status", "waiting"]));
    assert!(waiting.contains(&run), "{waiting}");
    assert_eq!(s.run(&["cancel", &run]).status.code(), Some(0));
    let out = s.run(&["resume", &run]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("cancelled"));
    let out = s.run(&["cancel", &run]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_changed_flow_moves_a_run_only_when_the_run_s_step_still_exists() {
    let s = Sandbox::new();
    let yaml = r#"flow: change.v1
plugins:
  d:
    wasm: {plugins}/dataproc.wasm
steps:
  - name: fetch
    do: d.fetch-page
  - name: done
    wait-for: d.last-page
    every: 1h
  - name: summary
    do: d.summarize
"#;
    let flow = s.flow("change.yaml", yaml);
    let start = |s: &Sandbox| {
        let out = s.run(&[
            "run",
            flow.to_str().unwrap(),
            "--no-wait",
            "--input",
            r#"{"pages": 3}"#,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        json(&out)["run"].as_str().unwrap().to_string()
    };
    let run = start(&s);

    // Renaming a step the run is not at: a resume goes on with the run's own deployment (the
    // file is not read again); an upgrade moves it onto the edited flow.
    s.flow(
        "change.yaml",
        &yaml.replace("name: summary", "name: report"),
    );
    let out = s.run(&["resume", &run, "--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("the flow changed"),
        "{}",
        stdout(&out)
    );
    let edited = start(&s);
    let to = json(&s.run(&["show", &edited, "--json"]))["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.run(&["upgrade", &run, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the flow changed"),
        "{}",
        stdout(&out)
    );

    // Renaming the step it waits at is refused, naming the step.
    s.flow("change.yaml", &yaml.replace("name: done", "name: finished"));
    let renamed = start(&s);
    let to = json(&s.run(&["show", &renamed, "--json"]))["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.run(&["upgrade", &run, "--to", &to]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`change.v1/done`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_corrupt_database_is_refused_and_left_alone() {
    let s = Sandbox::new();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(s.db(), &garbage).unwrap();
    let out = s.run(&["runs"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&s.db().display().to_string()),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(s.db()).unwrap(), garbage);
}

#[test]
fn wrong_calls_get_usage_errors() {
    let s = Sandbox::new();
    assert_eq!(s.run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(s.run(&["run"]).status.code(), Some(2));
    // No database yet: `show` says so (and creates none).
    let out = s.run(&["show", "no-such-run"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no run database at"),
        "{}",
        stderr(&out)
    );
    let flow = s.flow("q.yaml", QUICKSTART);
    let out = s.run(&["run", flow.to_str().unwrap(), "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--input is not valid JSON"),
        "{}",
        stderr(&out)
    );
    for cmd in [
        "run", "resume", "runs", "show", "validate", "inspect", "graph", "cancel",
    ] {
        let help = stdout(&s.run(&[cmd, "--help"]));
        assert!(help.contains("Example:"), "{cmd} --help has no example");
    }
}
