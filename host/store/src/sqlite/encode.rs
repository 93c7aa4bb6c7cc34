//! Records into the values SQLite binds, converted before any transaction starts, so a value
//! that does not fit (a time past 2^63, an entry of another run) is refused before writing.

use rusqlite::types::ValueRef;
use stepflow_model::State;

use super::checksum;

use crate::check;
use crate::{Deployment, HistoryEntry, RunRecord, StepSave, StoreError};

pub(super) use crate::check::{invalid, now, opt_i64, sha256_hex, to_i64};

/// A new run, ready to bind.
pub(super) struct RunRow {
    pub state: String,
    pub next_check_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The first claim, for a run created already claimed: owner and expiry.
    pub lease: Option<(String, i64)>,
    /// The checksum of the row's values (see `checksum.rs`).
    pub checksum: i64,
}

impl RunRow {
    /// Converts the values of `run` that SQLite cannot take as they are.
    pub(super) fn new(run: &RunRecord) -> Result<Self, StoreError> {
        let id = run.id.as_str();
        let lease = check::first_lease(run)?.map(|(owner, expires)| (owner.to_string(), expires));
        let state = state_json(id, &run.state)?;
        let next_check_ms = opt_i64(id, "next_check_ms", run.next_check_ms)?;
        let created_ms = to_i64(id, "created_ms", run.created_ms)?;
        let checksum = checksum::run(&[
            checksum::text(id),
            checksum::text(&run.flow),
            checksum::text(&run.flow_file),
            checksum::text(&run.definition),
            checksum::text(&state),
            checksum::opt_int(next_check_ms),
            checksum::opt_text(run.last_error.as_deref()),
            ValueRef::Integer(created_ms),
            checksum::opt_text(run.deployment.as_deref()),
        ]);
        Ok(RunRow {
            state,
            next_check_ms,
            created_ms,
            updated_ms: to_i64(id, "updated_ms", run.updated_ms)?,
            lease,
            checksum: checksum::to_stored(checksum),
        })
    }
}

/// What one apply changed, ready to bind; `updated_ms` is now.
pub(super) struct StepRow<'a> {
    pub state: String,
    pub next_check_ms: Option<i64>,
    pub updated_ms: i64,
    /// The entries of the apply's calls, in the order they are numbered; empty when it called
    /// nothing.
    pub history: Vec<HistoryRow<'a>>,
}

impl<'a> StepRow<'a> {
    /// Converts `step` and every one of its history entries: one that does not fit refuses the
    /// whole step.
    pub(super) fn new(step: &StepSave<'a>) -> Result<Self, StoreError> {
        let id = step.run_id;
        check::step_lease(step)?;
        Ok(StepRow {
            state: state_json(id, step.state)?,
            next_check_ms: opt_i64(id, "next_check_ms", step.next_check_ms)?,
            updated_ms: now(id)?,
            history: step
                .history
                .iter()
                .map(|entry| HistoryRow::new(id, entry))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A history entry, ready to bind; the store assigns its `seq`.
pub(super) struct HistoryRow<'a> {
    pub step: &'a str,
    pub kind: &'static str,
    pub attempt: u32,
    pub outcome: &'static str,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub error: Option<&'a str>,
    pub patch: Option<String>,
    pub redelivered: bool,
    /// The handler calls as JSON; `None` when there were none.
    pub handlers: Option<String>,
}

impl<'a> HistoryRow<'a> {
    /// The checksum of this entry saved as entry `seq` of run `run_id`: every column, in the
    /// order of the table.
    pub(super) fn checksum(&self, run_id: &str, seq: i64) -> i64 {
        checksum::to_stored(checksum::of(&[
            checksum::text(run_id),
            ValueRef::Integer(seq),
            checksum::text(self.step),
            checksum::text(self.kind),
            ValueRef::Integer(i64::from(self.attempt)),
            checksum::text(self.outcome),
            ValueRef::Integer(self.started_ms),
            ValueRef::Integer(self.duration_ms),
            checksum::opt_text(self.error),
            checksum::opt_text(self.patch.as_deref()),
            ValueRef::Integer(i64::from(self.redelivered)),
            checksum::opt_text(self.handlers.as_deref()),
        ]))
    }

    /// Converts `entry`, refusing one that names another run than `run_id`.
    fn new(run_id: &str, entry: &'a HistoryEntry) -> Result<Self, StoreError> {
        check::history_run(run_id, entry)?;
        let patch = entry
            .patch
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| invalid(run_id, e))?;
        let handlers = if entry.handlers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&entry.handlers).map_err(|e| invalid(run_id, e))?)
        };
        Ok(HistoryRow {
            step: &entry.step,
            kind: entry.kind.as_str(),
            attempt: entry.attempt,
            outcome: entry.outcome.as_str(),
            started_ms: to_i64(run_id, "history started_ms", entry.started_ms)?,
            duration_ms: to_i64(run_id, "history duration_ms", entry.duration_ms)?,
            error: entry.error.as_deref(),
            patch,
            redelivered: entry.redelivered,
            handlers,
        })
    }
}

/// The state of run `id` as the JSON text stored in `runs.state`.
fn state_json(id: &str, state: &State) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| invalid(id, e))
}

/// A deployment, checked and ready to bind: its id and every plugin's hash have the stored
/// form, and every plugin's bytes hash to its `sha256`.
pub(super) struct DeploymentRow {
    pub created_ms: i64,
    /// The checksum of the deployment's row and plugin list (see `checksum.rs`).
    pub checksum: i64,
}

impl DeploymentRow {
    /// Checks `deployment` (hashing every plugin's bytes) before any transaction starts.
    pub(super) fn new(deployment: &Deployment) -> Result<Self, StoreError> {
        let id = deployment.id.as_str();
        let created_ms = check::deployment(deployment)?;
        let mut sum = checksum::Sum::default();
        for value in [
            checksum::text(id),
            checksum::text(&deployment.flow),
            checksum::text(&deployment.source),
            checksum::text(&deployment.source_path),
            ValueRef::Integer(created_ms),
        ] {
            sum.add(value);
        }
        for plugin in &deployment.plugins {
            sum.add(checksum::text(&plugin.name));
            sum.add(checksum::text(&plugin.sha256));
        }
        Ok(DeploymentRow {
            created_ms,
            checksum: checksum::to_stored(sum.finish()),
        })
    }
}
