//! [`LogObserver`]: one structured `tracing` line per finished step; the front end installs
//! the subscriber (and chooses text or JSON).

use stepflow_engine::Observer;
use stepflow_model::{CallKind, CallRecord, Outcome};

/// Logs what a server's drive of one run does: a line per finished step with run, step,
/// kind, outcome, duration and attempt, so an operator can follow every run in one log (the
/// drivers add a line when a drive ends).
pub struct LogObserver {
    run: String,
}

impl LogObserver {
    /// An observer of run `run`.
    pub fn new(run: &str) -> Self {
        LogObserver {
            run: run.to_string(),
        }
    }
}

/// The kind as the flow file spells it.
pub(crate) fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Step => "step",
        CallKind::WaitFor => "wait-for",
        CallKind::Case => "case",
        CallKind::LoopUntil => "loop-until",
        CallKind::ErrorHandler => "error-handler",
    }
}

/// The outcome as history stores it.
pub(crate) fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done(_) => "done",
        Outcome::Answered(true) => "true",
        Outcome::Answered(false) => "false",
        Outcome::Retrying { .. } => "retrying",
        Outcome::Failed(_) => "failed",
    }
}

impl Observer for LogObserver {
    fn step_finished(&mut self, _n: u64, call: &CallRecord, duration_ms: u64) {
        let error = match &call.outcome {
            Outcome::Retrying { error, .. } | Outcome::Failed(error) => Some(error.to_string()),
            _ => None,
        };
        tracing::info!(
            run = %self.run,
            step = %call.step,
            kind = kind_name(call.kind),
            outcome = outcome_name(&call.outcome),
            duration_ms,
            attempt = call.attempt,
            redelivered = call.redelivered,
            error = error.as_deref(),
            "step finished"
        );
    }
}
