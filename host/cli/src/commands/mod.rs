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

/// The run database at `db`.
fn open_store(db: &Path) -> Result<SqliteStore, Exit> {
    Ok(SqliteStore::open(db)?)
}

/// The plugin engine, caching compiled components where the user's environment says.
fn engine() -> Result<Engine, Exit> {
    Ok(Engine::new(stepflow_engine::default_cache_dir())?)
}
