//! `stepflow runs`: list runs, newest first.

use std::path::Path;

use stepflow_store::{RunStatus, Store};

use super::read_store;
use crate::error::Exit;
use crate::views;

/// `stepflow runs [--status S] [--limit N]`.
pub fn runs(db: &Path, status: Option<RunStatus>, limit: usize, json: bool) -> Result<(), Exit> {
    let store = read_store(db)?;
    let runs = store.runs(status, limit)?;
    views::runs::print(&runs, status, json);
    Ok(())
}
