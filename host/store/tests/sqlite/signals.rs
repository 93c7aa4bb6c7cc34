//! Each run's inbox in a SQLite file: a signal row edited by hand is seen by its checksum (the
//! trait-level rules of signals are in the conformance suite).

use super::*;
use stepflow_testkit::store::fixtures::{awaiting, send};

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
