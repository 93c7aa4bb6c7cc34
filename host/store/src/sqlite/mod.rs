//! The embedded default store: SQLite in one file, in WAL mode with durable commits; this file
//! is only the glue between the [`Store`] trait and the modules that each do one job.
//!
//! Opening is careful about files that are not ours: an existing file is first inspected
//! through a read-only (usually `immutable`) connection, and only a stepflow database (our
//! `application_id`) or an empty one is ever opened for writing; every check is repeated on
//! the writing connection before its first write. Schema changes are numbered migrations
//! tracked in `user_version`, each applied in its own transaction.
//!
//! - `setup`: opening a file and preparing the writing connection (pragmas, WAL, migrations);
//! - `file_check`: the checks that refuse foreign, damaged or too-new files, untouched;
//! - `schema`: the application id, the tables and the numbered migrations;
//! - `encode`: records into the values SQLite binds, refusing what does not fit;
//! - `decode`: rows back into records, bad data as [`crate::StoreError::BadRecord`];
//! - `queries`: the SQL that creates, reads and lists runs, and the look-ups writers share;
//! - `save`: the fenced writes of a run: steps (one, or a batch in one transaction), moves;
//! - `lease`: claiming, renewing and releasing runs (compare-and-swap on the run's lease);
//! - `due`: due runs through their index: claiming the earliest, the next due time;
//! - `signal`: each run's inbox: sending a signal (append, make due), reading what arrived;
//! - `deploy`: deployments, content-addressed: storing, loading (hashes checked), listing;
//! - `read_only`: opening a database only to read it, creating and writing nothing;
//! - `checksum`: the CRC-32 saved with every row and checked on every read;
//! - `error`: SQLite's errors as the [`crate::StoreError`] a caller can act on.

mod checksum;
mod decode;
mod deploy;
mod due;
mod encode;
mod error;
mod file_check;
mod lease;
mod queries;
mod read_only;
mod save;
mod schema;
mod setup;
mod signal;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::RefCell;

use rusqlite::Connection;

use crate::{
    Claim, Deployment, DeploymentInfo, FlowInfo, HistoryEntry, Lease, RunCounts, RunFilter,
    RunPage, RunRecord, RunStatus, SignalReceipt, SignalSend, StepSave, Store, StoreError,
};
use queries::Reads;
use read_only::Reader;

/// How long a call waits for another process's write lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded store: one SQLite file, WAL mode, `synchronous=FULL` (one fsync per commit).
///
/// Open it with [`SqliteStore::open`] on a path the caller chooses (the library has no default
/// file), or with [`SqliteStore::open_read_only`] to only read. Several processes may open the
/// same file (a runner and `stepflow cancel`): writes wait up to a few seconds for each other.
pub struct SqliteStore {
    access: Access,
    path: PathBuf,
}

/// How a store reaches its file.
enum Access {
    /// A writing connection on a database at this build's schema version.
    Write { conn: Connection, reads: Reads },
    /// A read-only connection, reopened when it may have missed a change (`RefCell`: reads
    /// take `&self`).
    Read(RefCell<Reader>),
}

impl SqliteStore {
    /// Opens (creating the file and its directories on first use) the database at `path`,
    /// applying pending schema migrations. A file that is not a stepflow database, is damaged,
    /// or is from a newer stepflow is refused with an error that says so, and left untouched.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let conn = setup::open(&path)?;
        let reads = Reads::for_version(schema::SCHEMA_VERSION);
        Ok(SqliteStore {
            access: Access::Write { conn, reads },
            path,
        })
    }

    /// Opens the database at `path` only to read it, for listings and inspection: creates no
    /// file (a missing one is [`StoreError::Missing`]), never writes or migrates (a database
    /// of an older schema is read as it is), and works on a read-only mount. Every write
    /// through it is refused with [`StoreError::ReadOnly`]. An empty file reads as no runs.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let reader = read_only::open(&path)?;
        Ok(SqliteStore {
            access: Access::Read(RefCell::new(reader)),
            path,
        })
    }

    /// The database file this store uses (absolute), so callers can name it in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the store was opened with [`SqliteStore::open_read_only`], so callers can say
    /// why a write is not offered.
    pub fn is_read_only(&self) -> bool {
        matches!(self.access, Access::Read(_))
    }

    /// Runs `read` on a connection that sees the latest saves, with the statements for its
    /// schema version.
    fn read<T>(
        &self,
        read: impl FnOnce(&Connection, &Reads) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.access {
            Access::Write { conn, reads } => read(conn, reads),
            Access::Read(reader) => {
                if reader.borrow().is_stale(&self.path) {
                    let mut fresh = read_only::open(&self.path)?;
                    let mut reader = reader.borrow_mut();
                    fresh.generation = reader.generation.wrapping_add(1);
                    *reader = fresh;
                }
                let reader = reader.borrow();
                read(&reader.conn, &reader.reads)
            }
        }
    }

    /// Turns checksums off: rows are saved without one and read unchecked. Only for measuring
    /// what checksums cost (`benches/save_step.rs`); never in a program that keeps runs.
    #[doc(hidden)]
    pub fn without_checksums_for_benchmarks(mut self) -> Self {
        match &mut self.access {
            Access::Write { reads, .. } => reads.verify = false,
            Access::Read(reader) => reader.get_mut().reads.verify = false,
        }
        self
    }

    /// Whether rows are saved with checksums and checked against them.
    fn checksums(&self) -> bool {
        match &self.access {
            Access::Write { reads, .. } => reads.verify,
            Access::Read(reader) => reader.borrow().reads.verify,
        }
    }

    /// The writing connection and the file's path, or [`StoreError::ReadOnly`] saying that
    /// `action` is not possible.
    fn write(
        &mut self,
        action: impl FnOnce() -> String,
    ) -> Result<(&mut Connection, &Path), StoreError> {
        match &mut self.access {
            Access::Write { conn, .. } => Ok((conn, &self.path)),
            Access::Read(_) => Err(StoreError::ReadOnly {
                path: self.path.clone(),
                action: action(),
            }),
        }
    }
}

impl Store for SqliteStore {
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        let checksums = self.checksums();
        let (conn, path) = self.write(|| format!("creating run `{}`", run.id))?;
        queries::create_run(conn, path, run, checksums)
    }

    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError> {
        let checksums = self.checksums();
        let (conn, path) = self.write(|| format!("saving a step of run `{}`", step.run_id))?;
        // A batch of one: the same checks and writes, one transaction.
        let mut results = save::save_steps(conn, path, std::slice::from_ref(step), checksums)?;
        results.pop().unwrap_or(Ok(()))
    }

    fn save_steps(
        &mut self,
        steps: &[StepSave<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let checksums = self.checksums();
        let (conn, path) = self.write(|| format!("saving {} steps", steps.len()))?;
        save::save_steps(conn, path, steps, checksums)
    }

    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        self.read(|conn, reads| queries::run(conn, reads, &self.path, id))
    }

    fn runs_where(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_page(filter).map(|page| page.runs)
    }

    fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        self.read(|conn, reads| queries::runs(conn, reads, &self.path, filter))
    }

    fn run_counts(&self) -> Result<RunCounts, StoreError> {
        self.read(|conn, reads| queries::counts(conn, reads, &self.path))
    }

    fn start_state(&self, run_id: &str) -> Result<Option<stepflow_model::State>, StoreError> {
        self.read(|conn, reads| queries::start_state(conn, reads, &self.path, run_id))
    }

    fn history_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
        self.read(|conn, reads| {
            queries::history_page(conn, reads, &self.path, run_id, after, limit)
        })
    }

    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(|conn, reads| queries::history(conn, reads, &self.path, run_id))
    }

    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        let (conn, path) =
            self.write(|| format!("setting the status of run `{run_id}` to {status}"))?;
        queries::set_status(conn, path, run_id, status)
    }

    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError> {
        let (conn, path) = self.write(|| format!("claiming run `{}`", claim.run_id))?;
        lease::claim(conn, path, claim)
    }

    fn renew(&mut self, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError> {
        let (conn, path) =
            self.write(|| format!("renewing the lease on run `{}`", lease.run_id))?;
        lease::renew(conn, path, lease, ttl_ms, now_ms)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let (conn, path) =
            self.write(|| format!("releasing the lease on run `{}`", lease.run_id))?;
        lease::release(conn, path, lease)
    }

    fn claim_due(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        let (conn, path) = self.write(|| format!("claiming due runs for `{owner}`"))?;
        due::claim_due(conn, path, owner, ttl_ms, now_ms, limit)
    }

    fn next_due_ms(&self, now_ms: u64) -> Result<Option<u64>, StoreError> {
        self.read(|conn, reads| {
            if !reads.has_due_index() {
                return Ok(None);
            }
            due::next_due_ms(conn, &self.path, now_ms)
        })
    }

    fn data_version(&self) -> Result<u64, StoreError> {
        let version = self.read(|conn, _| {
            conn.pragma_query_value(None, "data_version", |r| r.get::<_, i64>(0))
                .map_err(|e| error::classify(&self.path, "reading the data version", e))
        })?;
        // A read-only store may have opened a new connection (whose counter starts again) to
        // see a change: its generation, which `read` has just updated, changes the value then.
        let generation = match &self.access {
            Access::Write { .. } => 0,
            Access::Read(reader) => reader.borrow().generation,
        };
        Ok((generation << 32).wrapping_add(u64::try_from(version).unwrap_or_default()))
    }

    fn send_signal(&mut self, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError> {
        let checksums = self.checksums();
        let (conn, path) = self.write(|| {
            format!(
                "sending signal `{}` to run `{}`",
                signal.name, signal.run_id
            )
        })?;
        signal::send(conn, path, signal, checksums)
    }

    fn signals(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<stepflow_model::Signal>, StoreError> {
        self.read(|conn, reads| {
            if !reads.has_signals() {
                return Ok(Vec::new());
            }
            signal::after(conn, &self.path, run_id, after, limit, reads.verify)
        })
    }

    fn put_deployment(&mut self, deployment: &Deployment) -> Result<bool, StoreError> {
        let checksums = self.checksums();
        let (conn, path) = self.write(|| format!("storing deployment `{}`", deployment.id))?;
        deploy::put(conn, path, deployment, checksums)
    }

    fn flows(&self) -> Result<Vec<FlowInfo>, StoreError> {
        self.read(|conn, reads| deploy::flows(conn, reads, &self.path))
    }

    fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        self.read(|conn, reads| deploy::get(conn, reads, &self.path, id))
    }

    fn deployments(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentInfo>, StoreError> {
        self.read(|conn, reads| deploy::list(conn, reads, &self.path, flow, limit))
    }

    fn move_run(
        &mut self,
        run_id: &str,
        deployment: &str,
        definition: &str,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        let checksums = self.checksums();
        let (conn, path) =
            self.write(|| format!("moving run `{run_id}` to deployment `{deployment}`"))?;
        save::move_run(conn, path, run_id, deployment, definition, lease, checksums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use stepflow_model::{CallKind, State};

    use crate::StepOutcome;

    fn record(id: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            flow: "f.v1".into(),
            flow_file: "/flows/f.yaml".into(),
            definition: "hash".into(),
            deployment: None,
            status: RunStatus::Running,
            state: State::default(),
            next_check_ms: None,
            last_error: None,
            created_ms: 1,
            updated_ms: 1,
            lease: None,
        }
    }

    /// The writing connection of a store opened with `open`.
    fn conn(store: &mut SqliteStore) -> &mut Connection {
        match &mut store.access {
            Access::Write { conn, .. } => conn,
            Access::Read(_) => panic!("opened read-only"),
        }
    }

    fn entry() -> HistoryEntry {
        HistoryEntry {
            run_id: "r".into(),
            seq: 0,
            step: "f.v1/a".into(),
            kind: CallKind::Step,
            attempt: 0,
            outcome: StepOutcome::Done,
            started_ms: 5,
            duration_ms: 1,
            error: None,
            patch: None,
            redelivered: false,
            handlers: Vec::new(),
        }
    }

    #[test]
    fn pragmas_are_wal_full_foreign_keys_and_our_application_id()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = SqliteStore::open(&dir.path().join("s.db"))?;
        let conn = conn(&mut store);
        let text = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, String>(0));
        let int = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
        assert_eq!(text("journal_mode")?, "wal");
        assert_eq!(int("synchronous")?, 2, "2 is FULL");
        assert_eq!(int("foreign_keys")?, 1);
        assert_eq!(int("busy_timeout")?, 5000);
        assert_eq!(int("application_id")?, i64::from(schema::APPLICATION_ID));
        assert_eq!(int("user_version")?, schema::SCHEMA_VERSION);
        assert_eq!(&schema::APPLICATION_ID.to_be_bytes(), b"SFLW");
        Ok(())
    }

    #[test]
    fn save_step_commits_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = SqliteStore::open(&dir.path().join("s.db"))?;
        store.create_run(&record("r"))?;
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = commits.clone();
        conn(&mut store).commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        }))?;
        let state = State::default();
        let entry = entry();
        store.save_step(&StepSave {
            run_id: "r",
            status: RunStatus::Running,
            state: &state,
            next_check_ms: None,
            last_error: None,
            history: std::slice::from_ref(&entry),
            lease: None,
        })?;
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        store.save_step(&StepSave {
            run_id: "r",
            status: RunStatus::Waiting,
            state: &state,
            next_check_ms: Some(9),
            last_error: None,
            history: &[],
            lease: None,
        })?;
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        // An apply of parallel branches: three entries, still one commit.
        let parallel = [entry.clone(), entry.clone(), entry];
        store.save_step(&StepSave {
            run_id: "r",
            status: RunStatus::Running,
            state: &state,
            next_check_ms: None,
            last_error: None,
            history: &parallel,
            lease: None,
        })?;
        assert_eq!(commits.load(Ordering::SeqCst), 3);
        let seqs: Vec<u64> = store.history("r")?.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        Ok(())
    }

    #[test]
    fn save_steps_saves_fifty_runs_with_one_commit_and_refuses_in_their_slots()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = SqliteStore::open(&dir.path().join("s.db"))?;
        let ids: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
        let mut leases = Vec::new();
        for id in &ids {
            store.create_run(&record(id))?;
            leases.push(store.claim(&Claim {
                run_id: id,
                owner: "host-a",
                ttl_ms: 60_000,
                now_ms: 1_000,
                take_over: None,
            })?);
        }
        // r7 is cancelled while its step runs; r9 was taken over, so host-a's lease is stale.
        store.set_status("r7", RunStatus::Cancelled)?;
        store.claim(&Claim {
            run_id: "r9",
            owner: "host-b",
            ttl_ms: 60_000,
            now_ms: 2_000,
            take_over: Some("host-a"),
        })?;
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = commits.clone();
        conn(&mut store).commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        }))?;

        let state = State::default();
        let entries: Vec<HistoryEntry> = ids
            .iter()
            .map(|id| HistoryEntry {
                run_id: id.clone(),
                ..entry()
            })
            .collect();
        let steps: Vec<StepSave<'_>> = ids
            .iter()
            .zip(&entries)
            .zip(&leases)
            .map(|((id, entry), lease)| StepSave {
                run_id: id,
                status: RunStatus::Waiting,
                state: &state,
                next_check_ms: Some(99),
                last_error: None,
                history: std::slice::from_ref(entry),
                lease: Some(lease),
            })
            .collect();
        let results = store.save_steps(&steps)?;
        assert_eq!(commits.load(Ordering::SeqCst), 1, "one commit for 50 steps");
        assert_eq!(results.len(), 50);
        for (id, result) in ids.iter().zip(&results) {
            match id.as_str() {
                "r7" => assert!(
                    matches!(result, Err(StoreError::Cancelled { id }) if id == "r7"),
                    "{result:?}"
                ),
                "r9" => assert!(
                    matches!(result, Err(StoreError::LeaseLost { run, .. }) if run == "r9"),
                    "{result:?}"
                ),
                _ => assert!(result.is_ok(), "{id}: {result:?}"),
            }
        }
        for id in &ids {
            let (run, history) = (store.run(id)?, store.history(id)?);
            if id == "r7" || id == "r9" {
                assert_ne!(run.status, RunStatus::Waiting, "{id} is unchanged");
                assert!(history.is_empty(), "{id} has no history");
            } else {
                assert_eq!(
                    (run.status, run.next_check_ms),
                    (RunStatus::Waiting, Some(99))
                );
                assert_eq!(history.len(), 1, "{id}");
            }
        }
        // A batch whose every step is refused commits nothing.
        let refused = store.save_steps(&steps[7..8])?;
        assert!(matches!(refused[..], [Err(StoreError::Cancelled { .. })]));
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        Ok(())
    }
}
