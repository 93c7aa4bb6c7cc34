//! Values a plugin is given that must never leave it in the clear. The plugin reads them as
//! environment variables (every language's standard library reads those, and the WIT package
//! needs no new host function); everything that leaves the sandbox — its log lines, its
//! stdout and stderr, its errors, its patches — has each value replaced by `[secret NAME]`
//! first, so a secret reaches neither the logs nor the data document, the history or the store.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// The shortest secret value: a shorter one would be found inside too much ordinary text to
/// redact it safely.
pub const MIN_SECRET_BYTES: usize = 4;

/// A plugin's secrets, by name. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Arc<Vec<(String, String)>>);

impl Secrets {
    /// Secrets from `(name, value)` pairs; a value shorter than [`MIN_SECRET_BYTES`] is
    /// refused with the name.
    pub fn new(pairs: Vec<(String, String)>) -> Result<Self, String> {
        if let Some((name, _)) = pairs.iter().find(|(_, v)| v.len() < MIN_SECRET_BYTES) {
            return Err(format!(
                "secret `{name}` is shorter than {MIN_SECRET_BYTES} bytes, too short to keep out \
                 of logs and errors"
            ));
        }
        // Longest first, so a secret that contains another is replaced whole.
        let mut pairs = pairs;
        pairs.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        Ok(Secrets(Arc::new(pairs)))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names and values, for the plugin's environment.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `text` with every secret value replaced by `[secret NAME]`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for (name, value) in self.0.iter() {
            if text.contains(value.as_str()) {
                text = Cow::Owned(text.replace(value.as_str(), &format!("[secret {name}]")));
            }
        }
        text
    }

    /// `value` with every secret value replaced in its strings and keys.
    pub fn redact_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(redacted) = self.redact(s) {
                    *s = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.redact_value(&mut v);
                    map.insert(self.redact(&key).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_replaced_in_text_keys_and_nested_values() {
        let s = Secrets::new(vec![
            ("TOKEN".into(), "s3cr3t-value".into()),
            ("PART".into(), "s3cr3t".into()),
        ])
        .expect("secrets");
        assert_eq!(
            s.redact("a s3cr3t-value and s3cr3t"),
            "a [secret TOKEN] and [secret PART]"
        );
        let mut v = serde_json::json!({"s3cr3t-value": ["Bearer s3cr3t-value", {"k": 1}]});
        s.redact_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"[secret TOKEN]": ["Bearer [secret TOKEN]", {"k": 1}]})
        );
        assert_eq!(format!("{s:?}"), r#"["TOKEN", "PART"]"#);
        assert!(Secrets::new(vec![("X".into(), "abc".into())]).is_err());
    }
}
