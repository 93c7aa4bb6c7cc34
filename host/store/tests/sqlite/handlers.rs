//! The error handlers a failed call was offered to, as SQLite stores them: a JSON column that
//! is `NULL` when there were none; bad data there is a bad record.

use super::*;
use stepflow_testkit::store::fixtures::failed_call;

/// In the file the handlers are a JSON array any SQL tool can read, and `NULL` for an entry
/// without any; a read-only store reads them (the conformance suite checks the round trip).
#[test]
fn handler_calls_are_a_json_column_that_is_null_without_any() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let failed = HistoryEntry::from_call("r", &failed_call(), 10, 3);
    let plain = entry("r", "a");
    for e in [&failed, &plain] {
        store.save_step(&StepSave {
            history: std::slice::from_ref(e),
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let raw = Connection::open(&path)?;
    let stored: Vec<Option<String>> = raw
        .prepare("SELECT handlers FROM history ORDER BY seq")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let first: serde_json::Value = serde_json::from_str(stored[0].as_deref().unwrap_or("null"))?;
    assert_eq!(first[1]["group"], json!("f.v1/outer"));
    assert_eq!(stored[1], None);

    let reader = SqliteStore::open_read_only(&path)?;
    assert_eq!(reader.history("r")?, store.history("r")?);
    Ok(())
}

#[test]
fn bad_json_in_the_handlers_column_is_a_bad_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    for _ in 0..2 {
        store.save_step(&StepSave {
            history: &[HistoryEntry::from_call("r", &failed_call(), 10, 3)],
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let raw = Connection::open(&path)?;
    raw.execute_batch(WITHOUT_CHECKSUMS)?;
    for text in ["{oops", "[1, 2]", "{\"group\": \"g\"}"] {
        raw.execute("UPDATE history SET handlers = ?1 WHERE seq = 2", [text])?;
        let err = store.history("r").map(drop).expect_err("bad handlers");
        match &err {
            StoreError::BadRecord { id, column, .. } => {
                assert_eq!(id, "r");
                assert_eq!(column, "history entry 2 (handlers)");
            }
            other => panic!("not a bad record: {other:?}"),
        }
        assert!(err.to_string().contains("stepflow.db"), "{err}");
    }
    Ok(())
}
