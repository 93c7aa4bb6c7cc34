//! Each run's inbox: a signal is stored and makes its run due in one transaction, a repeated
//! id is stored once, signals for finished or unknown runs are refused with nothing written,
//! a waiting save that missed a signal leaves the run due, and damaged signal rows are seen.

use super::*;
use stepflow_store::{NEVER_DUE_MS, SignalSend};

fn send<'a>(
    run_id: &'a str,
    id: &'a str,
    name: &'a str,
    payload: &'a serde_json::Value,
) -> SignalSend<'a> {
    SignalSend {
        run_id,
        id,
        name,
        payload,
        now_ms: 1_000,
    }
}

/// A run that waits for a signal and nothing else: due by time never.
fn awaiting(id: &str) -> RunRecord {
    RunRecord {
        next_check_ms: Some(NEVER_DUE_MS),
        ..record(id, 1, RunStatus::Waiting)
    }
}

#[test]
fn a_signal_is_stored_in_order_and_makes_its_run_due() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&awaiting("r"))?;
    assert!(store.claim_due("server", 30_000, 500, 10)?.is_empty());
    assert_eq!(
        store.next_due_ms(500)?,
        None,
        "a run that waits for a signal alone is never due by time"
    );

    let first = store.send_signal(&send("r", "s-1", "approve", &json!({"by": "ana"})))?;
    let second = store.send_signal(&send("r", "s-2", "other", &json!([1, 2])))?;
    assert_eq!(
        (first.seq, first.duplicate, first.status),
        (1, false, RunStatus::Waiting)
    );
    assert_eq!(second.seq, 2);
    assert_eq!(store.run("r")?.next_check_ms, Some(1_000));
    let leases = store.claim_due("server", 30_000, 1_000, 10)?;
    assert_eq!(leases.len(), 1, "the signal made the run due");

    let signals = store.signals("r", 0, 10)?;
    let names: Vec<&str> = signals.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["approve", "other"]);
    assert_eq!(signals[0].payload, json!({"by": "ana"}));
    assert_eq!(
        (signals[0].id.as_str(), signals[0].received_ms),
        ("s-1", 1_000)
    );
    assert_eq!(
        store.signals("r", 1, 10)?.len(),
        1,
        "only those after the position"
    );
    assert_eq!(store.signals("r", 0, 1)?.len(), 1, "at most the limit");
    assert!(store.signals("nobody", 0, 10)?.is_empty());
    Ok(())
}

#[test]
fn a_repeated_id_is_stored_once_and_an_id_reused_for_another_signal_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&awaiting("r"))?;
    let payload = json!({"n": 1});
    store.send_signal(&send("r", "once", "go", &payload))?;
    let again = store.send_signal(&send("r", "once", "go", &payload))?;
    assert!(again.duplicate);
    assert_eq!(again.seq, 1);
    let err = store
        .send_signal(&send("r", "once", "go", &json!({"n": 2})))
        .expect_err("another payload under the same id");
    assert!(
        err.to_string()
            .contains("signal id `once` was used already"),
        "{err}"
    );
    assert_eq!(store.signals("r", 0, 10)?.len(), 1);
    Ok(())
}

#[test]
fn signals_to_unknown_finished_or_misnamed_runs_are_refused_and_store_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&record("done", 1, RunStatus::Completed))?;
    store.create_run(&record("gone", 1, RunStatus::Cancelled))?;
    store.create_run(&record("failed", 1, RunStatus::Failed))?;
    store.create_run(&awaiting("r"))?;
    let payload = json!({});
    assert!(matches!(
        store.send_signal(&send("nobody", "1", "go", &payload)),
        Err(StoreError::NotFound { .. })
    ));
    for run in ["done", "gone"] {
        let err = store
            .send_signal(&send(run, "1", "go", &payload))
            .expect_err(run);
        assert!(matches!(err, StoreError::NotListening { .. }), "{err:?}");
        assert!(
            err.to_string().contains("no wait of it can take a signal"),
            "{err}"
        );
        assert!(store.signals(run, 0, 10)?.is_empty());
    }
    for (name, id) in [("app rove", "1"), ("", "2"), ("go", "")] {
        let err = store
            .send_signal(&send("r", id, name, &payload))
            .expect_err(name);
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
    let null = serde_json::Value::Null;
    let err = store
        .send_signal(&send("r", "3", "go", &null))
        .expect_err("a null payload");
    assert!(
        err.to_string().contains("would remove `signals.go`"),
        "{err}"
    );
    assert!(store.signals("r", 0, 10)?.is_empty());
    // A failed run keeps its signal for a resume, and is not made due by it.
    let kept = store.send_signal(&send("failed", "1", "go", &payload))?;
    assert_eq!(kept.status, RunStatus::Failed);
    assert_eq!(store.run("failed")?.next_check_ms, None);
    Ok(())
}

#[test]
fn a_waiting_save_whose_state_missed_a_signal_leaves_the_run_due() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&awaiting("r"))?;
    let lease = store.claim(&stepflow_store::Claim {
        run_id: "r",
        owner: "driver",
        ttl_ms: 30_000,
        now_ms: 1,
        take_over: None,
    })?;
    // The driver read the inbox (empty), then a signal arrived before it saved the wait.
    store.send_signal(&send("r", "late", "go", &json!({})))?;
    let before = State::default();
    fn save<'a>(state: &'a State, lease: &'a stepflow_store::Lease) -> StepSave<'a> {
        StepSave {
            run_id: "r",
            status: RunStatus::Waiting,
            state,
            next_check_ms: Some(NEVER_DUE_MS),
            last_error: None,
            history: None,
            lease: Some(lease),
        }
    }
    store.save_step(&save(&before, &lease))?;
    let due = store.run("r")?.next_check_ms.expect("due");
    assert!(
        due < NEVER_DUE_MS,
        "the missed signal keeps the run due, not {due}"
    );
    // Once the state has read it, the wait's own due time holds.
    let read = State {
        signals_read: 1,
        ..State::default()
    };
    store.save_step(&save(&read, &lease))?;
    assert_eq!(store.run("r")?.next_check_ms, Some(NEVER_DUE_MS));
    Ok(())
}

#[test]
fn a_damaged_signal_is_reported_with_its_run_and_number() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&awaiting("r"))?;
    store.send_signal(&send("r", "1", "go", &json!({"amount": 10})))?;
    drop(store);
    Connection::open(&path)?.execute(
        "UPDATE signals SET payload = '{\"amount\":99}' WHERE run_id = 'r'",
        [],
    )?;
    let store = SqliteStore::open(&path)?;
    let err = store.signals("r", 0, 10).expect_err("damaged");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    assert!(err.to_string().contains("signal 1"), "{err}");
    Ok(())
}
