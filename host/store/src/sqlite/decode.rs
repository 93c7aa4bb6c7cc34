//! Rows back into [`RunRecord`] and [`HistoryEntry`]: every value is checked, and bad data (a
//! hand edit, damage) is a [`StoreError::BadRecord`] naming the run and the column (and the
//! history entry), never a panic.

use std::path::Path;

use rusqlite::Row;
use rusqlite::types::{FromSql, ValueRef};
use stepflow_model::{CallKind, HandlerCall, Signal, State};

use super::{checksum, schema};
use crate::{HistoryEntry, LeaseInfo, RunRecord, RunStatus, StepOutcome, StoreError};

/// The columns of `runs` that [`run`] reads, in its order.
const RUN_COLUMNS: &[&str] = &[
    "id",
    "flow",
    "flow_file",
    "definition",
    "status",
    "state",
    "next_check_ms",
    "last_error",
    "created_ms",
    "updated_ms",
    "lease_owner",
    "lease_expires_ms",
    "lease_fence",
    "checksum",
    "deployment",
];

/// Where [`RUN_COLUMNS`] has the values a run's checksum covers, in the checksum's order
/// ([`checksum::RunValues`]).
const RUN_CHECKED: [usize; 9] = [0, 1, 2, 3, 5, 6, 7, 8, 14];
/// Where [`RUN_COLUMNS`] has the checksum.
const RUN_CHECKSUM: usize = 13;

/// The columns of `history` that [`history`] reads, in its order.
const HISTORY_COLUMNS: &[&str] = &[
    "run_id",
    "seq",
    "step",
    "kind",
    "attempt",
    "outcome",
    "started_ms",
    "duration_ms",
    "error",
    "patch",
    "redelivered",
    "handlers",
    "checksum",
];

/// Where [`HISTORY_COLUMNS`] has the values a history row's checksum covers: all but the last.
const HISTORY_CHECKED: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
/// Where [`HISTORY_COLUMNS`] has the checksum.
const HISTORY_CHECKSUM: usize = 12;

/// The select list for [`run`] in a database at schema `version`.
pub(super) fn run_columns(version: i64) -> String {
    select_list(version, "runs", RUN_COLUMNS)
}

/// The select list for [`history`] in a database at schema `version`.
pub(super) fn history_columns(version: i64) -> String {
    select_list(version, "history", HISTORY_COLUMNS)
}

/// `columns` of `table` as a select list, each read as [`schema::read_expr`] says.
fn select_list(version: i64, table: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|column| schema::read_expr(version, table, column))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of [`run_columns`] as a record, its checksum checked first if `verify`.
pub(super) fn run(row: &Row<'_>, path: &Path, verify: bool) -> Result<RunRecord, StoreError> {
    let id: String = Fields::new(row, path, "?").get(0, "id")?;
    let f = Fields::new(row, path, &id);
    if verify {
        let values = f.run_values(RUN_CHECKED)?;
        f.verify_sum(RUN_CHECKSUM, checksum::run(&values), || {
            "the run's row".into()
        })?;
    }
    let status: String = f.get(4, "status")?;
    let status = run_status(path, &id, &status)?;
    let state: String = f.get(5, "state")?;
    let state: State = serde_json::from_str(&state).map_err(|e| f.bad("state (JSON)", e))?;
    Ok(RunRecord {
        flow: f.get(1, "flow")?,
        flow_file: f.get(2, "flow_file")?,
        definition: f.get(3, "definition")?,
        deployment: f.get(14, "deployment")?,
        status,
        state,
        next_check_ms: f.get_opt_u64(6, "next_check_ms")?,
        last_error: f.get(7, "last_error")?,
        created_ms: f.get_u64(8, "created_ms")?,
        updated_ms: f.get_u64(9, "updated_ms")?,
        lease: lease(&f, 10)?.0,
        id,
    })
}

/// The columns [`held`] reads, in its order; [`held_for_save`] reads more after them.
macro_rules! held_columns {
    () => {
        "status, lease_owner, lease_expires_ms, lease_fence"
    };
}
pub(super) use held_columns;

/// The columns [`held_for_save`] reads after `held_columns!()`: those a run's checksum covers
/// (in its order, [`checksum::RunValues`]) and the checksum.
macro_rules! checked_run_columns {
    () => {
        "id, flow, flow_file, definition, state, next_check_ms, last_error, created_ms, \
         deployment, checksum"
    };
}
pub(super) use checked_run_columns;

/// The checksum a run's row gets at a save, or the error of its stored row failing its
/// checksum (reported only after the save's other checks).
pub(super) type Checked = Result<u32, StoreError>;

/// Where `held_columns!(), checked_run_columns!()` has the values a run's checksum covers.
const HELD_CHECKED: [usize; 9] = [4, 5, 6, 7, 8, 9, 10, 11, 12];
/// Where `held_columns!(), checked_run_columns!()` has the checksum.
const HELD_CHECKSUM: usize = 13;

/// Where [`checksum::RunValues`] has each value a write may replace, for [`held_for_save`].
pub(super) mod at {
    /// The definition hash (`move_run`).
    pub const DEFINITION: usize = 3;
    /// The state (`save_step`).
    pub const STATE: usize = 4;
    /// The next check time (`save_step`).
    pub const NEXT_CHECK_MS: usize = 5;
    /// The last error (`save_step`).
    pub const LAST_ERROR: usize = 6;
    /// The deployment (`move_run`).
    pub const DEPLOYMENT: usize = 8;
}

/// A row of `held_columns!(), checked_run_columns!()` of run `id`: where the run stands, and
/// (unless the row fails its checksum: the inner error, left for the caller to report after its
/// other checks) the checksum of the run's row once the values in `replaced` (positions in
/// [`checksum::RunValues`], see [`at`]: what the write changes) replace the stored ones.
pub(super) fn held_for_save<'a>(
    row: &'a Row<'_>,
    path: &Path,
    id: &str,
    replaced: &[(usize, ValueRef<'a>)],
) -> Result<(Held, Checked), StoreError> {
    let held = held(row, path, id)?;
    let f = Fields::new(row, path, id);
    let checked = f.run_values(HELD_CHECKED).and_then(|mut values| {
        f.verify_sum(HELD_CHECKSUM, checksum::run(&values), || {
            "the run's row".into()
        })?;
        for &(index, value) in replaced {
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
        }
        Ok(checksum::run(&values))
    });
    Ok((held, checked))
}

/// Where a run stands for a writer: its status and who holds it.
pub(super) struct Held {
    /// The run's status.
    pub status: RunStatus,
    /// The current lease, if anyone holds the run.
    pub lease: Option<LeaseInfo>,
    /// The run's fence (kept when a lease is released).
    pub fence: u64,
}

impl Held {
    /// Whether `owner` holds the run with `fence`: the test every leased write passes.
    pub(super) fn is_held_by(&self, owner: &str, fence: u64) -> bool {
        self.fence == fence && self.lease.as_ref().is_some_and(|l| l.owner == owner)
    }
}

/// A row of `held_columns!()` of run `id`.
pub(super) fn held(row: &Row<'_>, path: &Path, id: &str) -> Result<Held, StoreError> {
    let f = Fields::new(row, path, id);
    let status: String = f.get(0, "status")?;
    let (lease, fence) = lease(&f, 1)?;
    Ok(Held {
        status: run_status(path, id, &status)?,
        lease,
        fence,
    })
}

/// The lease columns (owner, expiry, fence) starting at `at`: the lease if anyone holds the
/// run, and the fence.
fn lease(f: &Fields<'_, '_>, at: usize) -> Result<(Option<LeaseInfo>, u64), StoreError> {
    let owner: Option<String> = f.get(at, "lease_owner")?;
    let expires_ms = f.get_opt_u64(at + 1, "lease_expires_ms")?;
    let fence = f.get_u64(at + 2, "lease_fence")?;
    let lease = match (owner, expires_ms) {
        (Some(owner), Some(expires_ms)) => Some(LeaseInfo {
            owner,
            expires_ms,
            fence,
        }),
        (None, None) => None,
        (Some(_), None) => return Err(f.bad("lease_expires_ms", "missing beside lease_owner")),
        (None, Some(_)) => return Err(f.bad("lease_owner", "missing beside lease_expires_ms")),
    };
    Ok((lease, fence))
}

/// A row of [`history_columns`] of run `run_id` as an entry, its checksum checked first if
/// `verify`.
pub(super) fn history(
    row: &Row<'_>,
    path: &Path,
    run_id: &str,
    verify: bool,
) -> Result<HistoryEntry, StoreError> {
    let f = Fields::new(row, path, run_id);
    if verify {
        f.verify(&HISTORY_CHECKED, HISTORY_CHECKSUM, || {
            match row.get_ref(1).ok().and_then(|v| v.as_i64().ok()) {
                Some(seq) => format!("history entry {seq}"),
                None => "a history entry".into(),
            }
        })?;
    }
    let seq = f.get_u64(1, "history seq")?;
    let column = |name: &str| format!("history entry {seq} ({name})");
    let attempt: i64 = f.get(4, &column("attempt"))?;
    let attempt = u32::try_from(attempt)
        .map_err(|_| f.bad(column("attempt"), format!("out of range: {attempt}")))?;
    let patch: Option<String> = f.get(9, &column("patch"))?;
    let patch = patch
        .map(|p| serde_json::from_str(&p).map_err(|e| f.bad(column("patch"), e)))
        .transpose()?;
    let redelivered: i64 = f.get(10, &column("redelivered"))?;
    let handlers: Option<String> = f.get(11, &column("handlers"))?;
    let handlers: Vec<HandlerCall> = handlers
        .map(|h| serde_json::from_str(&h).map_err(|e| f.bad(column("handlers"), e)))
        .transpose()?
        .unwrap_or_default();
    let entry_run_id = f.get(0, &column("run_id"))?;
    let step = f.get(2, &column("step"))?;
    let kind: String = f.get(3, &column("kind"))?;
    let kind: CallKind = kind.parse().map_err(|e| f.bad(column("kind"), e))?;
    let outcome: String = f.get(5, &column("outcome"))?;
    let outcome: StepOutcome = outcome.parse().map_err(|e| f.bad(column("outcome"), e))?;
    Ok(HistoryEntry {
        run_id: entry_run_id,
        seq,
        step,
        kind,
        attempt,
        outcome,
        started_ms: f.get_u64(6, &column("started_ms"))?,
        duration_ms: f.get_u64(7, &column("duration_ms"))?,
        error: f.get(8, &column("error"))?,
        patch,
        redelivered: redelivered != 0,
        handlers,
    })
}

/// The stored `status` text of run `id` as a [`RunStatus`].
pub(super) fn run_status(path: &Path, id: &str, text: &str) -> Result<RunStatus, StoreError> {
    text.parse().map_err(|e| bad_record(path, id, "status", e))
}

/// A [`StoreError::BadRecord`] for a value of run `id` that cannot be read.
fn bad_record(
    path: &Path,
    id: &str,
    column: impl Into<String>,
    detail: impl ToString,
) -> StoreError {
    StoreError::BadRecord {
        id: id.to_string(),
        location: path.display().to_string(),
        column: column.into(),
        detail: detail.to_string(),
    }
}

/// The columns of one row of run `id`, each read with its type checked.
struct Fields<'a, 'r> {
    row: &'a Row<'r>,
    path: &'a Path,
    id: &'a str,
}

impl<'a, 'r> Fields<'a, 'r> {
    fn new(row: &'a Row<'r>, path: &'a Path, id: &'a str) -> Self {
        Fields { row, path, id }
    }

    /// A [`StoreError::BadRecord`] for `column` of this row.
    fn bad(&self, column: impl Into<String>, detail: impl ToString) -> StoreError {
        bad_record(self.path, self.id, column, detail)
    }

    /// Checks the checksum at `checksum` (if the row has one) against the columns `checked`;
    /// a mismatch is a [`StoreError::Checksum`] naming the row as `row` says.
    pub(super) fn verify(
        &self,
        checked: &[usize],
        checksum: usize,
        row: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let computed = checksum::of_columns(self.row, checked)
            .ok_or_else(|| self.bad("checksum", "the row lacks the columns it covers"))?;
        self.verify_sum(checksum, computed, row)
    }

    /// The values of a run's checksum, from the columns at `indexes`.
    fn run_values(&self, indexes: [usize; 9]) -> Result<checksum::RunValues<'a>, StoreError> {
        let mut values: checksum::RunValues<'a> = [ValueRef::Null; 9];
        for (slot, index) in values.iter_mut().zip(indexes) {
            *slot = self
                .row
                .get_ref(index)
                .map_err(|_| self.bad("checksum", "the row lacks the columns it covers"))?;
        }
        Ok(values)
    }

    /// Checks the checksum at `checksum` (if the row has one) against `computed`, the checksum
    /// of what the row holds; a mismatch is a [`StoreError::Checksum`] naming the row as `row`
    /// says.
    fn verify_sum(
        &self,
        checksum: usize,
        computed: u32,
        row: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let stored: Option<i64> = self.get(checksum, "checksum")?;
        let Some(stored) = stored else {
            return Ok(()); // saved before checksums: read unchecked
        };
        let stored = u32::try_from(stored)
            .map_err(|_| self.bad("checksum", format!("out of range: {stored}")))?;
        if computed == stored {
            return Ok(());
        }
        Err(StoreError::Checksum {
            id: self.id.to_string(),
            location: self.path.display().to_string(),
            row: row(),
            stored,
            computed,
        })
    }

    /// One column, any type mismatch reported as a bad record.
    fn get<T: FromSql>(&self, index: usize, column: &str) -> Result<T, StoreError> {
        self.row.get(index).map_err(|e| self.bad(column, e))
    }

    /// A stored integer that must not be negative.
    fn get_u64(&self, index: usize, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.get(index, column)?;
        u64::try_from(value).map_err(|_| self.bad(column, format!("negative value {value}")))
    }

    /// [`Fields::get_u64`] for a nullable column.
    fn get_opt_u64(&self, index: usize, column: &str) -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = self.get(index, column)?;
        value
            .map(|v| u64::try_from(v).map_err(|_| self.bad(column, format!("negative value {v}"))))
            .transpose()
    }
}

/// The columns a signal is read from, in the order of the `signals` table; the checksum
/// covers every one before it.
pub(super) const SIGNAL_COLUMNS: &str = "run_id, seq, id, name, payload, received_ms, checksum";

/// A row of [`SIGNAL_COLUMNS`] of run `run_id` as a signal, its checksum checked first if
/// `verify`.
pub(super) fn signal(
    row: &Row<'_>,
    path: &Path,
    run_id: &str,
    verify: bool,
) -> Result<Signal, StoreError> {
    let f = Fields::new(row, path, run_id);
    if verify {
        f.verify(&[0, 1, 2, 3, 4, 5], 6, || {
            match row.get_ref(1).ok().and_then(|v| v.as_i64().ok()) {
                Some(seq) => format!("signal {seq}"),
                None => "a signal".into(),
            }
        })?;
    }
    let seq = f.get_u64(1, "signal seq")?;
    let column = |name: &str| format!("signal {seq} ({name})");
    let payload: String = f.get(4, &column("payload"))?;
    Ok(Signal {
        seq,
        id: f.get(2, &column("id"))?,
        name: f.get(3, &column("name"))?,
        payload: serde_json::from_str(&payload).map_err(|e| f.bad(column("payload"), e))?,
        received_ms: f.get_u64(5, &column("received_ms"))?,
    })
}
