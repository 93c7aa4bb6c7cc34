//! The tables, in the database's own schema `stepflow` (so they sit beside an application's
//! tables without clashing), and the numbered migrations, each applied once in its own
//! transaction under an advisory lock: several servers started at the same moment apply each
//! migration exactly once, the others wait and then find it done.

use stepflow_store::StoreError;
use stepflow_store::check;
use tokio_postgres::Client;

use crate::connect::wait;
use crate::error::classify;

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 1;

/// The advisory lock key the migrations hold: `SFLW` as a number.
const MIGRATION_LOCK: i64 = 0x5346_4c57;

/// Migration `n` is `MIGRATIONS[n - 1]`. A released migration is never edited: a change is a
/// new one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE stepflow.blobs (
    sha256 text PRIMARY KEY,
    bytes bytea NOT NULL
);
CREATE TABLE stepflow.deployments (
    id text COLLATE "C" PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    flow text NOT NULL,
    source text NOT NULL,
    source_path text NOT NULL,
    created_ms bigint NOT NULL
);
CREATE INDEX deployments_by_flow ON stepflow.deployments (flow, created_ms DESC, seq DESC);
CREATE INDEX deployments_by_created ON stepflow.deployments (created_ms DESC, seq DESC);
CREATE TABLE stepflow.deployment_plugins (
    deployment text NOT NULL REFERENCES stepflow.deployments (id),
    position integer NOT NULL,
    name text NOT NULL,
    sha256 text NOT NULL REFERENCES stepflow.blobs (sha256),
    PRIMARY KEY (deployment, position)
);
-- Ids compare byte by byte (COLLATE "C"), so a prefix is one range of the primary key.
CREATE TABLE stepflow.runs (
    id text COLLATE "C" PRIMARY KEY,
    -- Insertion order: breaks ties between runs created in the same millisecond in listings.
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    flow text NOT NULL,
    flow_file text NOT NULL,
    definition text NOT NULL,
    deployment text COLLATE "C" REFERENCES stepflow.deployments (id),
    status text NOT NULL
        CHECK (status IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    state jsonb NOT NULL,
    next_check_ms bigint,
    last_error text,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    lease_owner text,
    lease_expires_ms bigint,
    lease_fence bigint NOT NULL DEFAULT 0,
    -- The number of the last signal stored for the run and of its last history entry, kept on
    -- the row a save locks anyway, so neither needs a look-up of its own.
    signals_sent bigint NOT NULL DEFAULT 0,
    history_len bigint NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_created ON stepflow.runs (created_ms DESC, seq DESC);
CREATE INDEX runs_by_status ON stepflow.runs (status, created_ms DESC, seq DESC);
CREATE INDEX runs_by_flow ON stepflow.runs (flow, created_ms DESC, seq DESC);
CREATE INDEX runs_by_deployment ON stepflow.runs (deployment);
-- A run is due at the later of its next check and its lease's expiry; finished runs are not
-- in the index at all.
CREATE INDEX runs_by_due ON stepflow.runs
    ((GREATEST(COALESCE(next_check_ms, 0), COALESCE(lease_expires_ms, 0))))
    WHERE status IN ('running', 'waiting');
CREATE TABLE stepflow.run_starts (
    run_id text PRIMARY KEY,
    state jsonb NOT NULL
);
CREATE TABLE stepflow.history (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    step text NOT NULL,
    kind text NOT NULL,
    attempt bigint NOT NULL,
    outcome text NOT NULL,
    started_ms bigint NOT NULL,
    duration_ms bigint NOT NULL,
    error text,
    patch jsonb,
    redelivered boolean NOT NULL,
    handlers jsonb,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE stepflow.signals (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    id text NOT NULL,
    name text NOT NULL,
    payload jsonb NOT NULL,
    received_ms bigint NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, id)
);
"#];

/// Brings the database at `location` to [`SCHEMA_VERSION`]; refuses one written by a newer
/// stepflow, untouched.
pub(crate) fn migrate(client: &mut Client, location: &str) -> Result<(), StoreError> {
    let fail = |e| classify(location, "preparing the database (migrations)", e);
    let found = version(client, location)?;
    if found == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    check_not_newer(found, location)?;
    let tx = wait(client.transaction()).map_err(fail)?;
    // Released at commit; another server starting now waits here, then sees the work done.
    wait(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])).map_err(fail)?;
    wait(tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS stepflow; \
         CREATE TABLE IF NOT EXISTS stepflow.migrations \
             (version bigint PRIMARY KEY, applied_ms bigint NOT NULL)",
    ))
    .map_err(fail)?;
    let row = wait(tx.query_one(
        "SELECT COALESCE(MAX(version), 0) FROM stepflow.migrations",
        &[],
    ))
    .map_err(fail)?;
    let current: i64 = row.get(0);
    check_not_newer(Some(current), location)?;
    for (at, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let number = check::saturating_i64(at + 1);
        wait(tx.batch_execute(sql))
            .map_err(|e| classify(location, format!("applying migration {number}"), e))?;
        let now = stepflow_store::check::now("migrations")?;
        wait(tx.execute(
            "INSERT INTO stepflow.migrations (version, applied_ms) VALUES ($1, $2)",
            &[&number, &now],
        ))
        .map_err(fail)?;
    }
    {
        crate::db::count();
        wait(tx.commit())
    }
    .map_err(fail)
}

/// The database's schema version; `None` when it has no stepflow tables yet.
pub(crate) fn version(client: &Client, location: &str) -> Result<Option<i64>, StoreError> {
    let fail = |e| classify(location, "reading the schema version", e);
    let exists: bool =
        wait(client.query_one("SELECT to_regclass('stepflow.migrations') IS NOT NULL", &[]))
            .map_err(fail)?
            .get(0);
    if !exists {
        return Ok(None);
    }
    let row = wait(client.query_one(
        "SELECT COALESCE(MAX(version), 0) FROM stepflow.migrations",
        &[],
    ))
    .map_err(fail)?;
    Ok(Some(row.get(0)))
}

/// Refuses a schema newer than this build's.
pub(crate) fn check_not_newer(found: Option<i64>, location: &str) -> Result<(), StoreError> {
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::TooNew {
            path: location.into(),
            found,
            supported: SCHEMA_VERSION,
        }),
        _ => Ok(()),
    }
}
