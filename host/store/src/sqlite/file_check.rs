//! The checks that refuse a file that is not a usable stepflow database (random bytes, a
//! damaged or truncated file, another application's database, a newer schema) and leave it
//! byte-for-byte unchanged: the read-only (`immutable` when there is no WAL) probe before
//! opening for writing, and the same checks again on the writing connection.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::BUSY_TIMEOUT;
use super::error::classify;
use super::schema::{APPLICATION_ID, OUR_TABLES, SCHEMA_VERSION};
use crate::StoreError;

/// The smallest SQLite page, so the smallest non-empty database file.
const MIN_PAGE_SIZE: u64 = 512;

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What an existing file turned out to be.
pub(super) enum Found {
    /// Nothing there yet (no file, an empty file, or an empty SQLite database): initialise it.
    Fresh,
    /// A stepflow database at this schema version.
    Ours(i64),
}

/// Looks at an existing file without writing to it: the header by hand, then the database
/// through a read-only connection. Only a stepflow database or an empty one passes.
pub(super) fn inspect(path: &Path) -> Result<Found, StoreError> {
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

/// Checks, in one read transaction (one snapshot) on the writing connection, that the database
/// is ours or empty and not newer than this build; returns its schema version.
pub(super) fn check_connection(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let failed = |e| classify(path, "reading the database header", e);
    let tx = conn.unchecked_transaction().map_err(failed)?;
    let (app_id, version) = header_values(&tx).map_err(failed)?;
    check_ours(&tx, path, app_id, version)?;
    Ok(version)
}

/// Refuses a database that is neither ours nor empty, or is newer than this build.
pub(super) fn check_ours(
    conn: &Connection,
    path: &Path,
    app_id: i32,
    version: i64,
) -> Result<(), StoreError> {
    if app_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(too_new(path, version));
        }
        return Ok(());
    }
    let objects = schema_objects(conn).map_err(|e| classify(path, "reading the schema", e))?;
    if app_id == 0 && version == 0 && objects.is_empty() {
        return Ok(());
    }
    Err(foreign(path, app_id, version, &objects))
}

/// A database with our id but without our tables was damaged by hand: say so now rather
/// than on the first query.
pub(super) fn check_tables(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let objects = schema_objects(conn).map_err(|e| classify(path, "reading the schema", e))?;
    for table in OUR_TABLES {
        if !objects
            .iter()
            .any(|(kind, name)| kind == "table" && name == table)
        {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "it has stepflow's application id and schema version {SCHEMA_VERSION}, \
                     but no `{table}` table"
                ),
            });
        }
    }
    Ok(())
}

/// The `application_id` and `user_version` header fields, in one statement (one snapshot).
pub(super) fn header_values(conn: &Connection) -> rusqlite::Result<(i32, i64)> {
    conn.query_row(
        "SELECT application_id, user_version FROM pragma_application_id, pragma_user_version",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The error for a stepflow database with a schema newer than this build knows.
pub(super) fn too_new(path: &Path, found: i64) -> StoreError {
    StoreError::TooNew {
        path: path.to_path_buf(),
        found,
        supported: SCHEMA_VERSION,
    }
}

/// The error for a file SQLite could not read, saying what the file is where it can.
fn unreadable(path: &Path, len: u64, has_wal: bool, e: rusqlite::Error) -> StoreError {
    let action = "reading the database read-only";
    if !matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    ) {
        return classify(path, action, e);
    }
    describe_unreadable(path, len, has_wal).unwrap_or_else(|| classify(path, action, e))
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

/// `<path><suffix>`, e.g. the `-wal` file beside a database.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// A `file:` URI that opens the absolute `path` with `immutable=1`; every byte but unreserved
/// ones is percent-encoded, so SQLite reads the path back exactly.
pub(super) fn immutable_uri(path: &Path) -> String {
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
