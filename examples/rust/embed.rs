//! Embedding the stepflow engine in a Rust program: load a flow file, drive a run against a
//! SQLite store, print the timeline the store kept.
//!
//! ```sh
//! cargo run -p stepflow-engine --example embed                       # examples/quickstart.yaml
//! cargo run -p stepflow-engine --example embed -- examples/deploy.yaml
//! ```
//!
//! The flow's plugins are built first with their `build` commands, so the example runs on a
//! fresh clone. The run database is a temporary file; pass a second argument to keep it.

use std::path::{Path, PathBuf};

use stepflow_engine::{
    DEFAULT_BUILD_TIMEOUT, DriveOptions, Driver, Engine, Finish, Observer, Stop, claim, lease_ttl,
    start_run, this_owner,
};
use stepflow_model::{CallRecord, Clock, SystemClock};
use stepflow_store::{SqliteStore, Store};

/// Prints each step as the engine reports it (after its result is saved).
struct PrintSteps;

impl Observer for PrintSteps {
    fn building(&mut self, plugin: &str, command: &str) {
        eprintln!("building plugin {plugin}: {command}");
    }

    fn step_finished(&mut self, n: u64, call: &CallRecord, duration_ms: u64) {
        println!(
            "step {n}: {} ({}) in {duration_ms} ms",
            call.step, call.kind
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    let flow = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("examples/quickstart.yaml"));
    let scratch = tempfile::tempdir()?;
    let db = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().join("runs.db"));

    // One engine per process: it holds the WebAssembly runtime and the compile cache.
    let engine = Engine::new(stepflow_engine::default_cache_dir())?;
    // Nobody asks this program to stop; one with a shutdown path keeps `stop` and calls
    // `stop.request()` from it (the first request ends a build or lets the step in flight finish).
    let (_stop, requests) = Stop::new();
    let loaded = engine
        .build_and_load(&flow, DEFAULT_BUILD_TIMEOUT, &requests, &mut PrintSteps)
        .await?;
    let mut store = SqliteStore::open(&db)?;
    let (run_id, state) = start_run(&mut store, &loaded, None)?;
    println!("run {run_id} of {} started", loaded.flow.name());
    // One driver per run: the lease makes a second process (or a second driver here) wait.
    let ttl = lease_ttl(loaded.longest_call());
    let lease = claim(
        &mut store,
        &run_id,
        &this_owner(),
        ttl,
        SystemClock.now_ms(),
    )?;

    let finish = Driver::new(&loaded.flow, &mut store, &mut PrintSteps, requests)
        .with_lease(lease, ttl)
        .drive(&run_id, state, DriveOptions::default())
        .await?;
    match &finish {
        Finish::Completed(state) => println!("completed with data {}", state.data),
        other => println!("ended early: {other:?}"),
    }

    println!("\nthe timeline, as the store saved it:");
    for entry in store.history(&run_id)? {
        println!(
            "{:>3}  {:<40} {:<10} {}",
            entry.seq,
            entry.step,
            entry.kind.as_str(),
            entry.outcome.as_str()
        );
    }
    Ok(())
}
