//! Records into the values SQLite binds, converted before any transaction starts, so a value
//! that does not fit (a time past 2^63, an entry of another run) is refused before writing.

use rusqlite::types::ValueRef;
use stepflow_model::{Clock, State, SystemClock};

use super::checksum;

use crate::{Deployment, HistoryEntry, RunRecord, StepSave, StoreError, Subject};

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
        let lease = match &run.lease {
            None => None,
            Some(lease) if lease.fence == 1 => Some((
                lease.owner.clone(),
                to_i64(id, "lease expiry", lease.expires_ms)?,
            )),
            Some(lease) => {
                return Err(invalid(
                    id,
                    format!(
                        "a new run can only hold its first claim (fence 1), not fence {}",
                        lease.fence
                    ),
                ));
            }
        };
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
    pub history: Option<HistoryRow<'a>>,
}

impl<'a> StepRow<'a> {
    /// Converts `step`, and its history entry if it has one.
    pub(super) fn new(step: &StepSave<'a>) -> Result<Self, StoreError> {
        let id = step.run_id;
        if let Some(lease) = step.lease
            && lease.run_id != id
        {
            return Err(invalid(
                id,
                format!("the lease given is for run `{}`", lease.run_id),
            ));
        }
        Ok(StepRow {
            state: state_json(id, step.state)?,
            next_check_ms: opt_i64(id, "next_check_ms", step.next_check_ms)?,
            updated_ms: now(id)?,
            history: step
                .history
                .map(|entry| HistoryRow::new(id, entry))
                .transpose()?,
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
        if !entry.run_id.is_empty() && entry.run_id != run_id {
            return Err(invalid(
                run_id,
                format!("the history entry given is for run `{}`", entry.run_id),
            ));
        }
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

/// The current time as stored in `updated_ms` of run `id`.
pub(super) fn now(id: &str) -> Result<i64, StoreError> {
    to_i64(id, "updated_ms", SystemClock.now_ms())
}

/// The state of run `id` as the JSON text stored in `runs.state`.
fn state_json(id: &str, state: &State) -> Result<String, StoreError> {
    serde_json::to_string(state).map_err(|e| invalid(id, e))
}

/// SQLite integers are signed 64-bit; a larger time is refused rather than wrapped.
pub(super) fn to_i64(id: &str, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| invalid(id, format!("{what} {value} is too large (over 2^63)")))
}

/// [`to_i64`] for a value that may be absent.
fn opt_i64(id: &str, what: &str, value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value.map(|v| to_i64(id, what, v)).transpose()
}

/// The error for a value of run `id` that the store cannot save.
pub(super) fn invalid(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Invalid {
        subject: Subject::Run,
        id: id.to_string(),
        detail: detail.to_string(),
    }
}

/// The error for a deployment `id` that the store cannot save.
fn invalid_deployment(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Invalid {
        subject: Subject::Deployment,
        id: id.to_string(),
        detail: detail.to_string(),
    }
}

/// The SHA-256 of `bytes` as 64 lower-case hex digits, the form of deployment ids and plugin
/// hashes.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// Whether `text` is a SHA-256 as the store keeps them: 64 lower-case hex digits.
pub(super) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
        if !is_sha256_hex(id) {
            return Err(invalid_deployment(
                id,
                "its id must be a SHA-256 of its content: 64 lower-case hex digits",
            ));
        }
        for plugin in &deployment.plugins {
            if !is_sha256_hex(&plugin.sha256) {
                return Err(invalid_deployment(
                    id,
                    format!(
                        "the sha256 of plugin `{}` must be 64 lower-case hex digits, not `{}`",
                        plugin.name, plugin.sha256
                    ),
                ));
            }
            let computed = sha256_hex(&plugin.bytes);
            if computed != plugin.sha256 {
                return Err(invalid_deployment(
                    id,
                    format!(
                        "the {} bytes of plugin `{}` have SHA-256 {computed}, not the {} given; \
                         nothing was saved",
                        plugin.bytes.len(),
                        plugin.name,
                        plugin.sha256
                    ),
                ));
            }
        }
        let created_ms = i64::try_from(deployment.created_ms).map_err(|_| {
            invalid_deployment(
                id,
                format!(
                    "created_ms {} is too large (over 2^63)",
                    deployment.created_ms
                ),
            )
        })?;
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
