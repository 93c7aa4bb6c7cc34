//! Deployments: stored once by id with their plugins' bytes (checked against their hashes),
//! found by a unique prefix, listed with their runs; runs refer to one, are filtered by it,
//! and move to another under their lease.

use std::sync::Arc;

use stepflow_store::{
    Deployment, DeploymentInfo, FlowInfo, Lease, RunFilter, RunRecord, RunStatus, StepSave,
    StoreError, Subject,
};

use super::fixtures::{claim, deployment, entry, plugin, record, run_of, sha256, step};
use super::{CaseResult, Opener};

/// A deployment reads back as stored (by another connection too); storing its id again is
/// `Ok(false)` and keeps the first; one without plugins is a deployment too.
pub fn a_deployment_round_trips_and_storing_it_again_is_a_no_op(open: &Opener) -> CaseResult {
    let mut store = open();
    let d = deployment(
        "f.v1",
        "name: f.v1\n",
        vec![
            plugin("greet", b"\0asm greet"),
            plugin("count", b"\0asm count"),
        ],
    );
    assert!(store.put_deployment(&d)?, "new");
    assert_eq!(store.deployment(&d.id)?, d, "reads back as stored");

    let again = Deployment {
        created_ms: d.created_ms + 5,
        ..d.clone()
    };
    assert!(!store.put_deployment(&again)?, "stored already");
    assert_eq!(
        store.deployment(&d.id)?.created_ms,
        d.created_ms,
        "the first is kept"
    );

    // A deployment without plugins is a deployment too.
    let bare = deployment("g.v1", "name: g.v1\n", Vec::new());
    assert!(store.put_deployment(&bare)?, "new");
    assert_eq!(store.deployment(&bare.id)?, bare, "reads back");
    // And another connection sees both.
    let reader = open();
    assert_eq!(reader.deployment(&d.id)?, d, "read by another connection");
    assert_eq!(reader.deployments(None, 10)?.len(), 2, "both listed");
    Ok(())
}

/// Deployments that share plugin bytes (under other names, or twice in one deployment) each
/// read back whole.
pub fn deployments_sharing_plugin_bytes_read_back_whole(open: &Opener) -> CaseResult {
    let mut store = open();
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
    let c = deployment(
        "h.v1",
        "v3",
        vec![plugin("x", &shared), plugin("y", &shared)],
    );
    for d in [&a, &b, &c] {
        assert!(store.put_deployment(d)?, "{} is new", d.source);
    }
    for d in [&a, &b, &c] {
        assert_eq!(&store.deployment(&d.id)?, d, "{} reads back", d.source);
    }
    Ok(())
}

/// Plugin bytes that do not hash to their `sha256`, and ids or hashes not in the form of 64
/// lower-case hex digits, are [`StoreError::Invalid`] for the deployment, and nothing is
/// stored.
pub fn bytes_that_do_not_match_their_sha256_are_refused_and_nothing_is_stored(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
    let mut wrong = plugin("greet", b"the bytes built");
    wrong.bytes = Arc::from(&b"other bytes"[..]);
    let d = deployment("f.v1", "v1", vec![plugin("ok", b"fine"), wrong]);
    let err = store.put_deployment(&d).expect_err("a hash mismatch");
    match &err {
        StoreError::Invalid {
            subject,
            id,
            detail,
        } => {
            assert_eq!(
                (*subject, id.as_str()),
                (Subject::Deployment, d.id.as_str()),
                "names the deployment"
            );
            assert!(
                detail.contains("greet") && detail.contains(&sha256(b"other bytes")),
                "names the plugin and the hash of its bytes: {detail}"
            );
        }
        other => panic!("not Invalid: {other:?}"),
    }

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
            "{}: {err:?}",
            bad.id
        );
    }
    assert_eq!(store.deployments(None, 10)?, vec![], "nothing listed");
    assert_eq!(store.flows()?, vec![], "no flow");
    let err = store.deployment(&d.id).expect_err("not stored");
    assert!(matches!(err, StoreError::NoDeployment { .. }), "{err:?}");
    Ok(())
}

/// A prefix of at least 8 hex digits (either case) that one id starts with finds it; one that
/// several start with is [`StoreError::AmbiguousDeployment`] listing them; shorter, not hex or
/// matching nothing is [`StoreError::NoDeployment`].
pub fn a_unique_prefix_finds_a_deployment_and_an_ambiguous_one_lists_the_matches(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
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
    assert_eq!(store.deployment("12345678")?.id, c.id, "8 digits");
    assert_eq!(store.deployment(&c.id[..20])?.id, c.id, "20 digits");
    assert_eq!(
        store.deployment("ABCDEF011")?.id,
        a.id,
        "hex in either case"
    );
    assert_eq!(store.deployment(&b.id)?.id, b.id, "the whole id");

    let err = store.deployment("abcdef01").expect_err("two match");
    match &err {
        StoreError::AmbiguousDeployment {
            prefix, matches, ..
        } => {
            assert_eq!(prefix, "abcdef01", "the prefix");
            assert_eq!(matches, &vec![a.id.clone(), b.id.clone()], "the matches");
        }
        other => panic!("not AmbiguousDeployment: {other:?}"),
    }

    // Shorter than 8, not hex, or matching nothing: no deployment.
    for unknown in [
        "1234567",
        "abcdef0z",
        "ffffffff",
        "",
        "abcdef01*",
        "%",
        "abcdef01_",
    ] {
        let err = store.deployment(unknown).expect_err("no such deployment");
        assert!(
            matches!(&err, StoreError::NoDeployment { id, .. } if id == unknown),
            "`{unknown}`: {err:?}"
        );
    }
    Ok(())
}

/// `deployments` lists newest first, optionally of one flow, at most `limit`, each with how
/// many runs use it; `flows` lists each flow with its deployments, newest one and runs.
pub fn deployments_are_listed_newest_first_by_flow_with_their_run_counts(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
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
    store.create_run(&RunRecord {
        flow: "h.v1".into(),
        ..record("before-deployments", 4, RunStatus::Waiting)
    })?;

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
        vec![info(&other, 0), info(&new, 2), info(&old, 1)],
        "every deployment"
    );
    assert_eq!(
        store.deployments(Some("f.v1"), 10)?,
        vec![info(&new, 2), info(&old, 1)],
        "of one flow"
    );
    assert_eq!(
        store.deployments(Some("f.v1"), 1)?,
        vec![info(&new, 2)],
        "at most the limit"
    );
    assert_eq!(
        store.deployments(Some("nope"), 10)?,
        vec![],
        "an unknown flow"
    );

    let flows = store.flows()?;
    let flow = |name: &str| flows.iter().find(|f| f.name == name).cloned();
    assert_eq!(
        flows.len(),
        2,
        "two flows have deployments (h.v1 has a run only): {flows:?}"
    );
    assert_eq!(
        flow("f.v1"),
        Some(FlowInfo {
            name: "f.v1".into(),
            deployments: 2,
            latest_deployment: new.id.clone(),
            latest_ms: 20,
            runs: 3,
        }),
        "f.v1"
    );
    assert_eq!(
        flow("g.v1"),
        Some(FlowInfo {
            name: "g.v1".into(),
            deployments: 1,
            latest_deployment: other.id.clone(),
            latest_ms: 30,
            runs: 0,
        }),
        "g.v1"
    );
    Ok(())
}

/// A run keeps the deployment it was created with; `create_run` with an unknown deployment is
/// [`StoreError::NoDeployment`] and creates nothing; listings filter by deployment.
pub fn runs_refer_to_their_deployment_and_are_filtered_by_it(open: &Opener) -> CaseResult {
    let mut store = open();
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
    assert_eq!(
        store.run("a")?.deployment.as_deref(),
        Some(d1.id.as_str()),
        "a's deployment"
    );
    assert_eq!(store.run("g")?.deployment, None, "g has none");

    // An unknown deployment is refused, and no run is created.
    let err = store
        .create_run(&run_of("x", 5, &"f".repeat(64)))
        .expect_err("unknown deployment");
    assert!(
        matches!(&err, StoreError::NoDeployment { id, .. } if *id == "f".repeat(64)),
        "{err:?}"
    );
    assert!(
        matches!(store.run("x"), Err(StoreError::NotFound { .. })),
        "no run was created"
    );

    let ids = |filter: RunFilter| -> Result<Vec<String>, StoreError> {
        Ok(store
            .runs_where(&filter)?
            .into_iter()
            .map(|r| r.id)
            .collect())
    };
    assert_eq!(
        ids(RunFilter::default())?,
        ["g", "c", "b", "a"],
        "every run"
    );
    assert_eq!(
        ids(RunFilter {
            deployment: Some(d2.id.clone()),
            ..RunFilter::default()
        })?,
        ["c", "b"],
        "of d2"
    );
    assert_eq!(
        ids(RunFilter {
            deployment: Some(d2.id.clone()),
            status: Some(RunStatus::Waiting),
            ..RunFilter::default()
        })?,
        ["c"],
        "of d2, waiting"
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("f.v1".into()),
            limit: 2,
            ..RunFilter::default()
        })?,
        ["c", "b"],
        "of f.v1, at most 2"
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("g.v1".into()),
            deployment: Some(d1.id.clone()),
            ..RunFilter::default()
        })?,
        Vec::<String>::new(),
        "filters that exclude each other"
    );
    assert_eq!(RunFilter::default().limit, 50, "the default limit");
    // `runs` is `runs_where` with a status and a limit.
    assert_eq!(
        store.runs(Some(RunStatus::Waiting), 10)?,
        store.runs_where(&RunFilter {
            status: Some(RunStatus::Waiting),
            limit: 10,
            ..RunFilter::default()
        })?,
        "runs is runs_where"
    );
    Ok(())
}

/// `move_run` points a run at another deployment of its flow and a new definition under its
/// lease, keeping its state; a stale lease ([`StoreError::LeaseLost`]), another flow's
/// deployment or another run's lease ([`StoreError::Invalid`]), an unknown deployment
/// ([`StoreError::NoDeployment`]) and a completed or cancelled run
/// ([`StoreError::Finished`]) change nothing; a failed run moves.
pub fn move_run_points_a_run_at_another_deployment_under_its_lease(open: &Opener) -> CaseResult {
    let mut store = open();
    let d1 = deployment("f.v1", "f1", Vec::new());
    let d2 = deployment("f.v1", "f2", Vec::new());
    let g = deployment("g.v1", "g1", Vec::new());
    for d in [&d1, &d2, &g] {
        store.put_deployment(d)?;
    }
    store.create_run(&run_of("r", 1, &d1.id))?;
    let before = store.run("r")?;
    let lease = store.claim(&claim("r", "host-a", 1_000, 60_000))?;

    store.move_run("r", &d2.id, "def-2", &lease)?;
    let moved = open().run("r")?;
    assert_eq!(
        moved.deployment.as_deref(),
        Some(d2.id.as_str()),
        "the new deployment"
    );
    assert_eq!(moved.definition, "def-2", "the new definition");
    assert_eq!(moved.state, before.state, "the state is kept");
    assert_eq!(
        moved.lease.as_ref().map(|l| l.fence),
        Some(lease.fence),
        "the lease is kept"
    );
    // And saves go on as before.
    store.save_step(&StepSave {
        history: &[entry("r", "a")],
        lease: Some(&lease),
        ..step("r", RunStatus::Waiting, &before.state)
    })?;
    assert_eq!(store.run("r")?.definition, "def-2", "kept by a save");

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
            if detail.contains("g.v1") && detail.contains("f.v1")),
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
        .expect_err("a lease of another run");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let kept = store.run("r")?;
    assert_eq!(
        (kept.deployment.as_deref(), kept.definition.as_str()),
        (Some(d2.id.as_str()), "def-2"),
        "the refusals changed nothing"
    );

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
        }
    }
    assert_eq!(
        store.run("r")?.deployment.as_deref(),
        Some(d1.id.as_str()),
        "moved while failed, not after"
    );
    Ok(())
}
