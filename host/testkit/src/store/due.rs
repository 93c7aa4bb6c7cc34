//! Due runs: which runs `claim_due` hands out and in which order, `next_due_ms` for a
//! scheduler's sleep, two connections claiming at once, and `data_version` noticing other
//! connections' commits.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use stepflow_model::State;
use stepflow_store::{NEVER_DUE_MS, RunStatus, StepSave, Store, StoreError};

use super::fixtures::{claim, leased_ids, record, run_at, step};
use super::{CaseResult, Opener};

/// `claim_due` takes running and waiting runs whose time has come and that nobody holds (or
/// whose lease expired), earliest due first, at most `limit`, each with a new fence; finished,
/// failed, held and later runs stay.
pub fn claim_due_takes_due_runs_earliest_first_and_nothing_else(open: &Opener) -> CaseResult {
    let mut store = open();
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
        run_at("signal-only", RunStatus::Waiting, Some(NEVER_DUE_MS)),
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
        leased_ids(&leases),
        ["now", "at-100", "at-200", "at-300", "orphan"],
        "earliest due first"
    );
    for lease in &leases {
        assert_eq!(lease.owner, "server", "{}: the owner", lease.run_id);
        assert_eq!(lease.expires_ms, 31_000, "{}: the expiry", lease.run_id);
        let held = store.run(&lease.run_id)?.lease;
        assert_eq!(
            held.map(|l| (l.owner, l.fence)),
            Some(("server".into(), lease.fence)),
            "{}: the run shows its lease",
            lease.run_id
        );
    }
    // Each claim increments the fence as `claim` does, so the dead driver's lease is fenced out.
    let orphan = leases
        .iter()
        .find(|l| l.run_id == "orphan")
        .ok_or("orphan was claimed")?;
    assert_eq!(orphan.fence, dead.fence + 1, "a new fence");
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
        leased_ids(&store.claim_due("server", 30_000, 2_000, 10)?),
        ["orphan-waiting"],
        "due at the end of its wait"
    );
    assert!(
        store.claim_due("server", 30_000, 2_000, 0)?.is_empty(),
        "limit 0"
    );

    // A released run is due again at once; `limit` caps the claim.
    for lease in &leases {
        store.release(lease)?;
    }
    // Released, `orphan` has no timer: due at once, like `now`.
    assert_eq!(
        leased_ids(&store.claim_due("b", 30_000, 1_000, 2)?),
        ["now", "orphan"],
        "released runs, at most 2"
    );
    Ok(())
}

/// `next_due_ms` is the earliest waiting run's timer or live lease's expiry still ahead (the
/// later of the two for a run both waiting and leased); finished runs, runs due already and
/// runs that wait for a signal alone ([`NEVER_DUE_MS`]) do not count.
pub fn next_due_ms_is_the_earliest_timer_or_lease_expiry_still_ahead(open: &Opener) -> CaseResult {
    let mut store = open();
    assert_eq!(store.next_due_ms(0)?, None, "an empty store");
    store.create_run(&run_at("done", RunStatus::Completed, Some(50)))?;
    store.create_run(&run_at("failed", RunStatus::Failed, Some(60)))?;
    store.create_run(&run_at("signal", RunStatus::Waiting, Some(NEVER_DUE_MS)))?;
    assert_eq!(
        store.next_due_ms(0)?,
        None,
        "finished runs and a wait for a signal alone are never due by time"
    );

    store.create_run(&run_at("w", RunStatus::Waiting, Some(500)))?;
    assert_eq!(store.next_due_ms(0)?, Some(500), "w's timer");
    assert_eq!(store.next_due_ms(499)?, Some(500), "still ahead");
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
    assert_eq!(store.next_due_ms(0)?, Some(300), "r's lease expiry");
    let w = store.claim(&claim("w", "host-a", 0, 100))?;
    assert_eq!(
        store.next_due_ms(0)?,
        Some(300),
        "`w` still waits until 500"
    );
    assert_eq!(store.next_due_ms(300)?, Some(500), "then w's timer");
    // Renewed, the lease moves the next due time.
    store.renew(&lease, 1_000, 0)?;
    assert_eq!(store.next_due_ms(0)?, Some(500), "r renewed until 1000");
    store.release(&w)?;
    store.set_status("w", RunStatus::Cancelled)?;
    assert_eq!(store.next_due_ms(0)?, Some(1_000), "w cancelled");
    Ok(())
}

/// Two connections calling `claim_due` in a loop at once claim every due run, none twice, each
/// with fence 1.
pub fn two_connections_claiming_due_runs_claim_each_exactly_once(open: &Opener) -> CaseResult {
    const RUNS: usize = 200;
    {
        let mut setup = open();
        for i in 0..RUNS {
            let next = u64::try_from(i % 17)?;
            setup.create_run(&run_at(&format!("r{i}"), RunStatus::Waiting, Some(next)))?;
        }
    }
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|owner| {
            let mut store = open();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    match store.claim_due(owner, 60_000, 1_000, 7) {
                        Ok(leases) if leases.is_empty() => return Ok(mine),
                        Ok(leases) => mine.extend(leases),
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut per_owner = Vec::new();
    for racer in racers {
        let leases: Vec<_> = racer.join().map_err(|_| "a racer panicked")??;
        per_owner.push(leases.len());
        claimed.extend(leases);
    }
    let unique: BTreeSet<&str> = claimed.iter().map(|l| l.run_id.as_str()).collect();
    assert_eq!(claimed.len(), RUNS, "claims: {per_owner:?}");
    assert_eq!(unique.len(), RUNS, "no run was claimed twice");
    let store = open();
    for lease in &claimed {
        assert_eq!(lease.fence, 1, "{}: the first claim", lease.run_id);
        let held = store.run(&lease.run_id)?.lease.map(|l| l.owner);
        assert_eq!(
            held.as_deref(),
            Some(lease.owner.as_str()),
            "{}: held by who claimed it",
            lease.run_id
        );
    }
    Ok(())
}

/// `data_version` stays the same across a connection's own commits and changes after each
/// commit of another connection.
pub fn data_version_changes_when_another_connection_commits(open: &Opener) -> CaseResult {
    let mut server = open();
    let v0 = server.data_version()?;
    assert_eq!(server.data_version()?, v0, "nothing happened");
    server.create_run(&record("own", 1, RunStatus::Running))?;
    assert_eq!(server.data_version()?, v0, "its own commits do not count");

    // `stepflow submit` in another process.
    let mut submit = open();
    submit.create_run(&record("submitted", 2, RunStatus::Running))?;
    let v1 = changed_from(server.as_ref(), v0)?;
    assert_ne!(v1, v0, "another connection's commit");
    assert_eq!(
        server.data_version()?,
        v1,
        "unchanged until the next commit"
    );

    submit.set_status("submitted", RunStatus::Cancelled)?;
    assert_ne!(changed_from(server.as_ref(), v1)?, v1, "another commit");
    Ok(())
}

/// The data version once it differs from `seen`, or `seen` after 10 s: a backend may learn of
/// another connection's commit a moment after it (PostgreSQL's notifications), never never.
fn changed_from(store: &dyn Store, seen: u64) -> Result<u64, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let version = store.data_version()?;
        if version != seen || std::time::Instant::now() >= deadline {
            return Ok(version);
        }
        std::thread::park_timeout(std::time::Duration::from_millis(1));
    }
}
