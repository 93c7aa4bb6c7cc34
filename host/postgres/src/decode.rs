//! Rows back into records; a value this build cannot read is [`StoreError::BadRecord`] naming
//! the run and the column, never a panic.

use stepflow_model::{CallKind, State};
use stepflow_store::{HistoryEntry, LeaseInfo, RunRecord, RunStatus, StepOutcome, StoreError};
use tokio_postgres::Row;

use crate::db::get;
use crate::error::bad_record;

/// The select list of a run, in the order [`run`] reads it; `seq` last, for page positions.
pub(crate) const RUN_COLUMNS: &str = "id, flow, flow_file, definition, deployment, status, \
     state::text, next_check_ms, last_error, created_ms, updated_ms, lease_owner, \
     lease_expires_ms, lease_fence, seq";

/// The index of `seq` in [`RUN_COLUMNS`].
pub(crate) const RUN_SEQ: usize = 14;

/// The select list of a history entry, in the order [`history`] reads it.
pub(crate) const HISTORY_COLUMNS: &str = "seq, step, kind, attempt, outcome, started_ms, \
     duration_ms, error, patch::text, redelivered, handlers::text";

/// A stored time (non-negative milliseconds) as `u64`.
fn time(value: i64, location: &str, id: &str, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| bad_record(location, id, column, "a negative time"))
}

/// A status as stored.
pub(crate) fn status(location: &str, id: &str, text: &str) -> Result<RunStatus, StoreError> {
    text.parse()
        .map_err(|e| bad_record(location, id, "status", e))
}

/// A run from a row of [`RUN_COLUMNS`].
pub(crate) fn run(row: &Row, location: &str) -> Result<RunRecord, StoreError> {
    let id: String = row
        .try_get(0)
        .map_err(|e| bad_record(location, "?", "id", e))?;
    let text = |at: usize, column: &str| get::<String>(row, at, location, &id, column);
    let opt_text = |at: usize, column: &str| get::<Option<String>>(row, at, location, &id, column);
    let int = |at: usize, column: &str| get::<i64>(row, at, location, &id, column);
    let opt_int = |at: usize, column: &str| get::<Option<i64>>(row, at, location, &id, column);
    let state_text = text(6, "state")?;
    let state: State =
        serde_json::from_str(&state_text).map_err(|e| bad_record(location, &id, "state", e))?;
    let lease = match (
        opt_text(11, "lease_owner")?,
        opt_int(12, "lease_expires_ms")?,
    ) {
        (Some(owner), expires) => Some(LeaseInfo {
            owner,
            expires_ms: time(expires.unwrap_or(0), location, &id, "lease_expires_ms")?,
            fence: time(int(13, "lease_fence")?, location, &id, "lease_fence")?,
        }),
        (None, _) => None,
    };
    Ok(RunRecord {
        flow: text(1, "flow")?,
        flow_file: text(2, "flow_file")?,
        definition: text(3, "definition")?,
        deployment: opt_text(4, "deployment")?,
        status: status(location, &id, &text(5, "status")?)?,
        state,
        next_check_ms: opt_int(7, "next_check_ms")?
            .map(|t| time(t, location, &id, "next_check_ms"))
            .transpose()?,
        last_error: opt_text(8, "last_error")?,
        created_ms: time(int(9, "created_ms")?, location, &id, "created_ms")?,
        updated_ms: time(int(10, "updated_ms")?, location, &id, "updated_ms")?,
        lease,
        id,
    })
}

/// A history entry of run `run_id` from a row of [`HISTORY_COLUMNS`].
pub(crate) fn history(row: &Row, location: &str, run_id: &str) -> Result<HistoryEntry, StoreError> {
    let seq: i64 = get(row, 0, location, run_id, "history.seq")?;
    let column = |name: &str| format!("history entry {seq}: {name}");
    let text = |at: usize, name: &str| get::<String>(row, at, location, run_id, &column(name));
    let opt_text =
        |at: usize, name: &str| get::<Option<String>>(row, at, location, run_id, &column(name));
    let int = |at: usize, name: &str| get::<i64>(row, at, location, run_id, &column(name));
    let kind: CallKind = text(2, "kind")?
        .parse()
        .map_err(|e| bad_record(location, run_id, &column("kind"), e))?;
    let outcome: StepOutcome = text(4, "outcome")?
        .parse()
        .map_err(|e| bad_record(location, run_id, &column("outcome"), e))?;
    let patch = opt_text(8, "patch")?
        .map(|p| serde_json::from_str(&p))
        .transpose()
        .map_err(|e| bad_record(location, run_id, &column("patch"), e))?;
    let handlers = opt_text(10, "handlers")?
        .map(|h| serde_json::from_str(&h))
        .transpose()
        .map_err(|e| bad_record(location, run_id, &column("handlers"), e))?
        .unwrap_or_default();
    let attempt = u32::try_from(int(3, "attempt")?)
        .map_err(|e| bad_record(location, run_id, &column("attempt"), e))?;
    Ok(HistoryEntry {
        run_id: run_id.to_string(),
        seq: time(seq, location, run_id, "history.seq")?,
        step: text(1, "step")?,
        kind,
        attempt,
        outcome,
        started_ms: time(
            int(5, "started_ms")?,
            location,
            run_id,
            &column("started_ms"),
        )?,
        duration_ms: time(
            int(6, "duration_ms")?,
            location,
            run_id,
            &column("duration_ms"),
        )?,
        error: opt_text(7, "error")?,
        patch,
        redelivered: get(row, 9, location, run_id, &column("redelivered"))?,
        handlers,
    })
}
