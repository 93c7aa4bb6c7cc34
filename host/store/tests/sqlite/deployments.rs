//! Deployments in a SQLite file: plugin bytes stored once per SHA-256, nothing stored for a
//! refused deployment, damaged bytes and rows seen by their hashes and checksums, and an older
//! database without deployments (the trait-level rules are in the conformance suite).

use super::*;
use stepflow_store::{Claim, Deployment, RunFilter, Subject};
use stepflow_testkit::store::fixtures::{deployment, plugin, run_of, sha256};

fn count(path: &Path, sql: &str) -> Result<i64, rusqlite::Error> {
    Connection::open(path)?.query_row(sql, [], |r| r.get(0))
}

fn claim<'a>(run_id: &'a str, owner: &'a str) -> Claim<'a> {
    Claim {
        run_id,
        owner,
        ttl_ms: 60_000,
        now_ms: 1_000,
        take_over: None,
    }
}

/// A deployment stored again writes no row: one deployment row, one blob per plugin; a
/// read-only store reads it (the conformance suite checks the round trip).
#[test]
fn storing_a_deployment_again_writes_no_row() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d = deployment(
        "f.v1",
        "name: f.v1\n",
        vec![
            plugin("greet", b"\0asm greet"),
            plugin("count", b"\0asm count"),
        ],
    );
    assert!(store.put_deployment(&d)?, "new");
    let again = Deployment {
        created_ms: d.created_ms + 5,
        ..d.clone()
    };
    assert!(!store.put_deployment(&again)?, "stored already");
    assert_eq!(count(&path, "SELECT COUNT(*) FROM deployments")?, 1);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM blobs")?, 2);
    let reader = SqliteStore::open_read_only(&path)?;
    assert_eq!(reader.deployment(&d.id)?, d);
    assert_eq!(reader.deployments(None, 10)?.len(), 1);
    Ok(())
}

#[test]
fn plugin_bytes_shared_by_deployments_are_stored_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let shared = vec![7u8; 100_000];
    let a = deployment(
        "f.v1",
        "v1",
        vec![plugin("big", &shared), plugin("a", b"only a")],
    );
    let b = deployment(
        "f.v1",
        "v2",
        vec![plugin("big", &shared), plugin("b", b"only b")],
    );
    // Under another name, in the same deployment twice: still one copy.
    let c = deployment(
        "h.v1",
        "v3",
        vec![plugin("x", &shared), plugin("y", &shared)],
    );
    for d in [&a, &b, &c] {
        assert!(store.put_deployment(d)?);
    }
    assert_eq!(count(&path, "SELECT COUNT(*) FROM blobs")?, 3);
    assert_eq!(
        count(&path, "SELECT SUM(length(bytes)) FROM blobs")?,
        100_000 + 6 + 6
    );
    Ok(())
}

/// A deployment whose plugin's bytes do not match their hash leaves no row in any table, not
/// even the blob of the plugin that was fine (the conformance suite checks the refusal).
#[test]
fn a_refused_deployment_leaves_no_row_in_any_table() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let mut wrong = plugin("greet", b"the bytes built");
    wrong.bytes = Arc::from(&b"other bytes"[..]);
    let d = deployment("f.v1", "v1", vec![plugin("ok", b"fine"), wrong]);
    let err = store.put_deployment(&d).expect_err("a hash mismatch");
    assert!(
        matches!(
            err,
            StoreError::Invalid {
                subject: Subject::Deployment,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot save deployment `{}`", d.id))
            && message.contains("plugin `greet`"),
        "{message}"
    );
    assert_store_terms(&message);
    for table in ["deployments", "deployment_plugins", "blobs"] {
        assert_eq!(count(&path, &format!("SELECT COUNT(*) FROM {table}"))?, 0);
    }
    Ok(())
}

#[test]
fn damaged_plugin_bytes_or_rows_are_reported_naming_the_deployment_and_plugin() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d = deployment(
        "f.v1",
        "v1",
        vec![plugin("ok", b"fine"), plugin("greet", b"\0asm 100")],
    );
    store.put_deployment(&d)?;
    let raw = Connection::open(&path)?;

    // One flipped bit in a plugin's bytes.
    let greet = sha256(b"\0asm 100");
    raw.execute(
        "UPDATE blobs SET bytes = ?2 WHERE sha256 = ?1",
        rusqlite::params![greet, b"\0asm 900".to_vec()],
    )?;
    let err = store.deployment(&d.id).expect_err("damaged bytes");
    match &err {
        StoreError::DeploymentChecksum {
            id,
            part,
            stored,
            computed,
            ..
        } => {
            assert_eq!(id, &d.id);
            assert!(part.contains("plugin `greet`"), "{part}");
            assert_eq!(stored, &greet);
            assert_eq!(computed, &sha256(b"\0asm 900"));
        }
        other => panic!("not DeploymentChecksum: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&format!("deployment `{}`", d.id)) && message.contains("`greet`"),
        "{message}"
    );
    assert_store_terms(&message);
    // The listing reads no bytes, so it still works.
    assert_eq!(store.deployments(None, 10)?.len(), 1);

    // Bytes missing altogether (a hand edit with foreign keys off).
    raw.execute_batch("PRAGMA foreign_keys = OFF")?;
    raw.execute("DELETE FROM blobs WHERE sha256 = ?1", [&greet])?;
    let err = store.deployment(&d.id).expect_err("missing bytes");
    assert!(
        matches!(&err, StoreError::BadDeployment { column, .. } if column.contains("`greet`")),
        "{err:?}"
    );

    // An edited source: the row's checksum, in the listing too.
    raw.execute(
        "UPDATE deployments SET source = 'v2' WHERE id = ?1",
        [&d.id],
    )?;
    for err in [
        store.deployment(&d.id).map(drop).expect_err("edited row"),
        store
            .deployments(None, 10)
            .map(drop)
            .expect_err("edited row"),
    ] {
        assert!(
            matches!(&err, StoreError::DeploymentChecksum { part, .. } if part.contains("row")),
            "{err:?}"
        );
    }
    // A plugin removed from the list is seen by the same checksum.
    raw.execute(
        "UPDATE deployments SET source = 'v1' WHERE id = ?1",
        [&d.id],
    )?;
    raw.execute(
        "DELETE FROM deployment_plugins WHERE deployment = ?1 AND name = 'greet'",
        [&d.id],
    )?;
    let err = store.deployment(&d.id).expect_err("a plugin row removed");
    assert!(
        matches!(&err, StoreError::DeploymentChecksum { .. }),
        "{err:?}"
    );
    // A value of the wrong type is an error, not a panic.
    raw.execute_batch("UPDATE deployments SET checksum = NULL")?;
    raw.execute_batch("PRAGMA writable_schema = ON")?;
    raw.execute(
        "UPDATE sqlite_schema SET sql = replace(sql, ') STRICT', ')') WHERE name = 'deployments'",
        [],
    )?;
    drop(raw);
    let raw = Connection::open(&path)?;
    raw.execute(
        "UPDATE deployments SET created_ms = 'soon' WHERE id = ?1",
        [&d.id],
    )?;
    let store = SqliteStore::open(&path)?;
    let err = store.deployment(&d.id).expect_err("text in created_ms");
    assert!(
        matches!(&err, StoreError::BadDeployment { column, .. } if column == "created_ms"),
        "{err:?}"
    );
    Ok(())
}

/// A run's deployment is covered by its row's checksum: changing or clearing it by hand is
/// seen.
#[test]
fn a_runs_deployment_is_covered_by_its_checksum() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d1 = deployment("f.v1", "f1", Vec::new());
    let d2 = deployment("f.v1", "f2", Vec::new());
    store.put_deployment(&d1)?;
    store.put_deployment(&d2)?;
    store.create_run(&run_of("a", 1, &d1.id))?;
    store.create_run(&run_of("c", 3, &d2.id))?;
    Connection::open(&path)?.execute("UPDATE runs SET deployment = ?1 WHERE id = 'a'", [&d2.id])?;
    let err = store.run("a").expect_err("an edited deployment");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    Connection::open(&path)?.execute("UPDATE runs SET deployment = NULL WHERE id = 'c'", [])?;
    let err = store.run("c").expect_err("a cleared deployment");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    Ok(())
}

/// `move_run` does not overwrite a run whose row was edited by hand ([`StoreError::Checksum`]);
/// repaired, the run moves, and its row's checksum is valid after the move (the conformance
/// suite checks the other rules).
#[test]
fn move_run_does_not_overwrite_a_damaged_row() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d1 = deployment("f.v1", "f1", Vec::new());
    let d2 = deployment("f.v1", "f2", Vec::new());
    for d in [&d1, &d2] {
        store.put_deployment(d)?;
    }
    store.create_run(&run_of("r", 1, &d1.id))?;
    let lease = store.claim(&claim("r", "host-a"))?;
    let raw = Connection::open(&path)?;
    raw.execute(
        "UPDATE runs SET flow_file = '/elsewhere.yaml' WHERE id = 'r'",
        [],
    )?;
    let err = store
        .move_run("r", &d2.id, "def-2", &lease)
        .expect_err("damaged");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    let flow_file: String =
        raw.query_row("SELECT flow_file FROM runs WHERE id = 'r'", [], |r| {
            r.get(0)
        })?;
    assert_eq!(flow_file, "/elsewhere.yaml", "not overwritten");
    raw.execute(
        "UPDATE runs SET flow_file = '/flows/f.yaml' WHERE id = 'r'",
        [],
    )?;
    store.move_run("r", &d2.id, "def-2", &lease)?;
    // A new connection, with nothing cached, checks the moved row's checksum.
    let moved = SqliteStore::open(&path)?.run("r")?;
    assert_eq!(moved.deployment.as_deref(), Some(d2.id.as_str()));
    Ok(())
}

#[test]
fn an_older_database_read_only_has_no_deployments() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    version_1_database(&path)?;
    let reader = SqliteStore::open_read_only(&path)?;
    let id = "a".repeat(64);
    assert!(matches!(
        reader.deployment(&id),
        Err(StoreError::NoDeployment { .. })
    ));
    assert_eq!(reader.deployments(None, 10)?, vec![]);
    assert_eq!(reader.run("old")?.deployment, None);
    assert_eq!(
        reader
            .runs_where(&RunFilter {
                deployment: Some(id),
                ..RunFilter::default()
            })?
            .len(),
        0
    );
    assert_eq!(reader.runs_where(&RunFilter::default())?.len(), 1);
    assert_eq!(reader.next_due_ms(0)?, None);

    // Migrated, the same database takes deployments, and its old run keeps its place.
    let mut store = SqliteStore::open(&path)?;
    let d = deployment("f.v1", "f1", Vec::new());
    assert!(store.put_deployment(&d)?);
    assert_eq!(store.run("old")?.deployment, None);
    assert_eq!(store.next_due_ms(0)?, Some(42));
    Ok(())
}
