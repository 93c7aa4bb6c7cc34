//! `save_steps`: many steps in one transaction, each refused in its own slot without writing
//! anything, the others saved.

use serde_json::json;
use stepflow_store::{HistoryEntry, Lease, RunRecord, RunStatus, StepSave, Store, StoreError};

use super::fixtures::{claimed_runs, entry, record, state, step};
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
            history: Some(&entries[0]),
            lease: Some(&leases[0]),
            ..step("r0", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&entries[1]),
            lease: Some(&leases[1]),
            ..step("r1", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&entries[2]),
            lease: Some(&stale),
            ..step("r2", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&of_unknown),
            ..step("unknown", RunStatus::Waiting, &new_state)
        },
        StepSave {
            history: Some(&of_other_run),
            lease: Some(&leases[3]),
            ..step("r3", RunStatus::Waiting, &new_state)
        },
        StepSave {
            next_check_ms: Some(u64::MAX),
            history: Some(&entries[4]),
            lease: Some(&leases[4]),
            ..step("r4", RunStatus::Waiting, &new_state)
        },
        // A second step of r0 in the same batch follows the first.
        StepSave {
            history: Some(&entries[0]),
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

/// An empty batch saves nothing and reports nothing.
pub fn an_empty_batch_saves_nothing(open: &Opener) -> CaseResult {
    let mut store = open();
    store.create_run(&record("r", 1, RunStatus::Running))?;
    let before = store.run("r")?;
    assert!(store.save_steps(&[])?.is_empty(), "no slots");
    assert_eq!(store.run("r")?, before, "nothing changed");
    Ok(())
}
