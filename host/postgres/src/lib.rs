//! Saves stepflow runs in PostgreSQL, so several `stepflow server` processes, on several
//! hosts, share one database: the same [`Store`] trait as the embedded SQLite store, chosen
//! by a `postgres://` URL.
//!
//! - **One owner per run.** Due runs are claimed with `FOR UPDATE SKIP LOCKED`, so of several
//!   servers claiming at once each run goes to exactly one; every claim raises the run's fence,
//!   and every save is one statement that writes only while the saver's lease is still the
//!   current one, so a server that was paused or cut off past its lease cannot save even one
//!   more step ([`stepflow_store::StoreError::LeaseLost`]).
//! - **Few statements.** A step is one statement (the run's row and its history entries
//!   together); a batch of steps from many runs shares one transaction, so a server's group
//!   commit works here as on SQLite. Every statement is prepared once per connection.
//! - **Wake-ups, not polling.** Writes others should hear of send `NOTIFY`; one listening
//!   connection per process counts them, so [`Store::data_version`] asks the database nothing
//!   (see `changes`).
//! - **Migrations** are numbered, in the database's `stepflow` schema, each applied once in a
//!   transaction under an advisory lock, so servers that start at the same moment apply each
//!   exactly once.
//!
//! Unlike the SQLite store, rows carry no checksum of their own: PostgreSQL checks its pages
//! and its log itself, and nothing but the server writes its files.
//!
//! Connections are plain TCP or a Unix socket, without TLS: run it on a trusted network, or
//! reach the database through a tunnel.
//!
//! Modules, one job each: `connect` (the URL, the background runtime, waiting for answers),
//! `db` (a connection and its prepared statements), `schema` (tables and migrations), `runs`
//! (create, read, list), `save` (fenced step saves, moves), `lease` (claim, renew, release),
//! `due` (due runs), `signal` (inboxes), `deploy` (deployments), `changes` (LISTEN/NOTIFY),
//! `decode` (rows into records), `error` (PostgreSQL's errors in store terms).

/// The fragment of a statement that wakes other servers when its transaction commits (one
/// notification per transaction however many statements repeat it: PostgreSQL folds
/// identical ones).
macro_rules! notify {
    () => {
        "pg_notify('stepflow_changes', pg_backend_pid()::text)"
    };
}

mod changes;
mod connect;
mod db;
mod decode;
mod deploy;
mod due;
mod error;
mod lease;
mod runs;
mod save;
mod schema;
mod signal;

use std::sync::Arc;

use stepflow_model::{Signal, State};
use stepflow_store::{
    Claim, Deployment, DeploymentInfo, FlowInfo, HistoryEntry, Lease, RunCounts, RunFilter,
    RunPage, RunRecord, RunStatus, SignalReceipt, SignalSend, StepSave, Store, StoreError,
};

pub use schema::SCHEMA_VERSION;

use connect::wait;
use db::{Db, Statements};

/// How many statements every PostgreSQL store of this process has sent (a transaction's
/// `BEGIN` and `COMMIT` included; preparing one, once per connection, not): what benchmarks
/// divide by the steps saved.
pub fn statements_sent() -> u64 {
    db::SENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counters of a whole PostgreSQL server, for benchmarks that divide them by the steps saved
/// to get the durable cost of a step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServerCounters {
    /// WAL syncs (`pg_stat_wal.wal_sync`): the commits that waited for the disk.
    pub wal_syncs: f64,
    /// Transactions committed in all databases (`xact_commit`), read-only ones included: a
    /// lone `SELECT` is a transaction too.
    pub transactions: f64,
    /// Transaction ids handed out (the next id of the server's snapshot): one per transaction
    /// that wrote something, committed or not; the read-only ones take none.
    pub write_transactions: f64,
}

/// The [`ServerCounters`] of the server at `url` now, read over a connection of their own (to
/// any database of the server; it needs no stepflow tables, and reading them writes nothing).
pub fn server_counters(url: &str) -> Result<ServerCounters, StoreError> {
    let location = connect::redact(url);
    let client = connect::connect(url, &location, true)?;
    let row = wait(client.query_one(
        "SELECT (SELECT wal_sync FROM pg_stat_wal)::float8, \
         (SELECT sum(xact_commit) FROM pg_stat_database)::float8, \
         pg_snapshot_xmax(pg_current_snapshot())::text::float8",
        &[],
    ))
    .map_err(|e| error::classify(&location, "reading the server's counters", e))?;
    Ok(ServerCounters {
        wal_syncs: row.get(0),
        transactions: row.get(1),
        write_transactions: row.get(2),
    })
}

/// A connection to a stepflow database in PostgreSQL; open one per thread that needs it.
pub struct PostgresStore {
    /// The URL as given (with its password), the key of the process's listener.
    url: String,
    db: Db,
    changes: Arc<changes::Changes>,
    /// This connection's server process id, so its own notifications do not count as changes.
    pid: i32,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://USER@HOST[:PORT]/DATABASE`) and brings its `stepflow`
    /// schema up to date, creating it in an empty database.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, false)
    }

    /// Connects to `url` for reading only: the session is read-only, so no write can happen,
    /// and nothing is migrated; a database without stepflow's tables is refused.
    pub fn open_read_only(url: &str) -> Result<Self, StoreError> {
        Self::connect(url, true)
    }

    fn connect(url: &str, read_only: bool) -> Result<Self, StoreError> {
        let location = connect::redact(url);
        let mut client = connect::connect(url, &location, false)?;
        if read_only {
            match schema::version(&client, &location)? {
                None => {
                    return Err(StoreError::Missing {
                        path: location.into(),
                    });
                }
                found => schema::check_not_newer(found, &location)?,
            }
            wait(client.batch_execute("SET default_transaction_read_only = on"))
                .map_err(|e| error::classify(&location, "opening read-only", e))?;
        } else {
            schema::migrate(&mut client, &location)?;
        }
        let pid: i32 = wait(client.query_one("SELECT pg_backend_pid()", &[]))
            .map_err(|e| error::classify(&location, "connecting", e))?
            .get(0);
        let changes = changes::listener(url, &location, pid);
        changes.wait_until_up();
        Ok(PostgresStore {
            url: url.to_string(),
            db: Db {
                client: std::cell::RefCell::new(client),
                statements: Statements::default(),
                location,
                url: url.to_string(),
                read_only,
            },
            changes,
            pid,
        })
    }

    /// Creates database `name` on the server of `url` (connecting to `url`'s own database to do
    /// so) and gives the URL of the new one: how tests and benchmarks get an empty database of
    /// their own.
    pub fn create_database(url: &str, name: &str) -> Result<String, StoreError> {
        let location = connect::redact(url);
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Invalid {
                subject: stepflow_store::Subject::Run,
                id: name.to_string(),
                detail: "a database name of ASCII letters, digits and `_` is needed".into(),
            });
        }
        let client = connect::connect(url, &location, false)?;
        wait(client.batch_execute(&format!("CREATE DATABASE {name}")))
            .map_err(|e| error::classify(&location, format!("creating database {name}"), e))?;
        Ok(with_database(url, name))
    }

    /// Drops database `name` on the server of `url`, closing its connections first.
    pub fn drop_database(url: &str, name: &str) -> Result<(), StoreError> {
        let location = connect::redact(url);
        let client = connect::connect(url, &location, false)?;
        wait(client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .map_err(|e| error::classify(&location, format!("dropping database {name}"), e))
    }

    /// Gives database `name` on the server of `url` a setting that every new session of it
    /// starts with (`ALTER DATABASE name SET setting = value`), e.g. `commit_delay` for a
    /// database that several servers write to; needs the privilege to set it (a superuser).
    pub fn configure_database(
        url: &str,
        name: &str,
        setting: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let location = connect::redact(url);
        let plain =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain(name) || !plain(setting) || !plain(value) {
            return Err(StoreError::Invalid {
                subject: stepflow_store::Subject::Run,
                id: format!("{name}.{setting}"),
                detail: "a database, setting and value of ASCII letters, digits and `_` are needed"
                    .into(),
            });
        }
        let client = connect::connect(url, &location, false)?;
        wait(client.batch_execute(&format!("ALTER DATABASE {name} SET {setting} = {value}")))
            .map_err(|e| error::classify(&location, format!("setting {setting} of {name}"), e))
    }

    /// The database's URL without its password, as messages show it.
    pub fn location(&self) -> &str {
        &self.db.location
    }
}

/// `url` with its database replaced by `name` (its query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        changes::forget(&self.url, &self.changes, self.pid);
    }
}

impl Store for PostgresStore {
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        runs::create(&self.db, run)
    }

    fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        runs::page(&self.db, filter)
    }

    fn run_counts(&self) -> Result<RunCounts, StoreError> {
        runs::counts(&self.db)
    }

    fn start_state(&self, run_id: &str) -> Result<Option<State>, StoreError> {
        runs::start_state(&self.db, run_id)
    }

    fn history_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
        runs::history_page(&self.db, run_id, after, limit)
    }

    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError> {
        let mut results = save::save_steps(&mut self.db, std::slice::from_ref(step))?;
        results.pop().unwrap_or(Ok(()))
    }

    fn save_steps(
        &mut self,
        steps: &[StepSave<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        save::save_steps(&mut self.db, steps)
    }

    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        runs::one(&self.db, id)
    }

    fn runs_where(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        runs::page(&self.db, filter).map(|page| page.runs)
    }

    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        runs::history(&self.db, run_id)
    }

    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        runs::set_status(&self.db, run_id, status)
    }

    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError> {
        lease::claim(&self.db, claim)
    }

    fn renew(&mut self, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError> {
        lease::renew(&self.db, lease, ttl_ms, now_ms)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        lease::release(&self.db, lease)
    }

    fn claim_due(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        due::claim_due(&self.db, owner, ttl_ms, now_ms, limit)
    }

    fn next_due_ms(&self, now_ms: u64) -> Result<Option<u64>, StoreError> {
        due::next_due_ms(&self.db, now_ms)
    }

    fn data_version(&self) -> Result<u64, StoreError> {
        Ok(self.changes.version(self.pid))
    }

    fn send_signal(&mut self, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError> {
        signal::send(&mut self.db, signal)
    }

    fn signals(&self, run_id: &str, after: u64, limit: usize) -> Result<Vec<Signal>, StoreError> {
        signal::after(&self.db, run_id, after, limit)
    }

    fn flows(&self) -> Result<Vec<FlowInfo>, StoreError> {
        deploy::flows(&self.db)
    }

    fn put_deployment(&mut self, deployment: &Deployment) -> Result<bool, StoreError> {
        deploy::put(&mut self.db, deployment)
    }

    fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        deploy::get(&self.db, id)
    }

    fn deployments(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentInfo>, StoreError> {
        deploy::list(&self.db, flow, limit)
    }

    fn move_run(
        &mut self,
        run_id: &str,
        deployment: &str,
        definition: &str,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        save::move_run(&mut self.db, run_id, deployment, definition, lease)
    }
}
