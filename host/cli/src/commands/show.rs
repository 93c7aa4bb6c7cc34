//! `stepflow show`: one run's timeline and data document.

use stepflow_store::Database;

use stepflow_store::{RunStatus, Store};

use super::read_store;
use crate::error::Exit;
use crate::views;

/// `stepflow show RUN`.
pub fn show(db: &Database, run_id: &str, json: bool) -> Result<(), Exit> {
    let store = read_store(db)?;
    let run = store.run(run_id)?;
    let history = store.history(run_id)?;
    // Which signal a waiting run waits for: its deployment's flow knows (no plugin is loaded).
    let signal = match (&run.status, &run.deployment) {
        (RunStatus::Waiting, Some(id)) => store
            .deployment(id)
            .ok()
            .and_then(|d| stepflow_engine::shape_deployment(&d).ok())
            .and_then(|flow| flow.awaited_signal(&run.state).map(str::to_string)),
        _ => None,
    };
    views::timeline::print(&run, &history, signal.as_deref(), json);
    Ok(())
}
