//! What every mistake in a flow file turns into: a message at a `file:line:column`, with a hint
//! that says what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a flow file, so tools can point at the exact character that is wrong.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// 1-based line number; 0 when the position is unknown (e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when unknown.
    pub column: usize,
}

impl Position {
    /// A position from 1-based line and column numbers.
    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A located error in a flow file: what is wrong, where, and (usually) how to fix it.
///
/// Displays as `{file}:{line}:{column}: {message}`, followed by `\n  hint: {hint}` when there is
/// a hint, the format editors and terminals recognise as a link to the place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The flow file.
    pub file: PathBuf,
    /// 1-based line; 0 when the error concerns the whole file (it cannot be read, say).
    pub line: usize,
    /// 1-based column in characters; 0 when the line is 0.
    pub column: usize,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `at` in `file`.
    pub fn new(file: &Path, at: Position, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: at.line,
            column: at.column,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds (or replaces) the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Where the error is.
    pub fn position(&self) -> Position {
        Position::new(self.line, self.column)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Separates a message from its hint inside a serde error string (serde errors carry only text).
const HINT_SEPARATOR: char = '\u{1f}';

/// Packs a message and a hint into one serde error string; [`split_hint`] unpacks it.
pub(crate) fn with_hint(message: &str, hint: &str) -> String {
    format!("{message}{HINT_SEPARATOR}{hint}")
}

/// Unpacks what [`with_hint`] packed.
pub(crate) fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once(HINT_SEPARATOR) {
        Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
        None => (text.to_string(), None),
    }
}

/// The candidate closest to `word`, when it is close enough to be a plausible typo.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let folded = fold(word);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&folded, &fold(c)), c))
        .filter(|&(distance, c)| {
            let longest = word.chars().count().max(c.chars().count());
            distance <= (longest / 3).max(1) || (longest > 3 && fold(c).contains(&folded))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// Case and `_`/`-` do not count as typos.
fn fold(word: &str) -> String {
    word.to_lowercase().replace('_', "-")
}

/// "did you mean `x`?" when something is close, else the list of what is valid.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
    what: &str,
) -> String {
    match nearest(word, candidates.clone()) {
        Some(near) => format!("did you mean `{near}`?"),
        None => {
            let all: Vec<String> = candidates.into_iter().map(|c| format!("`{c}`")).collect();
            if all.is_empty() {
                format!("there are no {what} here")
            } else {
                format!("{what} here: {}", all.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_hint() {
        let d = Diagnostic::new(Path::new("f.yaml"), Position::new(3, 5), "bad");
        assert_eq!(d.to_string(), "f.yaml:3:5: bad");
        let d = d.with_hint("fix it");
        assert_eq!(d.to_string(), "f.yaml:3:5: bad\n  hint: fix it");
        let d = Diagnostic::new(Path::new("f.yaml"), Position::default(), "unreadable");
        assert_eq!(d.to_string(), "f.yaml: unreadable");
    }

    #[test]
    fn nearest_finds_typos_only() {
        let keys = ["name", "do", "wait-for", "every", "timeout", "steps"];
        assert_eq!(nearest("evry", keys), Some("every"));
        assert_eq!(nearest("wait_for", keys), Some("wait-for"));
        assert_eq!(nearest("step", keys), Some("steps"));
        assert_eq!(nearest("Name", keys), Some("name"));
        assert_eq!(nearest("frobnicate", keys), None);
    }
}
