//! `data_version` through a read-only store, which SQLite opens `immutable` when nobody has the
//! file open (which runs are due, and `data_version` for a writer, are in the conformance
//! suite).

use super::*;

/// A read-only store notices other connections' commits through `data_version` too (the
/// conformance suite checks a writer's).
#[test]
fn a_read_only_store_notices_other_connections_commits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut server = SqliteStore::open(&path)?;
    server.create_run(&record("own", 1, RunStatus::Running))?;
    let reader = SqliteStore::open_read_only(&path)?;
    let r0 = reader.data_version()?;
    assert_eq!(reader.data_version()?, r0, "nothing happened");

    // `stepflow submit` in another process.
    let mut submit = SqliteStore::open(&path)?;
    submit.create_run(&record("submitted", 2, RunStatus::Running))?;
    let r1 = reader.data_version()?;
    assert_ne!(r1, r0, "a reader notices");
    submit.set_status("submitted", RunStatus::Cancelled)?;
    assert_ne!(reader.data_version()?, r1);
    Ok(())
}

#[test]
fn a_read_only_store_that_reopens_still_sees_the_version_change() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    {
        let mut store = SqliteStore::open(&path)?;
        store.create_run(&record("a", 1, RunStatus::Running))?;
    }
    // Nobody has the file open: the reader reads it immutable, and must reopen to see a change.
    let reader = SqliteStore::open_read_only(&path)?;
    let r0 = reader.data_version()?;
    {
        let mut store = SqliteStore::open(&path)?;
        store.create_run(&record("b", 2, RunStatus::Running))?;
    }
    assert_ne!(reader.data_version()?, r0);
    assert_eq!(reader.runs(None, 10)?.len(), 2);
    Ok(())
}
