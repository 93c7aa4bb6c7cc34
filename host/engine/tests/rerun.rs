//! A rerun from step N: the new run starts from exactly the state the old one saved after its
//! N-th call (cursor, data, retry attempts, call count), for every N of a flow with a signal
//! wait, a condition wait, a case and a retry that retries; driven on, it ends as the old run
//! did. Histories the flow does not reproduce are refused.

use std::sync::{Arc, Mutex};

use serde_json::json;
use stepflow_engine::{
    DriveOptions, Driver, Engine, Finish, Observer, SignalRequest, StopRequests, prepare_resume,
    rerun_from, send_signal, start_run,
};
use stepflow_model::{CallRecord, State};
use stepflow_store::{RunStatus, SqliteStore, Store};

const FLOW: &str = r#"
flow: rerun.v1
plugins:
  d: { wasm: "{plugins}/deploy.wasm" }
data: { version: "2.0", current: "1.0", rollout_ms: 0, flaky_validations: 1 }
steps:
  - do: d.prepare
  - { name: approval, wait-for: { signal: approve }, timeout: 1h }
  - name: shouldDeploy
    case: d.checks/should-deploy
    steps:
      - do: d.deploy
      - { name: deployed, wait-for: d.checks/deployed }
      - name: validation
        retry: { handler: d.should-retry, max-attempts: 3 }
        steps:
          - do: d.validate
  - do: d.cleanup
"#;

/// Reads the saved state after every step, through a second connection.
struct States {
    db: std::path::PathBuf,
    run: String,
    states: Arc<Mutex<Vec<State>>>,
}

impl Observer for States {
    fn step_finished(&mut self, _: u64, _: &CallRecord, _: u64) {
        let store = SqliteStore::open(&self.db).expect("second connection");
        let state = store.run(&self.run).expect("run").state;
        self.states.lock().expect("states").push(state);
    }
}

/// What a rerun must reproduce of a state (times differ: the rerun's clock is now).
fn position(state: &State) -> (Vec<String>, serde_json::Value, Vec<(String, u32)>, u64) {
    (
        state.cursor.iter().map(|e| e.to_string()).collect(),
        (*state.data).clone(),
        state
            .attempts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        state.calls,
    )
}

#[tokio::test]
async fn a_rerun_from_any_step_starts_from_the_state_saved_after_it_and_ends_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = stepflow_testkit::rust_plugin("deploy");
    let plugins = plugins.parent().expect("plugin dir");
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        FLOW.replace("{plugins}", &plugins.display().to_string()),
    )
    .unwrap();
    let db = dir.path().join("runs.db");
    let engine = Engine::new(Some(
        stepflow_testkit::target_dir().join("test-component-cache"),
    ))
    .expect("engine");
    let deployment = engine.deploy(&flow).expect("deploy");
    let mut store = SqliteStore::open(&db).expect("store");
    store.put_deployment(&deployment).expect("put");
    let loaded = engine.load_deployment(&deployment).expect("load");
    let (run, start) = start_run(&mut store, &loaded, Some(&json!({"ticket": 7}))).expect("start");
    send_signal(
        &mut store,
        &SignalRequest {
            run_id: &run,
            name: "approve",
            payload: &json!({"by": "ana"}),
            id: None,
        },
    )
    .expect("signal");
    let states = Arc::new(Mutex::new(vec![start.clone()]));
    let mut observer = States {
        db: db.clone(),
        run: run.clone(),
        states: states.clone(),
    };
    let finish = Driver::new(
        &loaded.flow,
        &mut store,
        &mut observer,
        StopRequests::never(),
    )
    .drive(&run, start, DriveOptions::default())
    .await
    .expect("drive");
    let Finish::Completed(end) = finish else {
        panic!("expected completion, got {finish:?}");
    };
    let states = states.lock().unwrap().clone();
    let history = store.history(&run).expect("history");
    assert_eq!(states.len(), history.len() + 1);
    assert!(
        history
            .iter()
            .any(|h| h.outcome == stepflow_store::StepOutcome::Retrying),
        "the flow retried once: {history:?}"
    );

    for (n, saved) in states.iter().enumerate() {
        let again = rerun_from(&mut store, &run, n as u64).await.expect("rerun");
        let record = store.run(&again).expect("new run");
        assert_eq!(position(&record.state), position(saved), "after entry {n}");
        assert_eq!(record.deployment.as_deref(), Some(deployment.id.as_str()));
        // A rerun from before the approval waits for one of its own.
        if record.status != RunStatus::Completed {
            send_signal(
                &mut store,
                &SignalRequest {
                    run_id: &again,
                    name: "approve",
                    payload: &json!({"by": "ana"}),
                    id: None,
                },
            )
            .expect("signal");
        }
        let record = store.run(&again).expect("new run");
        let resumable = prepare_resume(&record, &loaded.flow, None).expect("resumable");
        let finish = Driver::new(&loaded.flow, &mut store, &mut (), StopRequests::never())
            .drive(&again, resumable.state, DriveOptions::default())
            .await
            .expect("drive the rerun");
        let Finish::Completed(rerun_end) = finish else {
            panic!("the rerun from entry {n} did not complete: {finish:?}");
        };
        assert_eq!(
            rerun_end.data, end.data,
            "the rerun from entry {n} ends the same"
        );
    }
    let beyond = rerun_from(&mut store, &run, history.len() as u64 + 1)
        .await
        .expect_err("past the end");
    assert!(
        beyond.to_string().contains("no state after entry"),
        "{beyond}"
    );
    assert_eq!(store.run(&run).expect("run").status, RunStatus::Completed);
}
