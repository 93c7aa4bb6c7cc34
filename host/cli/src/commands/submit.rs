//! `stepflow submit`: store a run for a server to drive, and return at once.

use std::path::Path;
use std::time::Duration;
use stepflow_store::Database;

use stepflow_engine::start_run;
use stepflow_store::Store;

use super::run::read_input;
use super::{engine, open_store};
use crate::error::Exit;
use crate::progress::Progress;
use crate::views::submitted;

/// `stepflow submit FLOW`.
pub async fn submit(
    db: &Database,
    flow_path: &Path,
    input: Option<&str>,
    max_input: u64,
    build: Option<Duration>,
    json: bool,
) -> Result<(), Exit> {
    let input = input.map(|i| read_input(i, max_input)).transpose()?;
    let engine = engine()?;
    let deployment = if let Some(build_timeout) = build {
        let stop = crate::signals::stop_requests();
        let mut progress = Progress::new(json);
        let deployment = engine
            .build_and_deploy(flow_path, build_timeout, &stop, &mut progress)
            .await;
        progress.finish();
        deployment?
    } else {
        engine.deploy(flow_path)?
    };
    // Loaded (and so checked: every plugin compiles, every function exists) before the run is
    // stored, so a broken flow is refused here rather than failed later by the server.
    let loaded = engine.load_deployment(&deployment)?;
    let mut store = open_store(db)?;
    store.put_deployment(&deployment)?;
    let (run_id, _) = start_run(&mut store, &loaded, input.as_ref())?;
    submitted::print(&run_id, loaded.flow.name(), &deployment.id, json);
    Ok(())
}
