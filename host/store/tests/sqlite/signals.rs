//! Each run's inbox in a SQLite file: a signal row edited by hand is seen by its checksum (the
//! trait-level rules of signals are in the conformance suite).

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
