//! The schema: stepflow's application id, the tables, and the numbered migrations tracked in
//! `user_version`, each applied once, in its own transaction.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::classify;
use super::file_check::{check_connection, check_ours, header_values, too_new};
use crate::StoreError;

/// The `application_id` in every stepflow database: the ASCII bytes `SFLW`, so `file(1)` and
/// this store can tell a stepflow database from any other SQLite file.
pub(super) const APPLICATION_ID: i32 = 0x5346_4C57;

/// Schema migrations, oldest first: entry `i` takes `user_version` from `i` to `i + 1`.
/// Released entries are never edited, only appended to.
const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
];

/// The newest schema version this build knows; a database with a newer one is refused.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The tables a stepflow database must have.
pub(super) const OUR_TABLES: [&str; 2] = ["runs", "history"];

/// Version 1: runs and their history. `data` is a virtual column (the state's data document),
/// there for queries with any SQL tool; it costs no space and cannot drift from `state`. The
/// CHECK lists are the texts of `RunStatus`, `CallKind` and `StepOutcome`.
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

/// Version 2: the run's lease (issue 9 B1, reused by the server): who drives it, until when,
/// and the fencing counter every claim increments and every save checks. The fence starts at
/// 0 (never claimed) and is never lowered, so a fence is never reused; an owner without an
/// expiry (or the reverse) is refused on reading.
const MIGRATION_2: &str = "
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_ms INTEGER;
ALTER TABLE runs ADD COLUMN lease_fence INTEGER NOT NULL DEFAULT 0 CHECK (lease_fence >= 0);
";

/// Version 3: the error handlers a failed call was offered to, as a JSON array of the model's
/// `HandlerCall`s (`NULL` when there were none, as in every entry saved before).
const MIGRATION_3: &str = "
ALTER TABLE history ADD COLUMN handlers TEXT;
";

/// Version 4: a CRC-32 of each run row and history row (see `checksum.rs` for what each
/// covers), checked on every read; `NULL` in rows saved before, which are read unchecked.
const MIGRATION_4: &str = "
ALTER TABLE runs ADD COLUMN checksum INTEGER CHECK (checksum BETWEEN 0 AND 4294967295);
ALTER TABLE history ADD COLUMN checksum INTEGER CHECK (checksum BETWEEN 0 AND 4294967295);
";

/// Version 5: deployments (issue 10), content-addressed. `blobs` holds each distinct plugin
/// content once, keyed by its SHA-256 (a rowid table: WITHOUT ROWID suits only small rows);
/// `deployments` a flow's source, with a CRC-32 over the row and its plugin list;
/// `deployment_plugins` the plugins of each, in order. A run refers to its deployment
/// (`NULL` for runs created before); `runs_by_deployment` serves listings by deployment and
/// the count of runs per deployment.
const MIGRATION_5: &str = "
CREATE TABLE blobs (
    sha256 TEXT NOT NULL PRIMARY KEY CHECK (length(sha256) = 64),
    bytes  BLOB NOT NULL
) STRICT;

CREATE TABLE deployments (
    id          TEXT NOT NULL PRIMARY KEY CHECK (length(id) = 64),
    flow        TEXT NOT NULL,
    source      TEXT NOT NULL,
    source_path TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    checksum    INTEGER CHECK (checksum BETWEEN 0 AND 4294967295)
) STRICT;

CREATE INDEX deployments_by_created ON deployments (created_ms);
CREATE INDEX deployments_by_flow ON deployments (flow, created_ms);

CREATE TABLE deployment_plugins (
    deployment TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL CHECK (position >= 0),
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL REFERENCES blobs (sha256),
    PRIMARY KEY (deployment, position)
) STRICT, WITHOUT ROWID;

ALTER TABLE runs ADD COLUMN deployment TEXT REFERENCES deployments (id);
CREATE INDEX runs_by_deployment ON runs (deployment, created_ms) WHERE deployment IS NOT NULL;
";

/// Version 6: runs by when they are next due (issue 10: timers without polling). A running or
/// waiting run is due at the later of its next check (none: at once) and its lease's expiry
/// (none: at once); the partial index holds only those runs, ordered by that time, so the
/// earliest due runs and the next due time are one index search however many runs wait.
/// Its expression and WHERE clause must match `due.rs` word for word, or SQLite will not use
/// it. It supersedes `runs_by_next_check`, which nothing queries and every save had to update.
const MIGRATION_6: &str = "
CREATE INDEX runs_by_due
    ON runs (MAX(COALESCE(next_check_ms, 0), COALESCE(lease_expires_ms, 0)))
    WHERE status IN ('running', 'waiting');
DROP INDEX IF EXISTS runs_by_next_check;
";

/// Version 7: the CHECK lists of `runs.status`, `history.kind` and `history.outcome` as chains
/// of comparisons, which mean the same. SQLite evaluates a CHECK `IN` list of more than two
/// values by building a temporary b-tree for every row written, and that was two fifths of
/// the cost of saving a step. A CHECK does not change what is stored, so the tables' text is
/// edited in place (`writable_schema`, as SQLite documents for such changes) instead of
/// copying them; `migrate` then has every connection read the schema again, and a schema that
/// would not read back is rolled back.
const MIGRATION_7: &str = "
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
        'CHECK (status IN (''running'', ''waiting'', ''completed'', ''failed'', ''cancelled''))',
        'CHECK (status = ''running'' OR status = ''waiting'' OR status = ''completed'' OR status = ''failed'' OR status = ''cancelled'')')
WHERE type = 'table' AND name = 'runs';
UPDATE sqlite_schema SET sql = replace(replace(sql,
        'CHECK (kind IN (''step'', ''wait-for'', ''case'', ''loop-until'', ''error-handler''))',
        'CHECK (kind = ''step'' OR kind = ''wait-for'' OR kind = ''case'' OR kind = ''loop-until'' OR kind = ''error-handler'')'),
        'CHECK (outcome IN (''done'', ''true'', ''false'', ''retrying'', ''failed''))',
        'CHECK (outcome = ''done'' OR outcome = ''true'' OR outcome = ''false'' OR outcome = ''retrying'' OR outcome = ''failed'')')
WHERE type = 'table' AND name = 'history';
PRAGMA writable_schema = OFF;
";

/// Version 8: each run's inbox of signals (issue 11). `seq` numbers a run's signals in arrival
/// order, as a driver reads them (after the last one its state has read); `id` is the sender's,
/// unique per run, so a repeated delivery is found and stored once. And the indexes behind
/// listings filtered by status or flow, newest first, a page at a time (the HTTP API's runs
/// list over 100,000 runs).
const MIGRATION_8: &str = "
CREATE TABLE signals (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    checksum    INTEGER CHECK (checksum BETWEEN 0 AND 4294967295),
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, id)
) STRICT, WITHOUT ROWID;

CREATE INDEX runs_by_status ON runs (status, created_ms);
CREATE INDEX runs_by_flow ON runs (flow, created_ms);
";

/// Version 9: the state each run started with, written with the run, so a new run can start
/// from the state after any step of an old one (its history replayed from this state).
const MIGRATION_9: &str = "
CREATE TABLE run_starts (
    run_id   TEXT NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    state    TEXT NOT NULL,
    checksum INTEGER CHECK (checksum BETWEEN 0 AND 4294967295)
) STRICT, WITHOUT ROWID;
";

/// The first schema version that keeps each run's first state.
pub(super) const STARTS_SINCE: i64 = 9;

/// The first schema version with signals: a read-only store on an older database reads no
/// signals.
pub(super) const SIGNALS_SINCE: i64 = 8;

/// The migration that creates `runs_by_due`, for the test that `due.rs` repeats it.
#[cfg(test)]
pub(super) fn due_index_sql() -> &'static str {
    MIGRATION_6
}

/// The columns migrations added after version 1: `(table, column, version that added it, what
/// rows of an older database read as)`. A read-only store cannot migrate, so it reads an older
/// database through [`read_expr`] instead.
const ADDED_COLUMNS: &[(&str, &str, i64, &str)] = &[
    ("runs", "lease_owner", 2, "NULL"),
    ("runs", "lease_expires_ms", 2, "NULL"),
    ("runs", "lease_fence", 2, "0"),
    ("history", "handlers", 3, "NULL"),
    ("runs", "checksum", 4, "NULL"),
    ("history", "checksum", 4, "NULL"),
    ("runs", "deployment", 5, "NULL"),
];

/// The first schema version with deployments: a read-only store on an older database has no
/// deployments (and no run refers to one).
pub(super) const DEPLOYMENTS_SINCE: i64 = 5;

/// The first schema version with the `runs_by_due` index.
pub(super) const DUE_SINCE: i64 = 6;

/// The SQL that reads `column` of `table` in a database at schema `version`: the column
/// itself, or, when the migration that added it has not run there, the value its rows had
/// before (`NULL AS lease_owner`).
pub(super) fn read_expr(version: i64, table: &str, column: &str) -> String {
    ADDED_COLUMNS
        .iter()
        .find(|(t, c, since, _)| *t == table && *c == column && version < *since)
        .map_or_else(
            || column.to_string(),
            |(_, _, _, before)| format!("{before} AS {column}"),
        )
}

/// Applies pending migrations, each in its own write transaction that re-reads the version
/// first, so two processes opening a new file at once migrate it once.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    loop {
        let version = check_connection(conn, path)?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let failed = |e| StoreError::Backend {
            location: path.display().to_string(),
            action: format!(
                "applying schema migration {} (nothing was changed)",
                version + 1
            ),
            source: Box::new(e),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(path, "locking the database for a migration", e))?;
        // Under the lock: another process may have migrated meanwhile, and nothing but our
        // own or an empty database is ever written to.
        let (app_id, current) = header_values(&tx).map_err(failed)?;
        if current != version {
            continue;
        }
        check_ours(&tx, path, app_id, version)?;
        let index = usize::try_from(version).map_err(|_| too_new(path, version))?;
        let Some(sql) = MIGRATIONS.get(index) else {
            return Err(too_new(path, version));
        };
        tx.execute_batch(sql).map_err(failed)?;
        // A new schema cookie makes every connection, this one too, read the schema again
        // before its next statement; reading it here, inside the transaction, rolls back a
        // migration whose schema would not read back.
        let cookie: i64 = tx
            .pragma_query_value(None, "schema_version", |r| r.get(0))
            .map_err(failed)?;
        tx.pragma_update(None, "schema_version", cookie + 1)
            .map_err(failed)?;
        let probe =
            "SELECT (SELECT count(*) FROM runs WHERE 0) + (SELECT count(*) FROM history WHERE 0)";
        tx.query_row(probe, [], |_| Ok(())).map_err(failed)?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunStatus, StepOutcome, Store};
    use stepflow_model::CallKind;

    /// The values the CHECK of `column` allows in `table` of a database this build created,
    /// as the schema there spells them (`column = 'a' OR column = 'b'`), in order.
    fn check_values(table: &str, column: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        drop(crate::SqliteStore::open(&db).expect("open"));
        let conn = Connection::open(&db).expect("reopen");
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .expect("the table's schema");
        let opening = format!("CHECK ({column} = ");
        let start = sql.find(&opening).map(|at| at + "CHECK (".len());
        let check = start.and_then(|at| sql[at..].find(')').map(|len| &sql[at..at + len]));
        let Some(check) = check else {
            panic!("no chain of comparisons for {column} in {sql}");
        };
        check
            .split(" OR ")
            .map(|term| {
                let value = term.strip_prefix(&format!("{column} = '"));
                let value = value.and_then(|v| v.strip_suffix('\''));
                value.unwrap_or_else(|| panic!("{term}")).to_string()
            })
            .collect()
    }

    fn texts(values: impl IntoIterator<Item = &'static str>) -> Vec<String> {
        values.into_iter().map(str::to_string).collect()
    }

    #[test]
    fn check_constraints_allow_exactly_the_typed_values() {
        assert_eq!(
            check_values("runs", "status"),
            texts(RunStatus::ALL.map(RunStatus::as_str))
        );
        assert_eq!(
            check_values("history", "kind"),
            texts(CallKind::ALL.map(CallKind::as_str))
        );
        assert_eq!(
            check_values("history", "outcome"),
            texts(StepOutcome::ALL.map(StepOutcome::as_str))
        );
    }

    #[test]
    fn a_version_6_database_keeps_its_rows_and_its_checks_through_migration_7()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("s.db");
        {
            let conn = Connection::open(&db)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", 6)?;
            conn.execute_batch(
                "INSERT INTO runs (id, flow, flow_file, definition, status, state, created_ms, \
                 updated_ms) VALUES ('r1', 'f.v1', '/f.yaml', 'd', 'waiting', '{\"cursor\": [], \"data\": {}}', \
                 1, 1);",
            )?;
        }
        let store = crate::SqliteStore::open(&db)?;
        assert_eq!(store.run("r1")?.status, RunStatus::Waiting);
        drop(store);
        let conn = Connection::open(&db)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, SCHEMA_VERSION);
        let refused = conn.execute("UPDATE runs SET status = 'paused' WHERE id = 'r1'", []);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_string().contains("CHECK constraint failed")),
            "{refused:?}"
        );
        let quick: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        assert_eq!(quick, "ok");
        Ok(())
    }

    #[test]
    fn added_columns_are_added_by_the_migration_named() {
        for (table, column, since, _) in ADDED_COLUMNS {
            let sql = usize::try_from(*since - 1)
                .ok()
                .and_then(|at| MIGRATIONS.get(at))
                .copied()
                .unwrap_or_default();
            assert!(
                sql.contains(&format!("ALTER TABLE {table} ADD COLUMN {column} ")),
                "migration {since} adds {table}.{column}"
            );
            assert_eq!(read_expr(*since, table, column), *column);
            assert!(read_expr(*since - 1, table, column).ends_with(&format!(" AS {column}")));
        }
    }

    #[test]
    fn the_application_id_pragma_is_ours() {
        assert!(MIGRATION_1.contains(&format!("application_id = {APPLICATION_ID};")));
    }
}
