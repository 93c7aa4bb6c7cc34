//! Creating, reading and listing runs and their history; the status alone.

use stepflow_model::State;
use stepflow_store::check::{self, first_lease, invalid, now, opt_i64, to_i64};
use stepflow_store::{
    HistoryEntry, RunCounts, RunFilter, RunPage, RunRecord, RunStatus, StoreError,
};
use tokio_postgres::types::ToSql;

use crate::changes::NOTIFY;
use crate::db::{Db, get};
use crate::decode::{self, HISTORY_COLUMNS, RUN_COLUMNS, RUN_SEQ};
use crate::error::{
    bad_record, is_foreign_key_violation, is_unique_violation, no_deployment, not_found,
};

/// The run and its first state (kept for reruns), in one statement.
const CREATE: &str = concat!(
    "WITH run AS (INSERT INTO stepflow.runs (id, flow, flow_file, definition, deployment, \
     status, state, next_check_ms, last_error, created_ms, updated_ms, lease_owner, \
     lease_expires_ms, lease_fence) VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, \
     $10, $11, $12, $13, $14) RETURNING id, state), \
     start AS (INSERT INTO stepflow.run_starts (run_id, state) SELECT id, state FROM run) \
     SELECT ",
    "pg_notify('stepflow_changes', pg_backend_pid()::text)"
);

/// [`stepflow_store::Store::create_run`].
pub(crate) fn create(db: &Db, run: &RunRecord) -> Result<(), StoreError> {
    let id = run.id.as_str();
    let lease = first_lease(run)?;
    let state = serde_json::to_string(&run.state).map_err(|e| invalid(id, e))?;
    let next_check = opt_i64(id, "next_check_ms", run.next_check_ms)?;
    let created = to_i64(id, "created_ms", run.created_ms)?;
    let updated = to_i64(id, "updated_ms", run.updated_ms)?;
    let (owner, expires) = (lease.map(|l| l.0), lease.map(|l| l.1));
    let fence = i64::from(lease.is_some());
    let action = || format!("creating run `{id}`");
    db.ensure()?;
    let result = crate::db::execute_raw(
        &*db.client.borrow(),
        &db.statements,
        &db.location,
        CREATE,
        &[
            &id,
            &run.flow,
            &run.flow_file,
            &run.definition,
            &run.deployment,
            &run.status.as_str(),
            &state,
            &next_check,
            &run.last_error,
            &created,
            &updated,
            &owner,
            &expires,
            &fence,
        ],
        &action,
    )?;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists {
            id: id.to_string(),
            location: db.location.clone(),
        }),
        // The only foreign key of `runs` is its deployment.
        Err(e) if is_foreign_key_violation(&e) => Err(no_deployment(
            &db.location,
            run.deployment.as_deref().unwrap_or_default(),
        )),
        Err(e) => Err(crate::error::classify(&db.location, action(), e)),
    }
}

/// [`stepflow_store::Store::run`].
pub(crate) fn one(db: &Db, id: &str) -> Result<RunRecord, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM stepflow.runs WHERE id = $1");
    match db.row(&sql, &[&id], &|| format!("loading run `{id}`"))? {
        Some(row) => decode::run(&row, &db.location),
        None => Err(not_found(&db.location, id)),
    }
}

/// [`stepflow_store::Store::runs_page`]: newest first; a search is the runs of the flow of
/// that exact name if there is one, else those whose id starts with it (one index range each).
pub(crate) fn page(db: &Db, filter: &RunFilter) -> Result<RunPage, StoreError> {
    let action = || "listing runs".to_string();
    let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let mut conditions: Vec<String> = Vec::new();
    let bind = |value: Box<dyn ToSql + Sync>, values: &mut Vec<Box<dyn ToSql + Sync>>| {
        values.push(value);
        format!("${}", values.len())
    };
    if let Some(status) = filter.status {
        let at = bind(Box::new(status.as_str().to_string()), &mut values);
        conditions.push(format!("status = {at}"));
    }
    if let Some(flow) = &filter.flow {
        let at = bind(Box::new(flow.clone()), &mut values);
        conditions.push(format!("flow = {at}"));
    }
    if let Some(deployment) = &filter.deployment {
        let at = bind(Box::new(deployment.clone()), &mut values);
        conditions.push(format!("deployment = {at}"));
    }
    if let Some(text) = filter.search.as_deref().filter(|s| !s.is_empty()) {
        let is_flow: bool = db
            .row(
                "SELECT EXISTS (SELECT 1 FROM stepflow.runs WHERE flow = $1)",
                &[&text],
                &action,
            )?
            .map(|row| row.get(0))
            .unwrap_or(false);
        if is_flow {
            let at = bind(Box::new(text.to_string()), &mut values);
            conditions.push(format!("flow = {at}"));
        } else {
            let from = bind(Box::new(text.to_string()), &mut values);
            let to = bind(Box::new(format!("{text}\u{10ffff}")), &mut values);
            conditions.push(format!("id >= {from} AND id < {to}"));
        }
    }
    for (column, op, time) in [
        ("created_ms", ">=", filter.created_from),
        ("created_ms", "<", filter.created_until),
        ("updated_ms", ">=", filter.updated_from),
        ("updated_ms", "<", filter.updated_until),
    ] {
        if let Some(time) = time {
            let at = bind(Box::new(check::saturating_i64(time)), &mut values);
            conditions.push(format!("{column} {op} {at}"));
        }
    }
    if let Some(after) = &filter.after {
        let (created, seq) = check::parse_page(after)?;
        let created = bind(Box::new(created), &mut values);
        let seq = bind(Box::new(seq), &mut values);
        conditions.push(format!("(created_ms, seq) < ({created}, {seq})"));
    }
    let limit = bind(
        Box::new(check::saturating_i64(filter.limit.saturating_add(1))),
        &mut values,
    );
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM stepflow.runs{filter_sql} ORDER BY created_ms DESC, seq DESC \
         LIMIT {limit}"
    );
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    let rows = db.rows(&sql, &params, &action)?;
    let mut runs = Vec::new();
    let mut last = None;
    let mut more = false;
    for row in &rows {
        if runs.len() == filter.limit {
            more = true;
            break;
        }
        let run = decode::run(row, &db.location)?;
        let seq: i64 = get(row, RUN_SEQ, &db.location, &run.id, "seq")?;
        last = Some((run.created_ms, seq));
        runs.push(run);
    }
    let next = match (more, last) {
        (true, Some((created, seq))) => Some(format!("{created}.{seq}")),
        _ => None,
    };
    Ok(RunPage { runs, next })
}

/// [`stepflow_store::Store::run_counts`].
pub(crate) fn counts(db: &Db) -> Result<RunCounts, StoreError> {
    let mut counts = RunCounts::default();
    let rows = db.rows(
        "SELECT status, count(*) FROM stepflow.runs GROUP BY status",
        &[],
        &|| "counting runs".to_string(),
    )?;
    for row in rows {
        let status: String = row.get(0);
        let n = u64::try_from(row.get::<_, i64>(1)).unwrap_or_default();
        counts.set(&status, n);
    }
    Ok(counts)
}

/// [`stepflow_store::Store::history_page`]: the run's entry count is kept on its row.
pub(crate) fn history_page(
    db: &Db,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
    let action = || format!("loading the history of run `{run_id}`");
    let Some(row) = db.row(
        "SELECT history_len FROM stepflow.runs WHERE id = $1",
        &[&run_id],
        &action,
    )?
    else {
        return Err(not_found(&db.location, run_id));
    };
    let total: i64 = get(&row, 0, &db.location, run_id, "history_len")?;
    let after = check::saturating_i64(after);
    let limit = check::saturating_i64(limit);
    let sql = format!(
        "SELECT {HISTORY_COLUMNS} FROM stepflow.history WHERE run_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3"
    );
    let entries = db
        .rows(&sql, &[&run_id, &after, &limit], &action)?
        .iter()
        .map(|row| decode::history(row, &db.location, run_id))
        .collect::<Result<_, _>>()?;
    Ok((entries, u64::try_from(total).unwrap_or_default()))
}

/// [`stepflow_store::Store::history`].
pub(crate) fn history(db: &Db, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
    history_page(db, run_id, 0, usize::MAX).map(|(entries, _)| entries)
}

/// [`stepflow_store::Store::start_state`].
pub(crate) fn start_state(db: &Db, run_id: &str) -> Result<Option<State>, StoreError> {
    let row = db.row(
        "SELECT s.state::text FROM stepflow.runs r LEFT JOIN stepflow.run_starts s \
         ON s.run_id = r.id WHERE r.id = $1",
        &[&run_id],
        &|| format!("reading the first state of run `{run_id}`"),
    )?;
    let Some(row) = row else {
        return Err(not_found(&db.location, run_id));
    };
    let text: Option<String> = get(&row, 0, &db.location, run_id, "run_starts.state")?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| bad_record(&db.location, run_id, "run_starts.state", e))
}

/// [`stepflow_store::Store::set_status`]: the status alone, the state untouched.
pub(crate) fn set_status(db: &Db, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
    let sql = format!(
        "WITH changed AS (UPDATE stepflow.runs SET status = $2, updated_ms = $3 WHERE id = $1 \
         RETURNING 1) SELECT (SELECT count(*) FROM changed), {NOTIFY}"
    );
    let now = now(run_id)?;
    let row = db.row(&sql, &[&run_id, &status.as_str(), &now], &|| {
        format!("setting the status of run `{run_id}` to {status}")
    })?;
    let changed: i64 = row.map(|r| r.get(0)).unwrap_or(0);
    if changed == 0 {
        return Err(not_found(&db.location, run_id));
    }
    Ok(())
}
