//! Writing to stdout without panicking: a closed pipe (`stepflow runs | head -1`) must never
//! stop a run or crash the command, so write errors are ignored here, in one place.

use std::io::Write;

/// Prints `text` and a newline to stdout; a write error (e.g. a closed pipe) is ignored.
pub fn line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Prints `text` to stdout as is; a write error is ignored.
pub fn text(text: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{text}");
    let _ = out.flush();
}
