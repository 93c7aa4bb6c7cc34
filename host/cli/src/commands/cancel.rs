//! `stepflow cancel`: stop a run for good.

use stepflow_store::Database;

use stepflow_store::{RunStatus, Store};

use super::open_store;
use crate::error::Exit;
use crate::views;

/// `stepflow cancel RUN`.
pub fn cancel(db: &Database, run_id: &str, json: bool) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let run = store.run(run_id)?;
    if matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(Exit::usage(format!(
            "run {run_id} is already {}; nothing to cancel",
            run.status
        )));
    }
    store.set_status(run_id, RunStatus::Cancelled)?;
    views::outcome::cancelled(run_id, json);
    Ok(())
}
