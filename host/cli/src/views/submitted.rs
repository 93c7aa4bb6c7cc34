//! A run was submitted (`submit`): its id on stdout, for scripts to capture.

use serde_json::json;

use crate::output;

/// Prints the new run's id alone (text), or id, flow and deployment (JSON); with a terminal on
/// stderr, also how to follow it.
pub fn print(run_id: &str, flow: &str, deployment: &str, json: bool) {
    if json {
        output::line(json!({
            "run": run_id,
            "flow": flow,
            "deployment": deployment,
            "status": "running",
        }));
        return;
    }
    output::line(run_id);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "submitted run {run_id} of {flow}; `stepflow server` drives it, `stepflow show {run_id}` shows where it is"
        );
    }
}
