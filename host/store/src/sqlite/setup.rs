//! Opening a database file: inspect it first, then open, configure and migrate a writing
//! connection, starting over while another process is setting up the same new file.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, MAIN_DB, OpenFlags};

use super::BUSY_TIMEOUT;
use super::error::{classify, is_busy, millis};
use super::file_check::{self, Found};
use super::schema::{self, SCHEMA_VERSION};
use crate::StoreError;

/// How long opening waits for another process that is setting up the same new file, before
/// looking at the file again.
const SETUP_RETRY: Duration = Duration::from_millis(20);

/// How setting up a connection went.
enum Setup {
    /// Ready for use.
    Done,
    /// Another process is setting up the same new file; try again.
    Contended,
}

/// Opens the database at the absolute `path` for writing, creating the file and its
/// directories on first use; a file that is not ours is refused before anything writes to it.
pub(super) fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let started = Instant::now();
    loop {
        if let Found::Ours(found) = file_check::inspect(path)?
            && found > SCHEMA_VERSION
        {
            return Err(file_check::too_new(path, found));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| classify(path, "opening the database", e))?;
        // SQLite quietly opens read-only what it cannot open for writing (a read-only file,
        // directory or mount); say so now rather than fail at the first pragma.
        if conn.is_readonly(MAIN_DB).unwrap_or(false) {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "it can be opened only for reading (a read-only file, directory or mount)",
                ),
            });
        }
        match configure(&mut conn, path)? {
            Setup::Done => return Ok(conn),
            // Another process is setting up the same new file: let it finish, then look again.
            Setup::Contended if started.elapsed() < BUSY_TIMEOUT => {
                drop(conn);
                std::thread::sleep(SETUP_RETRY);
            }
            Setup::Contended => {
                return Err(StoreError::Busy {
                    location: path.display().to_string(),
                    action: "setting up a new database".into(),
                    waited_ms: millis(started.elapsed()),
                });
            }
        }
    }
}

/// Keeps each prepared statement's query plan whatever values are bound to it. Without this
/// SQLite (built with STAT4) marks a statement whose parameter is compared with an indexed
/// column to be prepared again at every new binding: the history insert's sequence lookup
/// was compiled anew for every step saved, a tenth of the writer's time.
pub(super) fn stable_plans(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
        .map_err(|e| classify(path, "fixing query plans (SQLITE_DBCONFIG_ENABLE_QPSG)", e))
}

/// Pragmas, the same checks as `inspect` on this connection, WAL, migrations.
fn configure(conn: &mut Connection, path: &Path) -> Result<Setup, StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(path, "setting the busy timeout", e))?;
    stable_plans(conn, path)?;
    // Per connection, and both before any transaction: foreign_keys cannot change inside one.
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| classify(path, "enabling foreign keys", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| classify(path, "setting synchronous=FULL", e))?;
    // Between `inspect` and now the file may have changed: check again before any write.
    // Reading also makes SQLite notice a database that is in WAL mode already.
    file_check::check_connection(conn, path)?;
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .map_err(|e| classify(path, "reading the journal mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
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
            Err(e) => return Err(classify(path, "switching to WAL mode", e)),
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend {
                location: path.display().to_string(),
                action: "switching to WAL mode".into(),
                source: format!(
                    "SQLite kept journal mode `{mode}` (is the file on a network file system? \
                     use a local disk)"
                )
                .into(),
            });
        }
    }
    schema::migrate(conn, path)?;
    file_check::check_tables(conn, path)?;
    Ok(Setup::Done)
}
