//! Opening the run database a user named: a SQLite file or PostgreSQL, behind the one `Store`
//! trait, so every front end takes the same `--db` value.

use stepflow_store::{Database, SqliteStore, Store, StoreError};

/// Opens `db` for reading and writing (creating or migrating its tables).
pub fn open_store(db: &Database) -> Result<Box<dyn Store>, StoreError> {
    Ok(match db {
        Database::File(path) => Box::new(SqliteStore::open(path)?),
        Database::Postgres(url) => Box::new(stepflow_postgres::PostgresStore::open(url)?),
    })
}

/// Opens `db` only to read it: nothing is created, migrated or written.
pub fn open_store_read_only(db: &Database) -> Result<Box<dyn Store>, StoreError> {
    Ok(match db {
        Database::File(path) => Box::new(SqliteStore::open_read_only(path)?),
        Database::Postgres(url) => Box::new(stepflow_postgres::PostgresStore::open_read_only(url)?),
    })
}
