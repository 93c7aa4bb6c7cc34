//! Target `store_rows`: arbitrary values in the `runs` and `history` rows of a real database
//! made by [`SqliteStore`], read back with `run`, `runs` and `history`: each must give a record
//! or an error, never panic.
//!
//! Two databases are made once per process, on tmpfs when there is one, and reused: one with
//! stepflow's schema as it is (STRICT tables; the CHECK constraints are ignored by the writing
//! connection), and one whose tables were loosened in place (no STRICT, no NOT NULL), as a
//! damaged or hand-edited file could be, so that any SQLite type can sit in any column. Each
//! input empties the tables of one of them and writes its rows through a second connection on
//! the same file. The columns are read from the schema, so new columns get values too.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use arbitrary::Unstructured;
use rusqlite::Connection;
use rusqlite::types::Value as SqlValue;
use stepflow_store::{RunStatus, SqliteStore, Store};

/// The run ids rows are given most often, so that lookups find them.
const IDS: [&str; 3] = ["r1", "r2", ""];

/// Call kinds and outcomes as the schema spells them.
const KINDS: [&str; 5] = ["step", "wait-for", "case", "loop-until", "error-handler"];
const OUTCOMES: [&str; 5] = ["done", "true", "false", "retrying", "failed"];

/// States that decode, to start from.
const STATES: [&str; 4] = [
    r#"{"cursor":["start:f"],"data":{}}"#,
    r#"{"cursor":[],"data":null,"attempts":{"f/r":2},"deadlines":{"f/w":1},"not_before":5,"error":{"step":"f/a","kind":"fatal","message":"m"},"calls":3,"definition":"0123456789abcdef"}"#,
    r#"{"cursor":["completed:f"],"data":[1,{"a":"b"}],"calls":18446744073709551615}"#,
    r#"{"cursor":["start:f/a","start:f/b"],"data":"text","error":{"step":"f","kind":"retryable","message":""}}"#,
];

/// One database: the store under test and the connection that writes its rows.
struct Db {
    store: SqliteStore,
    raw: Connection,
    runs: Vec<Column>,
    history: Vec<Column>,
}

/// A column that takes values: its name and whether its declared type is INTEGER.
struct Column {
    name: String,
    integer: bool,
}

/// Both databases and the directory they are in.
struct Fixture {
    dir: PathBuf,
    dbs: [Db; 2],
}

static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();

/// Both databases, made on first use.
fn fixture() -> &'static Mutex<Fixture> {
    FIXTURE.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("stepflow-fuzz-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the fuzz databases");
        let dbs = [open(&dir, "strict.db", false), open(&dir, "loose.db", true)];
        Mutex::new(Fixture { dir, dbs })
    })
}

/// Removes the databases' files, for a process that is done with this target (the replay
/// test); a fuzzer leaves them in `/dev/shm/stepflow-fuzz-store-<pid>`.
pub fn remove_files() {
    if let Some(fixture) = FIXTURE.get() {
        let fixture = fixture.lock().unwrap_or_else(|p| p.into_inner());
        let _ = std::fs::remove_dir_all(&fixture.dir);
    }
}

/// Makes a stepflow database at `dir/name` and a raw connection to it, loosened if `loose`.
fn open(dir: &std::path::Path, name: &str, loose: bool) -> Db {
    let path = dir.join(name);
    let store = SqliteStore::open(&path).expect("a new stepflow database");
    let raw = Connection::open(&path).expect("a second connection");
    raw.execute_batch("PRAGMA ignore_check_constraints = ON; PRAGMA foreign_keys = OFF; PRAGMA synchronous = OFF;")
        .expect("pragmas");
    if loose {
        let version: i64 = raw
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .expect("the schema version");
        raw.execute_batch(&format!(
            "PRAGMA writable_schema = ON;
             UPDATE sqlite_schema SET sql = replace(replace(replace(sql,
                 'STRICT, WITHOUT ROWID', 'WITHOUT ROWID'), ') STRICT', ')'), 'NOT NULL', '')
               WHERE type = 'table' AND name IN ('runs', 'history');
             PRAGMA schema_version = {};
             PRAGMA writable_schema = OFF;",
            version + 1
        ))
        .expect("loosened tables");
    }
    let runs = columns(&raw, "runs");
    let history = columns(&raw, "history");
    Db {
        store,
        raw,
        runs,
        history,
    }
}

/// The columns of `table` that take values (not the generated ones).
fn columns(raw: &Connection, table: &str) -> Vec<Column> {
    let mut stmt = raw
        .prepare(&format!(
            "SELECT name, type, hidden FROM pragma_table_xinfo('{table}')"
        ))
        .expect("the table's columns");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .expect("the table's columns");
    let columns: Vec<Column> = rows
        .filter_map(Result::ok)
        .filter(|(_, _, hidden)| *hidden == 0)
        .map(|(name, ty, _)| Column {
            name,
            integer: ty.eq_ignore_ascii_case("INTEGER"),
        })
        .collect();
    assert!(!columns.is_empty(), "table {table} has columns");
    columns
}

/// A value for `column` that the store can read, most of the time.
fn plausible(column: &Column, u: &mut Unstructured<'_>) -> arbitrary::Result<SqlValue> {
    let pick = |u: &mut Unstructured<'_>, options: &[&str]| -> arbitrary::Result<SqlValue> {
        Ok(SqlValue::Text((*u.choose(options)?).to_string()))
    };
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    match column.name.as_str() {
        "id" | "run_id" => pick(u, &IDS),
        "status" => pick(u, &statuses),
        "kind" => pick(u, &KINDS),
        "outcome" => pick(u, &OUTCOMES),
        "state" => pick(u, &STATES),
        "patch" => pick(u, &[r#"{"a":1}"#, "null", "[]"]),
        "handlers" => pick(
            u,
            &[
                "[]",
                r#"[{"group":"f/r","error":"e","answer":{"Ok":true}}]"#,
                "null",
            ],
        ),
        // No checksum: a row saved before checksums, read unchecked, so decoding is reached.
        "last_error" | "error" | "checksum" | "deployment" => Ok(SqlValue::Null),
        "seq" | "attempt" => Ok(SqlValue::Integer(i64::from(u.int_in_range(1u8..=3)?))),
        "redelivered" => Ok(SqlValue::Integer(i64::from(u.int_in_range(0u8..=1)?))),
        name if name.ends_with("_ms") => Ok(SqlValue::Integer(i64::from(u.arbitrary::<u16>()?))),
        _ if column.integer => Ok(SqlValue::Integer(i64::from(u.int_in_range(0u8..=3)?))),
        _ => Ok(SqlValue::Text("f".to_string())),
    }
}

/// A value for `column` and the SQL that stores it (bytes may go in as TEXT, valid or not).
fn value(column: &Column, u: &mut Unstructured<'_>) -> arbitrary::Result<(&'static str, SqlValue)> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 | 1 => ("?", plausible(column, u)?),
        2 => ("?", SqlValue::Null),
        3 => ("?", SqlValue::Integer(u.arbitrary()?)),
        4 => ("?", SqlValue::Real(u.arbitrary()?)),
        5 => ("?", SqlValue::Text(u.arbitrary()?)),
        6 => ("CAST(? AS TEXT)", SqlValue::Blob(u.arbitrary()?)),
        _ => ("?", SqlValue::Blob(u.arbitrary()?)),
    })
}

/// Writes one row of `table` from the input; a row SQLite refuses is left out.
fn insert(
    raw: &Connection,
    table: &str,
    columns: &[Column],
    u: &mut Unstructured<'_>,
) -> arbitrary::Result<()> {
    let mut exprs = Vec::with_capacity(columns.len());
    let mut values = Vec::with_capacity(columns.len());
    for column in columns {
        let (expr, value) = value(column, u)?;
        exprs.push(expr);
        values.push(value);
    }
    let sql = format!(
        "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
        columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        exprs.join(", ")
    );
    let _ = raw.execute(&sql, rusqlite::params_from_iter(values));
    Ok(())
}

/// What reading the rows back gave: records and history entries decoded, and errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// Runs decoded (by `run` and `runs`).
    pub runs: usize,
    /// History entries decoded.
    pub entries: usize,
    /// Calls that gave an error.
    pub errors: usize,
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    let _ = read_back(data);
}

/// [`run`], saying what it read back (so tests can tell that inputs reach the decoder).
pub fn read_back(data: &[u8]) -> ReadBack {
    let mut fixture = fixture().lock().unwrap_or_else(|p| p.into_inner());
    let mut u = Unstructured::new(data);
    let which = u.arbitrary::<bool>().unwrap_or(false);
    let db = &mut fixture.dbs[usize::from(which)];
    let _ = fill(db, &mut u);
    read(db, &mut u)
}

/// Empties the tables and writes the input's rows, in one transaction.
fn fill(db: &Db, u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    db.raw
        .execute_batch("BEGIN; DELETE FROM history; DELETE FROM runs;")
        .expect("emptied tables");
    let result = (|| {
        for _ in 0..u.int_in_range(0u8..=3)? {
            insert(&db.raw, "runs", &db.runs, u)?;
        }
        for _ in 0..u.int_in_range(0u8..=6)? {
            insert(&db.raw, "history", &db.history, u)?;
        }
        Ok(())
    })();
    db.raw.execute_batch("COMMIT").expect("committed rows");
    result
}

/// Reads everything back through the store, in every way it offers.
fn read(db: &Db, u: &mut Unstructured<'_>) -> ReadBack {
    let mut seen = ReadBack::default();
    let other: String = u.arbitrary().unwrap_or_default();
    for id in IDS.iter().copied().chain([other.as_str()]) {
        match db.store.run(id) {
            Ok(record) => {
                let _ = serde_json::to_string(&record);
                seen.runs += 1;
            }
            Err(e) => {
                let _ = (e.to_string(), format!("{e:?}"));
                seen.errors += 1;
            }
        }
        match db.store.history(id) {
            Ok(entries) => {
                let _ = serde_json::to_string(&entries);
                seen.entries += entries.len();
            }
            Err(e) => {
                let _ = (e.to_string(), format!("{e:?}"));
                seen.errors += 1;
            }
        }
    }
    let status = u
        .choose(&RunStatus::ALL)
        .ok()
        .copied()
        .filter(|_| u.arbitrary::<bool>().unwrap_or(false));
    let limit = match u.int_in_range(0u8..=3).unwrap_or(0) {
        0 => 10,
        1 => 0,
        2 => usize::MAX,
        _ => u.arbitrary().unwrap_or(1),
    };
    match db.store.runs(status, limit) {
        Ok(records) => {
            let _ = serde_json::to_string(&records);
            seen.runs += records.len();
        }
        Err(e) => {
            let _ = (e.to_string(), format!("{e:?}"));
            seen.errors += 1;
        }
    }
    seen
}
