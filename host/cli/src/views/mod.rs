//! What each command prints, as text for people and as JSON for scripts: one view per file, so
//! the two renderings of a view can never drift apart.

pub mod deployments;
pub mod exports;
pub mod outcome;
pub mod runs;
pub mod submitted;
pub mod summary;
pub mod timeline;
pub mod upgrade;
pub mod validated;

/// Pretty JSON for people; an unprintable value (which serde_json cannot produce from a
/// `Value`) prints as nothing rather than failing the command.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// When a waiting run is next due, for people: `in 3m 20s`, `due now`; `None` for a run that is
/// not waiting on a time.
fn due(run: &stepflow_store::RunRecord, now_ms: u64) -> Option<String> {
    if run.status != stepflow_store::RunStatus::Waiting {
        return None;
    }
    let next = run.next_check_ms?;
    Some(if next == stepflow_store::NEVER_DUE_MS {
        "on a signal".to_string()
    } else if next <= now_ms {
        "due now".to_string()
    } else {
        format!("in {}", crate::progress::human_ms(next - now_ms))
    })
}
