//! `stepflow graph`: draw a flow without loading its plugins.

use std::path::Path;

use crate::cli::GraphFormat;
use crate::error::Exit;
use crate::output;

/// `stepflow graph FLOW [--format mermaid|dot]`.
pub fn graph(flow_path: &Path, format: GraphFormat) -> Result<(), Exit> {
    let file = stepflow_flowfile::load(flow_path)?;
    let flow = stepflow_engine::shape(&file)?;
    match format {
        GraphFormat::Mermaid => output::text(flow.to_mermaid()),
        GraphFormat::Dot => output::text(flow.to_dot()),
    }
    Ok(())
}
