//! The server against real plugins and a real SQLite store: it completes every run of a mixed
//! flow as a foreground drive would, commits steps in groups, drains on a stop request, and
//! marks a run whose flow is gone failed while it completes the others.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepflow_engine::{
    DriveOptions, Driver, Engine, Finish, LoadedFlow, Observer, Stop, StopRequests, prepare_resume,
    start_run,
};
use stepflow_model::CallRecord;
use stepflow_server::{Server, ServerConfig, Summary};
use stepflow_store::{RunStatus, SqliteStore, Store};

/// The testkit's mixed flow, written into `dir`.
fn mixed_flow(dir: &Path) -> PathBuf {
    let path = dir.join("mixed.yaml");
    std::fs::write(&path, stepflow_testkit::mixed_flow()).expect("write the flow file");
    path
}

/// A flow of `steps` no-op plugin steps.
fn noop_flow(dir: &Path, name: &str, steps: usize) -> PathBuf {
    let mut yaml = format!(
        "flow: {name}.v1\nplugins:\n  n:\n    wasm: {}\nsteps:\n",
        stepflow_testkit::rust_plugin("noop").display()
    );
    for i in 0..steps {
        let _ = writeln!(yaml, "  - {{ name: s{i}, do: n.noop }}");
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

fn engine() -> Engine {
    Engine::new(Some(
        stepflow_testkit::target_dir().join("server-test-component-cache"),
    ))
    .expect("engine")
}

fn config(db: &Path, concurrency: usize) -> ServerConfig {
    ServerConfig {
        idle_poll: Duration::from_millis(200),
        ..ServerConfig {
            concurrency,
            ..ServerConfig::new(stepflow_store::Database::File(db.to_path_buf()))
        }
    }
}

/// The testkit's inputs of the mixed flow, by run index.
fn mixed_input(i: usize) -> Value {
    let input = stepflow_testkit::MIXED_INPUTS[i % 3];
    serde_json::from_str(input).expect("a JSON input")
}

/// Creates `n` runs of `loaded`, each with `input(i)`.
fn create_runs(
    db: &Path,
    loaded: &LoadedFlow,
    n: usize,
    input: impl Fn(usize) -> Value,
) -> Vec<String> {
    let mut store = SqliteStore::open(db).expect("store");
    (0..n)
        .map(|i| {
            start_run(&mut store, loaded, Some(&input(i)))
                .expect("start a run")
                .0
        })
        .collect()
}

/// Runs the server until every run in `ids` is finished (or `limit` passes), then stops it.
async fn serve_until_finished(
    server: Server,
    engine: Engine,
    db: &Path,
    ids: &[String],
    limit: Duration,
) -> Summary {
    let (stop, requests) = Stop::new();
    let watch = async {
        let store = SqliteStore::open(db).expect("a second connection");
        let deadline = Instant::now() + limit;
        loop {
            let finished = ids.iter().all(|id| {
                store
                    .run(id)
                    .map(|r| r.status.is_finished())
                    .unwrap_or(false)
            });
            if finished || Instant::now() > deadline {
                stop.request();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (summary, ()) = tokio::join!(server.run(engine, requests), watch);
    summary.expect("the server runs")
}

/// A run's history as (step, outcome) pairs.
fn steps_of(store: &SqliteStore, id: &str) -> Vec<(String, String)> {
    store
        .history(id)
        .expect("history")
        .into_iter()
        .map(|h| (h.step, h.outcome.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completes_fifty_mixed_runs_as_a_foreground_drive_would() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let flow = mixed_flow(dir.path());
    let engine = engine();
    let loaded = engine.load(&flow).expect("load the flow");
    let ids = create_runs(&db, &loaded, 50, mixed_input);

    let summary = serve_until_finished(
        Server::new(config(&db, 16)),
        engine.clone(),
        &db,
        &ids,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(summary.completed, 50, "{summary:?}");
    assert!(
        summary.parked > 0,
        "the runs waited in the store: {summary:?}"
    );

    // The same inputs driven in the foreground, in another database.
    let fg_db = dir.path().join("foreground.db");
    let mut fg = SqliteStore::open(&fg_db).expect("store");
    let served = SqliteStore::open(&db).expect("store");
    for i in 0..3 {
        let (fg_id, state) = start_run(&mut fg, &loaded, Some(&mixed_input(i))).expect("start");
        let finish = Driver::new(&loaded.flow, &mut fg, &mut (), StopRequests::never())
            .drive(&fg_id, state, DriveOptions::default())
            .await
            .expect("drive");
        assert!(matches!(finish, Finish::Completed(_)), "{finish:?}");
        let expected = steps_of(&fg, &fg_id);
        for other in ids.iter().skip(i).step_by(3) {
            assert_eq!(
                steps_of(&served, other),
                expected,
                "run {other} (input {i})"
            );
            let run = served.run(other).expect("run");
            assert_eq!(run.status, RunStatus::Completed);
            assert!(run.lease.is_none(), "{run:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_drivers_share_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let engine = engine();
    let loaded = engine
        .load(&noop_flow(dir.path(), "forty", 40))
        .expect("load the flow");
    let ids = create_runs(&db, &loaded, 20, |_| json!({}));
    let server = Server::new(config(&db, 10));
    let stats = server.stats();
    let summary = serve_until_finished(server, engine, &db, &ids, Duration::from_secs(120)).await;
    assert_eq!(summary.completed, 20, "{summary:?}");
    let (transactions, saves, _) = stats.snapshot();
    assert_eq!(saves, summary.saves);
    assert!(saves >= 20 * 40, "every step is saved: {summary:?}");
    assert!(
        transactions * 2 < saves,
        "{transactions} transactions for {saves} saves: steps are not committed in groups"
    );
    // Every drive counted itself out again: the writer gathers for no run that has ended.
    assert_eq!(stats.driving.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Requests one stop when any run's first step finishes (later steps request nothing: a
/// second request would abandon the steps in flight).
struct StopOnFirstStep(Stop, Arc<AtomicBool>);

impl Observer for StopOnFirstStep {
    fn step_finished(&mut self, _: u64, _: &CallRecord, _: u64) {
        if !self.1.swap(true, Ordering::SeqCst) {
            self.0.request();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_drains_and_leaves_every_run_resumable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let engine = engine();
    let loaded = engine
        .load(&noop_flow(dir.path(), "long", 200))
        .expect("load the flow");
    let ids = create_runs(&db, &loaded, 12, |_| json!({}));

    let (stop, requests) = Stop::new();
    let (stopper, once) = (stop.clone(), Arc::new(AtomicBool::new(false)));
    let server = Server::new(config(&db, 4)).with_observer(Arc::new(move |_| {
        Box::new(StopOnFirstStep(stopper.clone(), once.clone()))
    }));
    let summary = server.run(engine.clone(), requests).await.expect("server");
    assert!(summary.stopped >= 1, "{summary:?}");
    assert_eq!(summary.completed, 0, "{summary:?}");

    let store = SqliteStore::open(&db).expect("store");
    for id in &ids {
        let run = store.run(id).expect("run");
        assert!(run.lease.is_none(), "the lease is released: {run:?}");
        // A run that was driven was saved as stopped; the others were never claimed.
        let driven = !store.history(id).expect("history").is_empty();
        if driven {
            assert_eq!(run.status, RunStatus::Waiting, "saved as stopped: {run:?}");
        } else {
            assert_eq!(run.state.calls, 0, "{run:?}");
        }
        prepare_resume(&run, &loaded.flow, None).expect("resumable");
    }

    // A new server completes them all.
    let summary = serve_until_finished(
        Server::new(config(&db, 4)),
        engine,
        &db,
        &ids,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(summary.completed, 12, "{summary:?}");
    for id in &ids {
        let history = store.history(id).expect("history");
        assert_eq!(history.len(), 200, "{id}: no step lost or repeated");
        assert!(history.iter().all(|h| !h.redelivered), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_flow_file_is_gone_fails_and_the_others_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let engine = engine();
    let gone = noop_flow(dir.path(), "gone", 3);
    let kept = noop_flow(dir.path(), "kept", 3);
    let lost = create_runs(&db, &engine.load(&gone).expect("load"), 2, |_| json!({}));
    let fine = create_runs(&db, &engine.load(&kept).expect("load"), 4, |_| json!({}));
    std::fs::remove_file(&gone).expect("delete the flow file");

    let all: Vec<String> = lost.iter().chain(&fine).cloned().collect();
    let summary = serve_until_finished(
        Server::new(config(&db, 2)),
        engine,
        &db,
        &all,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(summary.unloadable, 2, "{summary:?}");
    assert_eq!(summary.completed, 4, "{summary:?}");
    let store = SqliteStore::open(&db).expect("store");
    for id in &lost {
        let run = store.run(id).expect("run");
        assert_eq!(run.status, RunStatus::Failed);
        let why = run.last_error.unwrap_or_default();
        assert!(
            why.contains("gone.yaml"),
            "the reason names the file: {why}"
        );
        assert!(run.lease.is_none());
    }
}

/// Tells when the spinning run's call has started.
struct Started(Arc<tokio::sync::Notify>);

impl Observer for Started {
    fn step_started(&mut self, _: u64, _: &str, _: stepflow_model::CallKind) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_spins_does_not_hold_up_the_runs_its_thread_drives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("server.db");
    let engine = engine();
    // A call that never returns by itself; its time limit is far beyond the test.
    let spin = dir.path().join("spin.yaml");
    let yaml = format!(
        "flow: spin.v1\nplugins:\n  h:\n    wasm: {}\n    timeout: 10m\nsteps:\n  - {{ name: \
         forever, do: h.spin }}\n",
        stepflow_testkit::rust_plugin("hostile").display()
    );
    std::fs::write(&spin, yaml).expect("write the flow file");
    let spinner = create_runs(&db, &engine.load(&spin).expect("load"), 1, |_| json!({}));
    let others = engine
        .load(&noop_flow(dir.path(), "others", 3))
        .expect("load");
    let started = Arc::new(tokio::sync::Notify::new());
    let observer = {
        let (started, spinner) = (started.clone(), spinner[0].clone());
        Arc::new(move |run: &str| -> Box<dyn Observer> {
            if run == spinner {
                Box::new(Started(started.clone()))
            } else {
                Box::new(())
            }
        })
    };
    // One driver thread: the spinning call and every other run share it.
    let server = Server::new(ServerConfig {
        drive_threads: Some(1),
        ..config(&db, 8)
    })
    .with_observer(observer);
    let (stop, requests) = Stop::new();
    let watch = async {
        // The other runs are submitted only once the spinning call is under way.
        started.notified().await;
        let fine = create_runs(&db, &others, 6, |_| json!({}));
        let store = SqliteStore::open(&db).expect("a second connection");
        // A bound, not a measure: without yielding, the runs would wait ten minutes.
        let give_up = Instant::now() + Duration::from_secs(120);
        while Instant::now() < give_up {
            let finished = fine.iter().all(|id| {
                store
                    .run(id)
                    .is_ok_and(|r| r.status == RunStatus::Completed)
            });
            if finished {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The spinning call is abandoned, as an operator's second Ctrl-C would.
        stop.request();
        stop.request();
        fine
    };
    let (summary, fine) = tokio::join!(server.run(engine, requests), watch);
    summary.expect("the server runs");
    let store = SqliteStore::open(&db).expect("store");
    for id in &fine {
        assert_eq!(
            store.run(id).expect("run").status,
            RunStatus::Completed,
            "{id}"
        );
    }
    assert!(
        store.history(&spinner[0]).expect("history").is_empty(),
        "the spinning call was still running when the others had finished"
    );
}
