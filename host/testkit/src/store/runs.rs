//! Runs: created, read back, saved a step at a time (state and history together, entries
//! numbered by the store), listed, cancelled, and refused when unknown, taken or cancelled.

use serde_json::json;
use stepflow_model::{CallKind, CallRecord, Outcome, State, StepError};
use stepflow_store::{
    HistoryEntry, RunRecord, RunStatus, StepOutcome, StepSave, Store, StoreError,
};

use super::fixtures::{
    assert_store_terms, calls, entry, failed_call, numbered, record, run_ids, state, step,
};
use super::{CaseResult, Opener};

/// A run reads back as created; two saves replace its state and append two history entries
/// numbered 1 and 2, and set `updated_ms`.
pub fn a_run_and_its_history_round_trip(open: &Opener) -> CaseResult {
    let mut store = open();
    let run = record("run-1", 1_000, RunStatus::Running);
    store.create_run(&run)?;
    assert_eq!(store.run("run-1")?, run, "a run reads back as created");
    assert!(
        store.history("run-1")?.is_empty(),
        "a new run has no history"
    );

    let first = entry("run-1", "a");
    let second = HistoryEntry {
        kind: CallKind::WaitFor,
        outcome: StepOutcome::Retrying,
        error: Some("not ready (fatal)".into()),
        patch: None,
        redelivered: true,
        attempt: 4,
        ..entry("run-1", "b")
    };
    let next = state(
        "b",
        json!({ "n": 1, "nested": { "list": [1, "two", null] } }),
    );
    store.save_step(&StepSave {
        history: std::slice::from_ref(&first),
        ..step("run-1", RunStatus::Running, &next)
    })?;
    store.save_step(&StepSave {
        next_check_ms: Some(1_700_000_005_000),
        last_error: Some("not ready"),
        history: std::slice::from_ref(&second),
        ..step("run-1", RunStatus::Waiting, &next)
    })?;

    let loaded = store.run("run-1")?;
    assert_eq!(loaded.state, next, "the saved state");
    assert_eq!(loaded.status, RunStatus::Waiting, "the saved status");
    assert_eq!(loaded.next_check_ms, Some(1_700_000_005_000), "next check");
    assert_eq!(
        loaded.last_error.as_deref(),
        Some("not ready"),
        "last error"
    );
    assert_eq!(loaded.created_ms, 1_000, "created_ms is kept");
    assert!(loaded.updated_ms > 1_000, "save_step sets updated_ms");

    assert_eq!(
        store.history("run-1")?,
        vec![
            HistoryEntry { seq: 1, ..first },
            HistoryEntry { seq: 2, ..second }
        ],
        "both entries, numbered by the store"
    );
    Ok(())
}

/// A save without a history entry changes the run and adds no entry.
pub fn a_save_without_history_changes_only_the_run(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let done = state("end", json!({ "done": true }));
    store.save_step(&step("r", RunStatus::Completed, &done))?;
    let run = store.run("r")?;
    assert_eq!(run.state, done, "the state is saved");
    assert_eq!(run.status, RunStatus::Completed, "the status is saved");
    assert!(store.history("r")?.is_empty(), "no entry was added");
    Ok(())
}

/// Each run's entries are numbered 1, 2, ... on their own, whatever `seq` the caller gave.
pub fn history_entries_are_numbered_per_run(open: &Opener) -> CaseResult {
    let mut store = open();
    for id in ["x", "y"] {
        store.create_run(&record(id, 1, RunStatus::Running))?;
    }
    let s = State::default();
    for id in ["x", "y", "x", "x", "y"] {
        let e = HistoryEntry {
            seq: 99, // ignored: the store numbers entries
            ..entry(id, "a")
        };
        store.save_step(&StepSave {
            history: std::slice::from_ref(&e),
            ..step(id, RunStatus::Running, &s)
        })?;
    }
    let seqs = |id| -> Result<Vec<u64>, StoreError> {
        Ok(store.history(id)?.iter().map(|e| e.seq).collect())
    };
    assert_eq!(seqs("x")?, vec![1, 2, 3], "run x");
    assert_eq!(seqs("y")?, vec![1, 2], "run y");
    Ok(())
}

/// A save of three calls (an apply of parallel branches) appends all three after the run's
/// last entry, numbered one after another in the order given, whatever `seq` they carried;
/// the next save numbers on after them. The history, its pages (with the run's total), a
/// listing and a new connection all see them (SQLite checks each row's checksum on read).
pub fn a_save_of_several_calls_appends_every_entry_in_order(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let first = entry("r", "start");
    let parallel = calls("r", &["left", "middle", "right"]);
    let last = entry("r", "join");
    let joined = state("join", json!({ "branches": 3 }));
    store.save_step(&StepSave {
        history: std::slice::from_ref(&first),
        ..step("r", RunStatus::Running, &state("fork", json!({})))
    })?;
    store.save_step(&StepSave {
        history: &parallel,
        ..step("r", RunStatus::Running, &joined)
    })?;
    let expected: Vec<HistoryEntry> = [
        vec![HistoryEntry { seq: 1, ..first }],
        numbered(&parallel, 1),
    ]
    .concat();
    assert_eq!(
        store.history("r")?,
        expected,
        "one, then the three in order"
    );
    assert_eq!(store.run("r")?.state, joined, "with the state they led to");

    store.save_step(&StepSave {
        history: std::slice::from_ref(&last),
        ..step("r", RunStatus::Completed, &joined)
    })?;
    let expected: Vec<HistoryEntry> = [expected, numbered(std::slice::from_ref(&last), 4)].concat();
    let seqs: Vec<u64> = store.history("r")?.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "the next save numbers on after them");

    let (page, total) = store.history_page("r", 0, 2)?;
    assert_eq!(
        (page.as_slice(), total),
        (&expected[..2], 5),
        "the first page"
    );
    let (page, total) = store.history_page("r", 2, 2)?;
    assert_eq!(
        (page.as_slice(), total),
        (&expected[2..4], 5),
        "a page inside the three"
    );
    let (page, total) = store.history_page("r", 4, 10)?;
    assert_eq!(
        (page.as_slice(), total),
        (&expected[4..], 5),
        "the last page"
    );

    let listed = store.runs(None, 10)?;
    assert_eq!(run_ids(&listed), ["r"], "the listing");
    assert_eq!(
        (listed[0].status, &listed[0].state),
        (RunStatus::Completed, &joined),
        "the listing shows the last save"
    );
    let fresh = open();
    assert_eq!(
        fresh.history("r")?,
        expected,
        "a new connection reads them all"
    );
    assert_eq!(
        fresh.history_page("r", 0, 10)?,
        (expected, 5),
        "and pages them"
    );
    Ok(())
}

/// Entries made by [`HistoryEntry::from_call`] from every kind of call and outcome are saved
/// and read back with their kind, outcome, patch and error.
pub fn entries_made_from_calls_are_saved_and_read_back(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let outcomes = [
        Outcome::Done(Some(json!({ "a": 1 }))),
        Outcome::Answered(true),
        Outcome::Answered(false),
        Outcome::Retrying {
            error: StepError::retryable("flaky"),
            group: "f.v1/retry".into(),
            attempt: 2,
        },
        Outcome::Failed(StepError::fatal("broken")),
    ];
    for (kind, outcome) in CallKind::ALL.into_iter().zip(outcomes) {
        let call = CallRecord {
            step: "f.v1/a".into(),
            kind,
            attempt: 1,
            sequence: 0,
            redelivered: false,
            outcome,
            handlers: Vec::new(),
        };
        let e = HistoryEntry::from_call("r", &call, 10, 2);
        store.save_step(&StepSave {
            history: std::slice::from_ref(&e),
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let history = store.history("r")?;
    let seen: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.kind.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("step", "done"),
            ("wait-for", "true"),
            ("case", "false"),
            ("loop-until", "retrying"),
            ("error-handler", "failed"),
        ],
        "kinds and outcomes"
    );
    assert_eq!(history[0].patch, Some(json!({ "a": 1 })), "the patch");
    assert_eq!(
        history[4].error.as_deref(),
        Some("broken (fatal)"),
        "the error"
    );
    Ok(())
}

/// Every pair of call kind and outcome is saved and read back as it was.
pub fn every_kind_and_outcome_is_saved_and_read_back(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let mut saved = Vec::new();
    for kind in CallKind::ALL {
        for outcome in StepOutcome::ALL {
            let e = HistoryEntry {
                kind,
                outcome,
                ..entry("r", "a")
            };
            store.save_step(&StepSave {
                history: std::slice::from_ref(&e),
                ..step("r", RunStatus::Running, &State::default())
            })?;
            saved.push((kind, outcome));
        }
    }
    let read: Vec<_> = store
        .history("r")?
        .into_iter()
        .map(|e| (e.kind, e.outcome))
        .collect();
    assert_eq!(read, saved, "every kind and outcome");
    Ok(())
}

/// The error handlers a failed call was offered to are saved with its entry and read back in
/// order, with each answer; an entry without any reads back with none.
pub fn handler_calls_are_saved_and_read_back(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let call = failed_call();
    let failed = HistoryEntry::from_call("r", &call, 10, 3);
    assert_eq!(failed.handlers, call.handlers, "from_call keeps them");
    let plain = entry("r", "a");
    for e in [&failed, &plain] {
        store.save_step(&StepSave {
            history: std::slice::from_ref(e),
            ..step("r", RunStatus::Running, &State::default())
        })?;
    }
    let history = store.history("r")?;
    assert_eq!(history[0].handlers, call.handlers, "the handlers, in order");
    assert_eq!(
        history[0].handlers[0].answer,
        Err("inner handler broke (fatal)".into()),
        "a handler's own failure"
    );
    assert!(history[1].handlers.is_empty(), "an entry without handlers");
    // Another connection reads them too.
    assert_eq!(open().history("r")?, history, "read by another connection");
    Ok(())
}

/// A time past 2^63 and an entry of another run are refused ([`StoreError::Invalid`]), and
/// the run is unchanged.
pub fn values_that_do_not_fit_are_refused_before_writing(open: &Opener) -> CaseResult {
    let mut store = open();
    let run = record("r", 1, RunStatus::Running);
    store.create_run(&run)?;
    let huge = HistoryEntry {
        started_ms: u64::MAX,
        ..entry("r", "a")
    };
    let err = store
        .save_step(&StepSave {
            history: std::slice::from_ref(&huge),
            ..step("r", RunStatus::Running, &State::default())
        })
        .expect_err("u64::MAX does not fit a 64-bit signed column");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let err = store
        .save_step(&StepSave {
            next_check_ms: Some(u64::MAX),
            ..step("r", RunStatus::Waiting, &State::default())
        })
        .expect_err("a next check past 2^63");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let other = entry("someone-else", "a");
    let err = store
        .save_step(&StepSave {
            history: std::slice::from_ref(&other),
            ..step("r", RunStatus::Running, &State::default())
        })
        .expect_err("an entry of another run is refused");
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert!(err.to_string().contains("someone-else"), "{err}");
    assert_eq!(store.run("r")?, run, "the run is unchanged");
    assert!(store.history("r")?.is_empty(), "no entry was added");
    Ok(())
}

/// `runs` lists newest first (of two in the same millisecond, the one created later first),
/// at most `limit`, optionally of one status.
pub fn runs_are_listed_newest_first_and_filtered_by_status(open: &Opener) -> CaseResult {
    let mut store = open();
    for (id, created, status) in [
        ("old", 10, RunStatus::Completed),
        ("mid", 20, RunStatus::Running),
        ("new", 30, RunStatus::Running),
        ("tie", 20, RunStatus::Failed), // same millisecond as `mid`, created later
        ("waits", 25, RunStatus::Waiting),
    ] {
        store.create_run(&record(id, created, status))?;
    }
    let ids = |status, limit| -> Result<Vec<String>, StoreError> {
        Ok(run_ids(&store.runs(status, limit)?)
            .into_iter()
            .map(str::to_string)
            .collect())
    };
    assert_eq!(
        ids(None, 100)?,
        ["new", "waits", "tie", "mid", "old"],
        "newest first"
    );
    assert_eq!(ids(None, 2)?, ["new", "waits"], "at most the limit");
    assert_eq!(
        ids(Some(RunStatus::Running), 100)?,
        ["new", "mid"],
        "one status"
    );
    assert_eq!(
        ids(Some(RunStatus::Running), 1)?,
        ["new"],
        "status and limit"
    );
    assert!(ids(Some(RunStatus::Cancelled), 100)?.is_empty(), "none");
    assert!(ids(None, 0)?.is_empty(), "limit 0");
    assert_eq!(ids(None, usize::MAX)?.len(), 5, "limit usize::MAX");
    Ok(())
}

/// The ids of the runs with `status`, newest first.
fn ids_with(store: &dyn Store, status: RunStatus) -> Result<Vec<String>, StoreError> {
    Ok(store
        .runs(Some(status), 10)?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// A cancel (`set_status`) changes the status and keeps the state.
pub fn a_cancel_sets_the_status_and_keeps_the_state(open: &Opener) -> CaseResult {
    let mut store = open();
    let run = record("r", 1, RunStatus::Waiting);
    store.create_run(&run)?;
    store.set_status("r", RunStatus::Cancelled)?;
    let cancelled = store.run("r")?;
    assert_eq!(cancelled.status, RunStatus::Cancelled, "cancelled");
    assert_eq!(cancelled.state, run.state, "the state is kept");
    assert_eq!(
        ids_with(store.as_ref(), RunStatus::Cancelled)?,
        ["r"],
        "listed as cancelled"
    );
    Ok(())
}

/// A save of a run cancelled by another connection is refused ([`StoreError::Cancelled`]) and
/// writes nothing; set running again, the run takes saves.
pub fn a_cancel_from_another_connection_is_not_overwritten_by_a_runner(
    open: &Opener,
) -> CaseResult {
    let mut runner = open();
    let mut cli = open();
    let run = record("r", 1, RunStatus::Running);
    runner.create_run(&run)?;
    cli.set_status("r", RunStatus::Cancelled)?;

    let err = runner
        .save_step(&StepSave {
            history: &[entry("r", "a")],
            ..step("r", RunStatus::Running, &State::default())
        })
        .expect_err("a cancelled run is not overwritten");
    assert!(matches!(err, StoreError::Cancelled { .. }), "{err:?}");
    let after = cli.run("r")?;
    assert_eq!(after.status, RunStatus::Cancelled, "still cancelled");
    assert_eq!(after.state, run.state, "the state is unchanged");
    assert!(cli.history("r")?.is_empty(), "no entry was added");

    // An operator may set it running again; then the runner's saves go through.
    cli.set_status("r", RunStatus::Running)?;
    runner.save_step(&step("r", RunStatus::Completed, &State::default()))?;
    assert_eq!(cli.run("r")?.status, RunStatus::Completed, "saved again");
    Ok(())
}

/// `set_status` needs no lease (a held run can be failed or cancelled by anyone), and a store
/// moved to another thread keeps working (`Store: Send`).
pub fn set_status_needs_no_lease_and_works_from_another_thread(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    store.claim(&super::fixtures::claim("r", "host-a", 1_000, 100))?;
    store.set_status("r", RunStatus::Failed)?;
    assert_eq!(
        store.run("r")?.status,
        RunStatus::Failed,
        "failed without the lease"
    );
    let listed = std::thread::spawn(move || -> Result<usize, StoreError> {
        store.set_status("r", RunStatus::Running)?;
        Ok(store.runs(None, 1)?.len())
    })
    .join()
    .map_err(|_| "the thread panicked")??;
    assert_eq!(listed, 1, "listed from the other thread");
    assert_eq!(open().run("r")?.status, RunStatus::Running, "set there");
    Ok(())
}

/// Every call on an unknown run is [`StoreError::NotFound`] naming it.
pub fn unknown_runs_are_not_found(open: &Opener) -> CaseResult {
    let mut store = open();
    let errors = [
        store.run("nope").map(drop),
        store.history("nope").map(drop),
        store.start_state("nope").map(drop),
        store.set_status("nope", RunStatus::Cancelled),
        store.save_step(&step("nope", RunStatus::Running, &State::default())),
        store.save_step(&StepSave {
            history: &[entry("nope", "a")],
            ..step("nope", RunStatus::Running, &State::default())
        }),
    ];
    for (i, result) in errors.into_iter().enumerate() {
        let err = result.expect_err("no such run");
        assert!(
            matches!(&err, StoreError::NotFound { id, .. } if id == "nope"),
            "call {i}: {err:?}"
        );
        assert_store_terms(&err.to_string());
    }
    Ok(())
}

/// `create_run` with a taken id is [`StoreError::AlreadyExists`]; the first run is kept.
pub fn a_taken_run_id_is_refused(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let err = store
        .create_run(&record("r", 2, RunStatus::Completed))
        .expect_err("duplicate id");
    assert!(
        matches!(&err, StoreError::AlreadyExists { id, .. } if id == "r"),
        "{err:?}"
    );
    let kept = store.run("r")?;
    assert_eq!(
        (kept.created_ms, kept.status),
        (1, RunStatus::Running),
        "the first run is kept"
    );
    Ok(())
}

/// What one connection saved, a new connection (opened after it is gone) reads as it was.
pub fn a_new_connection_sees_everything_saved(open: &Opener) -> CaseResult {
    let (run, history) = {
        let mut store = open();
        store.create_run(&record("r", 1, RunStatus::Running))?;
        let next = state("b", json!({ "kept": true }));
        store.save_step(&StepSave {
            next_check_ms: Some(42),
            history: &[entry("r", "a")],
            ..step("r", RunStatus::Waiting, &next)
        })?;
        (store.run("r")?, store.history("r")?)
    };
    let store = open();
    assert_eq!(store.run("r")?, run, "the run");
    assert_eq!(store.history("r")?, history, "its history");
    assert_eq!(store.runs(None, 10)?.len(), 1, "one run");
    Ok(())
}

/// `start_state` is the state a run was created with, however many steps were saved since.
pub fn the_start_state_is_the_state_a_run_was_created_with(open: &Opener) -> CaseResult {
    let mut store = open();
    let run = RunRecord {
        state: state("start", json!({ "input": [1, 2, 3] })),
        ..record("r", 1, RunStatus::Running)
    };
    store.create_run(&run)?;
    store.create_run(&record("other", 2, RunStatus::Running))?;
    assert_eq!(
        store.start_state("r")?.as_ref(),
        Some(&run.state),
        "the first state"
    );
    for n in 1..=3 {
        let next = state("b", json!({ "n": n }));
        store.save_step(&StepSave {
            history: &[entry("r", "b")],
            ..step("r", RunStatus::Running, &next)
        })?;
    }
    assert_ne!(store.run("r")?.state, run.state, "the state moved on");
    assert_eq!(
        store.start_state("r")?.as_ref(),
        Some(&run.state),
        "the first state is kept"
    );
    assert_eq!(
        open().start_state("other")?,
        Some(record("other", 2, RunStatus::Running).state),
        "each run's own, through another connection"
    );
    Ok(())
}
