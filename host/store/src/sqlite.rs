//! The embedded default store: SQLite in one file, in WAL mode with durable commits.
//!
//! Opening is careful about files that are not ours: an existing file is first inspected
//! through a read-only (usually `immutable`) connection, and only a stepflow database (our
//! `application_id`) or an empty one is ever opened for writing; every check is repeated on
//! the writing connection before its first write. Schema changes are numbered migrations
//! tracked in `user_version`, each applied in its own transaction.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::FromSql;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use stepflow_model::State;

use crate::{HistoryEntry, RunRecord, RunStatus, Store, StoreError};

/// The `application_id` in every stepflow database: the ASCII bytes `SFLW`, so `file(1)` and
/// this store can tell a stepflow database from any other SQLite file.
pub(crate) const APPLICATION_ID: i32 = 0x5346_4C57;

/// How long a call waits for another process's write lock before giving up with
/// [`StoreError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening waits for another process that is setting up the same new file, before
/// looking at the file again.
const SETUP_RETRY: Duration = Duration::from_millis(20);

/// The smallest SQLite page, so the smallest non-empty database file.
const MIN_PAGE_SIZE: u64 = 512;

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Schema migrations, oldest first: entry `i` takes `user_version` from `i` to `i + 1`.
/// Released entries are never edited, only appended to.
const MIGRATIONS: &[&str] = &[MIGRATION_1];

/// The newest schema version this build knows; a database with a newer one is refused.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1: runs and their history. `data` is a virtual column (the state's data document),
/// there for queries with any SQL tool; it costs no space and cannot drift from `state`.
const MIGRATION_1: &str = "
PRAGMA application_id = 1397115991;

CREATE TABLE runs (
    id            TEXT NOT NULL PRIMARY KEY,
    flow          TEXT NOT NULL,
    flow_file     TEXT NOT NULL,
    definition    TEXT NOT NULL,
    status        TEXT NOT NULL
                  CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    state         TEXT NOT NULL,
    data          TEXT GENERATED ALWAYS AS (state -> '$.data') VIRTUAL,
    next_check_ms INTEGER,
    last_error    TEXT,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
) STRICT;

CREATE INDEX runs_by_created ON runs (created_ms);
CREATE INDEX runs_by_next_check ON runs (next_check_ms) WHERE next_check_ms IS NOT NULL;

CREATE TABLE history (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    step        TEXT NOT NULL,
    kind        TEXT NOT NULL
                CHECK (kind IN ('step', 'wait-for', 'case', 'loop-until', 'error-handler')),
    attempt     INTEGER NOT NULL CHECK (attempt >= 0),
    outcome     TEXT NOT NULL
                CHECK (outcome IN ('done', 'true', 'false', 'retrying', 'failed')),
    started_ms  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    error       TEXT,
    patch       TEXT,
    redelivered INTEGER NOT NULL CHECK (redelivered IN (0, 1)),
    PRIMARY KEY (run_id, seq)
) STRICT, WITHOUT ROWID;
";

/// The tables a stepflow database must have.
const OUR_TABLES: [&str; 2] = ["runs", "history"];

/// The columns `decode_run` reads, in its order (a macro so the queries stay `const`).
macro_rules! run_columns {
    () => {
        "id, flow, flow_file, definition, status, state, next_check_ms, last_error, created_ms, \
         updated_ms"
    };
}

const SELECT_RUN: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = ?1");

/// `rowid` breaks ties between runs created in the same millisecond: the later insert first.
const LIST_RUNS: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs ORDER BY created_ms DESC, rowid DESC LIMIT ?1"
);

const LIST_RUNS_BY_STATUS: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM runs WHERE status = ?1 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
);

const INSERT_RUN: &str = "INSERT INTO runs (id, flow, flow_file, definition, status, state, \
                          next_check_ms, last_error, created_ms, updated_ms) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const UPDATE_STEP: &str = "UPDATE runs SET status = ?2, state = ?3, next_check_ms = ?4, \
                           last_error = ?5, updated_ms = ?6 \
                           WHERE id = ?1 AND status <> 'cancelled'";

/// The store numbers history entries: one more than the run's last (an index lookup).
const INSERT_HISTORY: &str = "INSERT INTO history (run_id, seq, step, kind, attempt, outcome, \
                              started_ms, duration_ms, error, patch, redelivered) \
                              SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                              ?9, ?10 FROM history WHERE run_id = ?1";

const RUN_STATUS: &str = "SELECT status FROM runs WHERE id = ?1";

const SET_STATUS: &str = "UPDATE runs SET status = ?2, updated_ms = ?3 WHERE id = ?1";

const HISTORY: &str = "SELECT run_id, seq, step, kind, attempt, outcome, started_ms, \
                       duration_ms, error, patch, redelivered \
                       FROM history WHERE run_id = ?1 ORDER BY seq";

/// The embedded store: one SQLite file, WAL mode, `synchronous=FULL` (one fsync per commit).
///
/// Open it with [`SqliteStore::open`]; the default file is [`SqliteStore::default_path`].
/// Several processes may open the same file (a runner and `stepflow cancel`): writes wait up
/// to a few seconds for each other.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    location: String,
}

/// How setting up a connection went.
enum Setup {
    /// Ready for use.
    Done,
    /// Another process is setting up the same new file; try again.
    Contended,
}

/// What an existing file turned out to be.
enum Found {
    /// Nothing there yet (no file, an empty file, or an empty SQLite database): initialise it.
    Fresh,
    /// A stepflow database at this schema version.
    Ours(i64),
}

impl SqliteStore {
    /// Opens (creating the file and its directories on first use) the database at `path`,
    /// applying pending schema migrations. A file that is not a stepflow database, is damaged,
    /// or is from a newer stepflow is refused with an error that says so, and left untouched.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let location = path.display().to_string();
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let started = Instant::now();
        loop {
            if let Found::Ours(found) = inspect(&path)?
                && found > SCHEMA_VERSION
            {
                return Err(too_new(&path, found));
            }
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&path, flags)
                .map_err(|e| open_error(&path, "opening the database", e))?;
            let mut store = SqliteStore {
                conn,
                path: path.clone(),
                location: location.clone(),
            };
            match store.configure()? {
                Setup::Done => return Ok(store),
                // Another process is setting up the same new file: let it finish, then look again.
                Setup::Contended if started.elapsed() < BUSY_TIMEOUT => {
                    drop(store);
                    std::thread::sleep(SETUP_RETRY);
                }
                Setup::Contended => {
                    return Err(StoreError::Busy {
                        location,
                        action: "setting up a new database".into(),
                        waited_ms: millis(started.elapsed()),
                    });
                }
            }
        }
    }

    /// The database file used when none is given; see [`crate::default_path`].
    pub fn default_path() -> PathBuf {
        crate::default_path()
    }

    /// The database file this store uses (absolute), for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Pragmas, the same checks as `inspect` on this connection, WAL, migrations.
    fn configure(&mut self) -> Result<Setup, StoreError> {
        let conn = &self.conn;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.db_error("setting the busy timeout", e))?;
        // Per connection, and both before any transaction: foreign_keys cannot change inside one.
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| self.db_error("enabling foreign keys", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.db_error("setting synchronous=FULL", e))?;
        // Between `inspect` and now the file may have changed: check again before any write.
        // Reading also makes SQLite notice a database that is in WAL mode already.
        self.read_check()?;
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .map_err(|e| self.db_error("reading the journal mode", e))?;
        if mode.eq_ignore_ascii_case("wal") {
            self.migrate()?;
            self.check_tables()?;
            return Ok(Setup::Done);
        }
        // A new file. WAL before the first migration: a crash inside it then leaves an empty
        // database, which the next open initialises again. The switch needs the file to
        // itself; two processes switching at once would wait for each other until the busy
        // timeout, so wait briefly and let `open` start over instead.
        let switched = conn
            .busy_timeout(SETUP_RETRY)
            .and_then(|()| {
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| {
                    row.get::<_, String>(0)
                })
            })
            .and_then(|mode| conn.busy_timeout(BUSY_TIMEOUT).map(|()| mode));
        let mode = match switched {
            Ok(mode) => mode,
            Err(e) if is_busy(&e) => return Ok(Setup::Contended),
            Err(e) => return Err(self.db_error("switching to WAL mode", e)),
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend {
                location: self.location.clone(),
                action: "switching to WAL mode".into(),
                source: format!(
                    "SQLite kept journal mode `{mode}` (is the file on a network file system? \
                     use a local disk)"
                )
                .into(),
            });
        }
        self.migrate()?;
        self.check_tables()?;
        Ok(Setup::Done)
    }

    /// Checks, in one read transaction (one snapshot), that the database is ours or empty and
    /// not newer than this build; returns its schema version.
    fn read_check(&self) -> Result<i64, StoreError> {
        let failed = |e| open_error(&self.path, "reading the database header", e);
        let tx = self.conn.unchecked_transaction().map_err(failed)?;
        let (app_id, version) = header_values(&tx).map_err(failed)?;
        check_ours(&tx, &self.path, app_id, version)?;
        Ok(version)
    }

    /// Applies pending migrations, each in its own write transaction that re-reads the version
    /// first, so two processes opening a new file at once migrate it once.
    fn migrate(&mut self) -> Result<(), StoreError> {
        loop {
            let version = self.read_check()?;
            if version >= SCHEMA_VERSION {
                return Ok(());
            }
            let path = self.path.clone();
            let failed = |e| StoreError::Backend {
                location: path.display().to_string(),
                action: format!(
                    "applying schema migration {} (nothing was changed)",
                    version + 1
                ),
                source: Box::new(e),
            };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| open_error(&path, "locking the database for a migration", e))?;
            // Under the lock: another process may have migrated meanwhile, and nothing but our
            // own or an empty database is ever written to.
            let (app_id, current) = header_values(&tx).map_err(failed)?;
            if current != version {
                continue;
            }
            check_ours(&tx, &path, app_id, version)?;
            let index = usize::try_from(version).map_err(|_| too_new(&path, version))?;
            let Some(sql) = MIGRATIONS.get(index) else {
                return Err(too_new(&path, version));
            };
            tx.execute_batch(sql).map_err(failed)?;
            tx.pragma_update(None, "user_version", version + 1)
                .map_err(failed)?;
            tx.commit().map_err(failed)?;
        }
    }

    /// A database with our id but without our tables was damaged by hand: say so now rather
    /// than on the first query.
    fn check_tables(&self) -> Result<(), StoreError> {
        let objects = schema_objects(&self.conn)
            .map_err(|e| open_error(&self.path, "reading the schema", e))?;
        for table in OUR_TABLES {
            if !objects
                .iter()
                .any(|(kind, name)| kind == "table" && name == table)
            {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!(
                        "it has stepflow's application id and schema version {SCHEMA_VERSION}, \
                         but no `{table}` table"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Turns an engine error into a [`StoreError`] that names this database.
    fn db_error(&self, action: impl Into<String>, e: rusqlite::Error) -> StoreError {
        classify(&self.path, action.into(), e)
    }

    /// A [`StoreError::BadRecord`] for a value of run `id` that cannot be read.
    fn bad(&self, id: &str, column: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::BadRecord {
            id: id.to_string(),
            location: self.location.clone(),
            column: column.into(),
            detail: detail.to_string(),
        }
    }

    /// One column of a row, any type mismatch reported as a bad record of run `id`.
    fn get<T: FromSql>(
        &self,
        row: &Row<'_>,
        index: usize,
        id: &str,
        column: &str,
    ) -> Result<T, StoreError> {
        row.get(index).map_err(|e| self.bad(id, column, e))
    }

    /// A stored integer that must not be negative.
    fn get_u64(
        &self,
        row: &Row<'_>,
        index: usize,
        id: &str,
        column: &str,
    ) -> Result<u64, StoreError> {
        let value: i64 = self.get(row, index, id, column)?;
        u64::try_from(value).map_err(|_| self.bad(id, column, format!("negative value {value}")))
    }

    /// [`SqliteStore::get_u64`] for a nullable column.
    fn get_opt_u64(
        &self,
        row: &Row<'_>,
        index: usize,
        id: &str,
        column: &str,
    ) -> Result<Option<u64>, StoreError> {
        let value: Option<i64> = self.get(row, index, id, column)?;
        value
            .map(|v| {
                u64::try_from(v).map_err(|_| self.bad(id, column, format!("negative value {v}")))
            })
            .transpose()
    }

    /// A row of `run_columns!()` as a record; bad data is an error naming the run, never a panic.
    fn decode_run(&self, row: &Row<'_>) -> Result<RunRecord, StoreError> {
        let id: String = self.get(row, 0, "?", "id")?;
        let status: String = self.get(row, 4, &id, "status")?;
        let status = status.parse().map_err(|e| self.bad(&id, "status", e))?;
        let state: String = self.get(row, 5, &id, "state")?;
        let state: State =
            serde_json::from_str(&state).map_err(|e| self.bad(&id, "state (JSON)", e))?;
        Ok(RunRecord {
            flow: self.get(row, 1, &id, "flow")?,
            flow_file: self.get(row, 2, &id, "flow_file")?,
            definition: self.get(row, 3, &id, "definition")?,
            status,
            state,
            next_check_ms: self.get_opt_u64(row, 6, &id, "next_check_ms")?,
            last_error: self.get(row, 7, &id, "last_error")?,
            created_ms: self.get_u64(row, 8, &id, "created_ms")?,
            updated_ms: self.get_u64(row, 9, &id, "updated_ms")?,
            id,
        })
    }

    /// A row of `HISTORY` as an entry.
    fn decode_history(&self, row: &Row<'_>, run_id: &str) -> Result<HistoryEntry, StoreError> {
        let seq = self.get_u64(row, 1, run_id, "history seq")?;
        let column = |name: &str| format!("history entry {seq} ({name})");
        let attempt: i64 = self.get(row, 4, run_id, &column("attempt"))?;
        let attempt = u32::try_from(attempt).map_err(|_| {
            self.bad(
                run_id,
                column("attempt"),
                format!("out of range: {attempt}"),
            )
        })?;
        let patch: Option<String> = self.get(row, 9, run_id, &column("patch"))?;
        let patch = patch
            .map(|p| serde_json::from_str(&p).map_err(|e| self.bad(run_id, column("patch"), e)))
            .transpose()?;
        let redelivered: i64 = self.get(row, 10, run_id, &column("redelivered"))?;
        Ok(HistoryEntry {
            run_id: self.get(row, 0, run_id, &column("run_id"))?,
            seq,
            step: self.get(row, 2, run_id, &column("step"))?,
            kind: self.get(row, 3, run_id, &column("kind"))?,
            attempt,
            outcome: self.get(row, 5, run_id, &column("outcome"))?,
            started_ms: self.get_u64(row, 6, run_id, &column("started_ms"))?,
            duration_ms: self.get_u64(row, 7, run_id, &column("duration_ms"))?,
            error: self.get(row, 8, run_id, &column("error"))?,
            patch,
            redelivered: redelivered != 0,
        })
    }

    /// The status of run `id`, or `None` when there is no such run.
    fn status_of(&self, id: &str) -> Result<Option<RunStatus>, StoreError> {
        let action = || format!("looking up run `{id}`");
        let mut stmt = self
            .conn
            .prepare_cached(RUN_STATUS)
            .map_err(|e| self.db_error(action(), e))?;
        let status: Option<String> = stmt
            .query_row([id], |r| r.get(0))
            .optional()
            .map_err(|e| self.db_error(action(), e))?;
        status
            .map(|s| s.parse().map_err(|e| self.bad(id, "status", e)))
            .transpose()
    }

    fn not_found(&self, id: &str) -> StoreError {
        StoreError::NotFound {
            id: id.to_string(),
            location: self.location.clone(),
        }
    }
}

impl Store for SqliteStore {
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        let id = run.id.as_str();
        let state = serde_json::to_string(&run.state).map_err(|e| invalid(id, e))?;
        let next_check = run
            .next_check_ms
            .map(|t| to_i64(id, "next_check_ms", t))
            .transpose()?;
        let created = to_i64(id, "created_ms", run.created_ms)?;
        let updated = to_i64(id, "updated_ms", run.updated_ms)?;
        let action = || format!("creating run `{id}`");
        let mut stmt = self
            .conn
            .prepare_cached(INSERT_RUN)
            .map_err(|e| self.db_error(action(), e))?;
        let result = stmt.execute(rusqlite::params![
            id,
            run.flow,
            run.flow_file,
            run.definition,
            run.status.as_str(),
            state,
            next_check,
            run.last_error,
            created,
            updated,
        ]);
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_PRIMARYKEY) => {
                Err(StoreError::AlreadyExists {
                    id: id.to_string(),
                    location: self.location.clone(),
                })
            }
            Err(e) => Err(self.db_error(action(), e)),
        }
    }

    fn save_step(
        &mut self,
        run_id: &str,
        status: RunStatus,
        state: &State,
        next_check_ms: Option<u64>,
        last_error: Option<&str>,
        history: Option<&HistoryEntry>,
    ) -> Result<(), StoreError> {
        // Everything that can be refused without the database is checked before the transaction.
        let state_json = serde_json::to_string(state).map_err(|e| invalid(run_id, e))?;
        let next_check = next_check_ms
            .map(|t| to_i64(run_id, "next_check_ms", t))
            .transpose()?;
        let now = to_i64(run_id, "updated_ms", now_ms())?;
        let history = history
            .map(|entry| HistoryRow::new(run_id, entry))
            .transpose()?;

        let action = || format!("saving a step of run `{run_id}`");
        // IMMEDIATE takes the write lock up front, so the busy timeout applies to it rather
        // than failing when a read transaction is upgraded. One COMMIT: one fsync of the WAL.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(&self.path, action(), e))?;
        let changed = tx
            .prepare_cached(UPDATE_STEP)
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    run_id,
                    status.as_str(),
                    state_json,
                    next_check,
                    last_error,
                    now,
                ])
            })
            .map_err(|e| classify(&self.path, action(), e))?;
        if changed == 0 {
            drop(tx);
            return match self.status_of(run_id)? {
                Some(RunStatus::Cancelled) => Err(StoreError::Cancelled {
                    id: run_id.to_string(),
                }),
                _ => Err(self.not_found(run_id)),
            };
        }
        if let Some(row) = &history {
            let inserted = tx.prepare_cached(INSERT_HISTORY).and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    run_id,
                    row.step,
                    row.kind,
                    row.attempt,
                    row.outcome,
                    row.started_ms,
                    row.duration_ms,
                    row.error,
                    row.patch,
                    row.redelivered,
                ])
            });
            if let Err(e) = inserted {
                // Dropping `tx` rolls the state update back too.
                return Err(
                    if e.sqlite_extended_error_code() == Some(SQLITE_CONSTRAINT_CHECK) {
                        StoreError::Invalid {
                            id: run_id.to_string(),
                            detail: format!(
                                "the history entry for step `{}` was refused ({e}); kind must be \
                                 one of {} and outcome one of {}; nothing was saved",
                                row.step,
                                HistoryEntry::KINDS.join(", "),
                                HistoryEntry::OUTCOMES.join(", "),
                            ),
                        }
                    } else {
                        classify(&self.path, action(), e)
                    },
                );
            }
        }
        tx.commit().map_err(|e| classify(&self.path, action(), e))
    }

    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let action = || format!("loading run `{id}`");
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_RUN)
            .map_err(|e| self.db_error(action(), e))?;
        let mut rows = stmt.query([id]).map_err(|e| self.db_error(action(), e))?;
        match rows.next().map_err(|e| self.db_error(action(), e))? {
            Some(row) => self.decode_run(row),
            None => Err(self.not_found(id)),
        }
    }

    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let action = || "listing runs".to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = if status.is_some() {
            LIST_RUNS_BY_STATUS
        } else {
            LIST_RUNS
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| self.db_error(action(), e))?;
        let mut rows = match status {
            Some(status) => stmt.query(rusqlite::params![status.as_str(), limit]),
            None => stmt.query(rusqlite::params![limit]),
        }
        .map_err(|e| self.db_error(action(), e))?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.db_error(action(), e))? {
            runs.push(self.decode_run(row)?);
        }
        Ok(runs)
    }

    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let action = || format!("loading the history of run `{run_id}`");
        let mut stmt = self
            .conn
            .prepare_cached(HISTORY)
            .map_err(|e| self.db_error(action(), e))?;
        let mut rows = stmt
            .query([run_id])
            .map_err(|e| self.db_error(action(), e))?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.db_error(action(), e))? {
            entries.push(self.decode_history(row, run_id)?);
        }
        if entries.is_empty() && self.status_of(run_id)?.is_none() {
            return Err(self.not_found(run_id));
        }
        Ok(entries)
    }

    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        let action = || format!("setting the status of run `{run_id}` to {status}");
        let now = to_i64(run_id, "updated_ms", now_ms())?;
        let mut stmt = self
            .conn
            .prepare_cached(SET_STATUS)
            .map_err(|e| self.db_error(action(), e))?;
        let changed = stmt
            .execute(rusqlite::params![run_id, status.as_str(), now])
            .map_err(|e| self.db_error(action(), e))?;
        if changed == 0 {
            return Err(self.not_found(run_id));
        }
        Ok(())
    }
}

/// A history entry converted for binding, checked before the transaction starts.
struct HistoryRow<'a> {
    step: &'a str,
    kind: &'a str,
    attempt: u32,
    outcome: &'a str,
    started_ms: i64,
    duration_ms: i64,
    error: Option<&'a str>,
    patch: Option<String>,
    redelivered: bool,
}

impl<'a> HistoryRow<'a> {
    fn new(run_id: &str, entry: &'a HistoryEntry) -> Result<Self, StoreError> {
        if !entry.run_id.is_empty() && entry.run_id != run_id {
            return Err(invalid(
                run_id,
                format!("the history entry given is for run `{}`", entry.run_id),
            ));
        }
        let patch = entry
            .patch
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| invalid(run_id, e))?;
        Ok(HistoryRow {
            step: &entry.step,
            kind: &entry.kind,
            attempt: entry.attempt,
            outcome: &entry.outcome,
            started_ms: to_i64(run_id, "history started_ms", entry.started_ms)?,
            duration_ms: to_i64(run_id, "history duration_ms", entry.duration_ms)?,
            error: entry.error.as_deref(),
            patch,
            redelivered: entry.redelivered,
        })
    }
}

/// `SQLITE_CONSTRAINT_PRIMARYKEY`: a duplicate key.
const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
/// `SQLITE_CONSTRAINT_CHECK`: a CHECK constraint refused a value.
const SQLITE_CONSTRAINT_CHECK: i32 = 275;

/// Refuses a database that is neither ours nor empty, or is newer than this build.
fn check_ours(conn: &Connection, path: &Path, app_id: i32, version: i64) -> Result<(), StoreError> {
    if app_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(too_new(path, version));
        }
        return Ok(());
    }
    let objects = schema_objects(conn).map_err(|e| open_error(path, "reading the schema", e))?;
    if app_id == 0 && version == 0 && objects.is_empty() {
        return Ok(());
    }
    Err(foreign(path, app_id, version, &objects))
}

/// Looks at an existing file without writing to it: the header by hand, then the database
/// through a read-only connection. Only a stepflow database or an empty one passes.
fn inspect(path: &Path) -> Result<Found, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(e)),
        Ok(meta) if meta.is_dir() => {
            return Err(StoreError::NotADatabase {
                path: path.to_path_buf(),
                detail: "it is a directory".into(),
            });
        }
        Ok(meta) => meta.len(),
    };
    // A `-wal` file exists while any process has the database open, and after a crash.
    let wal = match fs::metadata(sibling(path, "-wal")) {
        Ok(meta) => Some(meta.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(e)),
    };
    if len == 0 && wal.unwrap_or(0) == 0 {
        return Ok(Found::Fresh);
    }
    if len > 0 && len < MIN_PAGE_SIZE {
        // Smaller than one page: no database, but SQLite would take a 1-byte file for an empty
        // one. Such a file is nobody's open database, so reading it directly is safe.
        return Err(
            describe_unreadable(path, len, false).unwrap_or_else(|| StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("only {len} bytes, smaller than one SQLite page"),
            }),
        );
    }

    // SQLite itself recognises its files (and damage such as truncation); the file is read
    // directly only afterwards, to describe a file SQLite refused. (Opening and closing a file
    // descriptor of a database this process has open would drop SQLite's POSIX locks on it.)
    // With no `-wal` file the main file is the whole database and nobody has it open (a
    // connection to a WAL database keeps a `-wal` file until the last one closes): read it
    // `immutable`, which takes no locks and creates no `-wal`/`-shm` files. Otherwise read it
    // as SQLite readers do (through the WAL and its locks), read-only.
    let conn = if wal.is_none() {
        Connection::open_with_flags(
            Path::new(&immutable_uri(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    };
    let read = |conn: &Connection| -> rusqlite::Result<(i32, i64, SchemaObjects)> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // One read transaction: the three reads see the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let (app_id, version) = header_values(&tx)?;
        Ok((app_id, version, schema_objects(&tx)?))
    };
    let (app_id, version, objects) = match conn.and_then(|conn| read(&conn)) {
        Ok(found) => found,
        Err(e) => return Err(unreadable(path, len, wal.is_some_and(|n| n > 0), e)),
    };
    if app_id == APPLICATION_ID {
        Ok(Found::Ours(version))
    } else if app_id == 0 && version == 0 && objects.is_empty() {
        Ok(Found::Fresh)
    } else {
        Err(foreign(path, app_id, version, &objects))
    }
}

/// The error for a file SQLite could not read, saying what the file is where it can.
fn unreadable(path: &Path, len: u64, has_wal: bool, e: rusqlite::Error) -> StoreError {
    let action = "reading the database read-only";
    if !matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    ) {
        return open_error(path, action, e);
    }
    describe_unreadable(path, len, has_wal).unwrap_or_else(|| open_error(path, action, e))
}

/// What the first 100 bytes of a file say is wrong with it, if they say anything.
fn describe_unreadable(path: &Path, len: u64, has_wal: bool) -> Option<StoreError> {
    let mut header = Vec::with_capacity(100);
    if let Err(source) = fs::File::open(path).and_then(|f| f.take(100).read_to_end(&mut header)) {
        return Some(StoreError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    check_header(path, &header, len, has_wal).err()
}

/// Describes what is wrong with a file SQLite refused, from its first 100 bytes: not SQLite at
/// all, a damaged header, or (when no WAL holds newer pages) shorter than its header says.
fn check_header(path: &Path, header: &[u8], len: u64, has_wal: bool) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    // Without the magic string (a file shorter than it included) it is not SQLite at all.
    if !header.starts_with(SQLITE_MAGIC) {
        return Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            detail: format!("its first bytes are {}", describe_bytes(header)),
        });
    }
    if header.len() < 100 {
        return Err(corrupt(format!(
            "truncated: {len} bytes, shorter than the 100-byte SQLite header"
        )));
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n if u64::from(n) >= MIN_PAGE_SIZE && n.is_power_of_two() => u64::from(n),
        n => return Err(corrupt(format!("invalid page size {n} in its header"))),
    };
    // The page count in the header is valid when "version-valid-for" matches the change counter.
    let pages = u64::from(be32(28));
    if !has_wal && be32(92) == be32(24) && pages > 0 && len < pages * page_size {
        return Err(corrupt(format!(
            "truncated: its header says {} bytes ({pages} pages of {page_size}), the file has {len}",
            pages * page_size
        )));
    }
    Ok(())
}

/// The first bytes of a file, printable, for saying what a foreign file is.
fn describe_bytes(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(16)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("\"{shown}\"")
}

/// `(type, name)` of everything in a schema: tables, indexes, views, triggers.
type SchemaObjects = Vec<(String, String)>;

/// The names and kinds of everything in the schema, to recognise an empty or foreign database.
fn schema_objects(conn: &Connection) -> rusqlite::Result<SchemaObjects> {
    let mut stmt = conn.prepare("SELECT type, name FROM sqlite_schema ORDER BY type, name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The error for a database of another application, saying what it holds.
fn foreign(path: &Path, app_id: i32, version: i64, objects: &[(String, String)]) -> StoreError {
    let mut detail = if app_id == 0 {
        "no application id".to_string()
    } else {
        let bytes = app_id.to_be_bytes();
        if bytes.iter().all(u8::is_ascii_graphic) {
            let text: String = bytes.iter().map(|&b| char::from(b)).collect();
            format!("application id {app_id:#010x} \"{text}\"")
        } else {
            format!("application id {app_id:#010x} ({app_id})")
        }
    };
    if version != 0 {
        detail.push_str(&format!(", user version {version}"));
    }
    let tables: Vec<&str> = objects
        .iter()
        .filter(|(kind, _)| kind == "table")
        .map(|(_, name)| name.as_str())
        .collect();
    if tables.is_empty() {
        detail.push_str(", no tables");
    } else {
        const SHOWN: usize = 8;
        let more = tables.len().saturating_sub(SHOWN);
        detail.push_str(&format!(
            ", tables {}",
            tables[..tables.len().min(SHOWN)].join(", ")
        ));
        if more > 0 {
            detail.push_str(&format!(" and {more} more"));
        }
    }
    StoreError::Foreign {
        path: path.to_path_buf(),
        detail,
    }
}

fn too_new(path: &Path, found: i64) -> StoreError {
    StoreError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: SCHEMA_VERSION,
    }
}

/// The `application_id` and `user_version` header fields, in one statement (one snapshot).
fn header_values(conn: &Connection) -> rusqlite::Result<(i32, i64)> {
    conn.query_row(
        "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Errors while opening: SQLite's "not a database" and "malformed" become [`StoreError::Corrupt`].
fn open_error(path: &Path, action: &str, e: rusqlite::Error) -> StoreError {
    classify(path, action.to_string(), e)
}

/// Maps an engine error to the [`StoreError`] a user can act on.
fn classify(path: &Path, action: String, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            location: path.display().to_string(),
            action,
            waited_ms: millis(BUSY_TIMEOUT),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{e}, while {action}"),
        },
        _ => StoreError::Backend {
            location: path.display().to_string(),
            action,
            source: Box::new(e),
        },
    }
}

fn invalid(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Invalid {
        id: id.to_string(),
        detail: detail.to_string(),
    }
}

/// SQLite integers are signed 64-bit; a larger time is refused rather than wrapped.
fn to_i64(id: &str, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| invalid(id, format!("{what} {value} is too large (over 2^63)")))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `<path><suffix>`, e.g. the `-wal` file beside a database.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// A `file:` URI that opens the absolute `path` with `immutable=1`; every byte but unreserved
/// ones is percent-encoded, so SQLite reads the path back exactly.
fn immutable_uri(path: &Path) -> String {
    // `file://` + an absolute path `/...` gives an empty authority, as SQLite wants.
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        }
    }

    fn entry() -> HistoryEntry {
        HistoryEntry {
            run_id: "r".into(),
            seq: 0,
            step: "f.v1/a".into(),
            kind: "step".into(),
            attempt: 0,
            outcome: "done".into(),
            started_ms: 5,
            duration_ms: 1,
            error: None,
            patch: None,
            redelivered: false,
        }
    }

    #[test]
    fn pragmas_are_wal_full_foreign_keys_and_our_application_id()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("s.db"))?;
        let conn = &store.conn;
        let text = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, String>(0));
        let int = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
        assert_eq!(text("journal_mode")?, "wal");
        assert_eq!(int("synchronous")?, 2, "2 is FULL");
        assert_eq!(int("foreign_keys")?, 1);
        assert_eq!(int("busy_timeout")?, 5000);
        assert_eq!(int("application_id")?, i64::from(APPLICATION_ID));
        assert_eq!(int("user_version")?, SCHEMA_VERSION);
        assert_eq!(&APPLICATION_ID.to_be_bytes(), b"SFLW");
        Ok(())
    }

    #[test]
    fn save_step_commits_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = SqliteStore::open(&dir.path().join("s.db"))?;
        store.create_run(&record("r"))?;
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = commits.clone();
        store.conn.commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        }))?;
        store.save_step(
            "r",
            RunStatus::Running,
            &State::default(),
            None,
            None,
            Some(&entry()),
        )?;
        assert_eq!(commits.load(Ordering::SeqCst), 1);
        store.save_step(
            "r",
            RunStatus::Waiting,
            &State::default(),
            Some(9),
            None,
            None,
        )?;
        assert_eq!(commits.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[test]
    fn immutable_uri_escapes_what_sqlite_would_parse() {
        assert_eq!(
            immutable_uri(Path::new("/a b/x?y#z%.db")),
            "file:///a%20b/x%3Fy%23z%25.db?immutable=1"
        );
    }

    #[test]
    fn header_checks_tell_text_from_truncated_sqlite() {
        let path = Path::new("/x.db");
        let err = check_header(path, b"hello world", 11, false);
        assert!(
            matches!(err, Err(StoreError::NotADatabase { .. })),
            "{err:?}"
        );
        let err = check_header(path, b"SQLite format 3\0 and a bit", 27, false);
        assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
    }
}
