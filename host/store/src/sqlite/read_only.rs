//! Opening a database only to read it (`stepflow runs`, `show`): never creates a file, never
//! writes or migrates, and works where nothing may be written (a read-only mount, a directory
//! without write permission).
//!
//! With no `-wal` file beside the database nobody has it open, and it is read `immutable`
//! (no locks, no `-wal`/`-shm` files created: a plain read-only connection would leave both
//! behind). Such a connection does not see later changes, so before every read the store looks
//! at the files again and reopens when a writer has come along. With a `-wal` file (a writer
//! is there, or was until it crashed) it is read as SQLite readers do, through the WAL,
//! read-only; SQLite manages even when the `-shm` file cannot be written.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use rusqlite::{Connection, OpenFlags};

use super::BUSY_TIMEOUT;
use super::error::classify;
use super::file_check::{self, Found, immutable_uri, sibling};
use super::queries::Reads;
use super::schema::SCHEMA_VERSION;
use crate::StoreError;

/// A read-only connection and the statements for its database's schema version.
pub(super) struct Reader {
    /// The connection.
    pub conn: Connection,
    /// The statements that fit the database's schema version.
    pub reads: Reads,
    /// For an `immutable` connection, how the files looked when it was opened.
    seen: Option<Files>,
    /// How many times the store has opened the database again (to see a change), so that
    /// `data_version` changes when the connection does.
    pub generation: u64,
}

impl Reader {
    /// Whether the database may have changed since the connection was opened, so that it must
    /// be opened again to see the change (only an `immutable` connection can miss one).
    pub(super) fn is_stale(&self, path: &Path) -> bool {
        self.seen
            .as_ref()
            .is_some_and(|seen| Files::of(path).ok().as_ref() != Some(seen))
    }
}

/// What the files of a database looked like: enough to notice that a writer has been there.
#[derive(PartialEq, Eq)]
struct Files {
    len: u64,
    modified: Option<SystemTime>,
    wal: bool,
}

impl Files {
    fn of(path: &Path) -> io::Result<Files> {
        let meta = fs::metadata(path)?;
        Ok(Files {
            len: meta.len(),
            modified: meta.modified().ok(),
            wal: wal_exists(path)?,
        })
    }
}

/// Whether a `-wal` file is beside the database.
fn wal_exists(path: &Path) -> io::Result<bool> {
    match fs::metadata(sibling(path, "-wal")) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens the database at the absolute `path` for reading: a missing file is
/// [`StoreError::Missing`]; a file that is not a stepflow database, is damaged or is newer than
/// this build is refused as [`super::SqliteStore::open`] refuses it, and nothing is written.
pub(super) fn open(path: &Path) -> Result<Reader, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let files = match Files::of(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err(e)),
        Ok(files) => files,
    };
    if let Found::Ours(found) = file_check::inspect(path)?
        && found > SCHEMA_VERSION
    {
        return Err(file_check::too_new(path, found));
    }
    let opened = if files.wal {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            Path::new(&immutable_uri(path)),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    };
    let conn = opened.map_err(|e| classify(path, "opening the database read-only", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| classify(path, "setting the busy timeout", e))?;
    super::setup::stable_plans(&conn, path)?;
    // The file may have changed since `inspect`: the same checks on this connection.
    let version = file_check::check_connection(&conn, path)?;
    if version > 0 {
        file_check::check_tables(&conn, path)?;
    }
    Ok(Reader {
        conn,
        reads: Reads::for_version(version),
        seen: (!files.wal).then_some(files),
        generation: 0,
    })
}
