//! `stepflow validate`: parse a flow file, load its plugins, check every function use.

use std::path::Path;

use super::engine;
use crate::error::Exit;
use crate::views;

/// `stepflow validate FLOW`.
pub fn validate(flow_path: &Path, json: bool) -> Result<(), Exit> {
    let loaded = engine()?.load(flow_path)?;
    views::validated::print(flow_path, &loaded, json);
    Ok(())
}
