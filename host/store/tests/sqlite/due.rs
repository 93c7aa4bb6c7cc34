//! Due runs: which runs `claim_due` hands out and in which order, `next_due_ms` for a
//! scheduler's sleep, two claimers racing, and `data_version` noticing other processes.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use super::*;
use stepflow_store::{Claim, Lease};

/// A run `id` with `status` and `next_check_ms`.
fn run_at(id: &str, status: RunStatus, next_check_ms: Option<u64>) -> RunRecord {
    RunRecord {
        next_check_ms,
        ..record(id, 1, status)
    }
}

fn ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.run_id.as_str()).collect()
}

fn claim<'a>(run_id: &'a str, owner: &'a str, now_ms: u64, ttl_ms: u64) -> Claim<'a> {
    Claim {
        run_id,
        owner,
        ttl_ms,
        now_ms,
        take_over: None,
    }
}

#[test]
fn claim_due_takes_due_runs_earliest_first_and_nothing_else() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    for run in [
        run_at("at-300", RunStatus::Waiting, Some(300)),
        run_at("at-100", RunStatus::Waiting, Some(100)),
        run_at("later", RunStatus::Waiting, Some(5_000)),
        run_at("now", RunStatus::Running, None),
        run_at("at-200", RunStatus::Running, Some(200)),
        run_at("completed", RunStatus::Completed, None),
        run_at("failed", RunStatus::Failed, None),
        run_at("cancelled", RunStatus::Cancelled, Some(10)),
        run_at("held", RunStatus::Running, None),
        run_at("orphan", RunStatus::Running, None),
        run_at("orphan-waiting", RunStatus::Waiting, Some(2_000)),
    ] {
        store.create_run(&run)?;
    }
    // `held` has a live lease; `orphan`'s driver died (its lease expired at 400), as did the
    // driver of `orphan-waiting`, whose wait still lasts until 2,000.
    store.claim(&claim("held", "host-a", 0, 10_000))?;
    let dead = store.claim(&claim("orphan", "host-dead", 0, 400))?;
    store.claim(&claim("orphan-waiting", "host-dead", 0, 400))?;

    let leases = store.claim_due("server", 30_000, 1_000, 10)?;
    assert_eq!(
        ids(&leases),
        ["now", "at-100", "at-200", "at-300", "orphan"],
        "earliest due first"
    );
    for lease in &leases {
        assert_eq!(lease.owner, "server");
        assert_eq!(lease.expires_ms, 31_000);
        let held = store.run(&lease.run_id)?.lease;
        assert_eq!(
            held.map(|l| (l.owner, l.fence)),
            Some(("server".into(), lease.fence))
        );
    }
    // Each claim increments the fence as `claim` does, so the dead driver's lease is fenced out.
    let orphan = leases
        .iter()
        .find(|l| l.run_id == "orphan")
        .ok_or("claimed")?;
    assert_eq!(orphan.fence, dead.fence + 1);
    let err = store
        .save_step(&StepSave {
            lease: Some(&dead),
            ..step("orphan", RunStatus::Running, &State::default())
        })
        .expect_err("fenced out");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

    assert!(
        store.claim_due("other", 30_000, 1_000, 10)?.is_empty(),
        "all leased"
    );
    assert_eq!(
        ids(&store.claim_due("server", 30_000, 2_000, 10)?),
        ["orphan-waiting"]
    );
    assert!(store.claim_due("server", 30_000, 2_000, 0)?.is_empty());

    // A released run is due again at once; `limit` caps the claim.
    for lease in &leases {
        store.release(lease)?;
    }
    // Released, `orphan` has no timer: due at once, like `now`.
    assert_eq!(
        ids(&store.claim_due("b", 30_000, 1_000, 2)?),
        ["now", "orphan"]
    );
    Ok(())
}

#[test]
fn next_due_ms_is_the_earliest_timer_or_lease_expiry_still_ahead() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    assert_eq!(store.next_due_ms(0)?, None, "an empty store");
    store.create_run(&run_at("done", RunStatus::Completed, Some(50)))?;
    store.create_run(&run_at("failed", RunStatus::Failed, Some(60)))?;
    assert_eq!(store.next_due_ms(0)?, None, "finished runs are never due");

    store.create_run(&run_at("w", RunStatus::Waiting, Some(500)))?;
    assert_eq!(store.next_due_ms(0)?, Some(500));
    assert_eq!(store.next_due_ms(499)?, Some(500));
    assert_eq!(
        store.next_due_ms(500)?,
        None,
        "due already: claim_due takes it"
    );

    // A live lease: due when it expires (its owner may die); for a waiting run, not before
    // its timer either.
    store.create_run(&run_at("r", RunStatus::Running, None))?;
    assert_eq!(
        store.next_due_ms(0)?,
        Some(500),
        "`r` is due now, not later"
    );
    let lease = store.claim(&claim("r", "host-a", 0, 300))?;
    assert_eq!(store.next_due_ms(0)?, Some(300));
    let w = store.claim(&claim("w", "host-a", 0, 100))?;
    assert_eq!(
        store.next_due_ms(0)?,
        Some(300),
        "`w` still waits until 500"
    );
    assert_eq!(store.next_due_ms(300)?, Some(500));
    // Renewed, the lease moves the next due time.
    store.renew(&lease, 1_000, 0)?;
    assert_eq!(store.next_due_ms(0)?, Some(500));
    store.release(&w)?;
    store.set_status("w", RunStatus::Cancelled)?;
    assert_eq!(store.next_due_ms(0)?, Some(1_000));
    Ok(())
}

#[test]
fn two_connections_racing_claim_every_due_run_exactly_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    const RUNS: usize = 200;
    {
        let mut setup = SqliteStore::open(&path)?;
        for i in 0..RUNS {
            let next = u64::try_from(i % 17)?;
            setup.create_run(&run_at(&format!("r{i}"), RunStatus::Waiting, Some(next)))?;
        }
    }
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|owner| {
            let mut store = SqliteStore::open(&path)?;
            let barrier = barrier.clone();
            Ok(std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    match store.claim_due(owner, 60_000, 1_000, 7) {
                        Ok(leases) if leases.is_empty() => return Ok(mine),
                        Ok(leases) => mine.extend(leases),
                        Err(e) => return Err(e),
                    }
                }
            }))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut claimed = Vec::new();
    let mut per_owner = Vec::new();
    for racer in racers {
        let leases = racer.join().map_err(|_| "a racer panicked")??;
        per_owner.push(leases.len());
        claimed.extend(leases);
    }
    let unique: BTreeSet<&str> = claimed.iter().map(|l| l.run_id.as_str()).collect();
    assert_eq!(claimed.len(), RUNS, "claims: {per_owner:?}");
    assert_eq!(unique.len(), RUNS, "no run was claimed twice");
    let store = SqliteStore::open(&path)?;
    for lease in &claimed {
        assert_eq!(lease.fence, 1);
        let held = store.run(&lease.run_id)?.lease.map(|l| l.owner);
        assert_eq!(held.as_deref(), Some(lease.owner.as_str()));
    }
    Ok(())
}

#[test]
fn data_version_changes_when_another_connection_commits() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let mut server = SqliteStore::open(&path)?;
    let v0 = server.data_version()?;
    assert_eq!(server.data_version()?, v0, "nothing happened");
    server.create_run(&record("own", 1, RunStatus::Running))?;
    assert_eq!(server.data_version()?, v0, "its own commits do not count");

    let reader = SqliteStore::open_read_only(&path)?;
    let r0 = reader.data_version()?;

    // `stepflow submit` in another process.
    let mut submit = SqliteStore::open(&path)?;
    submit.create_run(&record("submitted", 2, RunStatus::Running))?;
    let v1 = server.data_version()?;
    assert_ne!(v1, v0);
    assert_eq!(
        server.data_version()?,
        v1,
        "unchanged until the next commit"
    );
    let r1 = reader.data_version()?;
    assert_ne!(r1, r0, "a reader notices too");

    submit.set_status("submitted", RunStatus::Cancelled)?;
    assert_ne!(server.data_version()?, v1);
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
