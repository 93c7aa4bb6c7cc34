//! A plugin's exports: its step functions and kinds, and what is not a step and why
//! (`stepflow inspect`).

use std::path::Path;

use serde_json::{Value, json};
use stepflow_plugin::Export;

use crate::output;

/// The step functions, then the other exports with the reason each is not a step, then
/// whether it makes HTTP requests (so its flow must grant them).
pub fn print(path: &Path, plugin: &str, exports: &[Export], imports_http: bool, json: bool) {
    if json {
        let list: Vec<Value> = exports
            .iter()
            .map(|e| match &e.kind {
                Ok(kind) => json!({ "function": e.name, "kind": kind }),
                Err(why) => json!({ "function": e.name, "kind": null, "not_a_step_because": why }),
            })
            .collect();
        output::line(json!({ "plugin": plugin, "functions": list, "imports_http": imports_http }));
        return;
    }
    output::line(format!("{}: step functions", path.display()));
    for e in exports {
        if let Ok(kind) = &e.kind {
            output::line(format!("  {:<30} {kind}", e.name));
        }
    }
    let others: Vec<(&String, &String)> = exports
        .iter()
        .filter_map(|e| e.kind.as_ref().err().map(|why| (&e.name, why)))
        .collect();
    if !others.is_empty() {
        output::line("not step functions:");
        for (name, why) in others {
            output::line(format!("  {name:<30} {why}"));
        }
    }
    if imports_http {
        output::line(
            "imports wasi:http: it makes HTTP requests, which its flow must grant under the \
             plugin (`http: [{url: \"https://api.example.com/v1/*\", methods: [GET]}]`)",
        );
    } else {
        output::line("imports no wasi:http: it makes no HTTP requests");
    }
}
