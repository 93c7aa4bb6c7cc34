//! Signals through the engine against real plugins and a real SQLite store: a drive that
//! stops at a wait for a signal leaves the run not due until the signal makes it due; a drive
//! that sleeps at the wait wakes for a signal sent through another connection; a signal for a
//! name the flow never waits for is refused.

use std::path::PathBuf;

use serde_json::json;
use stepflow_engine::{
    DriveOptions, Driver, Engine, EngineError, Finish, Observer, SignalRequest, StopRequests,
    Stopped, Waiting, prepare_resume, send_signal, start_run,
};
use stepflow_model::CallKind;
use stepflow_store::{NEVER_DUE_MS, RunStatus, SqliteStore, StepOutcome, Store};
use tokio::sync::mpsc;

const APPROVAL: &str = r#"
flow: approval.v1
plugins:
  q: { wasm: "{plugins}/quickstart.wasm" }
steps:
  - { name: step1, do: q.step1 }
  - { name: approval, wait-for: { signal: approve } }
  - { name: step2, do: q.step2 }
"#;

fn flow_file(dir: &tempfile::TempDir) -> PathBuf {
    let plugins = stepflow_testkit::rust_plugin("quickstart");
    let plugins = plugins.parent().expect("plugin dir");
    let path = dir.path().join("flow.yaml");
    std::fs::write(
        &path,
        APPROVAL.replace("{plugins}", &plugins.display().to_string()),
    )
    .expect("write flow");
    path
}

fn engine() -> Engine {
    Engine::new(Some(
        stepflow_testkit::target_dir().join("test-component-cache"),
    ))
    .expect("engine")
}

fn request<'a>(
    run_id: &'a str,
    name: &'a str,
    payload: &'a serde_json::Value,
) -> SignalRequest<'a> {
    SignalRequest {
        run_id,
        name,
        payload,
        id: None,
    }
}

#[tokio::test]
async fn a_run_stopped_at_a_signal_wait_is_due_only_once_the_signal_arrives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = engine().load(&flow_file(&dir)).expect("load");
    let mut store = SqliteStore::open(&dir.path().join("runs.db")).expect("store");
    let (run, state) = start_run(&mut store, &loaded, None).expect("start");
    let options = DriveOptions {
        stop_at_wait: true,
        ..DriveOptions::default()
    };
    let finish = Driver::new(&loaded.flow, &mut store, &mut (), StopRequests::never())
        .drive(&run, state, options)
        .await
        .expect("drive");
    assert!(
        matches!(finish, Finish::Stopped(_, Stopped::AtWait)),
        "{finish:?}"
    );
    let record = store.run(&run).expect("run");
    assert_eq!(record.status, RunStatus::Waiting);
    assert_eq!(record.next_check_ms, Some(NEVER_DUE_MS));
    assert!(
        store
            .claim_due("server", 30_000, u64::MAX / 4, 10)
            .expect("claim")
            .is_empty()
    );

    let payload = json!({"by": "ana"});
    let receipt = send_signal(&mut store, &request(&run, "approve", &payload)).expect("signal");
    assert!(!receipt.duplicate);
    assert!(store.run(&run).expect("run").next_check_ms < Some(NEVER_DUE_MS));

    let record = store.run(&run).expect("run");
    let resumable = prepare_resume(&record, &loaded.flow, None).expect("resumable");
    let finish = Driver::new(&loaded.flow, &mut store, &mut (), StopRequests::never())
        .drive(&run, resumable.state, options)
        .await
        .expect("drive");
    let Finish::Completed(state) = finish else {
        panic!("expected completion, got {finish:?}");
    };
    assert_eq!(state.data["signals"]["approve"], payload);
    assert!(state.inbox.is_empty());
    let history = store.history(&run).expect("history");
    let steps: Vec<(&str, CallKind, StepOutcome)> = history
        .iter()
        .map(|h| (h.step.as_str(), h.kind, h.outcome))
        .collect();
    assert_eq!(
        steps,
        [
            ("approval.v1/step1", CallKind::Step, StepOutcome::Done),
            ("approval.v1/approval", CallKind::WaitFor, StepOutcome::Done),
            ("approval.v1/step2", CallKind::Step, StepOutcome::Done),
        ]
    );
    assert_eq!(
        history[1].patch,
        Some(json!({"signals": {"approve": payload}})),
        "the history row shows the signal"
    );
    let err = send_signal(&mut store, &request(&run, "approve", &payload)).expect_err("finished");
    assert!(err.to_string().contains("is completed"), "{err}");
}

/// Tells the test when the drive starts waiting for a signal.
struct WaitSignal(mpsc::UnboundedSender<String>);

impl Observer for WaitSignal {
    fn waiting(&mut self, wait: &Waiting<'_>) {
        if let (true, Some(signal)) = (wait.first, wait.signal) {
            let _ = self.0.send(signal.to_string());
        }
    }
}

#[tokio::test]
async fn a_drive_that_sleeps_at_a_signal_wait_wakes_for_a_signal_from_another_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("runs.db");
    let loaded = engine().load(&flow_file(&dir)).expect("load");
    let mut store = SqliteStore::open(&db).expect("store");
    let (run, state) = start_run(&mut store, &loaded, None).expect("start");
    let (tx, mut waits) = mpsc::unbounded_channel();
    let drive = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut observer = WaitSignal(tx);
            Driver::new(
                &loaded.flow,
                &mut store,
                &mut observer,
                StopRequests::never(),
            )
            .drive(&run, state, DriveOptions::default())
            .await
        })
    };
    assert_eq!(waits.recv().await.as_deref(), Some("approve"));
    let mut other = SqliteStore::open(&db).expect("second connection");
    send_signal(&mut other, &request(&run, "approve", &json!(7))).expect("signal");
    let finish = drive.await.expect("join").expect("drive");
    let Finish::Completed(state) = finish else {
        panic!("expected completion, got {finish:?}");
    };
    assert_eq!(state.data["signals"]["approve"], json!(7));
}

#[tokio::test]
async fn a_signal_no_wait_of_the_flow_is_for_is_refused_for_a_deployed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    let deployment = engine.deploy(&flow_file(&dir)).expect("deploy");
    let mut store = SqliteStore::open(&dir.path().join("runs.db")).expect("store");
    store.put_deployment(&deployment).expect("put");
    let loaded = engine.load_deployment(&deployment).expect("load");
    let (run, _) = start_run(&mut store, &loaded, None).expect("start");
    let err = send_signal(&mut store, &request(&run, "aprove", &json!({}))).expect_err("typo");
    assert!(matches!(err, EngineError::UnknownSignal { .. }), "{err:?}");
    assert!(err.to_string().contains("it waits for `approve`"), "{err}");
    assert!(store.signals(&run, 0, 10).expect("signals").is_empty());
    send_signal(&mut store, &request(&run, "approve", &json!({}))).expect("the right name");
}
