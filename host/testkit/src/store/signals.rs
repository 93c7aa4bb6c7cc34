//! Each run's inbox: a signal is stored and makes its run due in one transaction, a repeated
//! id is stored once, signals for finished or unknown runs are refused with nothing written,
//! and a waiting save that missed a signal leaves the run due.

use serde_json::json;
use stepflow_model::State;
use stepflow_store::{Lease, NEVER_DUE_MS, RunStatus, StepSave, StoreError};

use super::fixtures::{awaiting, claim, record, send};
use super::{CaseResult, Opener};

/// Signals are numbered 1, 2, ... in their run's inbox, make a run that waits for one due at
/// their time, and are read after a position, at most `limit`; an unknown run has none.
pub fn a_signal_is_stored_in_order_and_makes_its_run_due(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&awaiting("r"))?;
    assert!(
        store.claim_due("server", 30_000, 500, 10)?.is_empty(),
        "not due before a signal"
    );
    assert_eq!(
        store.next_due_ms(500)?,
        None,
        "a run that waits for a signal alone is never due by time"
    );

    let first = store.send_signal(&send("r", "s-1", "approve", &json!({"by": "ana"})))?;
    let second = store.send_signal(&send("r", "s-2", "other", &json!([1, 2])))?;
    assert_eq!(
        (first.seq, first.duplicate, first.status),
        (1, false, RunStatus::Waiting),
        "the first receipt"
    );
    assert_eq!(second.seq, 2, "the second is numbered 2");
    assert_eq!(store.run("r")?.next_check_ms, Some(1_000), "due when sent");
    let leases = store.claim_due("server", 30_000, 1_000, 10)?;
    assert_eq!(leases.len(), 1, "the signal made the run due");

    // Another connection reads the inbox.
    let reader = open();
    let signals = reader.signals("r", 0, 10)?;
    let names: Vec<&str> = signals.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["approve", "other"], "oldest first");
    assert_eq!(signals[0].payload, json!({"by": "ana"}), "the payload");
    assert_eq!(
        (signals[0].id.as_str(), signals[0].received_ms),
        ("s-1", 1_000),
        "the id and time"
    );
    assert_eq!(
        reader.signals("r", 1, 10)?.len(),
        1,
        "only those after the position"
    );
    assert_eq!(reader.signals("r", 0, 1)?.len(), 1, "at most the limit");
    assert!(
        reader.signals("nobody", 0, 10)?.is_empty(),
        "an unknown run has none"
    );
    Ok(())
}

/// Sending an id again stores nothing and returns the first number (`duplicate`), even after
/// the run finished; the same id with another payload is [`StoreError::Invalid`].
pub fn a_repeated_id_is_stored_once_and_an_id_reused_for_another_signal_is_refused(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
    store.create_run(&awaiting("r"))?;
    let payload = json!({"n": 1});
    store.send_signal(&send("r", "once", "go", &payload))?;
    let again = store.send_signal(&send("r", "once", "go", &payload))?;
    assert!(again.duplicate, "a duplicate");
    assert_eq!(again.seq, 1, "the first one's number");
    let err = store
        .send_signal(&send("r", "once", "go", &json!({"n": 2})))
        .expect_err("another payload under the same id");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let err = store
        .send_signal(&send("r", "once", "stop", &payload))
        .expect_err("another name under the same id");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.signals("r", 0, 10)?.len(), 1, "stored once");
    // A sender that retries after the run finished hears its signal was taken, not an error;
    // a new signal is refused then.
    store.set_status("r", RunStatus::Completed)?;
    let late = store.send_signal(&send("r", "once", "go", &payload))?;
    assert!(late.duplicate && late.seq == 1, "{late:?}");
    let err = store
        .send_signal(&send("r", "new", "go", &payload))
        .expect_err("a new signal to a finished run");
    assert!(matches!(err, StoreError::NotListening { .. }), "{err:?}");
    Ok(())
}

/// Signals to an unknown run ([`StoreError::NotFound`]), a completed or cancelled one
/// ([`StoreError::NotListening`]), with a bad name, an empty id or a null payload
/// ([`StoreError::Invalid`]) store nothing; a failed run keeps its signal without being made
/// due.
pub fn signals_to_unknown_finished_or_misnamed_runs_are_refused_and_store_nothing(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
    store.create_run(&record("done", 1, RunStatus::Completed))?;
    store.create_run(&record("gone", 1, RunStatus::Cancelled))?;
    store.create_run(&record("failed", 1, RunStatus::Failed))?;
    store.create_run(&awaiting("r"))?;
    let payload = json!({});
    let err = store
        .send_signal(&send("nobody", "1", "go", &payload))
        .expect_err("an unknown run");
    assert!(
        matches!(&err, StoreError::NotFound { id, .. } if id == "nobody"),
        "{err:?}"
    );
    for (run, was) in [
        ("done", RunStatus::Completed),
        ("gone", RunStatus::Cancelled),
    ] {
        let err = store
            .send_signal(&send(run, "1", "go", &payload))
            .expect_err(run);
        assert!(
            matches!(&err, StoreError::NotListening { run: r, status } if r == run && *status == was),
            "{err:?}"
        );
        assert!(
            store.signals(run, 0, 10)?.is_empty(),
            "{run}: nothing stored"
        );
    }
    for (name, id) in [("app rove", "1"), ("", "2"), ("go", "")] {
        let err = store
            .send_signal(&send("r", id, name, &payload))
            .expect_err(name);
        assert!(
            matches!(err, StoreError::Invalid { .. }),
            "name `{name}`, id `{id}`: {err:?}"
        );
    }
    let null = serde_json::Value::Null;
    let err = store
        .send_signal(&send("r", "3", "go", &null))
        .expect_err("a null payload");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(
        store.signals("r", 0, 10)?.is_empty(),
        "nothing stored for r"
    );
    assert_eq!(
        store.run("r")?.next_check_ms,
        Some(NEVER_DUE_MS),
        "r was not made due"
    );
    // A failed run keeps its signal for a resume, and is not made due by it.
    let kept = store.send_signal(&send("failed", "1", "go", &payload))?;
    assert_eq!(kept.status, RunStatus::Failed, "the receipt says failed");
    assert_eq!(store.run("failed")?.next_check_ms, None, "not made due");
    assert_eq!(store.signals("failed", 0, 10)?.len(), 1, "kept");
    Ok(())
}

/// A save of a waiting run whose state has not read every stored signal leaves the run due at
/// once, whatever its `next_check_ms`; once the state has read them, the wait's time holds.
pub fn a_waiting_save_whose_state_missed_a_signal_leaves_the_run_due(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&awaiting("r"))?;
    let lease = store.claim(&claim("r", "driver", 1, 30_000))?;
    // The driver read the inbox (empty), then a signal arrived (from another connection)
    // before it saved the wait.
    open().send_signal(&send("r", "late", "go", &json!({})))?;
    fn save<'a>(state: &'a State, lease: &'a Lease) -> StepSave<'a> {
        StepSave {
            run_id: "r",
            status: RunStatus::Waiting,
            state,
            next_check_ms: Some(NEVER_DUE_MS),
            last_error: None,
            history: &[],
            lease: Some(lease),
        }
    }
    store.save_step(&save(&State::default(), &lease))?;
    let due = store.run("r")?.next_check_ms.ok_or("the run is due")?;
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
    assert_eq!(
        store.run("r")?.next_check_ms,
        Some(NEVER_DUE_MS),
        "the wait's time"
    );
    Ok(())
}
