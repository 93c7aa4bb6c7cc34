//! Deployments end to end, with the real binary: a run keeps the flow source and plugin bytes
//! it started with, so it resumes after its files were moved, edited, deleted or rebuilt;
//! `deployments` lists them; `upgrade` moves a run onto another deployment when its state fits.

mod common;

use std::path::{Path, PathBuf};

use common::{Sandbox, blocked_run, json, stderr, stdout};
use serde_json::Value;

/// A flow over the `dataproc` plugin at `WASM`: a fetch, a retried transform whose back-off is
/// an hour (with `flaky` the first attempt fails, so the run waits there), a wait for the last
/// page (checked hourly: with `pages: 2` the run waits there for good), then a summary.
const FLOW: &str = r#"flow: deployed.v1
plugins:
  d:
    wasm: WASM
steps:
  - { name: fetch, do: d.fetch-page }
  - name: stage
    retry: { max-attempts: 3, backoff: { initial: 1h, max: 1h, jitter: false } }
    steps:
      - { name: transform, do: d.transform }
  - name: ready
    wait-for: d.last-page
    every: 1h
  - { name: summarize, do: d.summarize }
"#;

/// Input that makes a run wait in the transform's back-off, and complete once resumed.
const FLAKY: &str = r#"{"flaky": true, "pages": 1}"#;
/// Input that makes a run wait at `ready` for good.
const TWO_PAGES: &str = r#"{"pages": 2}"#;

/// A copy of the `dataproc` plugin in the sandbox, so a test may delete or replace it.
fn own_plugin(s: &Sandbox, name: &str) -> PathBuf {
    let copy = s.path(name);
    std::fs::copy(stepflow_testkit::rust_plugin("dataproc"), &copy).expect("copy the plugin");
    copy
}

/// Writes `text` (with `WASM` replaced by `wasm`) as the flow file `name` in the sandbox.
fn write_flow(s: &Sandbox, name: &str, text: &str, wasm: &Path) -> PathBuf {
    let path = s.path(name);
    std::fs::write(&path, text.replace("WASM", &wasm.display().to_string())).expect("write");
    path
}

/// `stepflow run FLOW --no-wait --input INPUT`, expected to stop at a wait; its run id.
fn start_waiting(s: &Sandbox, flow: &Path, input: &str) -> String {
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--no-wait",
        "--input",
        input,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let result = json(&out);
    assert_eq!(result["status"], "stopped", "{result}");
    result["run"].as_str().expect("a run id").to_string()
}

/// `stepflow show RUN --json`.
fn show(s: &Sandbox, run: &str) -> Value {
    json(&s.run(&["show", run, "--json"]))
}

/// The full id of the deployment a run is on.
fn deployment_of(s: &Sandbox, run: &str) -> String {
    show(s, run)["deployment"]
        .as_str()
        .unwrap_or_else(|| panic!("run {run} has no deployment"))
        .to_string()
}

/// The steps a run has called, in order.
fn steps(s: &Sandbox, run: &str) -> Vec<String> {
    show(s, run)["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| h["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `stepflow deployments --json`.
fn deployments(s: &Sandbox) -> Vec<Value> {
    json(&s.run(&["deployments", "--json"]))
        .as_array()
        .expect("a list")
        .clone()
}

#[test]
fn a_run_resumes_after_its_flow_file_is_moved_and_its_plugin_deleted() {
    let s = Sandbox::new();
    let wasm = own_plugin(&s, "d.wasm");
    let flow = write_flow(&s, "flow.yaml", FLOW, &wasm);
    let run = start_waiting(&s, &flow, FLAKY);

    let away = s.path("elsewhere");
    std::fs::create_dir(&away).unwrap();
    std::fs::rename(&flow, away.join("moved.yaml")).unwrap();
    std::fs::remove_file(&wasm).unwrap();

    let out = s.run(&["resume", &run, "--now", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result = json(&out);
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["data"]["summary"], "1 pages, total 2090", "{result}");
    // `show` still works, and says which deployment ran.
    let shown = show(&s, &run);
    assert_eq!(shown["status"], "completed");
    let id = shown["deployment"].as_str().expect("a deployment");
    assert_eq!(id.len(), 64, "{id}");
    let text = stdout(&s.run(&["show", &run]));
    assert!(
        text.contains(&format!("deployment {}", &id[..12])),
        "{text}"
    );
}

#[test]
fn the_same_content_is_one_deployment_and_an_edit_is_another() {
    let s = Sandbox::new();
    let wasm = own_plugin(&s, "d.wasm");
    let flow = write_flow(&s, "flow.yaml", FLOW, &wasm);
    let first = start_waiting(&s, &flow, TWO_PAGES);
    let second = start_waiting(&s, &flow, TWO_PAGES);
    assert_eq!(deployment_of(&s, &first), deployment_of(&s, &second));
    assert_eq!(deployments(&s).len(), 1);

    // A comment is an edit: another deployment.
    write_flow(&s, "flow.yaml", &format!("{FLOW}# edited\n"), &wasm);
    let third = start_waiting(&s, &flow, TWO_PAGES);
    let edited = deployment_of(&s, &third);
    assert_ne!(edited, deployment_of(&s, &first));

    let listed = deployments(&s);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["deployment"], edited.as_str(), "newest first");
    assert_eq!(listed[0]["runs"], 1);
    assert_eq!(listed[1]["runs"], 2);
    assert_eq!(listed[0]["flow"], "deployed.v1");
    assert_eq!(listed[0]["plugins"][0]["name"], "d");
    assert_eq!(
        listed[0]["plugins"][0]["sha256"], listed[1]["plugins"][0]["sha256"],
        "the plugin did not change"
    );

    // Text: short ids, run counts, plugins; `runs` has the DEPLOYMENT column.
    let text = stdout(&s.run(&["deployments", "--flow", "deployed.v1"]));
    assert!(
        text.contains("DEPLOYMENT") && text.contains("RUNS"),
        "{text}"
    );
    assert!(
        text.contains(&edited[..12]) && text.contains("d@"),
        "{text}"
    );
    let none = stdout(&s.run(&["deployments", "--flow", "other.v1"]));
    assert!(none.contains("no deployments of flow other.v1"), "{none}");
    let runs = stdout(&s.run(&["runs"]));
    assert!(
        runs.contains("DEPLOYMENT") && runs.contains(&edited[..12]),
        "{runs}"
    );
    let runs = json(&s.run(&["runs", "--json"]));
    assert_eq!(runs[0]["deployment"], edited.as_str(), "{runs}");
    // Filtered by a prefix of a deployment id.
    let on_first = json(&s.run(&[
        "runs",
        "--deployment",
        &listed[1]["deployment"].as_str().unwrap()[..10],
        "--json",
    ]));
    assert_eq!(on_first.as_array().map(Vec::len), Some(2), "{on_first}");

    // A plugin rebuilt into the same bytes is the same deployment; into other bytes (here: a
    // custom section more), another one.
    std::fs::copy(stepflow_testkit::rust_plugin("noop"), &wasm).unwrap();
    std::fs::copy(stepflow_testkit::rust_plugin("dataproc"), &wasm).unwrap();
    let same = start_waiting(&s, &flow, TWO_PAGES);
    assert_eq!(deployment_of(&s, &same), edited, "the same bytes again");
    let mut bytes = std::fs::read(&wasm).unwrap();
    bytes.extend_from_slice(&[0, 6, 4, b'n', b'o', b't', b'e', b'x']);
    std::fs::write(&wasm, bytes).unwrap();
    let rebuilt = start_waiting(&s, &flow, TWO_PAGES);
    assert_ne!(deployment_of(&s, &rebuilt), edited, "other bytes");
    assert_eq!(deployments(&s).len(), 3);
}

#[test]
fn a_deployment_runs_the_plugin_bytes_it_was_started_with() {
    let s = Sandbox::new();
    let wasm = own_plugin(&s, "d.wasm");
    let flow = write_flow(&s, "flow.yaml", FLOW, &wasm);
    let run = start_waiting(&s, &flow, FLAKY);
    // "Rebuild" the plugin into another component: it has none of the flow's functions.
    std::fs::copy(stepflow_testkit::rust_plugin("noop"), &wasm).unwrap();
    let out = s.run(&["validate", flow.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the file now holds another component"
    );

    let out = s.run(&["resume", &run, "--now", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["data"]["summary"], "1 pages, total 2090");
}

#[test]
fn upgrade_moves_a_waiting_run_onto_an_edited_flow_that_keeps_its_step() {
    let s = Sandbox::new();
    let wasm = own_plugin(&s, "d.wasm");
    let v1 = write_flow(&s, "v1.yaml", FLOW, &wasm);
    let at_stage = start_waiting(&s, &v1, FLAKY);
    let stuck = start_waiting(&s, &v1, FLAKY);
    let at_ready = start_waiting(&s, &v1, TWO_PAGES);
    let first = deployment_of(&s, &at_stage);

    // v2 adds a step at the end and keeps every other.
    let v2_text = format!("{FLOW}  - {{ name: again, do: d.fetch-page }}\n");
    let v2 = write_flow(&s, "v2.yaml", &v2_text, &wasm);
    let on_v2 = start_waiting(&s, &v2, TWO_PAGES);
    let second = deployment_of(&s, &on_v2);
    assert_ne!(first, second);

    // A dry run changes nothing.
    let out = s.run(&["upgrade", &at_stage, "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("can move"), "{}", stdout(&out));
    assert_eq!(deployment_of(&s, &at_stage), first);

    // Onto the newest deployment of the flow by default.
    let out = s.run(&["upgrade", &at_stage]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&second[..12]) && said.contains("stepflow resume"),
        "{said}"
    );
    assert_eq!(deployment_of(&s, &at_stage), second);
    // Again: nothing to do.
    let out = s.run(&["upgrade", &at_stage]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("already"), "{}", stdout(&out));

    // The resumed run goes on with the new flow: it runs the step v2 added, without a note
    // that the flow changed (its definition hash was updated with the move).
    let out = s.run(&["resume", &at_stage, "--now"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("flow changed"), "{}", stderr(&out));
    let called = steps(&s, &at_stage);
    assert_eq!(
        called.last().map(String::as_str),
        Some("deployed.v1/again"),
        "{called:?}"
    );
    // A completed run does not move.
    let out = s.run(&["upgrade", &at_stage, "--to", &first]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("completed"), "{}", stderr(&out));

    // v3 drops the retry group the other runs wait in.
    let v3_text = v2_text.replace(
        "  - name: stage\n    retry: { max-attempts: 3, backoff: { initial: 1h, max: 1h, jitter: false } }\n    steps:\n      - { name: transform, do: d.transform }\n",
        "",
    );
    assert_ne!(v3_text, v2_text);
    let v3 = write_flow(&s, "v3.yaml", &v3_text, &wasm);
    let on_v3 = start_waiting(&s, &v3, TWO_PAGES);
    let third = deployment_of(&s, &on_v3);

    let out = s.run(&["upgrade", &stuck]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("`deployed.v1/stage`"), "{err}");
    assert!(
        err.contains("hint:") && err.contains(&format!("stepflow resume {stuck}")),
        "{err}"
    );
    assert_eq!(deployment_of(&s, &stuck), first, "nothing moved");
    let out = s.run(&["upgrade", &stuck, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`deployed.v1/stage`"),
        "{}",
        stderr(&out)
    );

    // The listing: which runs of the flow could move onto v3, and why the others cannot.
    let out = s.run(&["upgrade", "--flow", "deployed.v1", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = json(&out);
    assert_eq!(listed["to"], third.as_str(), "{listed}");
    let row = |run: &str| {
        listed["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["run"] == run))
            .cloned()
            .unwrap_or_else(|| panic!("{run} is not listed: {listed}"))
    };
    assert_eq!(row(&stuck)["movable"], false);
    assert!(
        row(&stuck)["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("`deployed.v1/stage`"),
        "{listed}"
    );
    assert_eq!(row(&at_ready)["movable"], true, "{listed}");
    assert_eq!(row(&on_v2)["movable"], true, "{listed}");
    assert_eq!(row(&on_v3)["movable"], false, "{listed}");
    assert!(
        listed["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["run"] != at_stage.as_str()),
        "a completed run is not listed: {listed}"
    );
    let text = stdout(&s.run(&["upgrade", "--flow", "deployed.v1", "--dry-run"]));
    assert!(
        text.contains("WHY NOT") && text.contains("yes") && text.contains("no "),
        "{text}"
    );
    assert!(text.contains("`deployed.v1/stage`"), "{text}");
    // --flow only lists.
    let out = s.run(&["upgrade", "--flow", "deployed.v1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A deployment of another flow is refused.
    let other = write_flow(
        &s,
        "other.yaml",
        &FLOW.replace("deployed.v1", "other.v1"),
        &wasm,
    );
    let other_run = start_waiting(&s, &other, TWO_PAGES);
    let out = s.run(&["upgrade", &at_ready, "--to", &deployment_of(&s, &other_run)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("other.v1"), "{}", stderr(&out));
    // An unknown deployment says where to look.
    let out = s.run(&["upgrade", &at_ready, "--to", "0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stepflow deployments"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn upgrade_refuses_a_run_another_process_drives() {
    let s = Sandbox::new();
    let blocked = blocked_run(&s, "blocked.v1");
    // Another deployment of the same flow: the same file with a comment, run to its end.
    let text = std::fs::read_to_string(s.path("blocked.yaml")).unwrap();
    let again = s.path("again.yaml");
    std::fs::write(&again, format!("{text}# again\n")).unwrap();
    let out = s.run(&["run", again.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = json(&out)["run"].as_str().unwrap().to_string();
    let to = deployment_of(&s, &done);

    let out = s.run(&["upgrade", &blocked.run, "--to", &to]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("being driven by"), "{}", stderr(&out));
    let out = s.run(&["upgrade", &blocked.run, "--to", &to, "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("being driven by"), "{}", stderr(&out));
    let (code, _) = blocked.release();
    assert_eq!(code, Some(0));
}

#[test]
fn a_run_from_before_deployments_resumes_from_its_flow_file_and_can_be_upgraded() {
    use stepflow_store::{RunRecord, RunStatus, SqliteStore, Store};
    let s = Sandbox::new();
    let wasm = own_plugin(&s, "d.wasm");
    let flow = write_flow(&s, "flow.yaml", FLOW, &wasm);
    // A deployment of the flow, from a run of its own.
    let newer = start_waiting(&s, &flow, TWO_PAGES);
    let deployment = deployment_of(&s, &newer);
    // Two runs as an older stepflow saved them: a flow file, no deployment, not started.
    let mut store = SqliteStore::open(&s.db()).unwrap();
    for id in ["legacy-1", "legacy-2"] {
        store
            .create_run(&RunRecord {
                id: id.into(),
                flow: "deployed.v1".into(),
                flow_file: flow.display().to_string(),
                definition: String::new(),
                deployment: None,
                status: RunStatus::Waiting,
                state: serde_json::from_value(serde_json::json!({
                    "cursor": ["start:deployed.v1"],
                    "data": {"pages": 1},
                }))
                .unwrap(),
                next_check_ms: None,
                last_error: None,
                created_ms: 1,
                updated_ms: 1,
                lease: None,
            })
            .unwrap();
    }
    drop(store);
    let text = stdout(&s.run(&["show", "legacy-1"]));
    assert!(text.contains("deployment none"), "{text}");

    let out = s.run(&["resume", "legacy-1", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["data"]["summary"], "1 pages, total 2090");

    let out = s.run(&["upgrade", "legacy-2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let moved = json(&out);
    assert_eq!(moved["from"], Value::Null, "{moved}");
    assert_eq!(moved["to"], deployment.as_str(), "{moved}");
    std::fs::remove_file(&flow).unwrap();
    let out = s.run(&["resume", "legacy-2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn the_new_commands_have_examples() {
    let s = Sandbox::new();
    for cmd in ["deployments", "upgrade"] {
        let help = stdout(&s.run(&[cmd, "--help"]));
        assert!(help.contains("Example:"), "{cmd} --help has no example");
    }
    // upgrade needs a run or a flow.
    let out = s.run(&["upgrade"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
