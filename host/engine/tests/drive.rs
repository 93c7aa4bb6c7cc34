//! The engine against real plugins and a real SQLite store: what the observer hears, what the
//! store keeps, and how a drive stops.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use stepflow_engine::{
    DriveOptions, Driver, Engine, EngineError, Finish, LoadedFlow, Observer, Stop, StopRequests,
    Stopped, Waiting, prepare_resume, start_run,
};
use stepflow_model::State;
use stepflow_model::{CallKind, CallRecord};
use stepflow_store::{RunStatus, SqliteStore, Store};

/// Everything an observer was told, in order.
#[derive(Clone, Debug, PartialEq)]
enum Heard {
    Started(u64, String, CallKind),
    Finished(u64, String),
    Waiting { first: bool },
    Stopped(Stopped),
}

/// An observer that records what it hears and checks, at every finished step, that the step's
/// history entry is already in the database (through a second connection).
struct Recorder {
    heard: Arc<Mutex<Vec<Heard>>>,
    db: PathBuf,
    run: Option<String>,
    saved_before_heard: bool,
}

impl Recorder {
    fn new(db: &Path) -> Self {
        Recorder {
            heard: Arc::default(),
            db: db.to_path_buf(),
            run: None,
            saved_before_heard: true,
        }
    }

    fn heard(&self) -> Vec<Heard> {
        self.heard.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn push(&self, h: Heard) {
        if let Ok(mut heard) = self.heard.lock() {
            heard.push(h);
        }
    }
}

impl Observer for Recorder {
    fn step_started(&mut self, n: u64, step: &str, kind: CallKind) {
        self.push(Heard::Started(n, step.to_string(), kind));
    }

    fn step_finished(&mut self, n: u64, call: &CallRecord, _: u64) {
        if let Some(run) = &self.run {
            let store = SqliteStore::open(&self.db).expect("second connection");
            let saved = store.history(run).expect("history").len() as u64;
            self.saved_before_heard &= saved >= n;
        }
        self.push(Heard::Finished(n, call.step.to_string()));
    }

    fn waiting(&mut self, wait: &Waiting<'_>) {
        self.push(Heard::Waiting { first: wait.first });
    }

    fn stopped(&mut self, why: Stopped) {
        self.push(Heard::Stopped(why));
    }
}

/// A scratch directory with a flow file over the built Rust plugins.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("runs.db")
    }

    fn flow(&self, yaml: &str) -> PathBuf {
        let plugins = stepflow_testkit::rust_plugin("deploy");
        let dir = plugins.parent().expect("plugin dir");
        let path = self.dir.path().join("flow.yaml");
        std::fs::write(&path, yaml.replace("{plugins}", &dir.display().to_string()))
            .expect("write flow");
        path
    }
}

/// A new run of `yaml`, stored in the scratch database.
fn started(s: &Scratch, yaml: &str) -> (LoadedFlow, SqliteStore, String, State) {
    let loaded = engine().load(&s.flow(yaml)).expect("load");
    let mut store = SqliteStore::open(&s.db()).expect("store");
    let (run, state) = start_run(&mut store, &loaded, None).expect("start");
    (loaded, store, run, state)
}

fn engine() -> Engine {
    Engine::new(Some(
        stepflow_testkit::target_dir().join("test-component-cache"),
    ))
    .expect("engine")
}

const QUICKSTART: &str = r#"
flow: quickstart.v1
plugins:
  q: { wasm: "{plugins}/quickstart.wasm" }
steps:
  - { name: step1, do: q.step1 }
  - { name: ready, wait-for: q.a-condition, every: 1s }
  - { name: step2, do: q.step2 }
"#;

const DEPLOY: &str = r#"
flow: deploy.v1
plugins:
  d: { wasm: "{plugins}/deploy.wasm" }
data: { version: "2.0", current: "1.0", rollout_ms: 60000, flaky_validations: 0 }
steps:
  - do: d.prepare
  - do: d.deploy
  - { name: deployed, wait-for: d.checks/deployed, every: 30s }
  - do: d.cleanup
"#;

#[tokio::test]
async fn the_observer_hears_each_step_after_it_is_saved() {
    let s = Scratch::new();
    let (loaded, mut store, run, state) = started(&s, QUICKSTART);
    let mut recorder = Recorder::new(&s.db());
    recorder.run = Some(run.clone());
    let finish = Driver::new(
        &loaded.flow,
        &mut store,
        &mut recorder,
        StopRequests::never(),
    )
    .drive(&run, state, DriveOptions::default())
    .await
    .expect("drive");
    assert!(matches!(finish, Finish::Completed(_)), "{finish:?}");
    assert!(
        recorder.saved_before_heard,
        "a step was reported before it was saved"
    );
    let heard = recorder.heard();
    let expected = [
        ("quickstart.v1/step1", CallKind::Step),
        ("quickstart.v1/ready", CallKind::WaitFor),
        ("quickstart.v1/step2", CallKind::Step),
    ];
    let mut want = Vec::new();
    for (n, (step, kind)) in expected.iter().enumerate() {
        let n = n as u64 + 1;
        want.push(Heard::Started(n, step.to_string(), *kind));
        want.push(Heard::Finished(n, step.to_string()));
    }
    assert_eq!(heard, want);
    let history = store.history(&run).expect("history");
    assert_eq!(history.len(), 3);
    assert_eq!(store.run(&run).expect("run").status, RunStatus::Completed);
}

#[tokio::test]
async fn a_stop_requested_before_a_step_saves_the_run_as_waiting_and_it_resumes() {
    let s = Scratch::new();
    let (loaded, mut store, run, state) = started(&s, QUICKSTART);
    let (stop, requests) = Stop::new();
    stop.request();
    let mut recorder = Recorder::new(&s.db());
    let finish = Driver::new(&loaded.flow, &mut store, &mut recorder, requests)
        .drive(&run, state, DriveOptions::default())
        .await
        .expect("drive");
    assert!(
        matches!(finish, Finish::Stopped(_, Stopped::Requested)),
        "{finish:?}"
    );
    assert_eq!(recorder.heard(), vec![Heard::Stopped(Stopped::Requested)]);
    let record = store.run(&run).expect("run");
    assert_eq!(record.status, RunStatus::Waiting);
    assert!(store.history(&run).expect("history").is_empty());

    let resumable = prepare_resume(&record, &loaded.flow, None).expect("resumable");
    assert!(!resumable.redelivered, "a clean stop is no crash");
    let finish = Driver::new(&loaded.flow, &mut store, &mut (), StopRequests::never())
        .drive(&run, resumable.state, DriveOptions::default())
        .await
        .expect("drive");
    assert!(matches!(finish, Finish::Completed(_)), "{finish:?}");
    assert_eq!(store.history(&run).expect("history").len(), 3);
}

#[tokio::test]
async fn stop_at_wait_saves_when_the_run_is_next_due() {
    let s = Scratch::new();
    let (loaded, mut store, run, state) = started(&s, DEPLOY);
    let mut recorder = Recorder::new(&s.db());
    let options = DriveOptions {
        stop_at_wait: true,
        ..DriveOptions::default()
    };
    let finish = Driver::new(
        &loaded.flow,
        &mut store,
        &mut recorder,
        StopRequests::never(),
    )
    .drive(&run, state, options)
    .await
    .expect("drive");
    assert!(
        matches!(finish, Finish::Stopped(_, Stopped::AtWait)),
        "{finish:?}"
    );
    let heard = recorder.heard();
    assert_eq!(heard.last(), Some(&Heard::Stopped(Stopped::AtWait)));
    assert!(!heard.iter().any(|h| matches!(h, Heard::Waiting { .. })));
    let record = store.run(&run).expect("run");
    assert_eq!(record.status, RunStatus::Waiting);
    let next = record.next_check_ms.expect("a next check time");
    assert!(next > record.created_ms, "{next} vs {}", record.created_ms);
    // prepare, deploy and the first (false) check of `deployed`.
    assert_eq!(store.history(&run).expect("history").len(), 3);
}

#[tokio::test]
async fn a_stop_during_a_wait_ends_the_sleep_and_saves() {
    let s = Scratch::new();
    let (loaded, mut store, run, state) = started(&s, DEPLOY);

    /// Requests a stop when it hears the wait begin.
    struct StopAtWait(Stop, Vec<bool>);
    impl Observer for StopAtWait {
        fn waiting(&mut self, wait: &Waiting<'_>) {
            self.1.push(wait.first);
            self.0.request();
        }
    }
    let (stop, requests) = Stop::new();
    let mut observer = StopAtWait(stop, Vec::new());
    let finish = Driver::new(&loaded.flow, &mut store, &mut observer, requests)
        .drive(&run, state, DriveOptions::default())
        .await
        .expect("drive");
    assert!(
        matches!(finish, Finish::Stopped(_, Stopped::Requested)),
        "{finish:?}"
    );
    assert_eq!(
        observer.1,
        vec![true],
        "the wait was reported once, as its first report"
    );
    assert_eq!(store.run(&run).expect("run").status, RunStatus::Waiting);
}

#[tokio::test]
async fn a_cancelled_run_is_not_resumed_and_a_missing_step_is_named() {
    let s = Scratch::new();
    let (loaded, mut store, run, state) = started(&s, DEPLOY);
    let options = DriveOptions {
        stop_at_wait: true,
        ..DriveOptions::default()
    };
    Driver::new(&loaded.flow, &mut store, &mut (), StopRequests::never())
        .drive(&run, state, options)
        .await
        .expect("drive");

    // The run waits at `deployed`; a flow without that step cannot take it over.
    let other = engine()
        .load(&s.flow(&DEPLOY.replace("name: deployed", "name: rolledOut")))
        .expect("load the edited flow");
    let record = store.run(&run).expect("run");
    let err = prepare_resume(&record, &other.flow, None).expect_err("a missing step");
    assert!(matches!(err, EngineError::Resume { .. }), "{err}");
    assert!(err.to_string().contains("deploy.v1/deployed"), "{err}");

    store
        .set_status(&run, RunStatus::Cancelled)
        .expect("cancel");
    let record = store.run(&run).expect("run");
    let err = prepare_resume(&record, &loaded.flow, None).expect_err("cancelled");
    assert!(matches!(err, EngineError::Cancelled { .. }), "{err}");
}

#[test]
fn load_errors_name_the_place_in_the_file() {
    let s = Scratch::new();
    let path = s.flow(&QUICKSTART.replace("q.step2", "q.no-such-step"));
    let err = engine().load(&path).err().expect("an unknown function");
    assert!(matches!(err, EngineError::Flow(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("flow.yaml:8:"), "{text}");
    assert!(text.contains("no-such-step"), "{text}");
}
