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

/// A signal was stored for a run by `stepflow signal`.
pub fn signalled(run_id: &str, name: &str, receipt: &stepflow_store::SignalReceipt, json: bool) {
    if json {
        output::line(json!({
            "run": run_id,
            "signal": name,
            "seq": receipt.seq,
            "duplicate": receipt.duplicate,
            "status": receipt.status.as_str(),
        }));
        return;
    }
    let what = if receipt.duplicate {
        format!(
            "signal `{name}` was delivered to run {run_id} before (as signal {}); nothing changed",
            receipt.seq
        )
    } else {
        format!(
            "signal `{name}` delivered to run {run_id} (signal {})",
            receipt.seq
        )
    };
    output::line(what);
    if receipt.status == stepflow_store::RunStatus::Failed {
        output::line(format!(
            "the run has failed; the signal is kept for it: `stepflow resume {run_id}` retries the failed step"
        ));
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
