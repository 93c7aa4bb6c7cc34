//! A flow file that passed every check (`stepflow validate`).

use std::path::Path;

use serde_json::json;
use stepflow_engine::LoadedFlow;

use crate::output;

/// What was checked: the flow, its plugins and how many function uses.
pub fn print(path: &Path, loaded: &LoadedFlow, json: bool) {
    let references = loaded.file.references().len();
    let plugins = loaded.plugins.len();
    let flow = loaded.flow.name();
    if json {
        output::line(json!({
            "valid": true, "flow": flow, "plugins": plugins, "references": references
        }));
    } else {
        output::line(format!(
            "{}: ok — flow {flow}, {plugins} plugin(s), {references} function use(s) checked",
            path.display()
        ));
    }
}
