//! The fenced writes of a run's row: saving steps ([`crate::Store::save_step`] is a batch of
//! one, [`crate::Store::save_steps`] many in one transaction: the primitive of group commit)
//! and moving a run to another deployment ([`crate::Store::move_run`]).
//!
//! Every write checks the run under the write lock first (it exists, is not cancelled, is held
//! with the caller's lease, its row matches its checksum) and recomputes the row's checksum
//! from the checked row, so nobody can cancel or take the run over between check and commit,
//! and a damaged state is never replaced silently.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::checksum;
use super::decode::at;
use super::encode::{self, HistoryRow, StepRow, invalid};
use super::error::{SQLITE_CONSTRAINT_CHECK, classify, is_fatal, no_deployment, not_found};
use super::queries::{held, held_for_save, lease_lost};
use super::signal;
use crate::{Lease, RunStatus, StepSave, StoreError, check};

/// A step's update of its run's row.
const UPDATE_STEP: &str = "UPDATE runs SET status = ?2, state = ?3, next_check_ms = ?4, \
                           last_error = ?5, updated_ms = ?6, checksum = ?7 WHERE id = ?1";

/// The store numbers history entries: one more than the run's last (an index lookup).
const NEXT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM history WHERE run_id = ?1";

/// One history entry, with the checksum of its values.
const INSERT_HISTORY: &str = "INSERT INTO history (run_id, seq, step, kind, attempt, outcome, \
                              started_ms, duration_ms, error, patch, redelivered, handlers, \
                              checksum) \
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// The savepoint the entries of a step that made several calls are inserted under, so a
/// refusal of one takes back the others (the batch's other steps are kept).
const SAVEPOINT: &str = "SAVEPOINT step_history";

/// Keeps the entries inserted since [`SAVEPOINT`] (they commit with the transaction).
const RELEASE: &str = "RELEASE step_history";

/// Undoes the entries inserted since [`SAVEPOINT`]; [`RELEASE`] then ends it.
const ROLLBACK_TO: &str = "ROLLBACK TO step_history";

/// The flow of a deployment, to check that a run moves to a deployment of its own flow.
const DEPLOYMENT_FLOW: &str = "SELECT flow FROM deployments WHERE id = ?1";

/// The flow of a run.
const RUN_FLOW: &str = "SELECT flow FROM runs WHERE id = ?1";

/// A move: the run's deployment and definition, and the checksum that covers both.
const MOVE_RUN: &str = "UPDATE runs SET deployment = ?2, definition = ?3, updated_ms = ?4, \
                        checksum = ?5 WHERE id = ?1";

/// [`crate::Store::save_steps`]: every step in one IMMEDIATE transaction, one commit (one fsync
/// of the WAL). A step refused for itself (before the transaction: a value that does not fit;
/// in it: unknown, cancelled, lease lost, damaged, history entry refused) writes nothing and
/// is reported in its slot; a failure of the database is the outer error, and then the
/// transaction is rolled back and nothing is saved. Nothing is committed (no fsync) when every
/// step was refused. With `checksums` off (benchmarks only) rows are neither checked nor given
/// a checksum.
pub(super) fn save_steps(
    conn: &mut Connection,
    path: &Path,
    steps: &[StepSave<'_>],
    checksums: bool,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    // Everything that can be refused without the database is checked before the transaction.
    let rows: Vec<Result<StepRow<'_>, StoreError>> = steps.iter().map(StepRow::new).collect();
    if rows.iter().all(Result::is_err) {
        return Ok(rows.into_iter().map(|row| row.map(drop)).collect());
    }
    let action = || match steps {
        [step] => format!("saving a step of run `{}`", step.run_id),
        _ => format!("saving {} steps in one transaction", steps.len()),
    };
    // IMMEDIATE takes the write lock up front, so the busy timeout applies to it rather than
    // failing when a read transaction is upgraded.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let mut saved = 0usize;
    let mut results = Vec::with_capacity(steps.len());
    for (step, row) in steps.iter().zip(rows) {
        let result = row.and_then(|row| write_step(&tx, path, step, &row, checksums));
        match result {
            // Dropping `tx` rolls back every step saved so far.
            Err(e) if is_fatal(&e) => return Err(e),
            Ok(()) => saved += 1,
            Err(_) => {}
        }
        results.push(result);
    }
    if saved > 0 {
        tx.commit().map_err(|e| classify(path, action(), e))?;
    }
    Ok(results)
}

/// Checks the run of `step` under the write lock and writes its row and history entries.
fn write_step(
    conn: &Connection,
    path: &Path,
    step: &StepSave<'_>,
    row: &StepRow<'_>,
    checksums: bool,
) -> Result<(), StoreError> {
    let run_id = step.run_id;
    let action = || format!("saving a step of run `{run_id}`");
    // A signal that arrived after the state's last one, while its driver was on its way to
    // the wait, makes the run due now instead of at its next check.
    let next_check_ms = if step.status == RunStatus::Waiting
        && signal::unread(conn, path, run_id, step.state.signals_read)?
    {
        Some(row.updated_ms)
    } else {
        row.next_check_ms
    };
    let found = if checksums {
        let replaced = [
            (at::STATE, checksum::text(&row.state)),
            (at::NEXT_CHECK_MS, checksum::opt_int(next_check_ms)),
            (at::LAST_ERROR, checksum::opt_text(step.last_error)),
        ];
        held_for_save(conn, path, run_id, &replaced)?.map(|(held, sum)| (held, Some(sum)))
    } else {
        held(conn, path, run_id)?.map(|held| (held, None))
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
    // The history entries go first: a refusal of one is the last one a step can meet, and a
    // refused statement writes nothing (several entries share a savepoint, undone with them),
    // so a refused step leaves no trace. Any failure after them is the database's, and rolls
    // back the transaction.
    insert_history(conn, path, run_id, &row.history, checksums)?;
    conn.prepare_cached(UPDATE_STEP)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                run_id,
                step.status.as_str(),
                row.state,
                next_check_ms,
                step.last_error,
                row.updated_ms,
                run_checksum.map(checksum::to_stored),
            ])
        })
        .map(drop)
        .map_err(|e| classify(path, action(), e))
}

/// Appends `entries` to the history of `run_id`, in order, numbered one after another from one
/// after its last entry; all or none of them: two or more are inserted under a savepoint, so a
/// refusal of a later one takes the earlier ones back (one entry, the hot path, needs none: a
/// refused statement writes nothing).
fn insert_history(
    conn: &Connection,
    path: &Path,
    run_id: &str,
    entries: &[HistoryRow<'_>],
    checksums: bool,
) -> Result<(), StoreError> {
    let action = || format!("saving a step of run `{run_id}`");
    if entries.is_empty() {
        return Ok(());
    }
    let first = next_seq(conn, path, run_id)?;
    if let [entry] = entries {
        return insert_entry(conn, path, run_id, first, entry, checksums);
    }
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(drop)
            .map_err(|e| classify(path, action(), e))
    };
    run(SAVEPOINT)?;
    let inserted = entries.iter().enumerate().try_for_each(|(at, entry)| {
        let seq = check::saturating_i64(at)
            .checked_add(first)
            .ok_or_else(|| invalid(run_id, "its history is too long to number another entry"))?;
        insert_entry(conn, path, run_id, seq, entry, checksums)
    });
    match inserted {
        Ok(()) => run(RELEASE),
        // The whole transaction is rolled back for this one.
        Err(e) if is_fatal(&e) => Err(e),
        Err(e) => {
            run(ROLLBACK_TO)?;
            run(RELEASE)?;
            Err(e)
        }
    }
}

/// The number of the next history entry of `run_id`: one more than its last.
fn next_seq(conn: &Connection, path: &Path, run_id: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(NEXT_SEQ)
        .and_then(|mut stmt| stmt.query_row([run_id], |r| r.get::<_, i64>(0)))
        .map_err(|e| classify(path, format!("saving a step of run `{run_id}`"), e))
}

/// Inserts `entry` as entry `seq` of the history of `run_id`.
fn insert_entry(
    conn: &Connection,
    path: &Path,
    run_id: &str,
    seq: i64,
    entry: &HistoryRow<'_>,
    checksums: bool,
) -> Result<(), StoreError> {
    let inserted = conn.prepare_cached(INSERT_HISTORY).and_then(|mut stmt| {
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
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_CHECK) => {
            // The typed kind and outcome always fit the schema this build creates; a
            // refusal means the file's CHECK lists differ from this build's types.
            Err(invalid(
                run_id,
                format!(
                    "the database refused the history entry for step `{}` (kind `{}`, outcome \
                     `{}`): {e}; nothing was saved",
                    entry.step, entry.kind, entry.outcome,
                ),
            ))
        }
        Err(e) => Err(classify(
            path,
            format!("saving a step of run `{run_id}`"),
            e,
        )),
    }
}

/// [`crate::Store::move_run`]: in one IMMEDIATE transaction, checks the run as a save does
/// (exists, not finished, held with `lease`, undamaged) and that `deployment` exists and is of
/// the run's flow, then sets the run's deployment and definition and recomputes its checksum.
pub(super) fn move_run(
    conn: &mut Connection,
    path: &Path,
    run_id: &str,
    deployment: &str,
    definition: &str,
    lease: &Lease,
    checksums: bool,
) -> Result<(), StoreError> {
    if lease.run_id != run_id {
        return Err(invalid(
            run_id,
            format!("the lease given is for run `{}`", lease.run_id),
        ));
    }
    let updated_ms = encode::now(run_id)?;
    let action = || format!("moving run `{run_id}` to deployment `{deployment}`");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let found = if checksums {
        let replaced = [
            (at::DEFINITION, checksum::text(definition)),
            (at::DEPLOYMENT, checksum::text(deployment)),
        ];
        held_for_save(&tx, path, run_id, &replaced)?.map(|(held, sum)| (held, Some(sum)))
    } else {
        held(&tx, path, run_id)?.map(|held| (held, None))
    };
    let Some((held, checked)) = found else {
        return Err(not_found(path, run_id));
    };
    if matches!(held.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::Finished {
            run: run_id.to_string(),
            status: held.status,
        });
    }
    if !held.is_held_by(&lease.owner, lease.fence) {
        return Err(lease_lost(lease, &held));
    }
    let flow_of = |sql: &str, id: &str| -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        tx.prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get::<_, String>(0)).optional())
            .map_err(|e| classify(path, action(), e))
    };
    let Some(deployment_flow) = flow_of(DEPLOYMENT_FLOW, deployment)? else {
        return Err(no_deployment(path, deployment));
    };
    let run_flow = flow_of(RUN_FLOW, run_id)?.unwrap_or_default();
    if deployment_flow != run_flow {
        return Err(invalid(
            run_id,
            format!(
                "it is a run of flow `{run_flow}`, and deployment `{deployment}` is of flow \
                 `{deployment_flow}`: a run moves only to a deployment of its own flow; nothing \
                 was changed"
            ),
        ));
    }
    let run_checksum = checked.transpose()?;
    tx.prepare_cached(MOVE_RUN)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                run_id,
                deployment,
                definition,
                updated_ms,
                run_checksum.map(checksum::to_stored),
            ])
        })
        .map_err(|e| classify(path, action(), e))?;
    tx.commit().map_err(|e| classify(path, action(), e))
}
