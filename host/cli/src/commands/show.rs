//! `stepflow show`: one run's timeline and data document.

use std::path::Path;

use stepflow_store::Store;

use super::read_store;
use crate::error::Exit;
use crate::views;

/// `stepflow show RUN`.
pub fn show(db: &Path, run_id: &str, json: bool) -> Result<(), Exit> {
    let store = read_store(db)?;
    let run = store.run(run_id)?;
    let history = store.history(run_id)?;
    views::timeline::print(&run, &history, json);
    Ok(())
}
