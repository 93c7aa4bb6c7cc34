//! `stepflow graph`: draw a flow without loading its plugins.

use std::path::Path;

use crate::cli::GraphFormat;
use crate::error::Exit;
use crate::output;

/// `stepflow graph FLOW [--format mermaid|dot]`; with `--json`, the transitions as data.
pub fn graph(flow_path: &Path, format: GraphFormat, json: bool) -> Result<(), Exit> {
    let file = super::read_flow(flow_path)?;
    let flow = stepflow_engine::shape(&file)?;
    if json {
        output::line(serde_json::json!({
            "flow": flow.name(),
            "transitions": flow.transitions(),
        }));
        return Ok(());
    }
    match format {
        GraphFormat::Mermaid => output::text(flow.to_mermaid()),
        GraphFormat::Dot => output::text(flow.to_dot()),
    }
    Ok(())
}
