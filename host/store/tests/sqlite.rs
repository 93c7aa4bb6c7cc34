//! The SQLite store against real database files in a temporary directory: the store
//! conformance suite (`stepflow_testkit::store`, every trait-level behaviour), and what only
//! SQLite has: atomicity when SQLite itself fails, the file's format, pragmas and migrations,
//! files that are not ours, checksums of rows edited by hand, and opening read-only.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::json;
use stepflow_model::{CallKind, State};
use stepflow_store::{
    HistoryEntry, RunRecord, RunStatus, SqliteStore, StepOutcome, StepSave, Store, StoreError,
};
use stepflow_testkit::store::fixtures::{assert_store_terms, entry, record, state, step};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `SFLW`, the application id of stepflow databases.
const APPLICATION_ID: i64 = 0x5346_4C57;
/// The schema version this build creates.
const SCHEMA_VERSION: i64 = 9;

/// The schema exactly as the first release created it (schema version 1), to test that older
/// databases are migrated (or read read-only) with their runs intact.
const SCHEMA_1: &str = "
PRAGMA application_id = 1397115991;
PRAGMA journal_mode = WAL;
CREATE TABLE runs (
    id            TEXT NOT NULL PRIMARY KEY,
    flow          TEXT NOT NULL,
    flow_file     TEXT NOT NULL,
    definition    TEXT NOT NULL,
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    state         TEXT NOT NULL,
    data          TEXT GENERATED ALWAYS AS (state -> '$.data') VIRTUAL,
    next_check_ms INTEGER,
    last_error    TEXT,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX runs_by_created ON runs (created_ms);
CREATE INDEX runs_by_next_check ON runs (next_check_ms) WHERE next_check_ms IS NOT NULL;
CREATE TABLE history (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL
                CHECK (kind IN ('step', 'wait-for', 'case', 'loop-until', 'error-handler')),
    attempt     INTEGER NOT NULL CHECK (attempt >= 0),
    outcome     TEXT NOT NULL
                CHECK (outcome IN ('done', 'true', 'false', 'retrying', 'failed')),
    started_ms  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error       TEXT,
    patch       TEXT,
    redelivered INTEGER NOT NULL CHECK (redelivered IN (0, 1)),
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;
PRAGMA user_version = 1;
INSERT INTO runs (id, flow, flow_file, definition, status, state, next_check_ms, last_error,
                  created_ms, updated_ms)
VALUES ('old', 'f.v1', '/flows/f.yaml', 'def-hash', 'waiting',
        '{\"cursor\":[\"start:f.v1/a\"],\"data\":{\"n\":7}}', 42, 'not ready', 10, 20);
INSERT INTO history VALUES ('old', 1, 'f.v1/a', 'step', 0, 'done', 11, 2, NULL, '{\"n\":7}', 0);
";

/// Drops every row's checksum, as in rows saved before schema version 4: tests of what the
/// decoding does with bad values edit rows by hand, which the checksums would report first.
const WITHOUT_CHECKSUMS: &str =
    "UPDATE runs SET checksum = NULL; UPDATE history SET checksum = NULL;";

/// A database as the first release left it (schema version 1), with run `old` and one entry.
fn version_1_database(path: &Path) -> TestResult {
    Connection::open(path)?.execute_batch(SCHEMA_1)?;
    Ok(())
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("stepflow.db")
}

/// The file's bytes, and that no journal or WAL file was left beside it.
fn assert_untouched(path: &Path, before: &[u8]) -> TestResult {
    assert_eq!(fs::read(path)?, before, "{} was modified", path.display());
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut sibling = path.as_os_str().to_owned();
        sibling.push(suffix);
        assert!(
            !Path::new(&sibling).exists(),
            "{} was created",
            Path::new(&sibling).display()
        );
    }
    Ok(())
}

fn open_err(path: &Path) -> StoreError {
    match SqliteStore::open(path) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e) => e,
    }
}

/// Kinds and outcomes are stored as the same lower-case text as ever, readable with any SQL
/// tool (the conformance suite checks they read back; this checks the file).
#[test]
fn kinds_and_outcomes_are_stored_as_text() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    for (kind, outcome) in CallKind::ALL.into_iter().zip(StepOutcome::ALL) {
        let e = HistoryEntry {
            kind,
            outcome,
            ..entry("r", "a")
        };
        store.save_step(&StepSave {
            history: std::slice::from_ref(&e),
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let raw = Connection::open(&path)?;
    let mut stmt = raw.prepare("SELECT kind, outcome FROM history ORDER BY seq")?;
    let stored = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let stored: Vec<(&str, &str)> = stored
        .iter()
        .map(|(k, o)| (k.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        stored,
        vec![
            ("step", "done"),
            ("wait-for", "true"),
            ("case", "false"),
            ("loop-until", "retrying"),
            ("error-handler", "failed"),
        ]
    );
    Ok(())
}

#[test]
fn save_step_is_atomic_when_the_history_row_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    {
        let mut store = SqliteStore::open(&path)?;
        let run = record("r", 1, RunStatus::Running);
        store.create_run(&run)?;
        store.save_step(&StepSave {
            history: &[entry("r", "a")],
            ..step("r", RunStatus::Running, &run.state)
        })?;
    }
    // A file whose history table refuses a kind this build has, as a schema older than the
    // build's types would: the history INSERT fails its CHECK (a step's first write).
    {
        let raw = Connection::open(&path)?;
        raw.execute_batch("PRAGMA writable_schema = ON;")?;
        let changed = raw.execute(
            "UPDATE sqlite_schema SET sql = replace(sql, ' OR kind = ''error-handler''', '') \
             WHERE name = 'history'",
            [],
        )?;
        assert_eq!(changed, 1);
        raw.execute_batch("PRAGMA writable_schema = OFF;")?;
    }
    let mut store = SqliteStore::open(&path)?;
    let before = store.run("r")?;
    let refused = HistoryEntry {
        kind: CallKind::ErrorHandler,
        ..entry("r", "b")
    };
    let new_state = state("b", json!({ "n": 2 }));
    let err = store
        .save_step(&StepSave {
            next_check_ms: Some(5),
            last_error: Some("x"),
            history: std::slice::from_ref(&refused),
            ..step("r", RunStatus::Failed, &new_state)
        })
        .expect_err("the file's schema refuses the kind");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("`r`")
            && message.contains("error-handler")
            && message.contains("nothing was saved"),
        "{message}"
    );

    assert_eq!(store.run("r")?, before, "the run is unchanged");
    assert_eq!(store.history("r")?.len(), 1, "no history row was added");
    // The store is still usable after the rolled-back transaction.
    store.save_step(&StepSave {
        history: &[entry("r", "b")],
        ..step("r", RunStatus::Running, &new_state)
    })?;
    assert_eq!(store.history("r")?.len(), 2);
    Ok(())
}

#[test]
fn save_step_is_atomic_when_the_database_fails_mid_transaction() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let run = record("r", 1, RunStatus::Running);
    store.create_run(&run)?;
    // A trigger (added by another connection) makes every history insert fail in SQLite itself.
    Connection::open(&path)?.execute_batch(
        "CREATE TRIGGER fail_history BEFORE INSERT ON history \
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )?;
    let new_state = state("b", json!({ "n": 2 }));
    let err = store
        .save_step(&StepSave {
            history: &[entry("r", "a")],
            ..step("r", RunStatus::Completed, &new_state)
        })
        .expect_err("the trigger refuses the insert");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(store.run("r")?, run, "the run is unchanged");
    assert!(store.history("r")?.is_empty());
    Ok(())
}

/// SQLite's location in an error is the database file: errors about unknown runs and
/// deployments name it (the conformance suite checks the variants, whose location each backend
/// words its own way).
#[test]
fn errors_name_the_database_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let errors = [
        store.run("nope").map(drop),
        store.history("nope").map(drop),
        store.set_status("nope", RunStatus::Cancelled),
        store.save_step(&StepSave {
            history: &[entry("nope", "a")],
            ..step("nope", RunStatus::Running, &State::default())
        }),
    ];
    for result in errors {
        let err = result.expect_err("no such run");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert_eq!(message, format!("no run `nope` in {}", path.display()));
        assert_store_terms(&message);
    }

    let err = store.deployment("ffffffff").expect_err("no deployment");
    assert_eq!(
        err.to_string(),
        format!("no deployment `ffffffff` in {}", path.display())
    );
    for (digit, source) in [("1", "a"), ("2", "b")] {
        store.put_deployment(&stepflow_store::Deployment {
            id: format!("abcdef01{}", digit.repeat(56)),
            flow: "f.v1".into(),
            source: source.into(),
            source_path: "/flows/f.yaml".into(),
            plugins: Vec::new(),
            created_ms: 1,
        })?;
    }
    let err = store.deployment("abcdef01").expect_err("two match");
    assert!(
        matches!(err, StoreError::AmbiguousDeployment { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("`abcdef01`")
            && message.contains("matches 2 deployments")
            && message.contains(&path.display().to_string()),
        "{message}"
    );
    assert_store_terms(&message);
    Ok(())
}

#[test]
fn a_saved_step_survives_a_process_that_never_closed_the_database() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let next = state("b", json!({ "saved": true }));
    store.save_step(&StepSave {
        history: &[entry("r", "a")],
        ..step("r", RunStatus::Running, &next)
    })?;
    // As if the process died: the connection is never closed, the WAL never checkpointed.
    std::mem::forget(store);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    assert!(
        fs::metadata(&wal)?.len() > 0,
        "the saved step is still only in the WAL"
    );

    let store = SqliteStore::open(&path)?;
    assert_eq!(store.run("r")?.state, next);
    assert_eq!(store.history("r")?.len(), 1);
    Ok(())
}

#[test]
fn open_creates_directories_and_the_latest_schema() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a/b/c/stepflow.db");
    let store = SqliteStore::open(&path)?;
    assert!(path.is_file());
    assert_eq!(store.path(), path);
    drop(store);
    let conn = Connection::open(&path)?;
    let pragma = |name| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
    assert_eq!(pragma("user_version")?, SCHEMA_VERSION);
    assert_eq!(pragma("application_id")?, APPLICATION_ID);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    assert_eq!(mode, "wal", "WAL is a property of the file");
    Ok(())
}

#[test]
fn the_data_column_shows_the_data_document() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let next = state("b", json!({ "name": "x", "list": [1, 2] }));
    store.save_step(&step("r", RunStatus::Running, &next))?;
    let conn = Connection::open(&path)?;
    let (data, name): (String, String) = conn.query_row(
        "SELECT data, data ->> '$.name' FROM runs WHERE id = 'r'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&data)?,
        *next.data
    );
    assert_eq!(name, "x");
    Ok(())
}

#[test]
fn an_empty_file_or_empty_sqlite_database_is_initialised() -> TestResult {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.db");
    fs::write(&empty, b"")?;
    SqliteStore::open(&empty)?.create_run(&record("r", 1, RunStatus::Running))?;
    assert_eq!(SqliteStore::open(&empty)?.run("r")?.id, "r");

    // A SQLite database with nothing in it (e.g. made by `sqlite3 x.db 'VACUUM'`).
    let blank = dir.path().join("blank.db");
    Connection::open(&blank)?.execute_batch("VACUUM;")?;
    assert!(fs::metadata(&blank)?.len() > 0);
    SqliteStore::open(&blank)?.create_run(&record("r", 1, RunStatus::Running))?;
    Ok(())
}

#[test]
fn a_newer_schema_is_refused_and_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    SqliteStore::open(&path)?.create_run(&record("r", 1, RunStatus::Running))?;
    Connection::open(&path)?.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
    let before = fs::read(&path)?;

    let err = open_err(&path);
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("newer stepflow"), "{message}");
    assert_store_terms(&message);
    assert_untouched(&path, &before)
}

#[test]
fn random_bytes_and_text_are_refused_and_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A fixed pseudo-random sequence (xorshift), long enough to look like a database.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let noise: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    for (name, bytes) in [
        ("noise.db", noise),
        ("notes.txt", b"remember the milk\n".to_vec()),
        ("tiny.db", b"S".to_vec()),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, &bytes)?;
        let err = open_err(&path);
        assert!(
            matches!(err, StoreError::NotADatabase { .. }),
            "{name}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(name) && message.contains("left untouched"),
            "{message}"
        );
        assert_store_terms(&message);
        assert_untouched(&path, &bytes)?;
    }
    Ok(())
}

#[test]
fn a_truncated_database_is_refused_and_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    {
        let mut store = SqliteStore::open(&path)?;
        for i in 0..50 {
            let mut run = record(&format!("run-{i}"), i, RunStatus::Running);
            run.state = state("a", json!({ "padding": "x".repeat(500) }));
            store.create_run(&run)?;
        }
    }
    let full = fs::read(&path)?;
    assert!(full.len() > 3 * 4096, "the database spans several pages");
    for cut in [full.len() / 2, 4096 + 100, 60] {
        fs::write(&path, &full[..cut])?;
        let err = open_err(&path);
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "cut at {cut}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("truncated") && message.contains("left untouched"),
            "{message}"
        );
        assert_store_terms(&message);
        assert_untouched(&path, &full[..cut])?;
    }
    Ok(())
}

#[test]
fn foreign_databases_are_refused_and_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cases = [
        // Another application's tables, no application id.
        (
            "notes.db",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
            "notes",
        ),
        // Another application id, even with tables named like ours.
        (
            "lookalike.db",
            "PRAGMA application_id = 42; CREATE TABLE runs (id TEXT); CREATE TABLE history (x);",
            "0x0000002a",
        ),
        // A foreign database in WAL mode.
        (
            "wal.db",
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
            "tables t",
        ),
        // Only a user_version: still not ours.
        ("versioned.db", "PRAGMA user_version = 7;", "user version 7"),
    ];
    for (name, sql, said) in cases {
        let path = dir.path().join(name);
        Connection::open(&path)?.execute_batch(sql)?;
        let before = fs::read(&path)?;
        let err = open_err(&path);
        assert!(matches!(err, StoreError::Foreign { .. }), "{name}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(said), "{name}: {message}");
        assert!(
            message.contains("another application") && message.contains("left untouched"),
            "{message}"
        );
        assert_store_terms(&message);
        assert_untouched(&path, &before)?;
    }
    Ok(())
}

#[test]
fn a_foreign_database_with_a_live_wal_is_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("busy-elsewhere.db");
    let other = Connection::open(&path)?;
    other.execute_batch(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);",
    )?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let (main_before, wal_before) = (fs::read(&path)?, fs::read(&wal)?);
    assert!(
        !wal_before.is_empty(),
        "the other application's data is in its WAL"
    );

    let err = open_err(&path);
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("tables t"), "{err}");
    assert_eq!(fs::read(&path)?, main_before);
    assert_eq!(fs::read(&wal)?, wal_before);
    drop(other);
    Ok(())
}

/// Four connections (as four processes would open them) create the same new database at the
/// same moment: a barrier releases them together, and each creates its run.
#[test]
fn four_connections_creating_the_database_at_once_all_succeed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let start = std::sync::Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let (path, start) = (path.clone(), start.clone());
            std::thread::spawn(move || -> Result<(), StoreError> {
                start.wait();
                let mut store = SqliteStore::open(&path)?;
                store.create_run(&record(&format!("r{i}"), i, RunStatus::Running))
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "thread panicked")??;
    }
    let store = SqliteStore::open(&path)?;
    assert_eq!(store.runs(None, 10)?.len(), 4);
    let conn = Connection::open(&path)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(version, SCHEMA_VERSION);
    Ok(())
}

#[test]
fn a_directory_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let err = open_err(dir.path());
    assert!(err.to_string().contains("directory"), "{err}");
    Ok(())
}

#[test]
fn bad_data_in_the_database_is_an_error_naming_the_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("broken", 1, RunStatus::Running))?;
    store.create_run(&record("fine", 2, RunStatus::Running))?;
    store.save_step(&StepSave {
        history: &[entry("fine", "a")],
        ..step("fine", RunStatus::Running, &State::default())
    })?;
    let raw = Connection::open(&path)?;
    // Rows without checksums (as saved before them), so that the decoding itself is tested.
    raw.execute_batch(WITHOUT_CHECKSUMS)?;
    // SQLite itself refuses a state that is not JSON at all (the `data` column parses it)...
    let refused = raw.execute(
        "UPDATE runs SET state = '{not json' WHERE id = 'broken'",
        [],
    );
    assert!(refused.is_err(), "{refused:?}");
    // ...but takes JSON5, which serde does not.
    raw.execute(
        "UPDATE runs SET state = '{cursor: [], data: {},}' WHERE id = 'broken'",
        [],
    )?;

    for err in [
        store.run("broken").map(drop).expect_err("bad JSON"),
        store
            .runs(None, 10)
            .map(drop)
            .expect_err("bad JSON in a listing"),
    ] {
        assert!(matches!(err, StoreError::BadRecord { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("`broken`") && message.contains("state"),
            "{message}"
        );
    }
    assert_eq!(store.run("fine")?.id, "fine", "other runs still load");

    // A state that is JSON but not a state, a status and a time no build writes.
    raw.execute("UPDATE runs SET state = '[1, 2]' WHERE id = 'broken'", [])?;
    assert!(matches!(
        store.run("broken"),
        Err(StoreError::BadRecord { .. })
    ));
    raw.execute_batch(
        "PRAGMA ignore_check_constraints = ON; \
         UPDATE runs SET state = (SELECT state FROM runs WHERE id = 'fine'), status = 'paused' \
         WHERE id = 'broken';",
    )?;
    let err = store.run("broken").map(drop).expect_err("unknown status");
    assert!(err.to_string().contains("paused"), "{err}");
    raw.execute(
        "UPDATE runs SET status = 'running', created_ms = -5 WHERE id = 'broken'",
        [],
    )?;
    let err = store.run("broken").map(drop).expect_err("negative time");
    assert!(err.to_string().contains("created_ms"), "{err}");

    raw.execute(
        "UPDATE history SET patch = 'nope' WHERE run_id = 'fine'",
        [],
    )?;
    let err = store.history("fine").map(drop).expect_err("bad patch");
    let message = err.to_string();
    assert!(
        message.contains("`fine`") && message.contains("patch"),
        "{message}"
    );
    Ok(())
}

#[test]
fn an_unknown_kind_or_outcome_in_the_database_is_a_bad_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    for name in ["a", "b"] {
        store.save_step(&StepSave {
            history: &[entry("r", name)],
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let raw = Connection::open(&path)?;
    raw.execute_batch(WITHOUT_CHECKSUMS)?;
    raw.execute_batch("PRAGMA ignore_check_constraints = ON;")?;
    for (column, text) in [("kind", "teleport"), ("outcome", "exploded")] {
        raw.execute(
            &format!("UPDATE history SET {column} = ?1 WHERE run_id = 'r' AND seq = 2"),
            [text],
        )?;
        let err = store.history("r").map(drop).expect_err("unknown text");
        match &err {
            StoreError::BadRecord { id, column: at, .. } => {
                assert_eq!(id, "r");
                assert_eq!(at, &format!("history entry 2 ({column})"));
            }
            other => panic!("not a bad record: {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("`r`") && message.contains(text) && message.contains("stepflow.db"),
            "{message}"
        );
        raw.execute(
            "UPDATE history SET kind = 'step', outcome = 'done' WHERE run_id = 'r'",
            [],
        )?;
    }
    assert_eq!(
        store.history("r")?.len(),
        2,
        "fixed by hand, it reads again"
    );
    Ok(())
}

#[test]
fn a_version_1_database_is_migrated_with_its_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    version_1_database(&path)?;
    let mut store = SqliteStore::open(&path)?;
    let old = store.run("old")?;
    assert_eq!(old.status, RunStatus::Waiting);
    assert_eq!(*old.state.data, json!({ "n": 7 }));
    assert_eq!(old.next_check_ms, Some(42));
    assert_eq!(old.lease, None, "nobody holds a run from before leases");
    let history = store.history("old")?;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].patch, Some(json!({ "n": 7 })));
    let version: i64 =
        Connection::open(&path)?.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(version, SCHEMA_VERSION);

    // Its first claim gets fence 1, and saves go on numbering its history.
    let lease = store.claim(&stepflow_store::Claim {
        run_id: "old",
        owner: "host-a",
        ttl_ms: 10,
        now_ms: 1,
        take_over: None,
    })?;
    assert_eq!(lease.fence, 1);
    store.save_step(&StepSave {
        history: &[entry("old", "b")],
        lease: Some(&lease),
        ..step("old", RunStatus::Running, &old.state)
    })?;
    assert_eq!(store.history("old")?.last().map(|e| e.seq), Some(2));
    Ok(())
}

/// The store conformance suite (`stepflow_testkit::store`): every trait-level behaviour, on a
/// new database file per test.
mod conformance {
    use stepflow_store::{SqliteStore, Store};
    use stepflow_testkit::store::{Backend, Opener};

    /// SQLite as a backend under test: each database is a file in its own temporary directory,
    /// which the opener keeps (and removes once the test drops it).
    struct Sqlite;

    impl Backend for Sqlite {
        fn fresh(&self) -> Option<Opener> {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("stepflow.db");
            Some(Box::new(move || -> Box<dyn Store> {
                let _keep = &dir;
                Box::new(
                    SqliteStore::open(&path)
                        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
                )
            }))
        }
    }

    fn backend() -> impl Backend {
        Sqlite
    }

    stepflow_testkit::store_conformance!(backend());
}

// More tests of this binary, one file per subject (one binary: one link, shared helpers).
#[path = "sqlite/batch.rs"]
mod batch;
#[path = "sqlite/checksums.rs"]
mod checksums;
#[path = "sqlite/deployments.rs"]
mod deployments;
#[path = "sqlite/due.rs"]
mod due;
#[path = "sqlite/handlers.rs"]
mod handlers;
#[path = "sqlite/read_only.rs"]
mod read_only;
#[path = "sqlite/signals.rs"]
mod signals;
