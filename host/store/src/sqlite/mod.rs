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
//! - `queries`: the SQL statements behind each [`Store`] method;
//! - `lease`: claiming, renewing and releasing runs (compare-and-swap on the run's lease);
//! - `read_only`: opening a database only to read it, creating and writing nothing;
//! - `checksum`: the CRC-32 saved with every row and checked on every read;
//! - `error`: SQLite's errors as the [`crate::StoreError`] a caller can act on.

mod checksum;
mod decode;
mod encode;
mod error;
mod file_check;
mod lease;
mod queries;
mod read_only;
mod schema;
mod setup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::RefCell;

use rusqlite::Connection;

use crate::{Claim, HistoryEntry, Lease, RunRecord, RunStatus, StepSave, Store, StoreError};
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
                    let fresh = read_only::open(&self.path)?;
                    *reader.borrow_mut() = fresh;
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
        queries::save_step(conn, path, step, checksums)
    }

    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        self.read(|conn, reads| queries::run(conn, reads, &self.path, id))
    }

    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.read(|conn, reads| queries::runs(conn, reads, &self.path, status, limit))
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
            history: Some(&entry),
            lease: None,
        })?;
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        store.save_step(&StepSave {
            run_id: "r",
            status: RunStatus::Waiting,
            state: &state,
            next_check_ms: Some(9),
            last_error: None,
            history: None,
            lease: None,
        })?;
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        Ok(())
    }
}
