//! Deployments: stored once by id, plugin bytes once per SHA-256 and checked on the way in and
//! out, found by a unique prefix, listed with their runs; runs refer to one, are filtered by
//! it, and move to another under their lease.

use sha2::{Digest, Sha256};

use super::*;
use stepflow_store::{
    Claim, DeployedPlugin, Deployment, DeploymentInfo, Lease, RunFilter, Subject,
};

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn plugin(name: &str, bytes: &[u8]) -> DeployedPlugin {
    DeployedPlugin {
        name: name.into(),
        sha256: sha256(bytes),
        bytes: Arc::from(bytes),
    }
}

/// A deployment of flow `flow` whose id is the SHA-256 of `source` (the store only checks the
/// form of an id; the caller decides what it hashes).
fn deployment(flow: &str, source: &str, plugins: Vec<DeployedPlugin>) -> Deployment {
    Deployment {
        id: sha256(source.as_bytes()),
        flow: flow.into(),
        source: source.into(),
        source_path: format!("/flows/{flow}.yaml"),
        plugins,
        created_ms: 1_700_000_000_000,
    }
}

/// A run of flow `f.v1` that uses deployment `id`.
fn run_of(id: &str, created_ms: u64, deployment_id: &str) -> RunRecord {
    RunRecord {
        deployment: Some(deployment_id.into()),
        ..record(id, created_ms, RunStatus::Waiting)
    }
}

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

#[test]
fn a_deployment_round_trips_and_storing_it_again_writes_nothing() -> TestResult {
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
    assert_eq!(store.deployment(&d.id)?, d);

    let again = Deployment {
        created_ms: d.created_ms + 5,
        ..d.clone()
    };
    assert!(!store.put_deployment(&again)?, "stored already");
    assert_eq!(store.deployment(&d.id)?.created_ms, d.created_ms);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM deployments")?, 1);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM blobs")?, 2);

    // A deployment without plugins is a deployment too.
    let bare = deployment("g.v1", "name: g.v1\n", Vec::new());
    assert!(store.put_deployment(&bare)?);
    assert_eq!(store.deployment(&bare.id)?, bare);
    // And a reader sees both.
    let reader = SqliteStore::open_read_only(&path)?;
    assert_eq!(reader.deployment(&d.id)?, d);
    assert_eq!(reader.deployments(None, 10)?.len(), 2);
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
    for d in [&a, &b, &c] {
        assert_eq!(&store.deployment(&d.id)?, d);
    }
    Ok(())
}

#[test]
fn bytes_that_do_not_match_their_sha256_are_refused_and_nothing_is_written() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let mut wrong = plugin("greet", b"the bytes built");
    wrong.bytes = Arc::from(&b"other bytes"[..]);
    let d = deployment("f.v1", "v1", vec![plugin("ok", b"fine"), wrong]);
    let err = store.put_deployment(&d).expect_err("a hash mismatch");
    match &err {
        StoreError::Invalid {
            subject,
            id,
            detail,
            ..
        } => {
            assert_eq!(
                (*subject, id.as_str()),
                (Subject::Deployment, d.id.as_str())
            );
            assert!(detail.contains(&sha256(b"other bytes")), "{detail}");
        }
        other => panic!("not Invalid: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot save deployment `{}`", d.id))
            && message.contains("plugin `greet`"),
        "{message}"
    );
    assert_store_terms(&message);

    // Ids and hashes in another form than 64 lower-case hex digits.
    let upper = Deployment {
        id: d.id.to_uppercase(),
        plugins: Vec::new(),
        ..d.clone()
    };
    let short = Deployment {
        id: "abc".into(),
        ..upper.clone()
    };
    let mut bad_hash = plugin("p", b"p");
    bad_hash.sha256 = bad_hash.sha256.to_uppercase();
    let bad_plugin = Deployment {
        plugins: vec![bad_hash],
        ..deployment("f.v1", "v2", Vec::new())
    };
    for bad in [upper, short, bad_plugin] {
        let err = store.put_deployment(&bad).expect_err("not the stored form");
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
    }
    for table in ["deployments", "deployment_plugins", "blobs"] {
        assert_eq!(count(&path, &format!("SELECT COUNT(*) FROM {table}"))?, 0);
    }
    Ok(())
}

#[test]
fn a_unique_prefix_finds_a_deployment_and_an_ambiguous_one_lists_the_matches() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let with_id = |id: String, source: &str| Deployment {
        id,
        ..deployment("f.v1", source, Vec::new())
    };
    let a = with_id(format!("abcdef01{}", "1".repeat(56)), "a");
    let b = with_id(format!("abcdef01{}", "2".repeat(56)), "b");
    let c = with_id(format!("12345678{}", "3".repeat(56)), "c");
    for d in [&a, &b, &c] {
        store.put_deployment(d)?;
    }
    assert_eq!(store.deployment("12345678")?.id, c.id);
    assert_eq!(store.deployment(&c.id[..20])?.id, c.id);
    assert_eq!(
        store.deployment("ABCDEF011")?.id,
        a.id,
        "hex in either case"
    );
    assert_eq!(store.deployment(&b.id)?.id, b.id);

    let err = store.deployment("abcdef01").expect_err("two match");
    match &err {
        StoreError::AmbiguousDeployment {
            prefix, matches, ..
        } => {
            assert_eq!(prefix, "abcdef01");
            assert_eq!(matches, &vec![a.id.clone(), b.id.clone()]);
        }
        other => panic!("not AmbiguousDeployment: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("`abcdef01`")
            && message.contains("matches 2 deployments")
            && message.contains(&a.id)
            && message.contains(&b.id)
            && message.contains("stepflow.db"),
        "{message}"
    );
    assert_store_terms(&message);

    // Shorter than 8, not hex, or matching nothing: no deployment.
    for unknown in ["1234567", "abcdef0z", "ffffffff", "", "abcdef01*", "%"] {
        let err = store.deployment(unknown).expect_err("no such deployment");
        match &err {
            StoreError::NoDeployment { id, .. } => assert_eq!(id, unknown),
            other => panic!("{unknown}: not NoDeployment: {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("no deployment `{unknown}` in {}", path.display())
        );
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

#[test]
fn deployments_are_listed_newest_first_by_flow_with_their_run_counts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    let at = |d: Deployment, created_ms: u64| Deployment { created_ms, ..d };
    let old = at(deployment("f.v1", "f1", vec![plugin("p", b"p1")]), 10);
    let new = at(deployment("f.v1", "f2", vec![plugin("p", b"p2")]), 20);
    let other = at(deployment("g.v1", "g1", Vec::new()), 30);
    for d in [&old, &new, &other] {
        store.put_deployment(d)?;
    }
    store.create_run(&run_of("a", 1, &old.id))?;
    store.create_run(&run_of("b", 2, &new.id))?;
    store.create_run(&run_of("c", 3, &new.id))?;
    store.create_run(&record("before-deployments", 4, RunStatus::Waiting))?;

    let info = |d: &Deployment, runs: u64| DeploymentInfo {
        id: d.id.clone(),
        flow: d.flow.clone(),
        source_path: d.source_path.clone(),
        plugins: d
            .plugins
            .iter()
            .map(|p| (p.name.clone(), p.sha256.clone()))
            .collect(),
        created_ms: d.created_ms,
        runs,
    };
    assert_eq!(
        store.deployments(None, 10)?,
        vec![info(&other, 0), info(&new, 2), info(&old, 1)]
    );
    assert_eq!(
        store.deployments(Some("f.v1"), 10)?,
        vec![info(&new, 2), info(&old, 1)]
    );
    assert_eq!(store.deployments(Some("f.v1"), 1)?, vec![info(&new, 2)]);
    assert_eq!(store.deployments(Some("nope"), 10)?, vec![]);
    Ok(())
}

#[test]
fn runs_refer_to_their_deployment_and_are_filtered_by_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d1 = deployment("f.v1", "f1", Vec::new());
    let d2 = deployment("f.v1", "f2", Vec::new());
    store.put_deployment(&d1)?;
    store.put_deployment(&d2)?;
    store.create_run(&run_of("a", 1, &d1.id))?;
    store.create_run(&RunRecord {
        status: RunStatus::Running,
        ..run_of("b", 2, &d2.id)
    })?;
    store.create_run(&run_of("c", 3, &d2.id))?;
    store.create_run(&RunRecord {
        flow: "g.v1".into(),
        ..record("g", 4, RunStatus::Waiting)
    })?;
    assert_eq!(store.run("a")?.deployment.as_deref(), Some(d1.id.as_str()));
    assert_eq!(store.run("g")?.deployment, None);

    // An unknown deployment is refused, and no run is created.
    let err = store
        .create_run(&run_of("x", 5, &"f".repeat(64)))
        .expect_err("unknown deployment");
    assert!(
        matches!(&err, StoreError::NoDeployment { id, .. } if *id == "f".repeat(64)),
        "{err:?}"
    );
    assert!(matches!(store.run("x"), Err(StoreError::NotFound { .. })));

    let ids = |filter: RunFilter| -> Result<Vec<String>, StoreError> {
        Ok(store
            .runs_where(&filter)?
            .into_iter()
            .map(|r| r.id)
            .collect())
    };
    assert_eq!(ids(RunFilter::default())?, ["g", "c", "b", "a"]);
    assert_eq!(
        ids(RunFilter {
            deployment: Some(d2.id.clone()),
            ..RunFilter::default()
        })?,
        ["c", "b"]
    );
    assert_eq!(
        ids(RunFilter {
            deployment: Some(d2.id.clone()),
            status: Some(RunStatus::Waiting),
            ..RunFilter::default()
        })?,
        ["c"]
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("f.v1".into()),
            limit: 2,
            ..RunFilter::default()
        })?,
        ["c", "b"]
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("g.v1".into()),
            deployment: Some(d1.id.clone()),
            ..RunFilter::default()
        })?,
        Vec::<String>::new()
    );
    assert_eq!(RunFilter::default().limit, 50);
    // `runs` is `runs_where` with a status and a limit.
    assert_eq!(
        store.runs(Some(RunStatus::Waiting), 10)?,
        store.runs_where(&RunFilter {
            status: Some(RunStatus::Waiting),
            limit: 10,
            ..RunFilter::default()
        })?
    );

    // A run's deployment is covered by its checksum: changing it by hand is seen.
    Connection::open(&path)?.execute("UPDATE runs SET deployment = ?1 WHERE id = 'a'", [&d2.id])?;
    let err = store.run("a").expect_err("an edited deployment");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    Connection::open(&path)?.execute("UPDATE runs SET deployment = NULL WHERE id = 'c'", [])?;
    let err = store.run("c").expect_err("a cleared deployment");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    Ok(())
}

#[test]
fn move_run_points_a_run_at_another_deployment_under_its_lease() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut store = SqliteStore::open(&path)?;
    let d1 = deployment("f.v1", "f1", Vec::new());
    let d2 = deployment("f.v1", "f2", Vec::new());
    let g = deployment("g.v1", "g1", Vec::new());
    for d in [&d1, &d2, &g] {
        store.put_deployment(d)?;
    }
    store.create_run(&run_of("r", 1, &d1.id))?;
    let before = store.run("r")?;
    let lease = store.claim(&claim("r", "host-a"))?;

    store.move_run("r", &d2.id, "def-2", &lease)?;
    let moved = store.run("r")?; // its checksum is valid
    assert_eq!(moved.deployment.as_deref(), Some(d2.id.as_str()));
    assert_eq!(moved.definition, "def-2");
    assert_eq!(moved.state, before.state, "the state is kept");
    assert_eq!(moved.lease.as_ref().map(|l| l.fence), Some(lease.fence));
    // And saves go on as before.
    store.save_step(&StepSave {
        history: Some(&entry("r", "a")),
        lease: Some(&lease),
        ..step("r", RunStatus::Waiting, &before.state)
    })?;
    assert_eq!(store.run("r")?.definition, "def-2");

    // Refused, and nothing changed: a stale lease, another flow's deployment, an unknown one.
    let stale = Lease {
        fence: lease.fence - 1,
        ..lease.clone()
    };
    let err = store
        .move_run("r", &d1.id, "def-1", &stale)
        .expect_err("stale");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = store
        .move_run("r", &g.id, "def-g", &lease)
        .expect_err("another flow");
    assert!(
        matches!(&err, StoreError::Invalid { subject: Subject::Run, detail, .. }
            if detail.contains("`g.v1`") && detail.contains("`f.v1`")),
        "{err:?}"
    );
    let unknown = "0".repeat(64);
    let err = store
        .move_run("r", &unknown, "x", &lease)
        .expect_err("unknown");
    assert!(
        matches!(&err, StoreError::NoDeployment { id, .. } if *id == unknown),
        "{err:?}"
    );
    let err = store
        .move_run("nope", &d1.id, "x", &lease)
        .expect_err("unknown run");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.run("r")?.deployment.as_deref(), Some(d2.id.as_str()));
    assert_eq!(store.run("r")?.definition, "def-2");

    // A damaged row is not overwritten.
    let raw = Connection::open(&path)?;
    raw.execute(
        "UPDATE runs SET flow_file = '/elsewhere.yaml' WHERE id = 'r'",
        [],
    )?;
    let err = store
        .move_run("r", &d1.id, "def-1", &lease)
        .expect_err("damaged");
    assert!(matches!(err, StoreError::Checksum { .. }), "{err:?}");
    raw.execute(
        "UPDATE runs SET flow_file = '/flows/f.yaml' WHERE id = 'r'",
        [],
    )?;

    // Completed and cancelled runs stay where they are; a failed one moves.
    for (status, movable) in [
        (RunStatus::Failed, true),
        (RunStatus::Completed, false),
        (RunStatus::Cancelled, false),
    ] {
        store.set_status("r", status)?;
        let result = store.move_run("r", &d1.id, "def-1", &lease);
        if movable {
            result?;
        } else {
            let err = result.expect_err("finished");
            assert!(
                matches!(&err, StoreError::Finished { status: s, .. } if *s == status),
                "{err:?}"
            );
            assert!(err.to_string().contains("moved"), "{err}");
        }
    }
    assert_eq!(store.run("r")?.deployment.as_deref(), Some(d1.id.as_str()));
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
