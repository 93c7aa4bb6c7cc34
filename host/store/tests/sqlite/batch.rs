//! `save_steps` where SQLite has its say: a damaged row or a history row the file's schema
//! refuses is refused in its slot, and a failure of the transaction itself saves nothing (the
//! refusals every backend makes are in the conformance suite).

use super::*;
use stepflow_testkit::store::fixtures::{calls, claimed_runs, numbered};

/// A run whose row was edited by hand is refused in its slot ([`StoreError::Checksum`]) and
/// not overwritten, while the other steps are saved (the conformance suite checks the other
/// refusals).
#[test]
fn a_damaged_row_is_refused_in_its_slot_and_not_overwritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let leases = claimed_runs(&mut store, 2)?;
    // r1's row is damaged.
    Connection::open(&path)?.execute(
        "UPDATE runs SET flow_file = '/elsewhere.yaml' WHERE id = 'r1'",
        [],
    )?;
    let new_state = state("b", json!({ "n": 9 }));
    let entries: Vec<HistoryEntry> = (0..2).map(|i| entry(&format!("r{i}"), "a")).collect();
    let results = store.save_steps(&[
        StepSave {
            history: std::slice::from_ref(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&entries[1]),
            lease: Some(&leases[1]),
            ..step("r1", RunStatus::Waiting, &new_state)
        },
    ])?;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(StoreError::Checksum { id, .. }) if id == "r1"),
        "{results:?}"
    );
    assert_eq!(store.run("r0")?.state, new_state);
    let raw = Connection::open(&path)?;
    let flow_file: String =
        raw.query_row("SELECT flow_file FROM runs WHERE id = 'r1'", [], |r| {
            r.get(0)
        })?;
    assert_eq!(
        flow_file, "/elsewhere.yaml",
        "the damaged row was not overwritten"
    );
    let r1_history: i64 = raw.query_row(
        "SELECT COUNT(*) FROM history WHERE run_id = 'r1'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(r1_history, 0);
    Ok(())
}

#[test]
fn a_step_whose_history_row_is_refused_writes_neither_and_the_others_are_saved() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    {
        let mut store = SqliteStore::open(&path)?;
        for id in ["a", "b", "c"] {
            store.create_run(&record(id, 1, RunStatus::Running))?;
        }
    }
    // A history table that refuses a kind this build has: the history INSERT fails its CHECK
    // inside the batch.
    {
        let raw = Connection::open(&path)?;
        raw.execute_batch("PRAGMA writable_schema = ON;")?;
        raw.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ' OR kind = ''error-handler''', '') \
             WHERE name = 'history'",
            [],
        )?;
        raw.execute_batch("PRAGMA writable_schema = OFF;")?;
    }
    let mut store = SqliteStore::open(&path)?;
    let before = store.run("b")?;
    let new_state = state("z", json!({ "n": 3 }));
    let refused = HistoryEntry {
        kind: CallKind::ErrorHandler,
        ..entry("b", "z")
    };
    let (ea, ec) = (entry("a", "z"), entry("c", "z"));
    let results = store.save_steps(&[
        StepSave {
            history: std::slice::from_ref(&ea),
            ..step("a", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&refused),
            ..step("b", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&ec),
            ..step("c", RunStatus::Waiting, &new_state)
        },
    ])?;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(StoreError::Invalid { detail, .. }) if detail.contains("error-handler")),
        "{results:?}"
    );
    assert_eq!(
        store.run("b")?,
        before,
        "b's state update was undone with its entry"
    );
    assert!(store.history("b")?.is_empty());
    for id in ["a", "c"] {
        assert_eq!(store.run(id)?.state, new_state);
        assert_eq!(store.history(id)?.len(), 1);
    }
    Ok(())
}

/// A step of three calls whose last entry the file's schema refuses writes none of the three
/// (they share a savepoint) nor its state, while the batch's other steps, before and after
/// it, are saved with every entry.
#[test]
fn a_step_of_several_calls_whose_last_entry_is_refused_writes_none_of_them() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    {
        let mut store = SqliteStore::open(&path)?;
        for id in ["a", "b", "c"] {
            store.create_run(&record(id, 1, RunStatus::Running))?;
        }
    }
    {
        let raw = Connection::open(&path)?;
        raw.execute_batch("PRAGMA writable_schema = ON;")?;
        raw.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ' OR kind = ''error-handler''', '') \
             WHERE name = 'history'",
            [],
        )?;
        raw.execute_batch("PRAGMA writable_schema = OFF;")?;
    }
    let mut store = SqliteStore::open(&path)?;
    let before = store.run("b")?;
    let new_state = state("z", json!({ "n": 3 }));
    let mut refused = calls("b", &["x", "y", "z"]);
    refused[2].kind = CallKind::ErrorHandler;
    let (ea, ec) = (calls("a", &["x", "y", "z"]), calls("c", &["x", "y"]));
    let results = store.save_steps(&[
        StepSave {
            history: &ea,
            ..step("a", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: &refused,
            ..step("b", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: &ec,
            ..step("c", RunStatus::Waiting, &new_state)
        },
    ])?;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(StoreError::Invalid { detail, .. }) if detail.contains("error-handler")),
        "{results:?}"
    );
    assert_eq!(store.run("b")?, before, "b is unchanged");
    let raw = Connection::open(&path)?;
    let b_rows: i64 =
        raw.query_row("SELECT COUNT(*) FROM history WHERE run_id = 'b'", [], |r| {
            r.get(0)
        })?;
    assert_eq!(
        b_rows, 0,
        "the first two of b's entries were taken back too"
    );
    assert_eq!(store.history("a")?, numbered(&ea, 0));
    assert_eq!(store.history("c")?, numbered(&ec, 0));

    // The savepoint ended with its step: b saves its calls once they fit, numbered from 1.
    refused[2].kind = CallKind::Step;
    store.save_step(&StepSave {
        history: &refused,
        ..step("b", RunStatus::Waiting, &new_state)
    })?;
    assert_eq!(store.history("b")?, numbered(&refused, 0));
    Ok(())
}

#[test]
fn a_failure_of_the_transaction_saves_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    for id in ["a", "b"] {
        store.create_run(&record(id, 1, RunStatus::Running))?;
    }
    // SQLite itself fails the second step's history insert (not a refusal of that step).
    Connection::open(&path)?.execute_batch(
        "CREATE TRIGGER fail_history BEFORE INSERT ON history WHEN NEW.run_id = 'b' \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )?;
    let new_state = state("z", json!({ "n": 3 }));
    let (ea, eb) = (entry("a", "z"), entry("b", "z"));
    let err = store
        .save_steps(&[
            StepSave {
                history: std::slice::from_ref(&ea),
                ..step("a", RunStatus::Completed, &new_state)
            },
            StepSave {
                history: std::slice::from_ref(&eb),
                ..step("b", RunStatus::Completed, &new_state)
            },
        ])
        .expect_err("the transaction fails");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    for id in ["a", "b"] {
        assert_eq!(
            store.run(id)?.status,
            RunStatus::Running,
            "{id} is unchanged"
        );
        assert!(store.history(id)?.is_empty());
    }

    // Through a read-only store nothing is attempted.
    let reader = SqliteStore::open_read_only(&path)?;
    let mut reader: Box<dyn Store> = Box::new(reader);
    let err = reader
        .save_steps(&[step("a", RunStatus::Completed, &new_state)])
        .expect_err("read-only");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    Ok(())
}
