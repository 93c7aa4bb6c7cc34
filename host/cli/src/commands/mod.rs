//! One module per command: each turns its arguments into engine and store calls and hands the
//! result to a view.

pub mod cancel;
pub mod deployments;
pub mod graph;
pub mod inspect;
pub mod plugin;
pub mod rerun;
pub mod run;
pub mod runs;
pub mod server;
pub mod show;
pub mod signal;
pub mod submit;
pub mod upgrade;
pub mod validate;

use std::path::Path;
use stepflow_store::Database;

use stepflow_engine::Engine;
use stepflow_store::Store;

use crate::error::Exit;

/// The run database at `db`, created if it does not exist.
fn open_store(db: &Database) -> Result<Box<dyn Store>, Exit> {
    Ok(stepflow_engine::open_store(db)?)
}

/// The run database at `db` for reading only: a mistyped path creates nothing, and a database
/// on a read-only mount can be read.
fn read_store(db: &Database) -> Result<Box<dyn Store>, Exit> {
    Ok(stepflow_engine::open_store_read_only(db)?)
}

/// `--max-flow-size`, set once by dispatch for every command that reads a flow file.
static MAX_FLOW_BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets the largest flow file the commands read (the global `--max-flow-size`).
pub fn set_max_flow_bytes(max_bytes: u64) {
    let _ = MAX_FLOW_BYTES.set(max_bytes);
}

/// `--max-data`, set once by dispatch for the commands that drive runs.
static MAX_DATA_BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets how large a run's data document may grow (the global `--max-data`).
pub fn set_max_data_bytes(max_bytes: u64) {
    let _ = MAX_DATA_BYTES.set(max_bytes);
}

fn max_data_bytes() -> u64 {
    MAX_DATA_BYTES
        .get()
        .copied()
        .unwrap_or(stepflow_engine::DEFAULT_MAX_DATA_BYTES)
}

fn max_flow_bytes() -> u64 {
    MAX_FLOW_BYTES
        .get()
        .copied()
        .unwrap_or(stepflow_flowfile::MAX_FLOW_FILE_BYTES)
}

/// A flow file, read within `--max-flow-size`, without loading its plugins.
fn read_flow(path: &Path) -> Result<stepflow_flowfile::FlowFile, Exit> {
    Ok(stepflow_flowfile::load_with_limit(path, max_flow_bytes())?)
}

/// The plugin engine, caching compiled components where the user's environment says.
fn engine() -> Result<Engine, Exit> {
    let engine =
        Engine::new(stepflow_engine::default_cache_dir())?.with_max_flow_bytes(max_flow_bytes());
    // A `build` command (a plugin project's `./build`) calls back into this very binary.
    Ok(match std::env::current_exe() {
        Ok(exe) => engine.with_build_env("STEPFLOW", exe),
        Err(_) => engine,
    })
}

/// The plugin engine for a server driving `concurrency` runs at once: room for an instance
/// per run.
fn server_engine(concurrency: usize) -> Result<Engine, Exit> {
    let instances = u32::try_from(concurrency).unwrap_or(u32::MAX);
    Ok(
        Engine::with_max_instances(stepflow_engine::default_cache_dir(), instances)?
            .with_max_flow_bytes(max_flow_bytes()),
    )
}
