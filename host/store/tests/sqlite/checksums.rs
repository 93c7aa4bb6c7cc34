//! Damage SQLite does not see: a flipped bit inside a stored value is reported by the checksum
//! saved with the row, naming the run and the row, and `save_step` does not overwrite it.

use super::*;
use stepflow_testkit::store::fixtures::{calls, numbered};

/// One bit of `text` flipped: `"100"` becomes `"900"` (0x31 ^ 0x08 = 0x39).
const AMOUNT: &str = "\"amount\":100";
const FLIPPED: &str = "\"amount\":900";

/// A store with runs `r` (its data holds [`AMOUNT`], three history entries) and `other`.
fn saved(path: &Path) -> Result<SqliteStore, StoreError> {
    let mut store = SqliteStore::open(path)?;
    for id in ["r", "other"] {
        store.create_run(&record(id, 1, RunStatus::Running))?;
        for n in 1..=3 {
            let e = HistoryEntry {
                patch: Some(json!({ "n": n })),
                ..entry(id, "a")
            };
            store.save_step(&StepSave {
                history: std::slice::from_ref(&e),
                ..step(
                    id,
                    RunStatus::Running,
                    &state("b", json!({ "amount": 100 })),
                )
            })?;
        }
    }
    Ok(store)
}

fn assert_checksum_error(err: &StoreError, run: &str, row: &str) {
    match err {
        StoreError::Checksum {
            id,
            row: at,
            stored,
            computed,
            ..
        } => {
            assert_eq!((id.as_str(), at.as_str()), (run, row));
            assert_ne!(stored, computed);
        }
        other => panic!("not a checksum error: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("run `{run}`"))
            && message.contains(row)
            && message.contains("stepflow.db")
            && message.contains("checksum"),
        "{message}"
    );
    assert_store_terms(&message);
}

#[test]
fn a_flipped_bit_in_a_saved_state_is_reported_and_not_overwritten() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = saved(&path)?;
    let raw = Connection::open(&path)?;
    let changed = raw.execute(
        "UPDATE runs SET state = replace(state, ?1, ?2) WHERE id = 'r'",
        [AMOUNT, FLIPPED],
    )?;
    assert_eq!(changed, 1);
    let damaged: String =
        raw.query_row("SELECT state FROM runs WHERE id = 'r'", [], |r| r.get(0))?;
    assert!(damaged.contains(FLIPPED), "{damaged}");

    let reader = SqliteStore::open_read_only(&path)?;
    for err in [
        store.run("r").map(drop).expect_err("damaged"),
        store
            .runs(None, 10)
            .map(drop)
            .expect_err("damaged, in a listing"),
        reader.run("r").map(drop).expect_err("damaged, read-only"),
    ] {
        assert_checksum_error(&err, "r", "the run's row");
    }
    assert_eq!(*store.run("other")?.state.data, json!({ "amount": 100 }));

    // A save would replace the damaged state: refused, and nothing is written.
    let err = store
        .save_step(&StepSave {
            history: &[entry("r", "c")],
            ..step("r", RunStatus::Running, &state("c", json!({ "amount": 1 })))
        })
        .expect_err("the damaged row is not overwritten");
    assert_checksum_error(&err, "r", "the run's row");
    let after: String = raw.query_row("SELECT state FROM runs WHERE id = 'r'", [], |r| r.get(0))?;
    assert_eq!(
        after, damaged,
        "the damaged state is still there, for an operator"
    );
    assert_eq!(store.history("r")?.len(), 3, "no history row was added");

    // An operator can still cancel it (the status is not what the checksum guards).
    store.set_status("r", RunStatus::Cancelled)?;
    let status: String =
        raw.query_row("SELECT status FROM runs WHERE id = 'r'", [], |r| r.get(0))?;
    assert_eq!(status, "cancelled");
    // And its driver then hears of the cancel, not only of the damage.
    let err = store
        .save_step(&step("r", RunStatus::Running, &State::default()))
        .expect_err("cancelled");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    Ok(())
}

#[test]
fn a_flipped_bit_in_a_history_row_names_the_entry() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let store = saved(&path)?;
    let raw = Connection::open(&path)?;
    // `{"n":2}` becomes `{"n":3}` (0x32 ^ 0x01) in entry 2.
    let changed = raw.execute(
        "UPDATE history SET patch = '{\"n\":3}' WHERE run_id = 'r' AND seq = 2",
        [],
    )?;
    assert_eq!(changed, 1);
    let err = store.history("r").map(drop).expect_err("damaged entry");
    assert_checksum_error(&err, "r", "history entry 2");
    assert_eq!(store.history("other")?.len(), 3, "other runs still read");

    // An integer column too: 12 ms becomes 13 ms in entry 3 (entry 2 repaired first).
    raw.execute(
        "UPDATE history SET patch = '{\"n\":2}' WHERE run_id = 'r' AND seq = 2",
        [],
    )?;
    assert_eq!(store.history("r")?.len(), 3, "repaired, it reads again");
    raw.execute(
        "UPDATE history SET duration_ms = 13 WHERE run_id = 'r' AND seq = 3",
        [],
    )?;
    let err = store.history("r").map(drop).expect_err("damaged entry");
    assert_checksum_error(&err, "r", "history entry 3");
    Ok(())
}

/// Every entry of a save of several calls gets a checksum of its own, over its own number: they
/// read back checked, and a change to the middle one is reported naming exactly that entry.
#[test]
fn each_entry_of_a_save_of_several_calls_has_its_own_checksum() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = saved(&path)?;
    let parallel = calls("r", &["x", "y", "z"]);
    store.save_step(&StepSave {
        history: &parallel,
        ..step("r", RunStatus::Running, &state("z", json!({})))
    })?;
    assert_eq!(
        store.history("r")?[3..],
        numbered(&parallel, 3),
        "read back, checked"
    );
    let raw = Connection::open(&path)?;
    let sums: Vec<(i64, Option<i64>)> = raw
        .prepare("SELECT seq, checksum FROM history WHERE run_id = 'r' ORDER BY seq")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let seqs: Vec<i64> = sums.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(sums.iter().all(|(_, sum)| sum.is_some()), "{sums:?}");

    raw.execute(
        "UPDATE history SET duration_ms = duration_ms + 1 WHERE run_id = 'r' AND seq = 5",
        [],
    )?;
    let err = store.history("r").map(drop).expect_err("damaged entry");
    assert_checksum_error(&err, "r", "history entry 5");
    Ok(())
}

#[test]
fn a_flipped_bit_in_the_file_itself_is_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    drop(saved(&path)?); // closed: everything is in the main file, no WAL
    let mut bytes = fs::read(&path)?;
    let at: Vec<usize> = bytes
        .windows(AMOUNT.len())
        .enumerate()
        .filter(|(_, window)| *window == AMOUNT.as_bytes())
        .map(|(at, _)| at)
        .collect();
    assert_eq!(at.len(), 2, "the two runs' states");
    // The first one found is one of the runs; flip one bit of its `1`.
    let digit = at[0] + AMOUNT.len() - 3;
    bytes[digit] ^= 0x08;
    fs::write(&path, &bytes)?;

    // SQLite sees nothing wrong with the file; the checksum does.
    let store = SqliteStore::open(&path)?;
    let errors: Vec<StoreError> = ["r", "other"]
        .into_iter()
        .filter_map(|id| store.run(id).err())
        .collect();
    assert_eq!(errors.len(), 1, "exactly the damaged run: {errors:?}");
    assert!(
        matches!(&errors[0], StoreError::Checksum { row, .. } if row == "the run's row"),
        "{:?}",
        errors[0]
    );
    Ok(())
}

#[test]
fn rows_saved_before_checksums_are_read_and_get_one_at_the_next_save() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    version_1_database(&path)?;
    let mut store = SqliteStore::open(&path)?;
    let old = store.run("old")?;
    assert_eq!(store.history("old")?.len(), 1);
    let raw = Connection::open(&path)?;
    let sums = |sql: &str| -> rusqlite::Result<Vec<Option<i64>>> {
        raw.prepare(sql)?.query_map([], |r| r.get(0))?.collect()
    };
    assert_eq!(sums("SELECT checksum FROM runs")?, vec![None]);

    store.save_step(&StepSave {
        history: &[entry("old", "b")],
        ..step("old", RunStatus::Running, &old.state)
    })?;
    assert!(
        sums("SELECT checksum FROM runs")?[0].is_some(),
        "the run's row has one now"
    );
    let history = sums("SELECT checksum FROM history ORDER BY seq")?;
    assert!(history[0].is_none() && history[1].is_some(), "{history:?}");
    assert_eq!(store.history("old")?.len(), 2);

    // From now on its state is guarded.
    raw.execute(
        "UPDATE runs SET state = replace(state, '\"n\":7', '\"n\":5') WHERE id = 'old'",
        [],
    )?;
    let err = store.run("old").map(drop).expect_err("damaged");
    assert_checksum_error(&err, "old", "the run's row");
    Ok(())
}
