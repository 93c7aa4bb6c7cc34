//! `save_steps`: many steps in one transaction, each refused in its own slot without writing
//! anything, the others saved; a failure of the transaction itself saves nothing.

use super::*;
use stepflow_store::{Claim, Lease};

/// Runs `r0`..`r{n-1}`, each claimed by `host-a`.
fn claimed_runs(store: &mut SqliteStore, n: usize) -> Result<Vec<Lease>, StoreError> {
    (0..n)
        .map(|i| {
            let id = format!("r{i}");
            store.create_run(&record(&id, 1, RunStatus::Running))?;
            store.claim(&Claim {
                run_id: &id,
                owner: "host-a",
                ttl_ms: 60_000,
                now_ms: 1_000,
                take_over: None,
            })
        })
        .collect()
}

#[test]
fn each_refusal_is_reported_in_its_slot_and_the_other_steps_are_saved() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let leases = claimed_runs(&mut store, 6)?;
    store.set_status("r1", RunStatus::Cancelled)?;
    let stale = Lease {
        fence: 0,
        ..leases[2].clone()
    };
    // r3's row is damaged.
    Connection::open(&path)?.execute(
        "UPDATE runs SET flow_file = '/elsewhere.yaml' WHERE id = 'r3'",
        [],
    )?;
    let before: Vec<RunRecord> = ["r1", "r2"]
        .iter()
        .map(|id| store.run(id))
        .collect::<Result<_, _>>()?;

    let new_state = state("b", json!({ "n": 9 }));
    let entries: Vec<HistoryEntry> = (0..6).map(|i| entry(&format!("r{i}"), "a")).collect();
    let of_other_run = entry("r0", "a");
    let of_unknown = entry("unknown", "a");
    let huge_state = StepSave {
        next_check_ms: Some(u64::MAX),
        ..step("r5", RunStatus::Waiting, &new_state)
    };
    let steps = [
        StepSave {
            history: Some(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&entries[1]),
            lease: Some(&leases[1]),
            ..step("r1", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&entries[2]),
            lease: Some(&stale),
            ..step("r2", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&entries[3]),
            lease: Some(&leases[3]),
            ..step("r3", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&of_unknown),
            ..step("unknown", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&of_other_run),
            lease: Some(&leases[4]),
            ..step("r4", RunStatus::Waiting, &new_state)
        },
        huge_state,
        // A second step of r0 in the same batch follows the first.
        StepSave {
            history: Some(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Completed, &new_state)
        },
    ];
    let results = store.save_steps(&steps)?;
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "ok",
            Err(StoreError::Cancelled { .. }) => "cancelled",
            Err(StoreError::LeaseLost { .. }) => "lease lost",
            Err(StoreError::Checksum { .. }) => "checksum",
            Err(StoreError::NotFound { .. }) => "not found",
            Err(StoreError::Invalid { .. }) => "invalid",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "cancelled",
            "lease lost",
            "checksum",
            "not found",
            "invalid",
            "invalid",
            "ok"
        ],
        "{results:?}"
    );

    let r0 = store.run("r0")?;
    assert_eq!((r0.status, &r0.state), (RunStatus::Completed, &new_state));
    let seqs: Vec<u64> = store.history("r0")?.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
    for (id, was) in ["r1", "r2"].iter().zip(&before) {
        assert_eq!(&store.run(id)?, was, "{id} is unchanged");
        assert!(store.history(id)?.is_empty(), "{id} has no new history");
    }
    assert!(store.history("r4")?.is_empty());
    assert_eq!(store.run("r5")?.status, RunStatus::Running);
    let raw = Connection::open(&path)?;
    let flow_file: String =
        raw.query_row("SELECT flow_file FROM runs WHERE id = 'r3'", [], |r| {
            r.get(0)
        })?;
    assert_eq!(
        flow_file, "/elsewhere.yaml",
        "the damaged row was not overwritten"
    );
    let r3_history: i64 = raw.query_row(
        "SELECT COUNT(*) FROM history WHERE run_id = 'r3'",
        [],
        |r| r.get(0),
    )?;
    assert_eq!(r3_history, 0);
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
            history: Some(&ea),
            ..step("a", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&refused),
            ..step("b", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&ec),
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
                history: Some(&ea),
                ..step("a", RunStatus::Completed, &new_state)
            },
            StepSave {
                history: Some(&eb),
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
    // An empty batch is no transaction at all.
    assert!(store.save_steps(&[])?.is_empty());
    Ok(())
}
