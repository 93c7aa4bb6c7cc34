//! The SQL behind the [`crate::Store`] methods that create, read and list runs, and the
//! look-ups under the write lock that the writers (`save`, `lease`, `due`) share.

use crate::check;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::decode::{self, Checked, Held, checked_run_columns, held_columns};
use super::encode::{self, RunRow};
use super::error::{
    SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_CONSTRAINT_PRIMARYKEY, classify, no_deployment, not_found,
};
use super::{checksum, schema};
use crate::{HistoryEntry, Lease, RunCounts, RunFilter, RunPage, RunRecord, RunStatus, StoreError};
use stepflow_model::State;

/// The statements that read runs and history, for the schema version of the database: a
/// read-only store may read a database older than this build, which it cannot migrate.
pub(super) struct Reads {
    /// The database's schema version; 0 is an empty file (no tables yet, so no runs).
    version: i64,
    /// Whether rows are checked against their checksums (off only for benchmarks).
    pub verify: bool,
    /// The select list of a run.
    run_columns: String,
    select_run: String,
    history: String,
    /// The history after a position, without its `LIMIT`.
    history_after: String,
}

impl Reads {
    /// The statements for a database at schema `version`.
    pub(super) fn for_version(version: i64) -> Self {
        let runs = decode::run_columns(version);
        Reads {
            version,
            verify: true,
            select_run: format!("SELECT {runs} FROM runs WHERE id = ?1"),
            run_columns: runs,
            history: format!(
                "SELECT {} FROM history WHERE run_id = ?1 ORDER BY seq",
                decode::history_columns(version)
            ),
            history_after: format!(
                "SELECT {} FROM history WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
                decode::history_columns(version)
            ),
        }
    }

    /// Whether the database has no tables yet (an empty file): it holds no runs.
    fn is_empty(&self) -> bool {
        self.version == 0
    }

    /// Whether the database has the deployment tables (schema version 5 and later).
    pub(super) fn has_deployments(&self) -> bool {
        self.version >= schema::DEPLOYMENTS_SINCE
    }

    /// Whether the database has the `runs_by_due` index (schema version 6 and later); older
    /// ones are read only by read-only stores, which do not schedule.
    pub(super) fn has_due_index(&self) -> bool {
        self.version >= schema::DUE_SINCE
    }

    /// Whether the database keeps each run's first state.
    pub(super) fn has_starts(&self) -> bool {
        self.version >= schema::STARTS_SINCE
    }

    /// Whether the database has the `signals` table (an older one read as it is has none).
    pub(super) fn has_signals(&self) -> bool {
        self.version >= schema::SIGNALS_SINCE
    }

    /// The listing of runs that match `filter`, plus one more run (to tell whether there is a
    /// next page), each with its rowid last: its SQL and the values to bind, in order.
    fn list_runs(
        &self,
        filter: &RunFilter,
        search: Option<Search<'_>>,
    ) -> Result<(String, Vec<Value>), StoreError> {
        let mut conditions: Vec<String> = Vec::new();
        let mut values = Vec::new();
        let mut bind = |value: Value| {
            values.push(value);
            format!("?{}", values.len())
        };
        if let Some(status) = filter.status {
            let at = bind(Value::Text(status.as_str().into()));
            conditions.push(format!("status = {at}"));
        }
        if let Some(flow) = &filter.flow {
            let at = bind(Value::Text(flow.clone()));
            conditions.push(format!("flow = {at}"));
        }
        if let Some(deployment) = &filter.deployment {
            let at = bind(Value::Text(deployment.clone()));
            conditions.push(format!("deployment = {at}"));
        }
        match search {
            // A flow's name: a range of `runs_by_flow`, in the listing's order.
            Some(Search::Flow(flow)) => {
                let at = bind(Value::Text(flow.to_string()));
                conditions.push(format!("flow = {at}"));
            }
            // An id prefix: a range of the primary key.
            Some(Search::IdPrefix(prefix)) => {
                let from = bind(Value::Text(prefix.to_string()));
                let to = bind(Value::Text(format!("{prefix}\u{10ffff}")));
                conditions.push(format!("id >= {from} AND id < {to}"));
            }
            None => {}
        }
        for (column, op, time) in [
            ("created_ms", ">=", filter.created_from),
            ("created_ms", "<", filter.created_until),
            ("updated_ms", ">=", filter.updated_from),
            ("updated_ms", "<", filter.updated_until),
        ] {
            if let Some(time) = time {
                let at = bind(Value::Integer(check::saturating_i64(time)));
                conditions.push(format!("{column} {op} {at}"));
            }
        }
        if let Some(after) = &filter.after {
            let (created, rowid) = check::parse_page(after)?;
            let created = bind(Value::Integer(created));
            let rowid = bind(Value::Integer(rowid));
            conditions.push(format!("(created_ms, rowid) < ({created}, {rowid})"));
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let limit = bind(Value::Integer(check::saturating_i64(
            filter.limit.saturating_add(1),
        )));
        // `rowid` breaks ties between runs created in the same millisecond: the later insert
        // first.
        let sql = format!(
            "SELECT {}, rowid FROM runs{filter_sql} ORDER BY created_ms DESC, rowid DESC LIMIT {limit}",
            self.run_columns,
        );
        Ok((sql, values))
    }
}

/// What a search text finds: the runs of the flow of that name if there is one, else those
/// whose id starts with it.
#[derive(Clone, Copy)]
enum Search<'a> {
    Flow(&'a str),
    IdPrefix(&'a str),
}

const INSERT_RUN: &str = "INSERT INTO runs (id, flow, flow_file, definition, status, state, \
                          next_check_ms, last_error, created_ms, updated_ms, checksum, \
                          deployment, lease_owner, lease_expires_ms, lease_fence) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

const INSERT_START: &str = "INSERT INTO run_starts (run_id, state, checksum) VALUES (?1, ?2, ?3)";

const SELECT_START: &str = "SELECT state, checksum FROM run_starts WHERE run_id = ?1";

/// [`crate::Store::start_state`]: the state run `id` was created with; `None` for a run
/// created before the store kept it.
pub(super) fn start_state(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    id: &str,
) -> Result<Option<State>, StoreError> {
    if reads.is_empty() || status_of(conn, path, id)?.is_none() {
        return Err(not_found(path, id));
    }
    if !reads.has_starts() {
        return Ok(None);
    }
    let action = || format!("reading the first state of run `{id}`");
    let found: Option<(String, Option<i64>)> = conn
        .prepare_cached(SELECT_START)
        .and_then(|mut stmt| {
            stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| classify(path, action(), e))?;
    let Some((text, stored)) = found else {
        return Ok(None);
    };
    if reads.verify
        && let Some(stored) = stored
    {
        let computed = checksum::of(&[checksum::text(id), checksum::text(&text)]);
        if checksum::to_stored(computed) != stored {
            return Err(StoreError::Checksum {
                id: id.to_string(),
                location: path.display().to_string(),
                row: "its first state".into(),
                stored: u32::try_from(stored).unwrap_or_default(),
                computed,
            });
        }
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::BadRecord {
            id: id.to_string(),
            location: path.display().to_string(),
            column: "run_starts.state".into(),
            detail: e.to_string(),
        })
}

const HELD: &str = concat!("SELECT ", held_columns!(), " FROM runs WHERE id = ?1");

const HELD_FOR_SAVE: &str = concat!(
    "SELECT ",
    held_columns!(),
    ", ",
    checked_run_columns!(),
    " FROM runs WHERE id = ?1"
);

const RUN_STATUS: &str = "SELECT status FROM runs WHERE id = ?1";

const SET_STATUS: &str = "UPDATE runs SET status = ?2, updated_ms = ?3 WHERE id = ?1";

/// [`crate::Store::create_run`]: one insert; a taken id is [`StoreError::AlreadyExists`], a
/// deployment the store does not have [`StoreError::NoDeployment`] (the foreign key).
pub(super) fn create_run(
    conn: &mut Connection,
    path: &Path,
    run: &RunRecord,
    checksums: bool,
) -> Result<(), StoreError> {
    let id = run.id.as_str();
    let row = RunRow::new(run)?;
    let action = || format!("creating run `{id}`");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    insert_run(&tx, path, run, &row, checksums)?;
    // The state it starts with, kept for reruns from any step.
    let sum = checksums.then(|| {
        checksum::to_stored(checksum::of(&[
            checksum::text(id),
            checksum::text(&row.state),
        ]))
    });
    tx.prepare_cached(INSERT_START)
        .and_then(|mut stmt| stmt.execute(rusqlite::params![id, row.state, sum]))
        .map_err(|e| classify(path, action(), e))?;
    tx.commit().map_err(|e| classify(path, action(), e))
}

/// The run's own row.
fn insert_run(
    conn: &Connection,
    path: &Path,
    run: &RunRecord,
    row: &RunRow,
    checksums: bool,
) -> Result<(), StoreError> {
    let id = run.id.as_str();
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
        run.deployment,
        row.lease.as_ref().map(|(owner, _)| owner),
        row.lease.as_ref().map(|(_, expires)| expires),
        i64::from(row.lease.is_some()),
    ]);
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_PRIMARYKEY) => {
            Err(StoreError::AlreadyExists {
                id: id.to_string(),
                location: path.display().to_string(),
            })
        }
        // The only foreign key of `runs` is its deployment.
        Err(e) if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_FOREIGNKEY) => Err(
            no_deployment(path, run.deployment.as_deref().unwrap_or_default()),
        ),
        Err(e) => Err(classify(path, action(), e)),
    }
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

/// [`crate::Store::runs_where`] and [`crate::Store::runs_page`]: newest first, at most
/// `filter.limit`, those that match every filter set, and where the next page starts.
pub(super) fn runs(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    filter: &RunFilter,
) -> Result<RunPage, StoreError> {
    // Before deployments no run referred to one.
    if reads.is_empty() || (filter.deployment.is_some() && !reads.has_deployments()) {
        return Ok(RunPage {
            runs: Vec::new(),
            next: None,
        });
    }
    let action = || "listing runs".to_string();
    // One index each, so a search reads no more rows than the page it returns (an `OR` of
    // the two would scan the table for its order).
    let search = match filter.search.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let is_flow = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM runs WHERE flow = ?1)")
                .and_then(|mut stmt| stmt.query_row([text], |r| r.get::<_, bool>(0)))
                .map_err(|e| classify(path, action(), e))?;
            Some(if is_flow {
                Search::Flow(text)
            } else {
                Search::IdPrefix(text)
            })
        }
    };
    let (sql, values) = reads.list_runs(filter, search)?;
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| classify(path, action(), e))?;
    let rowid_at = stmt.column_count() - 1;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(|e| classify(path, action(), e))?;
    let mut runs = Vec::new();
    let mut last = None;
    let mut more = false;
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        if runs.len() == filter.limit {
            more = true;
            break;
        }
        let run = decode::run(row, path, reads.verify)?;
        let rowid: i64 = row.get(rowid_at).map_err(|e| classify(path, action(), e))?;
        last = Some((run.created_ms, rowid));
        runs.push(run);
    }
    let next = match (more, last) {
        (true, Some((created, rowid))) => Some(format!("{created}.{rowid}")),
        _ => None,
    };
    Ok(RunPage { runs, next })
}

/// [`crate::Store::run_counts`]: one pass over `runs_by_status`.
pub(super) fn counts(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
) -> Result<RunCounts, StoreError> {
    let mut counts = RunCounts::default();
    if reads.is_empty() {
        return Ok(counts);
    }
    let action = || "counting runs".to_string();
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM runs GROUP BY status")
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([]).map_err(|e| classify(path, action(), e))?;
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        let status: String = row.get(0).map_err(|e| classify(path, action(), e))?;
        let n: i64 = row.get(1).map_err(|e| classify(path, action(), e))?;
        let n = u64::try_from(n).unwrap_or_default();
        counts.set(&status, n);
    }
    Ok(counts)
}

/// [`crate::Store::history_page`]: entries after `after`, oldest first, and the run's total.
pub(super) fn history_page(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
    if reads.is_empty() || status_of(conn, path, run_id)?.is_none() {
        return Err(not_found(path, run_id));
    }
    let action = || format!("loading the history of run `{run_id}`");
    let sql = format!("{} LIMIT ?3", reads.history_after);
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| classify(path, action(), e))?;
    let after = check::saturating_i64(after);
    let limit = check::saturating_i64(limit);
    let mut rows = stmt
        .query(rusqlite::params![run_id, after, limit])
        .map_err(|e| classify(path, action(), e))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        entries.push(decode::history(row, path, run_id, reads.verify)?);
    }
    // Entries are numbered 1, 2, ... without gaps: the last number is the count.
    let total: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id = ?1")
        .and_then(|mut stmt| stmt.query_row([run_id], |r| r.get(0)))
        .map_err(|e| classify(path, action(), e))?;
    Ok((entries, u64::try_from(total).unwrap_or_default()))
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

/// [`held`] with the checked columns of the run's row: the checksum the row gets when the
/// values in `replaced` (see [`decode::held_for_save`]) replace the stored ones, or the row's
/// checksum error.
pub(super) fn held_for_save(
    conn: &Connection,
    path: &Path,
    id: &str,
    replaced: &[(usize, rusqlite::types::ValueRef<'_>)],
) -> Result<Option<(Held, Checked)>, StoreError> {
    let action = || format!("looking up run `{id}`");
    let mut stmt = conn
        .prepare_cached(HELD_FOR_SAVE)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([id]).map_err(|e| classify(path, action(), e))?;
    match rows.next().map_err(|e| classify(path, action(), e))? {
        Some(row) => decode::held_for_save(row, path, id, replaced).map(Some),
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
