//! The entry points: a file or a text to a [`FlowFile`], read by `yaml.rs` and checked by
//! `check.rs` on a thread with a stack big enough for any document the YAML budget admits.

use std::path::{Path, PathBuf};

use crate::check::check;
use crate::diagnostic::{Diagnostic, Position};
use crate::types::FlowFile;
use crate::yaml::read;

/// What the smallest useful flow file looks like, for hints.
pub(crate) const MINIMAL: &str = "a flow file needs at least `flow: <name>`, `plugins:` and `steps:`; see schema/flow.schema.json";

/// Reads and checks a flow file.
pub fn load(path: &Path) -> Result<FlowFile, Diagnostic> {
    let bytes = std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            "check the path; relative paths are relative to the current directory"
        } else {
            "check the file's permissions"
        };
        Diagnostic::new(
            path,
            Position::default(),
            format!("cannot read the flow file: {e}"),
        )
        .with_hint(hint)
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = String::from_utf8_lossy(valid);
        Diagnostic::new(path, end_of(&valid), "the file is not valid UTF-8 text")
            .with_hint("save it as UTF-8")
    })?;
    parse(&text, path)
}

/// Parses and checks flow file text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<FlowFile, Diagnostic> {
    with_big_stack(|| parse_here(text, path))
}

fn parse_here(text: &str, path: &Path) -> Result<FlowFile, Diagnostic> {
    if is_blank(text) {
        return Err(
            Diagnostic::new(path, Position::new(1, 1), "the flow file is empty").with_hint(MINIMAL),
        );
    }
    check(read(text, path)?, path)
}

/// The stack [`parse`] runs on. Deserializing recurses a few frames per YAML nesting level, and
/// the YAML budget allows 64 levels: that takes about 3 MiB in a debug build, more than a test
/// or tokio worker thread has (2 MiB). Reserved, not committed: untouched pages cost nothing.
const PARSER_STACK: usize = 32 << 20;

/// Runs `f` on a scoped thread with [`PARSER_STACK`], so that a deeply nested file is refused by
/// the budget rather than overflowing whatever stack the caller happens to have. Falls back to
/// the caller's thread if no thread can be started.
fn with_big_stack<T: Send>(f: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("stepflow-flowfile".to_string())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, &f);
        match spawned {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => f(),
        }
    })
}

/// The directory a flow file's relative paths are resolved from.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Only blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// The position just after `text`.
fn end_of(text: &str) -> Position {
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Position::new(line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_texts() {
        assert!(is_blank(""));
        assert!(is_blank("\n  \n# comment\n---\n"));
        assert!(!is_blank("flow: x"));
    }

    #[test]
    fn end_positions() {
        assert_eq!(end_of(""), Position::new(1, 1));
        assert_eq!(end_of("ab\ncd"), Position::new(2, 3));
    }
}
