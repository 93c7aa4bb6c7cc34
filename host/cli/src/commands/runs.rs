//! `stepflow runs`: list runs, newest first.

use stepflow_store::Database;

use stepflow_store::{RunFilter, RunStatus, Store};

use super::read_store;
use crate::error::Exit;
use crate::views;

/// `stepflow runs [--status S] [--flow NAME] [--deployment ID] [--limit N]`.
pub fn runs(
    db: &Database,
    status: Option<RunStatus>,
    flow: Option<String>,
    deployment: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<(), Exit> {
    let store = read_store(db)?;
    // A prefix names one deployment; the filter takes its full id.
    let deployment = deployment
        .map(|prefix| store.deployment(prefix).map(|d| d.id))
        .transpose()?;
    let filtered = status.is_some() || flow.is_some() || deployment.is_some();
    let runs = store.runs_where(&RunFilter {
        status,
        flow,
        deployment,
        limit,
        ..RunFilter::default()
    })?;
    views::runs::print(&runs, filtered, json);
    Ok(())
}
