//! What each command prints, as text for people and as JSON for scripts: one view per file, so
//! the two renderings of a view can never drift apart.

pub mod exports;
pub mod outcome;
pub mod runs;
pub mod timeline;
pub mod validated;

/// Pretty JSON for people; an unprintable value (which serde_json cannot produce from a
/// `Value`) prints as nothing rather than failing the command.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
