//! One run: its timeline of calls, error, cursor and data document (`stepflow show`).

use serde_json::{Value, json};
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{HistoryEntry, RunRecord, RunStatus};

use crate::output;

/// The run as a table of calls, or as one JSON document; `signal` is the signal the run waits
/// for, if it does.
pub fn print(run: &RunRecord, history: &[HistoryEntry], signal: Option<&str>, json: bool) {
    if json {
        let steps: Vec<Value> = history
            .iter()
            .map(|h| {
                json!({
                    "seq": h.seq, "step": h.step, "kind": h.kind, "attempt": h.attempt,
                    "outcome": h.outcome, "started_ms": h.started_ms, "duration_ms": h.duration_ms,
                    "error": h.error, "patch": h.patch, "redelivered": h.redelivered,
                    "handlers": h.handlers.iter().map(|c| json!({
                        "group": c.group, "given": c.error,
                        "answer": c.answer.as_ref().ok(), "error": c.answer.as_ref().err(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::line(super::pretty(&json!({
            "run": run.id, "flow": run.flow, "flow_file": run.flow_file, "status": run.status,
            "definition": run.definition, "deployment": run.deployment, "cursor": run.state.cursor, "data": &*run.state.data,
            "error": run.last_error, "next_check_ms": run.next_check_ms, "history": steps,
            "owner": run.lease.as_ref().map(|l| &l.owner),
            "awaits_signal": signal,
        })));
        return;
    }
    output::line(format!(
        "run {}  flow {}  status {}",
        run.id, run.flow, run.status
    ));
    output::line(format!("flow file {}", run.flow_file));
    match &run.deployment {
        Some(id) => output::line(format!(
            "deployment {} (`stepflow deployments` lists it; resume runs it, not the files)",
            stepflow_engine::short_id(id)
        )),
        None => output::line(
            "deployment none (a run from before deployments: resume reads the flow file as it is now)",
        ),
    }
    if let Some(lease) = &run.lease {
        output::line(format!("driven by {}", lease.owner));
    }
    let on_signal_only = run.next_check_ms == Some(stepflow_store::NEVER_DUE_MS);
    if let Some(signal) = signal {
        output::line(format!(
            "waits for signal `{signal}`; `stepflow signal {} {signal}` sends it",
            run.id
        ));
    } else if on_signal_only {
        output::line("waits for a signal (`stepflow signal RUN NAME` sends one)");
    }
    if on_signal_only {
        // Nothing is due by time: the signal makes it due.
    } else if let Some(due) = super::due(run, SystemClock.now_ms()) {
        output::line(format!(
            "next due {due}; `stepflow resume {}` drives it (add --now to check at once)",
            run.id
        ));
    } else if run.status == RunStatus::Waiting {
        output::line(format!(
            "stopped before it finished; `stepflow resume {}` continues it",
            run.id
        ));
    }
    output::line("");
    let w = history
        .iter()
        .map(|h| h.step.len())
        .max()
        .unwrap_or(4)
        .max(4);
    output::line(format!(
        "{:>4}  {:<w$}  {:<13} {:>7}  {:<9} {:>8}",
        "#", "STEP", "KIND", "ATTEMPT", "OUTCOME", "TIME"
    ));
    for h in history {
        let mark = if h.redelivered {
            "  ↺ redelivered"
        } else {
            ""
        };
        output::line(format!(
            "{:>4}  {:<w$}  {:<13} {:>7}  {:<9} {:>6}ms{mark}",
            h.seq,
            h.step,
            h.kind.as_str(),
            h.attempt,
            h.outcome.as_str(),
            h.duration_ms
        ));
        let nested = h.handlers.len() + usize::from(h.error.is_some());
        let mut printed = 0;
        let mut branch = || {
            printed += 1;
            if printed == nested { "└" } else { "├" }
        };
        if let Some(e) = &h.error {
            output::line(format!("      {} {e}", branch()));
        }
        for call in &h.handlers {
            let answer = match &call.answer {
                Ok(true) => "retry the group".to_string(),
                Ok(false) => "do not retry".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            output::line(format!(
                "      {} handler of {} was asked: {answer}",
                branch(),
                call.group
            ));
        }
    }
    if let Some(e) = &run.last_error {
        output::line(format!("\nerror: {e}"));
    }
    let cursor: Vec<&str> = run.state.cursor.iter().map(|e| e.as_str()).collect();
    output::line(format!("\ncursor: {}", cursor.join(", ")));
    output::line(format!("data: {}", super::pretty(&*run.state.data)));
}
