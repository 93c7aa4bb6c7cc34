//! The runs list (`stepflow runs`).

use serde_json::{Value, json};
use stepflow_engine::short_id;
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{RunRecord, RunStatus};

use crate::output;

/// A table of runs, or a JSON array of them; `filtered` when a filter chose them.
pub fn print(runs: &[RunRecord], filtered: bool, json: bool) {
    if json {
        let list: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "run": r.id, "flow": r.flow, "status": r.status, "deployment": r.deployment,
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
        let filter = if filtered { " that match" } else { "" };
        output::line(format!("no runs{filter}"));
        return;
    }
    let now = SystemClock.now_ms();
    output::line(format!(
        "{:<24} {:<20} {:<10} {:<12} {:<14} {:<24} ERROR",
        "RUN", "FLOW", "STATUS", "DEPLOYMENT", "NEXT DUE", "DRIVER"
    ));
    for r in runs {
        // Who holds a live lease on the run: which server (or `run`) drives it now.
        let driver = r
            .lease
            .as_ref()
            .filter(|l| l.expires_ms > now)
            .map_or("-", |l| l.owner.as_str());
        output::line(format!(
            "{:<24} {:<20} {:<10} {:<12} {:<14} {:<24} {}",
            r.id,
            r.flow,
            r.status.as_str(),
            r.deployment.as_deref().map_or("-", short_id),
            super::due(r, now).unwrap_or_default(),
            driver,
            r.last_error.as_deref().unwrap_or_default()
        ));
    }
    if runs.iter().any(|r| r.status == RunStatus::Waiting) {
        output::line(
            "\na waiting run moves only while `stepflow resume RUN` drives it (it sleeps until the run is due; add --now to check at once)",
        );
    }
}
