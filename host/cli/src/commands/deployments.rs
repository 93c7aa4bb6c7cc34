//! `stepflow deployments`: the flow sources and plugin contents runs were started from.

use stepflow_store::Database;

use stepflow_store::Store;

use super::read_store;
use crate::error::Exit;
use crate::views;

/// `stepflow deployments [--flow NAME] [--limit N]`.
pub fn deployments(
    db: &Database,
    flow: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<(), Exit> {
    let store = read_store(db)?;
    let list = store.deployments(flow, limit)?;
    views::deployments::print(&list, flow, json);
    Ok(())
}
