//! Leases: one driver per run, whichever connection it uses; the fence every save checks;
//! renewal, release, take-over, and two connections claiming at once.

use std::sync::{Arc, Barrier};

use serde_json::json;
use stepflow_model::State;
use stepflow_store::{Claim, Lease, LeaseInfo, RunRecord, RunStatus, StepSave, Store, StoreError};

use super::fixtures::{assert_store_terms, calls, entry, numbered, record, state, step};
use super::{CaseResult, Opener};

/// A claim of `run_id` by `owner` at `now_ms` for 100 ms, without take-over.
fn claim<'a>(run_id: &'a str, owner: &'a str, now_ms: u64) -> Claim<'a> {
    super::fixtures::claim(run_id, owner, now_ms, 100)
}

/// A save of one step of run `r` with `lease`, with a history entry.
fn save_with(store: &mut dyn Store, lease: &Lease, state: &State) -> Result<(), StoreError> {
    let e = entry("r", "a");
    store.save_step(&StepSave {
        history: std::slice::from_ref(&e),
        lease: Some(lease),
        ..step("r", RunStatus::Running, state)
    })
}

/// A store with a running run `r`.
fn store_with_run(open: &Opener) -> Result<Box<dyn Store>, StoreError> {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    Ok(store)
}

/// A claim gets fence 1 and an expiry of `now_ms + ttl_ms`; another owner is refused
/// ([`StoreError::Leased`], naming the holder) until `expires_ms <= now_ms`.
pub fn a_live_lease_refuses_another_owner_until_it_expires(open: &Opener) -> CaseResult {
    let mut store = store_with_run(open)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    assert_eq!(
        a,
        Lease {
            run_id: "r".into(),
            owner: "host-a".into(),
            fence: 1,
            expires_ms: 1_100,
        },
        "the first claim"
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
                ("r", "host-a", 1_100),
                "who holds it until when"
            );
        }
        other => panic!("not Leased: {other:?}"),
    }
    assert_store_terms(&err.to_string());
    assert_eq!(
        store.run("r")?.lease.map(|l| l.owner).as_deref(),
        Some("host-a"),
        "host-a still holds it"
    );

    // At its expiry (expires_ms <= now_ms) the lease is over, and host-b gets the run.
    let b = store.claim(&claim("r", "host-b", 1_100))?;
    assert_eq!(
        (b.owner.as_str(), b.fence, b.expires_ms),
        ("host-b", 2, 1_200),
        "claimed at the expiry"
    );
    Ok(())
}

/// `take_over` wins only when it names the current holder (compare and swap), so of two takers
/// of the same dead owner only the first wins.
pub fn take_over_needs_the_name_of_the_current_holder(open: &Opener) -> CaseResult {
    let mut store = store_with_run(open)?;
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
    assert_eq!((b.owner.as_str(), b.fence), ("host-b", 2), "taken over");

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

/// The same owner may claim again (its older lease is fenced out); listings show the holder;
/// a release keeps the fence, so the next claim gets a larger one.
pub fn every_claim_increments_the_fence_and_listings_show_the_holder(open: &Opener) -> CaseResult {
    let mut store = store_with_run(open)?;
    assert_eq!(store.run("r")?.lease, None, "a new run is held by nobody");

    let first = store.claim(&claim("r", "host-a", 1_000))?;
    // The same owner may claim again (a restarted process): a new fence fences out the old.
    let second = store.claim(&claim("r", "host-a", 1_050))?;
    assert_eq!((first.fence, second.fence), (1, 2), "fences");
    let held = LeaseInfo {
        owner: "host-a".into(),
        expires_ms: 1_150,
        fence: 2,
    };
    assert_eq!(store.run("r")?.lease, Some(held.clone()), "run shows it");
    assert_eq!(
        store.runs(None, 10)?[0].lease,
        Some(held),
        "listing shows it"
    );

    let err = save_with(store.as_mut(), &first, &State::default()).expect_err("fence 1 is stale");
    assert!(
        matches!(
            err,
            StoreError::LeaseLost { fence: 1, current_fence: 2, ref owner, .. }
                if owner.as_deref() == Some("host-a")
        ),
        "{err:?}"
    );
    save_with(store.as_mut(), &second, &State::default())?;

    // Released, the run is held by nobody, but its fence is kept: the next claim gets 3.
    store.release(&second)?;
    assert_eq!(store.run("r")?.lease, None, "released");
    let third = store.claim(&claim("r", "host-b", 1_060))?;
    assert_eq!(third.fence, 3, "the fence only grows");
    Ok(())
}

/// A driver whose run was claimed by another (on another connection) after its lease expired
/// is refused at its next save ([`StoreError::LeaseLost`]) and writes nothing.
pub fn a_save_with_a_stale_fence_changes_nothing(open: &Opener) -> CaseResult {
    let mut a_store = store_with_run(open)?;
    let mut b_store = open();
    let a = a_store.claim(&claim("r", "host-a", 1_000))?;
    save_with(a_store.as_mut(), &a, &state("b", json!({ "n": 1 })))?;
    let before = (a_store.run("r")?, a_store.history("r")?);

    // host-a stalls past its expiry; host-b claims the run.
    let b = b_store.claim(&claim("r", "host-b", 2_000))?;
    let err = save_with(a_store.as_mut(), &a, &state("c", json!({ "n": 2 })))
        .expect_err("host-a lost the run");
    match &err {
        StoreError::LeaseLost {
            run,
            fence,
            current_fence,
            owner,
        } => {
            assert_eq!(run, "r", "the run");
            assert_eq!((*fence, *current_fence), (1, 2), "the fences");
            assert_eq!(owner.as_deref(), Some("host-b"), "the new holder");
        }
        other => panic!("not LeaseLost: {other:?}"),
    }
    assert_store_terms(&err.to_string());
    let mut after = (a_store.run("r")?, a_store.history("r")?);
    assert_eq!(
        after.0.lease.take().map(|l| l.owner).as_deref(),
        Some("host-b"),
        "host-b holds it"
    );
    let mut expected = before;
    expected.0.lease = None;
    assert_eq!(after, expected, "neither the state nor the history changed");

    save_with(b_store.as_mut(), &b, &state("c", json!({ "n": 2 })))?;
    assert_eq!(b_store.history("r")?.len(), 2, "host-b saves");
    Ok(())
}

/// A save of several calls refused for a lost lease ([`StoreError::LeaseLost`]) or a
/// cancelled run ([`StoreError::Cancelled`]) writes none of its entries, nor its state, and
/// leaves the run's entry count as it was: the new holder's own save of several calls is
/// numbered from 2, right after the one entry saved before.
pub fn a_refused_save_of_several_calls_writes_none_of_them(open: &Opener) -> CaseResult {
    let mut a_store = store_with_run(open)?;
    let mut b_store = open();
    a_store.create_run(&record("cancelled", 2, RunStatus::Running))?;
    let a = a_store.claim(&claim("r", "host-a", 1_000))?;
    let a_cancelled = a_store.claim(&claim("cancelled", "host-a", 1_000))?;
    save_with(a_store.as_mut(), &a, &state("b", json!({ "n": 1 })))?;
    let before = a_store.run("r")?;
    b_store.set_status("cancelled", RunStatus::Cancelled)?;
    let cancelled_before = b_store.run("cancelled")?;

    // host-a stalls past its expiry; host-b claims the run; then both of host-a's saves of
    // three calls are refused.
    let b = b_store.claim(&claim("r", "host-b", 2_000))?;
    let lost = calls("r", &["x", "y", "z"]);
    let err = a_store
        .save_step(&StepSave {
            history: &lost,
            lease: Some(&a),
            ..step("r", RunStatus::Completed, &state("z", json!({ "n": 9 })))
        })
        .expect_err("host-a lost the run");
    assert!(
        matches!(&err, StoreError::LeaseLost { run, current_fence: 2, .. } if run == "r"),
        "{err:?}"
    );
    let of_cancelled = calls("cancelled", &["x", "y", "z"]);
    let err = a_store
        .save_step(&StepSave {
            history: &of_cancelled,
            lease: Some(&a_cancelled),
            ..step("cancelled", RunStatus::Completed, &state("z", json!({})))
        })
        .expect_err("the run was cancelled");
    assert!(
        matches!(&err, StoreError::Cancelled { id } if id == "cancelled"),
        "{err:?}"
    );

    let after = b_store.run("r")?;
    assert_eq!(
        (&after.state, after.status),
        (&before.state, before.status),
        "r's state is unchanged"
    );
    assert_eq!(
        b_store.history_page("r", 0, 10)?.1,
        1,
        "r still has one entry"
    );
    assert_eq!(b_store.history("r")?.len(), 1, "none of the three");
    assert_eq!(
        b_store.run("cancelled")?,
        cancelled_before,
        "the cancelled run is unchanged"
    );
    assert_eq!(
        b_store.history_page("cancelled", 0, 10)?,
        (Vec::new(), 0),
        "the cancelled run has no entry"
    );

    let saved = calls("r", &["p", "q", "s"]);
    b_store.save_step(&StepSave {
        history: &saved,
        lease: Some(&b),
        ..step("r", RunStatus::Running, &state("s", json!({})))
    })?;
    let history = b_store.history("r")?;
    assert_eq!(&history[1..], numbered(&saved, 1), "host-b's three, from 2");
    Ok(())
}

/// `renew` extends a lease that is still current (even past its expiry, if nobody claimed the
/// run meanwhile), and is [`StoreError::LeaseLost`] after a take-over, changing nothing.
pub fn renew_extends_a_current_lease_and_fails_after_a_take_over(open: &Opener) -> CaseResult {
    let mut store = store_with_run(open)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    // Even past its expiry, a lease nobody claimed meanwhile is still current.
    let renewed = store.renew(&a, 500, 1_200)?;
    assert_eq!(
        renewed,
        Lease {
            expires_ms: 1_700,
            ..a.clone()
        },
        "renewed"
    );
    assert_eq!(
        store.run("r")?.lease.map(|l| l.expires_ms),
        Some(1_700),
        "the run shows the new expiry"
    );
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

/// Releasing a lost lease is no error and leaves the new holder; released, a run is held by
/// nobody, its old lease renews and saves nothing, and anyone may claim it at once.
pub fn release_frees_the_run_and_a_lost_lease_releases_nothing(open: &Opener) -> CaseResult {
    let mut store = store_with_run(open)?;
    let a = store.claim(&claim("r", "host-a", 1_000))?;
    let b = store.claim(&Claim {
        take_over: Some("host-a"),
        ..claim("r", "host-b", 1_010)
    })?;
    // host-a's lease was lost: releasing it is no error and leaves host-b holding the run.
    store.release(&a)?;
    assert_eq!(
        store.run("r")?.lease.map(|l| l.owner).as_deref(),
        Some("host-b"),
        "host-b keeps it"
    );

    store.release(&b)?;
    assert_eq!(store.run("r")?.lease, None, "released");
    store.release(&b)?; // twice is fine
    let err = store.renew(&b, 100, 1_020).expect_err("released");
    assert!(
        matches!(err, StoreError::LeaseLost { ref owner, current_fence: 2, .. } if owner.is_none()),
        "{err:?}"
    );
    let err = save_with(store.as_mut(), &b, &State::default()).expect_err("released");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    // Anyone may claim a released run at once, even before the old expiry.
    assert_eq!(
        store.claim(&claim("r", "host-c", 1_020))?.fence,
        3,
        "claimed at once"
    );
    Ok(())
}

/// Completed and cancelled runs are [`StoreError::Finished`]; failed and waiting runs can be
/// claimed, and so can a cancelled run set running again.
pub fn finished_runs_cannot_be_claimed_and_failed_ones_can(open: &Opener) -> CaseResult {
    let mut store = open();
    for (id, status) in [
        ("done", RunStatus::Completed),
        ("stopped", RunStatus::Cancelled),
        ("broke", RunStatus::Failed),
        ("waits", RunStatus::Waiting),
    ] {
        store.create_run(&record(id, 1, status))?;
    }
    for (id, said) in [
        ("done", RunStatus::Completed),
        ("stopped", RunStatus::Cancelled),
    ] {
        let err = store
            .claim(&claim(id, "host-a", 1_000))
            .expect_err("finished");
        assert!(
            matches!(&err, StoreError::Finished { run, status } if run == id && *status == said),
            "{err:?}"
        );
        assert_eq!(store.run(id)?.lease, None, "{id} is held by nobody");
    }
    // A failed run is resumed (its failed step runs again), so it can be claimed.
    store.claim(&claim("broke", "host-a", 1_000))?;
    store.claim(&claim("waits", "host-a", 1_000))?;

    // An operator may set a cancelled run going again; then it can be claimed.
    store.set_status("stopped", RunStatus::Running)?;
    store.claim(&claim("stopped", "host-a", 1_000))?;
    Ok(())
}

/// `claim`, `renew` and `release` of an unknown run are [`StoreError::NotFound`].
pub fn leases_of_unknown_runs_are_not_found(open: &Opener) -> CaseResult {
    let mut store = open();
    let ghost = Lease {
        run_id: "nope".into(),
        owner: "host-a".into(),
        fence: 1,
        expires_ms: 5,
    };
    for (call, result) in [
        ("claim", store.claim(&claim("nope", "host-a", 1)).map(drop)),
        ("renew", store.renew(&ghost, 10, 1).map(drop)),
        ("release", store.release(&ghost)),
    ] {
        let err = result.expect_err("no such run");
        assert!(
            matches!(&err, StoreError::NotFound { id, .. } if id == "nope"),
            "{call}: {err:?}"
        );
    }
    Ok(())
}

/// A cancel from another connection needs no lease; the holder hears of it at its next save
/// ([`StoreError::Cancelled`]), which writes nothing.
pub fn a_cancel_needs_no_lease_and_stops_the_holder_at_its_next_save(open: &Opener) -> CaseResult {
    let mut driver = store_with_run(open)?;
    let mut cli = open();
    let lease = driver.claim(&claim("r", "host-a", 1_000))?;
    cli.set_status("r", RunStatus::Cancelled)?;
    let err = save_with(driver.as_mut(), &lease, &State::default()).expect_err("cancelled");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    assert!(cli.history("r")?.is_empty(), "nothing was written");
    Ok(())
}

/// A save with another run's lease, a new run with a fence other than 1, and an expiry past
/// 2^63 are [`StoreError::Invalid`], and change nothing.
pub fn leases_of_other_runs_and_new_runs_past_their_first_claim_are_refused(
    open: &Opener,
) -> CaseResult {
    let mut store = store_with_run(open)?;
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
    assert!(
        matches!(store.run("new"), Err(StoreError::NotFound { .. })),
        "no run was created"
    );

    let err = store
        .claim(&Claim {
            ttl_ms: u64::MAX,
            ..claim("r", "host-a", 1)
        })
        .expect_err("an expiry past 2^63");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_eq!(store.run("r")?.lease, None, "nothing was claimed");
    Ok(())
}

/// Two connections claiming the same runs at the same moment (a barrier before each claim):
/// of every pair exactly one wins, and the other is [`StoreError::Leased`].
pub fn two_connections_claiming_at_once_exactly_one_wins(open: &Opener) -> CaseResult {
    const RUNS: usize = 20;
    let mut setup = open();
    for i in 0..RUNS {
        setup.create_run(&record(&format!("r{i}"), 1, RunStatus::Running))?;
    }
    // Two connections to the same database, as two processes would have.
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|owner| {
            let mut store = open();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                (0..RUNS)
                    .map(|i| {
                        barrier.wait();
                        store.claim(&claim(&format!("r{i}"), owner, 1_000))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
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
        assert_eq!(
            held,
            Some((winners[0].owner.clone(), 1)),
            "run r{i} is held by its winner"
        );
    }
    Ok(())
}

/// A run created with a lease (fence 1) is held from the start: not due for others, not
/// claimable by them, and its creator saves with fence 1.
pub fn a_run_created_with_its_first_claim_is_held_from_the_start(open: &Opener) -> CaseResult {
    let mut store = open();
    let held = LeaseInfo {
        owner: "host-a".into(),
        expires_ms: 1_100,
        fence: 1,
    };
    store.create_run(&RunRecord {
        lease: Some(held.clone()),
        ..record("r", 1, RunStatus::Running)
    })?;
    assert_eq!(store.run("r")?.lease, Some(held), "held from the start");
    // Not due for anyone else while the lease lives, and nobody else can claim it.
    assert!(
        store.claim_due("host-b", 100, 1_000, 10)?.is_empty(),
        "not due"
    );
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
    save_with(store.as_mut(), &lease, &State::default())?;
    assert_eq!(store.history("r")?.len(), 1, "saved with fence 1");
    Ok(())
}
