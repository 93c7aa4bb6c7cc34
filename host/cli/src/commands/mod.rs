//! One module per command: each turns its arguments into engine and store calls and hands the
//! result to a view.

pub mod cancel;
pub mod graph;
pub mod inspect;
pub mod run;
pub mod runs;
pub mod show;
pub mod validate;

use std::path::Path;

use stepflow_engine::Engine;
use stepflow_store::SqliteStore;

use crate::error::Exit;

/// The run database at `db`, created if it does not exist.
fn open_store(db: &Path) -> Result<SqliteStore, Exit> {
    Ok(SqliteStore::open(db)?)
}

/// The run database at `db` for reading only: a mistyped path creates nothing, and a database
/// on a read-only mount can be read.
fn read_store(db: &Path) -> Result<SqliteStore, Exit> {
    Ok(SqliteStore::open_read_only(db)?)
}

/// The plugin engine, caching compiled components where the user's environment says.
fn engine() -> Result<Engine, Exit> {
    Ok(Engine::new(stepflow_engine::default_cache_dir())?)
}
