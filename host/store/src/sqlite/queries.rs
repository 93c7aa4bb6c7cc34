//! The SQL behind each [`crate::Store`] method: the statements, and running them with one
//! transaction per call (one commit, so one fsync of the WAL, per saved step).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::checksum;
use super::decode::{self, Checked, Held, checked_run_columns, held_columns};
use super::encode::{self, RunRow, StepRow};
use super::error::{SQLITE_CONSTRAINT_CHECK, SQLITE_CONSTRAINT_PRIMARYKEY, classify, not_found};
use crate::{HistoryEntry, Lease, RunRecord, RunStatus, StepSave, StoreError};

/// The statements that read runs and history, for the schema version of the database: a
/// read-only store may read a database older than this build, which it cannot migrate.
pub(super) struct Reads {
    /// The database's schema version; 0 is an empty file (no tables yet, so no runs).
    version: i64,
    /// Whether rows are checked against their checksums (off only for benchmarks).
    pub verify: bool,
    select_run: String,
    list_runs: String,
    list_runs_by_status: String,
    history: String,
}

impl Reads {
    /// The statements for a database at schema `version`.
    pub(super) fn for_version(version: i64) -> Self {
        let runs = decode::run_columns(version);
        Reads {
            version,
            verify: true,
            select_run: format!("SELECT {runs} FROM runs WHERE id = ?1"),
            // `rowid` breaks ties between runs created in the same millisecond: the later
            // insert first.
            list_runs: format!(
                "SELECT {runs} FROM runs ORDER BY created_ms DESC, rowid DESC LIMIT ?1"
            ),
            list_runs_by_status: format!(
                "SELECT {runs} FROM runs WHERE status = ?1 \
                 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
            ),
            history: format!(
                "SELECT {} FROM history WHERE run_id = ?1 ORDER BY seq",
                decode::history_columns(version)
            ),
        }
    }

    /// Whether the database has no tables yet (an empty file): it holds no runs.
    fn is_empty(&self) -> bool {
        self.version == 0
    }
}

const INSERT_RUN: &str = "INSERT INTO runs (id, flow, flow_file, definition, status, state, \
                          next_check_ms, last_error, created_ms, updated_ms, checksum) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// `save_step` checks the run (cancelled? leased to the caller? its checksum?) under the write
/// lock first.
const UPDATE_STEP: &str = "UPDATE runs SET status = ?2, state = ?3, next_check_ms = ?4, \
                           last_error = ?5, updated_ms = ?6, checksum = ?7 WHERE id = ?1";

const HELD: &str = concat!("SELECT ", held_columns!(), " FROM runs WHERE id = ?1");

const HELD_FOR_SAVE: &str = concat!(
    "SELECT ",
    held_columns!(),
    ", ",
    checked_run_columns!(),
    " FROM runs WHERE id = ?1"
);

/// The store numbers history entries: one more than the run's last (an index lookup).
const NEXT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM history WHERE run_id = ?1";

const INSERT_HISTORY: &str = "INSERT INTO history (run_id, seq, step, kind, attempt, outcome, \
                              started_ms, duration_ms, error, patch, redelivered, handlers, \
                              checksum) \
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

const RUN_STATUS: &str = "SELECT status FROM runs WHERE id = ?1";

const SET_STATUS: &str = "UPDATE runs SET status = ?2, updated_ms = ?3 WHERE id = ?1";

/// [`crate::Store::create_run`]: one insert; a taken id is [`StoreError::AlreadyExists`].
pub(super) fn create_run(
    conn: &Connection,
    path: &Path,
    run: &RunRecord,
    checksums: bool,
) -> Result<(), StoreError> {
    let id = run.id.as_str();
    let row = RunRow::new(run)?;
    let action = || format!("creating run `{id}`");
    let mut stmt = conn
        .prepare_cached(INSERT_RUN)
        .map_err(|e| classify(path, action(), e))?;
    let result = stmt.execute(rusqlite::params![
        id,
        run.flow,
        run.flow_file,
        run.definition,
        run.status.as_str(),
        row.state,
        row.next_check_ms,
        run.last_error,
        row.created_ms,
        row.updated_ms,
        checksums.then_some(row.checksum),
    ]);
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_PRIMARYKEY) => {
            Err(StoreError::AlreadyExists {
                id: id.to_string(),
                location: path.display().to_string(),
            })
        }
        Err(e) => Err(classify(path, action(), e)),
    }
}

/// [`crate::Store::save_step`]: the run's update and its history entry in one transaction,
/// after checking, under the write lock, that the run may be written: it exists, is not
/// cancelled, is held with the caller's lease (if one is given), and its row is undamaged (its
/// checksum matches: a damaged state is not replaced silently, an operator must look at it).
/// With `checksums` off (benchmarks only) the row is neither checked nor given a checksum.
pub(super) fn save_step(
    conn: &mut Connection,
    path: &Path,
    step: &StepSave<'_>,
    checksums: bool,
) -> Result<(), StoreError> {
    let run_id = step.run_id;
    // Everything that can be refused without the database is checked before the transaction.
    let row = StepRow::new(step)?;

    let action = || format!("saving a step of run `{run_id}`");
    // IMMEDIATE takes the write lock up front, so the busy timeout applies to it rather
    // than failing when a read transaction is upgraded. One COMMIT: one fsync of the WAL.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    // Under the write lock, so nobody can cancel or take the run over before the commit.
    let found = if checksums {
        let saved = [
            checksum::text(&row.state),
            checksum::opt_int(row.next_check_ms),
            checksum::opt_text(step.last_error),
        ];
        held_for_save(&tx, path, run_id, saved)?.map(|(held, sum)| (held, Some(sum)))
    } else {
        held(&tx, path, run_id)?.map(|held| (held, None))
    };
    let Some((held, checked)) = found else {
        return Err(not_found(path, run_id));
    };
    if held.status == RunStatus::Cancelled {
        return Err(StoreError::Cancelled {
            id: run_id.to_string(),
        });
    }
    if let Some(lease) = step.lease
        && !held.is_held_by(&lease.owner, lease.fence)
    {
        return Err(lease_lost(lease, &held));
    }
    // After those: a driver of a damaged run that was cancelled or taken over hears that.
    let run_checksum = checked.transpose()?;
    tx.prepare_cached(UPDATE_STEP)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                run_id,
                step.status.as_str(),
                row.state,
                row.next_check_ms,
                step.last_error,
                row.updated_ms,
                run_checksum.map(checksum::to_stored),
            ])
        })
        .map_err(|e| classify(path, action(), e))?;
    if let Some(entry) = &row.history {
        let inserted = tx
            .prepare_cached(NEXT_SEQ)
            .and_then(|mut stmt| stmt.query_row([run_id], |r| r.get::<_, i64>(0)))
            .and_then(|seq| {
                let mut stmt = tx.prepare_cached(INSERT_HISTORY)?;
                stmt.execute(rusqlite::params![
                    run_id,
                    seq,
                    entry.step,
                    entry.kind,
                    entry.attempt,
                    entry.outcome,
                    entry.started_ms,
                    entry.duration_ms,
                    entry.error,
                    entry.patch,
                    entry.redelivered,
                    entry.handlers,
                    checksums.then(|| entry.checksum(run_id, seq)),
                ])
            });
        if let Err(e) = inserted {
            // Dropping `tx` rolls the state update back too.
            return Err(
                if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_CHECK) {
                    // The typed kind and outcome always fit the schema this build creates;
                    // a refusal means the file's CHECK lists differ from this build's types.
                    StoreError::Invalid {
                        id: run_id.to_string(),
                        detail: format!(
                            "the database refused the history entry for step `{}` (kind `{}`, \
                             outcome `{}`): {e}; nothing was saved",
                            entry.step, entry.kind, entry.outcome,
                        ),
                    }
                } else {
                    classify(path, action(), e)
                },
            );
        }
    }
    tx.commit().map_err(|e| classify(path, action(), e))
}

/// [`crate::Store::run`]: one run by id.
pub(super) fn run(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    id: &str,
) -> Result<RunRecord, StoreError> {
    if reads.is_empty() {
        return Err(not_found(path, id));
    }
    let action = || format!("loading run `{id}`");
    let mut stmt = conn
        .prepare_cached(&reads.select_run)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([id]).map_err(|e| classify(path, action(), e))?;
    match rows.next().map_err(|e| classify(path, action(), e))? {
        Some(row) => decode::run(row, path, reads.verify),
        None => Err(not_found(path, id)),
    }
}

/// [`crate::Store::runs`]: newest first, at most `limit`, optionally of one status.
pub(super) fn runs(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    status: Option<RunStatus>,
    limit: usize,
) -> Result<Vec<RunRecord>, StoreError> {
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    let action = || "listing runs".to_string();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = if status.is_some() {
        &reads.list_runs_by_status
    } else {
        &reads.list_runs
    };
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = match status {
        Some(status) => stmt.query(rusqlite::params![status.as_str(), limit]),
        None => stmt.query(rusqlite::params![limit]),
    }
    .map_err(|e| classify(path, action(), e))?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        runs.push(decode::run(row, path, reads.verify)?);
    }
    Ok(runs)
}

/// [`crate::Store::history`]: the entries of one run, oldest first.
pub(super) fn history(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    run_id: &str,
) -> Result<Vec<HistoryEntry>, StoreError> {
    if reads.is_empty() {
        return Err(not_found(path, run_id));
    }
    let action = || format!("loading the history of run `{run_id}`");
    let mut stmt = conn
        .prepare_cached(&reads.history)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt
        .query([run_id])
        .map_err(|e| classify(path, action(), e))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        entries.push(decode::history(row, path, run_id, reads.verify)?);
    }
    if entries.is_empty() && status_of(conn, path, run_id)?.is_none() {
        return Err(not_found(path, run_id));
    }
    Ok(entries)
}

/// [`crate::Store::set_status`]: the status alone, the state untouched.
pub(super) fn set_status(
    conn: &Connection,
    path: &Path,
    run_id: &str,
    status: RunStatus,
) -> Result<(), StoreError> {
    let action = || format!("setting the status of run `{run_id}` to {status}");
    let now = encode::now(run_id)?;
    let mut stmt = conn
        .prepare_cached(SET_STATUS)
        .map_err(|e| classify(path, action(), e))?;
    let changed = stmt
        .execute(rusqlite::params![run_id, status.as_str(), now])
        .map_err(|e| classify(path, action(), e))?;
    if changed == 0 {
        return Err(not_found(path, run_id));
    }
    Ok(())
}

/// Where run `id` stands for a writer (status, lease, fence), or `None` when there is no such
/// run; read inside the writer's transaction.
pub(super) fn held(conn: &Connection, path: &Path, id: &str) -> Result<Option<Held>, StoreError> {
    let action = || format!("looking up run `{id}`");
    let mut stmt = conn
        .prepare_cached(HELD)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([id]).map_err(|e| classify(path, action(), e))?;
    match rows.next().map_err(|e| classify(path, action(), e))? {
        Some(row) => decode::held(row, path, id).map(Some),
        None => Ok(None),
    }
}

/// [`held`] with the checked columns of the run's row: the checksum the row gets when `saved`
/// (state, next check, last error) replace those values, or the row's checksum error.
fn held_for_save(
    conn: &Connection,
    path: &Path,
    id: &str,
    saved: [rusqlite::types::ValueRef<'_>; 3],
) -> Result<Option<(Held, Checked)>, StoreError> {
    let action = || format!("looking up run `{id}`");
    let mut stmt = conn
        .prepare_cached(HELD_FOR_SAVE)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([id]).map_err(|e| classify(path, action(), e))?;
    match rows.next().map_err(|e| classify(path, action(), e))? {
        Some(row) => decode::held_for_save(row, path, id, saved).map(Some),
        None => Ok(None),
    }
}

/// The error for a write with `lease` on a run that is now `held` otherwise.
pub(super) fn lease_lost(lease: &Lease, held: &Held) -> StoreError {
    StoreError::LeaseLost {
        run: lease.run_id.clone(),
        fence: lease.fence,
        current_fence: held.fence,
        owner: held.lease.as_ref().map(|l| l.owner.clone()),
    }
}

/// The status of run `id`, or `None` when there is no such run.
fn status_of(conn: &Connection, path: &Path, id: &str) -> Result<Option<RunStatus>, StoreError> {
    let action = || format!("looking up run `{id}`");
    let mut stmt = conn
        .prepare_cached(RUN_STATUS)
        .map_err(|e| classify(path, action(), e))?;
    let status: Option<String> = stmt
        .query_row([id], |r| r.get(0))
        .optional()
        .map_err(|e| classify(path, action(), e))?;
    status.map(|s| decode::run_status(path, id, &s)).transpose()
}
