//! What a server did before it stopped (`server`).

use serde_json::json;
use stepflow_server::Summary;

use crate::output;

/// One line per kind of outcome (text), or one object (JSON).
pub fn print(summary: &Summary, json: bool) {
    if json {
        output::line(json!({
            "drives": summary.drives,
            "completed": summary.completed,
            "failed": summary.failed,
            "parked": summary.parked,
            "stopped": summary.stopped,
            "cancelled": summary.cancelled,
            "unloadable": summary.unloadable,
            "errors": summary.errors,
            "taken_over": summary.taken_over,
            "abandoned": summary.abandoned,
            "save_transactions": summary.save_transactions,
            "saves": summary.saves,
        }));
        return;
    }
    output::line(format!(
        "server stopped after {} drives: {} runs completed, {} failed, {} cancelled; {} drives paused at a wait, {} stopped (resumable)",
        summary.drives,
        summary.completed,
        summary.failed,
        summary.cancelled,
        summary.parked,
        summary.stopped
    ));
    if summary.unloadable > 0 {
        output::line(format!(
            "{} runs were marked failed because their flow could not be loaded (see the log)",
            summary.unloadable
        ));
    }
    if summary.errors > 0 {
        output::line(format!(
            "{} drives failed outside their run (see the log); those runs are driven again on the next start",
            summary.errors
        ));
    }
    if summary.abandoned > 0 {
        output::line(format!(
            "{} steps in flight were abandoned; they run again, marked redelivered, on the next start",
            summary.abandoned
        ));
    }
    if summary.taken_over > 0 {
        output::line(format!(
            "{} runs of a server that died were picked up",
            summary.taken_over
        ));
    }
    if summary.saves > 0 {
        output::line(format!(
            "{} step saves in {} transactions",
            summary.saves, summary.save_transactions
        ));
    }
}
