//! The entry points: a file or a text to a [`FlowFile`], read by `yaml.rs` and checked by
//! `check.rs` on a thread with a stack big enough for any document the YAML budget admits.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::check::check;
use crate::diagnostic::{Diagnostic, Position};
use crate::types::FlowFile;
use crate::yaml::read;

/// What the smallest useful flow file looks like, for hints.
pub(crate) const MINIMAL: &str = "a flow file needs at least `flow: <name>`, `plugins:` and `steps:`; see schema/flow.schema.json";

/// The largest flow file [`load`] reads: 4 MiB, far more than any written flow needs, and a
/// bound on what a wrong path (`/dev/zero`, a log file, a disk image) makes the host allocate.
pub const MAX_FLOW_FILE_BYTES: u64 = 4 << 20;

/// Reads and checks a flow file of at most [`MAX_FLOW_FILE_BYTES`].
pub fn load(path: &Path) -> Result<FlowFile, Diagnostic> {
    load_with_limit(path, MAX_FLOW_FILE_BYTES)
}

/// Reads and checks a flow file of at most `max_bytes`, for callers whose users need larger
/// flow files than [`load`] allows. A larger file, or one that is not a regular file and keeps
/// giving bytes (a device, a pipe), is refused after reading at most `max_bytes + 1` bytes.
pub fn load_with_limit(path: &Path, max_bytes: u64) -> Result<FlowFile, Diagnostic> {
    let bytes = read_limited(path, max_bytes)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = String::from_utf8_lossy(valid);
        Diagnostic::new(path, end_of(&valid), "the file is not valid UTF-8 text")
            .with_hint("save it as UTF-8")
    })?;
    parse(&text, path)
}

/// The file's bytes, never more than `max_bytes` of them: the size of a regular file is
/// checked first, and every read goes through `Read::take`, so a file that grows or never
/// ends costs at most `max_bytes + 1` bytes of memory.
fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Diagnostic> {
    let unreadable = |e: std::io::Error| {
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
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let regular = match file.metadata() {
        Ok(meta) if meta.is_file() => {
            if meta.len() > max_bytes {
                return Err(too_large(path, max_bytes, Some(meta.len())));
            }
            Some(meta.len())
        }
        _ => None,
    };
    // Room for the whole file when its size is known, and never more than the limit.
    let expected = regular.unwrap_or(0).min(max_bytes).saturating_add(1);
    let mut bytes = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        // A regular file that grew while it was read, or a device or pipe that keeps going.
        let size = regular.filter(|&len| len > max_bytes);
        return Err(if regular.is_some() {
            too_large(path, max_bytes, size)
        } else {
            not_regular_too_large(path, max_bytes)
        });
    }
    Ok(bytes)
}

/// How to read a larger flow file, for the hints of the size errors.
const RAISE_THE_LIMIT: &str = "flow files are rarely more than a few KiB; if this one really is \
     this large, raise the limit (`stepflow --max-flow-size SIZE`; in Rust, \
     `stepflow_flowfile::load_with_limit`)";

fn too_large(path: &Path, max_bytes: u64, size: Option<u64>) -> Diagnostic {
    let limit = format!("the limit of {}", size_text(max_bytes));
    let message = match size {
        Some(size) => format!("the flow file is {}, more than {limit}", size_text(size)),
        None => format!("the flow file is larger than {limit}"),
    };
    Diagnostic::new(path, Position::default(), message).with_hint(format!(
        "flow files are a few KiB; check that this is the flow file you meant; {RAISE_THE_LIMIT}"
    ))
}

fn not_regular_too_large(path: &Path, max_bytes: u64) -> Diagnostic {
    Diagnostic::new(
        path,
        Position::default(),
        format!(
            "the flow file is not a regular file, and it gave more than the limit of {} without ending",
            size_text(max_bytes)
        ),
    )
    .with_hint(format!(
        "give the path of a flow file (`.yaml`), not a device or a pipe; {RAISE_THE_LIMIT}"
    ))
}

/// `4 MiB (4194304 bytes)`, `12 bytes`: a size for messages, exact and readable.
fn size_text(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", human_size(bytes))
    }
}

/// `4 MiB`, `1.5 KiB`, `12 bytes`: a size for messages.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
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
    fn human_sizes() {
        assert_eq!(human_size(12), "12 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(MAX_FLOW_FILE_BYTES), "4 MiB");
        assert_eq!(human_size(u64::MAX), "16777216 TiB");
    }

    #[test]
    fn end_positions() {
        assert_eq!(end_of(""), Position::new(1, 1));
        assert_eq!(end_of("ab\ncd"), Position::new(2, 3));
    }
}
