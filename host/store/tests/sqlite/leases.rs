//! Leases: one driver per run, whatever path or connection reached the file; the fence every
//! save checks; renewal, release, take-over and two claimers racing.

use std::sync::{Arc, Barrier};

use super::*;
use stepflow_store::{Claim, Lease, LeaseInfo};

/// A claim of `run_id` by `owner` at `now_ms` for 100 ms, without take-over.
fn claim<'a>(run_id: &'a str, owner: &'a str, now_ms: u64) -> Claim<'a> {
    Claim {
        run_id,
        owner,
        ttl_ms: 100,
        now_ms,
        take_over: None,
    }
}

/// A save of one step of run `r` with `lease`, with a history entry.
fn save_with(store: &mut SqliteStore, lease: &Lease, state: &State) -> Result<(), StoreError> {
    let e = entry("r", "a");
    store.save_step(&StepSave {
        history: Some(&e),
        lease: Some(lease),
        ..step("r", RunStatus::Running, state)
    })
}

fn store_with_run(dir: &tempfile::TempDir) -> Result<SqliteStore, StoreError> {
    let mut store = SqliteStore::open(&db(dir))?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    Ok(store)
}

#[test]
fn a_live_lease_refuses_another_owner_until_it_expires() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    assert_eq!(
        a,
        Lease {
            run_id: "r".into(),
            owner: "host-a".into(),
            fence: 1,
            expires_ms: 1_100,
        }
    );

    let err = store
        .claim(&claim("r", "host-b", 1_099))
        .expect_err("host-a's lease is live");
    match &err {
        StoreError::Leased {
            run,
            owner,
            expires_ms,
        } => {
            assert_eq!(
                (run.as_str(), owner.as_str(), *expires_ms),
                ("r", "host-a", 1_100)
            );
        }
        other => panic!("not Leased: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("`r`") && message.contains("`host-a`") && message.contains("1100"),
        "{message}"
    );
    assert_store_terms(&message);
    assert_eq!(
        store.run("r")?.lease.map(|l| l.owner),
        Some("host-a".into())
    );

    // At its expiry (expires_ms <= now_ms) the lease is over, and host-b gets the run.
    let b = store.claim(&claim("r", "host-b", 1_100))?;
    assert_eq!(
        (b.owner.as_str(), b.fence, b.expires_ms),
        ("host-b", 2, 1_200)
    );
    Ok(())
}

#[test]
fn take_over_needs_the_name_of_the_current_holder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    store.claim(&claim("r", "host-a", 1_000))?;

    let wrong = Claim {
        take_over: Some("host-c"),
        ..claim("r", "host-b", 1_010)
    };
    let err = store
        .claim(&wrong)
        .expect_err("host-c does not hold the run");
    assert!(
        matches!(err, StoreError::Leased { ref owner, .. } if owner == "host-a"),
        "{err:?}"
    );

    let right = Claim {
        take_over: Some("host-a"),
        ..claim("r", "host-b", 1_010)
    };
    let b = store.claim(&right)?;
    assert_eq!((b.owner.as_str(), b.fence), ("host-b", 2));

    // A second taker that also saw host-a die loses: the swap is on the current owner.
    let late = Claim {
        take_over: Some("host-a"),
        ..claim("r", "host-c", 1_020)
    };
    let err = store.claim(&late).expect_err("host-b holds it now");
    assert!(
        matches!(err, StoreError::Leased { ref owner, .. } if owner == "host-b"),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn every_claim_increments_the_fence_and_listings_show_the_holder() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    assert_eq!(store.run("r")?.lease, None, "a new run is held by nobody");

    let first = store.claim(&claim("r", "host-a", 1_000))?;
    // The same owner may claim again (a restarted process): a new fence fences out the old.
    let second = store.claim(&claim("r", "host-a", 1_050))?;
    assert_eq!((first.fence, second.fence), (1, 2));
    let held = LeaseInfo {
        owner: "host-a".into(),
        expires_ms: 1_150,
        fence: 2,
    };
    assert_eq!(store.run("r")?.lease, Some(held.clone()));
    assert_eq!(store.runs(None, 10)?[0].lease, Some(held));

    let err = save_with(&mut store, &first, &State::default()).expect_err("fence 1 is stale");
    assert!(
        matches!(
            err,
            StoreError::LeaseLost { fence: 1, current_fence: 2, ref owner, .. }
                if owner.as_deref() == Some("host-a")
        ),
        "{err:?}"
    );
    save_with(&mut store, &second, &State::default())?;

    // Released, the run is held by nobody, but its fence is kept: the next claim gets 3.
    store.release(&second)?;
    assert_eq!(store.run("r")?.lease, None);
    let third = store.claim(&claim("r", "host-b", 1_060))?;
    assert_eq!(third.fence, 3);
    Ok(())
}

#[test]
fn a_save_with_a_stale_fence_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut a_store = store_with_run(&dir)?;
    let mut b_store = SqliteStore::open(&path)?;
    let a = a_store.claim(&claim("r", "host-a", 1_000))?;
    save_with(&mut a_store, &a, &state("b", json!({ "n": 1 })))?;
    let before = (a_store.run("r")?, a_store.history("r")?);

    // host-a stalls past its expiry; host-b claims the run.
    let b = b_store.claim(&claim("r", "host-b", 2_000))?;
    let err = save_with(&mut a_store, &a, &state("c", json!({ "n": 2 })))
        .expect_err("host-a lost the run");
    match &err {
        StoreError::LeaseLost {
            run,
            fence,
            current_fence,
            owner,
        } => {
            assert_eq!(run, "r");
            assert_eq!((*fence, *current_fence), (1, 2));
            assert_eq!(owner.as_deref(), Some("host-b"));
        }
        other => panic!("not LeaseLost: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("`r`")
            && message.contains("fence 1")
            && message.contains("`host-b`")
            && message.contains("nothing was changed"),
        "{message}"
    );
    assert_store_terms(&message);
    let mut after = (a_store.run("r")?, a_store.history("r")?);
    assert_eq!(after.0.lease.take().map(|l| l.owner), Some("host-b".into()));
    let mut expected = before;
    expected.0.lease = None;
    assert_eq!(after, expected, "neither the state nor the history changed");

    save_with(&mut b_store, &b, &state("c", json!({ "n": 2 })))?;
    assert_eq!(b_store.history("r")?.len(), 2);
    Ok(())
}

#[test]
fn renew_extends_a_current_lease_and_fails_after_a_take_over() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    // Even past its expiry, a lease nobody claimed meanwhile is still current.
    let renewed = store.renew(&a, 500, 1_200)?;
    assert_eq!(
        renewed,
        Lease {
            expires_ms: 1_700,
            ..a.clone()
        }
    );
    assert_eq!(store.run("r")?.lease.map(|l| l.expires_ms), Some(1_700));
    let err = store
        .claim(&claim("r", "host-b", 1_600))
        .expect_err("renewed until 1700");
    assert!(
        matches!(
            err,
            StoreError::Leased {
                expires_ms: 1_700,
                ..
            }
        ),
        "{err:?}"
    );

    store.claim(&Claim {
        take_over: Some("host-a"),
        ..claim("r", "host-b", 1_600)
    })?;
    let err = store
        .renew(&renewed, 500, 1_650)
        .expect_err("host-b took the run over");
    assert!(
        matches!(
            err,
            StoreError::LeaseLost { fence: 1, current_fence: 2, ref owner, .. }
                if owner.as_deref() == Some("host-b")
        ),
        "{err:?}"
    );
    assert_eq!(
        store.run("r")?.lease.map(|l| (l.owner, l.expires_ms)),
        Some(("host-b".into(), 1_700)),
        "the failed renewal changed nothing"
    );
    Ok(())
}

#[test]
fn release_frees_the_run_and_a_lost_lease_releases_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    let b = store.claim(&Claim {
        take_over: Some("host-a"),
        ..claim("r", "host-b", 1_010)
    })?;
    // host-a's lease was lost: releasing it is no error and leaves host-b holding the run.
    store.release(&a)?;
    assert_eq!(
        store.run("r")?.lease.map(|l| l.owner),
        Some("host-b".into())
    );

    store.release(&b)?;
    assert_eq!(store.run("r")?.lease, None);
    store.release(&b)?; // twice is fine
    let err = store.renew(&b, 100, 1_020).expect_err("released");
    assert!(
        matches!(err, StoreError::LeaseLost { ref owner, current_fence: 2, .. } if owner.is_none()),
        "{err:?}"
    );
    assert!(err.to_string().contains("nobody holds it"), "{err}");
    let err = save_with(&mut store, &b, &State::default()).expect_err("released");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    // Anyone may claim a released run at once, even before the old expiry.
    assert_eq!(store.claim(&claim("r", "host-c", 1_020))?.fence, 3);
    Ok(())
}

#[test]
fn finished_runs_cannot_be_claimed_and_failed_ones_can() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    for (id, status) in [
        ("done", RunStatus::Completed),
        ("stopped", RunStatus::Cancelled),
        ("broke", RunStatus::Failed),
        ("waits", RunStatus::Waiting),
    ] {
        store.create_run(&record(id, 1, status))?;
    }
    for (id, said) in [("done", "completed"), ("stopped", "cancelled")] {
        let err = store
            .claim(&claim(id, "host-a", 1_000))
            .expect_err("finished");
        assert!(matches!(err, StoreError::Finished { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("`{id}`")) && message.contains(said),
            "{message}"
        );
        assert_eq!(store.run(id)?.lease, None);
    }
    // A failed run is resumed (its failed step runs again), so it can be claimed.
    store.claim(&claim("broke", "host-a", 1_000))?;
    store.claim(&claim("waits", "host-a", 1_000))?;

    // An operator may set a cancelled run going again; then it can be claimed.
    store.set_status("stopped", RunStatus::Running)?;
    store.claim(&claim("stopped", "host-a", 1_000))?;
    Ok(())
}

#[test]
fn leases_of_unknown_runs_are_not_found() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    let ghost = Lease {
        run_id: "nope".into(),
        owner: "host-a".into(),
        fence: 1,
        expires_ms: 5,
    };
    for result in [
        store.claim(&claim("nope", "host-a", 1)).map(drop),
        store.renew(&ghost, 10, 1).map(drop),
        store.release(&ghost),
    ] {
        let err = result.expect_err("no such run");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("`nope`"), "{err}");
    }
    Ok(())
}

#[test]
fn a_cancel_needs_no_lease_and_stops_the_holder_at_its_next_save() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut driver = store_with_run(&dir)?;
    let mut cli = SqliteStore::open(&db(&dir))?;
    let lease = driver.claim(&claim("r", "host-a", 1_000))?;
    cli.set_status("r", RunStatus::Cancelled)?;
    let err = save_with(&mut driver, &lease, &State::default()).expect_err("cancelled");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    assert!(cli.history("r")?.is_empty());
    Ok(())
}

#[test]
fn leases_of_other_runs_and_new_runs_past_their_first_claim_are_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = store_with_run(&dir)?;
    store.create_run(&record("other", 2, RunStatus::Running))?;
    let other = store.claim(&claim("other", "host-a", 1_000))?;
    let err = store
        .save_step(&StepSave {
            lease: Some(&other),
            ..step("r", RunStatus::Running, &State::default())
        })
        .expect_err("a lease of another run");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("`other`"), "{err}");

    let leased = RunRecord {
        lease: Some(LeaseInfo {
            owner: "host-a".into(),
            expires_ms: 5,
            fence: 2,
        }),
        ..record("new", 3, RunStatus::Running)
    };
    let err = store.create_run(&leased).expect_err("only the first claim");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("fence 2"), "{err}");
    assert!(matches!(store.run("new"), Err(StoreError::NotFound { .. })));

    let err = store
        .claim(&Claim {
            ttl_ms: u64::MAX,
            ..claim("r", "host-a", 1)
        })
        .expect_err("an expiry past 2^63");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.run("r")?.lease, None);
    Ok(())
}

#[test]
fn two_handles_racing_to_claim_exactly_one_wins() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut setup = SqliteStore::open(&path)?;
    const RUNS: usize = 20;
    for i in 0..RUNS {
        setup.create_run(&record(&format!("r{i}"), 1, RunStatus::Running))?;
    }
    // Two connections to the same file, as two processes would have.
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|owner| {
            let mut store = SqliteStore::open(&path)?;
            let barrier = barrier.clone();
            Ok(std::thread::spawn(move || {
                (0..RUNS)
                    .map(|i| {
                        barrier.wait();
                        store.claim(&claim(&format!("r{i}"), owner, 1_000))
                    })
                    .collect::<Vec<_>>()
            }))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut results = racers
        .into_iter()
        .map(|racer| racer.join().map_err(|_| "a racer panicked"));
    let (Some(a_results), Some(b_results)) = (results.next(), results.next()) else {
        return Err("two racers".into());
    };
    for (i, (a, b)) in a_results?.iter().zip(&b_results?).enumerate() {
        let winners: Vec<&Lease> = [a, b].into_iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "run r{i}: {a:?} / {b:?}");
        let loser = if a.is_ok() { b } else { a };
        assert!(matches!(loser, Err(StoreError::Leased { .. })), "{loser:?}");
        let held = setup
            .run(&format!("r{i}"))?
            .lease
            .map(|l| (l.owner, l.fence));
        assert_eq!(held, Some((winners[0].owner.clone(), 1)));
    }
    Ok(())
}

#[test]
fn a_run_created_with_its_first_claim_is_held_from_the_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&RunRecord {
        lease: Some(LeaseInfo {
            owner: "host-a".into(),
            expires_ms: 1_100,
            fence: 1,
        }),
        ..record("r", 1, RunStatus::Running)
    })?;
    assert_eq!(
        store.run("r")?.lease,
        Some(LeaseInfo {
            owner: "host-a".into(),
            expires_ms: 1_100,
            fence: 1,
        })
    );
    // Not due for anyone else while the lease lives, and nobody else can claim it.
    assert!(store.claim_due("host-b", 100, 1_000, 10)?.is_empty());
    let err = store
        .claim(&claim("r", "host-b", 1_000))
        .expect_err("host-a holds it");
    assert!(matches!(err, StoreError::Leased { .. }), "{err:?}");
    // Its creator saves with fence 1, as after a claim.
    let lease = Lease {
        run_id: "r".into(),
        owner: "host-a".into(),
        fence: 1,
        expires_ms: 1_100,
    };
    save_with(&mut store, &lease, &State::default())?;
    assert_eq!(store.history("r")?.len(), 1);
    Ok(())
}
