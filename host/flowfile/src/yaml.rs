//! YAML text into the document types (serde-saphyr, with positions), and every YAML or serde
//! error into a located [`Diagnostic`] in the words of the format, with a hint.

use std::path::Path;

use serde_saphyr::{Error as YamlError, MessageFormatter, UserMessageFormatter};

use crate::diagnostic::{Diagnostic, Position, split_hint, suggest};
use crate::document::FlowDoc;

/// Deserializes the document; nothing is checked beyond what serde and the YAML budget check.
pub(crate) fn read(text: &str, path: &Path) -> Result<FlowDoc, Diagnostic> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| yaml_diagnostic(&e, path))
}

/// Turns a YAML or serde error into a diagnostic with our wording and a hint.
fn yaml_diagnostic(error: &YamlError, path: &Path) -> Diagnostic {
    let error = innermost(error);
    let at = error
        .location()
        .map(|l| Position::new(l.line() as usize, l.column() as usize))
        .unwrap_or_default();
    let (message, hint) = describe(error);
    let diagnostic = Diagnostic::new(path, at, message);
    match hint {
        Some(hint) => diagnostic.with_hint(hint),
        None => diagnostic,
    }
}

/// The error itself, without snippet or alias wrappers.
fn innermost(mut error: &YamlError) -> &YamlError {
    loop {
        match error {
            YamlError::WithSnippet { error: inner, .. }
            | YamlError::AliasError { error: inner, .. } => error = inner,
            _ => return error,
        }
    }
}

fn describe(error: &YamlError) -> (String, Option<String>) {
    match error {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => (
            format!("unknown key `{field}`"),
            Some(suggest(field, expected.iter().copied(), "valid keys")),
        ),
        YamlError::SerdeMissingField { field, .. } => {
            (format!("missing key `{field}`"), Some(missing_hint(field)))
        }
        YamlError::Message { msg, .. } => split_hint(msg),
        YamlError::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | YamlError::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => {
            let (expected, hint) = split_hint(expected);
            (
                format!("expected {}, found {unexpected}", plain_expected(&expected)),
                hint,
            )
        }
        YamlError::DuplicateMappingKey { key, .. } => (
            match key {
                Some(key) => format!("the key `{key}` appears twice in this mapping"),
                None => "a key appears twice in this mapping".to_string(),
            },
            Some("keep one of them".to_string()),
        ),
        YamlError::Unexpected { expected, .. } => (
            format!("expected {}", plain_expected(expected)),
            expected_hint(expected),
        ),
        YamlError::InvalidScalar { ty, .. } => (
            format!("expected {}", plain_expected(ty)),
            expected_hint(ty),
        ),
        YamlError::NullIntoString { .. } => (
            "expected a string, found nothing".to_string(),
            Some("write a value after the `:`, or remove the key".to_string()),
        ),
        YamlError::MultipleDocuments { .. } => (
            "a flow file holds one YAML document, but a second one starts here".to_string(),
            Some("remove the `---` line and what follows it".to_string()),
        ),
        YamlError::NonFiniteFloat { value, .. } => (
            format!("`{value}` is not a number JSON can hold"),
            Some("quote it to make it a string, e.g. `\".nan\"`".to_string()),
        ),
        YamlError::Budget { .. } => (
            UserMessageFormatter.format_message(error).into_owned(),
            Some(
                "flow files are small: this one nests too deeply or is too large to be read safely"
                    .to_string(),
            ),
        ),
        YamlError::UnknownAnchor { .. } => (
            "this alias refers to no anchor".to_string(),
            Some("define the anchor (`&name`) before the alias (`*name`) that uses it".to_string()),
        ),
        YamlError::RecursiveReferencesRequireWeakTypes { .. } => (
            "this alias refers to a node that contains it".to_string(),
            Some(
                "a flow file is a tree: repeat the items instead of aliasing their parent"
                    .to_string(),
            ),
        ),
        YamlError::Eof { .. } => (
            "the file ends in the middle of a value".to_string(),
            Some("check that every bracket and quote is closed".to_string()),
        ),
        other => {
            let message = UserMessageFormatter.format_message(other);
            let message: String = message
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            (
                message,
                Some("this is a YAML syntax error; check indentation, colons, quotes and brackets near here".to_string()),
            )
        }
    }
}

/// serde's and saphyr's names for what was expected, in the words of the format.
fn plain_expected(expected: &str) -> String {
    match expected {
        "sequence start" | "a sequence" => "a list".to_string(),
        "mapping start" | "a map" => "a mapping of `key: value` pairs".to_string(),
        "string scalar" | "a string" => "a string".to_string(),
        "u64" | "u32" | "u16" | "u8" | "usize" | "u64 integer" | "u32 integer" => {
            "a whole number".to_string()
        }
        "i64" | "i32" => "a number".to_string(),
        "f64" | "f32" | "an f64" | "floating point" => "a number".to_string(),
        "bool" | "boolean" | "a boolean" => "`true` or `false`".to_string(),
        other => other.to_string(),
    }
}

fn expected_hint(expected: &str) -> Option<String> {
    match expected {
        "sequence start" => Some("write one `- item` per line, or `[a, b]`".to_string()),
        "mapping start" => {
            Some("write `key: value` lines, indented under their parent".to_string())
        }
        "bool" | "boolean" => Some("write `true` or `false`".to_string()),
        "string scalar" => {
            Some("write a single value; quote it if it looks like a list or mapping".to_string())
        }
        "u64" | "u32" | "u16" | "u8" | "usize" => Some("write digits only, e.g. `3`".to_string()),
        "f64" | "f32" | "floating point" => Some("write a number, e.g. `2` or `1.5`".to_string()),
        _ => None,
    }
}

/// What to write for each required key.
pub(crate) fn missing_hint(field: &str) -> String {
    match field {
        "flow" => "name the flow, e.g. `flow: deploy.v1`; step paths start with it".to_string(),
        "steps" => "list the items under `steps:`, e.g. `steps: [{ do: deploy.prepare }]`".to_string(),
        "wasm" => "give the plugin's component file, e.g. `wasm: plugin.wasm` (relative to this flow file)".to_string(),
        "host" => "give the host directory, e.g. `host: ./work` (relative to this flow file)".to_string(),
        "guest" => "give where the plugin sees it, e.g. `guest: /work`".to_string(),
        "initial" => "give the first wait, e.g. `initial: 1s`".to_string(),
        "max" => "give the longest wait, e.g. `max: 30s`".to_string(),
        other => format!("add `{other}:`"),
    }
}
