//! The deployments list (`stepflow deployments`).

use serde_json::{Value, json};
use stepflow_engine::short_id;
use stepflow_store::DeploymentInfo;

use crate::output;

/// A table of deployments, or a JSON array of them (full ids and hashes).
pub fn print(list: &[DeploymentInfo], flow: Option<&str>, json: bool) {
    if json {
        let list: Vec<Value> = list
            .iter()
            .map(|d| {
                json!({
                    "deployment": d.id, "flow": d.flow, "source_path": d.source_path,
                    "created_ms": d.created_ms, "runs": d.runs,
                    "plugins": d.plugins.iter().map(|(name, sha256)| json!({
                        "name": name, "sha256": sha256,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::line(Value::Array(list));
        return;
    }
    if list.is_empty() {
        match flow {
            Some(flow) => output::line(format!(
                "no deployments of flow {flow}; `stepflow run FLOW-FILE` makes one"
            )),
            None => output::line("no deployments; `stepflow run FLOW-FILE` makes one"),
        }
        return;
    }
    output::line(format!(
        "{:<12} {:<20} {:<19} {:>5}  PLUGINS",
        "DEPLOYMENT", "FLOW", "CREATED (UTC)", "RUNS"
    ));
    for d in list {
        let plugins: Vec<String> = d
            .plugins
            .iter()
            .map(|(name, sha256)| format!("{name}@{}", sha256.get(..8).unwrap_or(sha256)))
            .collect();
        output::line(format!(
            "{:<12} {:<20} {:<19} {:>5}  {}",
            short_id(&d.id),
            d.flow,
            stepflow_engine::utc_time(d.created_ms),
            d.runs,
            plugins.join(", ")
        ));
    }
}
