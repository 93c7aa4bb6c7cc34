//! The fenced writes of a run's row: saving steps (one, or a batch in one transaction: the
//! primitive of group commit) and moving a run to another deployment.
//!
//! A step is ONE statement: it updates the run's row only if the run is not cancelled and the
//! save's lease is still the current one, and inserts the history entries only if that update
//! happened, numbered from the row it locked. So a refused step writes nothing and needs no
//! savepoint, and the lease check and the write cannot be separated by another server's claim.
//! Only a refused step reads the row again, to say why.
//!
//! A step with no entry or one (the hot path: every apply that made at most one call) binds
//! the entry's values as scalars ([`SAVE`]); one with several (an apply of parallel branches)
//! binds them as one array per column and inserts them with `unnest ... WITH ORDINALITY`
//! ([`SAVE_MANY`]), so it is still one statement, atomic by itself, in a batch or not.

use stepflow_store::check::{self, invalid, now, opt_i64, to_i64};
use stepflow_store::{Lease, RunStatus, StepSave, StoreError};
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::db::{self, Db, Statements, get};
use crate::error::{no_deployment, not_found};

/// The fenced update of the run's row that both [`SAVE`] and [`SAVE_MANY`] begin with, as the
/// CTE `saved`: only while the run is not cancelled and the save's lease is current, growing
/// `history_len` by the number of entries `$8`.
macro_rules! save_run {
    () => {
        "WITH saved AS (UPDATE stepflow.runs SET status = $2, state = $3::text::jsonb, \
         next_check_ms = CASE WHEN $2 = 'waiting' AND signals_sent > $4 THEN $7::bigint ELSE $5::bigint END, \
         last_error = $6::text, updated_ms = $7::bigint, history_len = history_len + $8::bigint \
         WHERE id = $1 AND status <> 'cancelled' \
         AND ($9::text IS NULL OR (lease_owner = $9 AND lease_fence = $10)) \
         RETURNING history_len), "
    };
}

/// One step with at most one history entry: the run's row, then its entry (if `$8` is 1), then
/// a wake-up for listeners. The entry is numbered `history_len` after the update: one after
/// the run's last.
const SAVE: &str = concat!(
    save_run!(),
    "entry AS (INSERT INTO stepflow.history (run_id, seq, step, kind, attempt, outcome, \
     started_ms, duration_ms, error, patch, redelivered, handlers) \
     SELECT $1, history_len, $11::text, $12::text, $13::bigint, $14::text, $15::bigint, \
     $16::bigint, $17::text, $18::text::jsonb, $19::boolean, $20::text::jsonb FROM saved \
     WHERE $8 = 1) \
     SELECT (SELECT count(*) FROM saved), ",
    notify!()
);

/// One step with several history entries ([`SAVE`] for one): the run's row with
/// `history_len` grown by their number `$8`, then the entries, one array per column (`$11` to
/// `$20`, each `$8` long, in the order of the calls), numbered `history_len - $8 + 1` to
/// `history_len` after the update, as [`SAVE`] numbers one; then a wake-up for listeners.
/// Nothing is inserted when the update was refused (`saved` is empty).
const SAVE_MANY: &str = concat!(
    save_run!(),
    "entries AS (INSERT INTO stepflow.history (run_id, seq, step, kind, attempt, outcome, \
     started_ms, duration_ms, error, patch, redelivered, handlers) \
     SELECT $1, saved.history_len - $8::bigint + e.ord, e.step, e.kind, e.attempt, e.outcome, \
     e.started_ms, e.duration_ms, e.error, e.patch::jsonb, e.redelivered, e.handlers::jsonb \
     FROM saved, unnest($11::text[], $12::text[], $13::bigint[], $14::text[], $15::bigint[], \
     $16::bigint[], $17::text[], $18::text[], $19::boolean[], $20::text[]) WITH ORDINALITY \
     AS e(step, kind, attempt, outcome, started_ms, duration_ms, error, patch, redelivered, \
     handlers, ord)) \
     SELECT (SELECT count(*) FROM saved), ",
    notify!()
);

/// Where a run stands, for telling why a write was refused.
const HELD: &str = "SELECT status, lease_owner, lease_fence FROM stepflow.runs WHERE id = $1";

/// A step's values, converted before any statement runs.
struct StepValues<'a> {
    state: String,
    next_check: Option<i64>,
    updated: i64,
    signals_read: i64,
    /// The history entries, in the order they are numbered.
    entries: Vec<EntryValues<'a>>,
}

/// One history entry's values, converted.
struct EntryValues<'a> {
    step: &'a str,
    kind: &'static str,
    attempt: i64,
    outcome: &'static str,
    started: i64,
    duration: i64,
    error: Option<&'a str>,
    patch: Option<String>,
    redelivered: bool,
    handlers: Option<String>,
}

impl<'a> StepValues<'a> {
    /// Converts `step` and its entries; a value that does not fit refuses the whole step.
    fn new(step: &StepSave<'a>) -> Result<Self, StoreError> {
        let id = step.run_id;
        check::step_lease(step)?;
        let entries = step
            .history
            .iter()
            .map(|entry| {
                check::history_run(id, entry)?;
                Ok(EntryValues {
                    step: &entry.step,
                    kind: entry.kind.as_str(),
                    attempt: i64::from(entry.attempt),
                    outcome: entry.outcome.as_str(),
                    started: to_i64(id, "history started_ms", entry.started_ms)?,
                    duration: to_i64(id, "history duration_ms", entry.duration_ms)?,
                    error: entry.error.as_deref(),
                    patch: entry
                        .patch
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .map_err(|e| invalid(id, e))?,
                    redelivered: entry.redelivered,
                    handlers: if entry.handlers.is_empty() {
                        None
                    } else {
                        Some(serde_json::to_string(&entry.handlers).map_err(|e| invalid(id, e))?)
                    },
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StepValues {
            state: serde_json::to_string(step.state).map_err(|e| invalid(id, e))?,
            next_check: opt_i64(id, "next_check_ms", step.next_check_ms)?,
            updated: now(id)?,
            signals_read: to_i64(id, "signals_read", step.state.signals_read)?,
            entries,
        })
    }
}

/// [`stepflow_store::Store::save_steps`]: every step in one transaction (a single step needs
/// none: its one statement commits by itself).
pub(crate) fn save_steps(
    db: &mut Db,
    steps: &[StepSave<'_>],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    db.ensure()?;
    let values: Vec<Result<StepValues<'_>, StoreError>> =
        steps.iter().map(StepValues::new).collect();
    let valid = values.iter().filter(|v| v.is_ok()).count();
    if valid == 0 {
        return Ok(values.into_iter().map(|v| v.map(drop)).collect());
    }
    let action = || match steps {
        [step] => format!("saving a step of run `{}`", step.run_id),
        _ => format!("saving {} steps in one transaction", steps.len()),
    };
    let fail = |e| crate::error::classify(&db.location, action(), e);
    if valid == 1 {
        let mut results = Vec::with_capacity(steps.len());
        for (step, values) in steps.iter().zip(values) {
            results.push(values.and_then(|v| {
                write_step(db.client.get_mut(), &db.statements, &db.location, step, &v)
            }));
        }
        return Ok(results);
    }
    let tx = {
        crate::db::count();
        crate::connect::wait(db.client.get_mut().transaction())
    }
    .map_err(fail)?;
    let mut results = Vec::with_capacity(steps.len());
    for (step, values) in steps.iter().zip(values) {
        let result = match values {
            Err(e) => Err(e),
            Ok(v) => match write_step(&tx, &db.statements, &db.location, step, &v) {
                // A refusal of the step itself wrote nothing; the others go on.
                Err(
                    e @ (StoreError::Cancelled { .. }
                    | StoreError::LeaseLost { .. }
                    | StoreError::NotFound { .. }),
                ) => Err(e),
                // Anything else is the database's, and rolls back the whole batch.
                Err(e) => return Err(e),
                Ok(()) => Ok(()),
            },
        };
        results.push(result);
    }
    {
        crate::db::count();
        crate::connect::wait(tx.commit())
    }
    .map_err(fail)?;
    Ok(results)
}

fn write_step<C: GenericClient + Sync>(
    on: &C,
    statements: &Statements,
    location: &str,
    step: &StepSave<'_>,
    v: &StepValues<'_>,
) -> Result<(), StoreError> {
    let run_id = step.run_id;
    let action = || format!("saving a step of run `{run_id}`");
    let (owner, fence) = match step.lease {
        Some(lease) => (
            Some(lease.owner.as_str()),
            Some(to_i64(run_id, "lease fence", lease.fence)?),
        ),
        None => (None, None),
    };
    let count = check::saturating_i64(v.entries.len());
    // The run's values ($1 to $10) and then the entries' ($11 to $20), as one array literal:
    // the hot path allocates nothing for its parameters.
    macro_rules! with_run {
        ($($entry:expr),* $(,)?) => {
            [
                &run_id as &(dyn ToSql + Sync),
                &step.status.as_str(),
                &v.state,
                &v.signals_read,
                &v.next_check,
                &step.last_error,
                &v.updated,
                &count,
                &owner,
                &fence,
                $($entry),*
            ]
        };
    }
    let row = match v.entries.as_slice() {
        [] | [_] => {
            let e = v.entries.first();
            let params = with_run![
                &e.map(|e| e.step),
                &e.map(|e| e.kind),
                &e.map(|e| e.attempt),
                &e.map(|e| e.outcome),
                &e.map(|e| e.started),
                &e.map(|e| e.duration),
                &e.and_then(|e| e.error),
                &e.and_then(|e| e.patch.as_deref()),
                &e.map(|e| e.redelivered),
                &e.and_then(|e| e.handlers.as_deref()),
            ];
            db::row(on, statements, location, SAVE, &params, &action)?
        }
        entries => {
            let params = with_run![
                &column(entries, |e| e.step),
                &column(entries, |e| e.kind),
                &column(entries, |e| e.attempt),
                &column(entries, |e| e.outcome),
                &column(entries, |e| e.started),
                &column(entries, |e| e.duration),
                &column(entries, |e| e.error),
                &column(entries, |e| e.patch.as_deref()),
                &column(entries, |e| e.redelivered),
                &column(entries, |e| e.handlers.as_deref()),
            ];
            db::row(on, statements, location, SAVE_MANY, &params, &action)?
        }
    };
    let saved: i64 = row.map(|r| r.get(0)).unwrap_or(0);
    if saved == 1 {
        return Ok(());
    }
    Err(refusal(on, statements, location, run_id, step.lease)?)
}

/// One column of `entries`, to bind as the array [`SAVE_MANY`] unnests.
fn column<'v, 'a, T>(
    entries: &'v [EntryValues<'a>],
    value: impl Fn(&'v EntryValues<'a>) -> T,
) -> Vec<T> {
    entries.iter().map(value).collect()
}

/// Why a fenced write of run `run_id` changed nothing: no such run, cancelled, or a lease that
/// is no longer the current one.
fn refusal<C: GenericClient + Sync>(
    on: &C,
    statements: &Statements,
    location: &str,
    run_id: &str,
    lease: Option<&Lease>,
) -> Result<StoreError, StoreError> {
    let action = || format!("looking up run `{run_id}`");
    let Some(row) = db::row(on, statements, location, HELD, &[&run_id], &action)? else {
        return Ok(not_found(location, run_id));
    };
    let status: String = get(&row, 0, location, run_id, "status")?;
    if crate::decode::status(location, run_id, &status)? == RunStatus::Cancelled {
        return Ok(StoreError::Cancelled {
            id: run_id.to_string(),
        });
    }
    let owner: Option<String> = get(&row, 1, location, run_id, "lease_owner")?;
    let current: i64 = get(&row, 2, location, run_id, "lease_fence")?;
    Ok(StoreError::LeaseLost {
        run: run_id.to_string(),
        fence: lease.map_or(0, |l| l.fence),
        current_fence: u64::try_from(current).unwrap_or_default(),
        owner,
    })
}

/// [`stepflow_store::Store::move_run`]: under the run's row lock, checked as a save is.
pub(crate) fn move_run(
    db: &mut Db,
    run_id: &str,
    deployment: &str,
    definition: &str,
    lease: &Lease,
) -> Result<(), StoreError> {
    db.ensure()?;
    if lease.run_id != run_id {
        return Err(invalid(
            run_id,
            format!("the lease given is for run `{}`", lease.run_id),
        ));
    }
    let updated = now(run_id)?;
    let action = || format!("moving run `{run_id}` to deployment `{deployment}`");
    let location = db.location.clone();
    let fail = |e| crate::error::classify(&location, action(), e);
    let tx = {
        crate::db::count();
        crate::connect::wait(db.client.get_mut().transaction())
    }
    .map_err(fail)?;
    let held = db::row(
        &tx,
        &db.statements,
        &location,
        "SELECT status, lease_owner, lease_fence, flow FROM stepflow.runs WHERE id = $1 FOR UPDATE",
        &[&run_id],
        &action,
    )?;
    let Some(held) = held else {
        return Err(not_found(&location, run_id));
    };
    let status: String = get(&held, 0, &location, run_id, "status")?;
    let status = crate::decode::status(&location, run_id, &status)?;
    if matches!(status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::Finished {
            run: run_id.to_string(),
            status,
        });
    }
    let owner: Option<String> = get(&held, 1, &location, run_id, "lease_owner")?;
    let fence: i64 = get(&held, 2, &location, run_id, "lease_fence")?;
    if owner.as_deref() != Some(lease.owner.as_str())
        || u64::try_from(fence).ok() != Some(lease.fence)
    {
        return Err(StoreError::LeaseLost {
            run: run_id.to_string(),
            fence: lease.fence,
            current_fence: u64::try_from(fence).unwrap_or_default(),
            owner,
        });
    }
    let run_flow: String = get(&held, 3, &location, run_id, "flow")?;
    let Some(target) = db::row(
        &tx,
        &db.statements,
        &location,
        "SELECT flow FROM stepflow.deployments WHERE id = $1",
        &[&deployment],
        &action,
    )?
    else {
        return Err(no_deployment(&location, deployment));
    };
    let deployment_flow: String = target.get(0);
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
    db::rows(
        &tx,
        &db.statements,
        &location,
        concat!(
            "WITH moved AS (UPDATE stepflow.runs SET deployment = $2, definition = $3, \
             updated_ms = $4 WHERE id = $1 RETURNING 1) SELECT ",
            notify!()
        ),
        &[&run_id, &deployment, &definition, &updated],
        &action,
    )?;
    {
        crate::db::count();
        crate::connect::wait(tx.commit())
    }
    .map_err(fail)
}
