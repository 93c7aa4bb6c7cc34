//! How a run ended (`run`, `resume`) or that it was cancelled (`cancel`).

use serde_json::json;
use stepflow_model::State;

use crate::output;

/// The end of a drive: one line (or one JSON object) with the outcome and the data document.
pub fn print(run_id: &str, outcome: &str, state: &State, json: bool) {
    if json {
        output::line(json!({
            "run": run_id,
            "status": outcome,
            "data": &*state.data,
            "error": state.error.as_ref().map(|e| e.to_string()),
        }));
        return;
    }
    output::line(format!("run {run_id} {outcome}"));
    if outcome == "completed" {
        output::line(format!("data: {}", super::pretty(&*state.data)));
    }
}

/// A run was cancelled by `stepflow cancel`.
pub fn cancelled(run_id: &str, json: bool) {
    if json {
        output::line(json!({ "run": run_id, "status": "cancelled" }));
    } else {
        output::line(format!("run {run_id} cancelled"));
    }
}
