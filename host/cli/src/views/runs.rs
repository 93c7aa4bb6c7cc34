//! The runs list (`stepflow runs`).

use serde_json::{Value, json};
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{RunRecord, RunStatus};

use crate::output;

/// A table of runs, or a JSON array of them.
pub fn print(runs: &[RunRecord], status: Option<RunStatus>, json: bool) {
    if json {
        let list: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "run": r.id, "flow": r.flow, "status": r.status,
                    "created_ms": r.created_ms, "updated_ms": r.updated_ms,
                    "next_check_ms": r.next_check_ms, "error": r.last_error,
                    "owner": r.lease.as_ref().map(|l| &l.owner),
                    "lease_expires_ms": r.lease.as_ref().map(|l| l.expires_ms),
                })
            })
            .collect();
        output::line(Value::Array(list));
        return;
    }
    if runs.is_empty() {
        let filter = if status.is_some() {
            " with that status"
        } else {
            ""
        };
        output::line(format!("no runs{filter}"));
        return;
    }
    let now = SystemClock.now_ms();
    output::line(format!(
        "{:<24} {:<20} {:<10} {:<14} ERROR",
        "RUN", "FLOW", "STATUS", "NEXT DUE"
    ));
    for r in runs {
        output::line(format!(
            "{:<24} {:<20} {:<10} {:<14} {}",
            r.id,
            r.flow,
            r.status.as_str(),
            super::due(r, now).unwrap_or_default(),
            r.last_error.as_deref().unwrap_or_default()
        ));
    }
    if runs.iter().any(|r| r.status == RunStatus::Waiting) {
        output::line(
            "\na waiting run moves only while `stepflow resume RUN` drives it (it sleeps until the run is due; add --now to check at once)",
        );
    }
}
