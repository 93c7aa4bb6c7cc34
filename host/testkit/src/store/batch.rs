//! `save_steps`: many steps in one transaction, each refused in its own slot without writing
//! anything, the others saved.

use serde_json::json;
use stepflow_store::{HistoryEntry, Lease, RunRecord, RunStatus, StepSave, Store, StoreError};

use super::fixtures::{calls, claimed_runs, entry, numbered, record, state, step};
use super::{CaseResult, Opener};

/// A batch with a cancelled run, a stale lease, an unknown run, an entry of another run and a
/// time past 2^63 reports each refusal in its slot (in the order of the steps) and writes
/// nothing for it, while the other steps (two of one run, in order) are saved.
pub fn each_refusal_is_reported_in_its_slot_and_the_other_steps_are_saved(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
    let leases = claimed_runs(store.as_mut(), 5)?;
    store.set_status("r1", RunStatus::Cancelled)?;
    let stale = Lease {
        fence: 0,
        ..leases[2].clone()
    };
    let before: Vec<RunRecord> = ["r1", "r2", "r3", "r4"]
        .iter()
        .map(|id| store.run(id))
        .collect::<Result<_, _>>()?;

    let new_state = state("b", json!({ "n": 9 }));
    let entries: Vec<HistoryEntry> = (0..5).map(|i| entry(&format!("r{i}"), "a")).collect();
    let of_other_run = entry("r0", "a");
    let of_unknown = entry("unknown", "a");
    let steps = [
        StepSave {
            history: std::slice::from_ref(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&entries[1]),
            lease: Some(&leases[1]),
            ..step("r1", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&entries[2]),
            lease: Some(&stale),
            ..step("r2", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&of_unknown),
            ..step("unknown", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&of_other_run),
            lease: Some(&leases[3]),
            ..step("r3", RunStatus::Waiting, &new_state)
        },
        StepSave {
            next_check_ms: Some(u64::MAX),
            history: std::slice::from_ref(&entries[4]),
            lease: Some(&leases[4]),
            ..step("r4", RunStatus::Waiting, &new_state)
        },
        // A second step of r0 in the same batch follows the first.
        StepSave {
            history: std::slice::from_ref(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Completed, &new_state)
        },
    ];
    let results = store.save_steps(&steps)?;
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "ok",
            Err(StoreError::Cancelled { .. }) => "cancelled",
            Err(StoreError::LeaseLost { .. }) => "lease lost",
            Err(StoreError::NotFound { .. }) => "not found",
            Err(StoreError::Invalid { .. }) => "invalid",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "cancelled",
            "lease lost",
            "not found",
            "invalid",
            "invalid",
            "ok"
        ],
        "{results:?}"
    );

    let r0 = store.run("r0")?;
    assert_eq!(
        (r0.status, &r0.state),
        (RunStatus::Completed, &new_state),
        "r0's second step is its last"
    );
    let seqs: Vec<u64> = store.history("r0")?.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2], "both of r0's entries");
    for (id, was) in ["r1", "r2", "r3", "r4"].iter().zip(&before) {
        assert_eq!(&store.run(id)?, was, "{id} is unchanged");
        assert!(store.history(id)?.is_empty(), "{id} has no new history");
    }
    assert!(
        matches!(store.run("unknown"), Err(StoreError::NotFound { .. })),
        "no run was created"
    );
    Ok(())
}

/// A batch mixing saves of no call, one call and three calls (of several runs, and two of
/// one run) numbers each run's entries on from its last one, in the order of the batch and of
/// each save's calls; a save of three calls refused in its slot (a stale lease) writes none of
/// them, and the others are saved.
pub fn a_batch_mixing_saves_of_zero_one_and_three_calls_saves_each_in_order(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
    let leases = claimed_runs(store.as_mut(), 4)?;
    let old = state("a", json!({ "n": 0 }));
    // r0 has one entry already.
    let first = entry("r0", "first");
    store.save_step(&StepSave {
        history: std::slice::from_ref(&first),
        lease: Some(&leases[0]),
        ..step("r0", RunStatus::Running, &old)
    })?;
    let r3_before = store.run("r3")?;
    let stale = Lease {
        fence: 0,
        ..leases[3].clone()
    };

    let new_state = state("b", json!({ "n": 9 }));
    let r0_three = calls("r0", &["x", "y", "z"]);
    let r0_one = entry("r0", "after");
    let r2_one = entry("r2", "one");
    let r2_three = calls("r2", &["p", "q", "s"]);
    let r3_three = calls("r3", &["x", "y", "z"]);
    let steps = [
        StepSave {
            history: &r0_three,
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Running, &new_state)
        },
        StepSave {
            lease: Some(&leases[1]),
            ..step("r1", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&r2_one),
            lease: Some(&leases[2]),
            ..step("r2", RunStatus::Running, &new_state)
        },
        StepSave {
            history: &r3_three,
            lease: Some(&stale),
            ..step("r3", RunStatus::Completed, &new_state)
        },
        StepSave {
            history: std::slice::from_ref(&r0_one),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Completed, &new_state)
        },
        StepSave {
            history: &r2_three,
            lease: Some(&leases[2]),
            ..step("r2", RunStatus::Waiting, &new_state)
        },
    ];
    let results = store.save_steps(&steps)?;
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, true, false, true, true], "{results:?}");
    assert!(
        matches!(&results[3], Err(StoreError::LeaseLost { run, .. }) if run == "r3"),
        "{results:?}"
    );

    let r0: Vec<HistoryEntry> = [
        vec![HistoryEntry { seq: 1, ..first }],
        numbered(&r0_three, 1),
        numbered(std::slice::from_ref(&r0_one), 4),
    ]
    .concat();
    assert_eq!(
        store.history("r0")?,
        r0,
        "r0: its entry, the three, then one more"
    );
    assert_eq!(
        store.history_page("r0", 1, 3)?,
        (r0[1..4].to_vec(), 5),
        "r0's three"
    );
    assert_eq!(
        store.run("r0")?.status,
        RunStatus::Completed,
        "r0's last save"
    );

    assert_eq!(
        store.history_page("r1", 0, 10)?,
        (Vec::new(), 0),
        "r1 called nothing"
    );
    let r1 = store.run("r1")?;
    assert_eq!(
        (r1.status, &r1.state),
        (RunStatus::Waiting, &new_state),
        "r1 is saved"
    );

    let r2: Vec<HistoryEntry> = [
        numbered(std::slice::from_ref(&r2_one), 0),
        numbered(&r2_three, 1),
    ]
    .concat();
    assert_eq!(store.history("r2")?, r2, "r2: one, then three");
    assert_eq!(store.history_page("r2", 0, 10)?.1, 4, "r2's total");
    assert_eq!(
        store.run("r2")?.status,
        RunStatus::Waiting,
        "r2's last save"
    );

    assert_eq!(store.run("r3")?, r3_before, "r3 is unchanged");
    assert_eq!(
        store.history_page("r3", 0, 10)?,
        (Vec::new(), 0),
        "none of r3's three"
    );
    assert_eq!(open().history("r0")?, r0, "a new connection reads the same");
    Ok(())
}

/// An empty batch saves nothing and reports nothing.
pub fn an_empty_batch_saves_nothing(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let before = store.run("r")?;
    assert!(store.save_steps(&[])?.is_empty(), "no slots");
    assert_eq!(store.run("r")?, before, "nothing changed");
    Ok(())
}
