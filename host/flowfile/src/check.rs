//! The structural checks serde cannot express (one kind per item, names, references to
//! declared plugins, limits), turning the document types into the public [`FlowFile`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use stepflow_model::Backoff;

use crate::diagnostic::{Diagnostic, Position, suggest};
use crate::document::{
    DirDoc, FlowDoc, ItemDoc, KIND_KEYS, KINDS, KindRule, Located, PluginDoc, ReferenceText,
    RetryDoc, SecretDoc, WaitTarget,
};
use crate::parse::{MINIMAL, base_dir};
use crate::types::{
    DirDecl, FlowFile, FunctionRef, Item, ItemKind, PluginDecl, RetryDecl, SecretDecl, SecretSource,
};
use crate::yaml::missing_hint;

mod fan_out;
mod http;

/// Checks a document read from `path` and resolves its relative paths.
pub(crate) fn check(doc: FlowDoc, path: &Path) -> Result<FlowFile, Diagnostic> {
    Checker {
        path,
        dir: base_dir(path),
        plugins: Vec::new(),
    }
    .flow(doc)
}

/// The structural checks, with what they need to know: the file, and the declared plugins.
struct Checker<'a> {
    path: &'a Path,
    dir: PathBuf,
    plugins: Vec<String>,
}

impl Checker<'_> {
    fn error(
        &self,
        at: Position,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(self.path, at, message).with_hint(hint)
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    fn flow(mut self, doc: FlowDoc) -> Result<FlowFile, Diagnostic> {
        self.name(&doc.flow.value.0, doc.flow.at, "the flow's name")?;
        self.plugins = doc.plugins.keys().map(|k| k.value.clone()).collect();
        let mut plugins = BTreeMap::new();
        // In file order, so the first mistake reported is the first one written.
        let mut declared: Vec<_> = doc.plugins.iter().collect();
        declared.sort_by_key(|(name, _)| name.at);
        for (name, plugin) in declared {
            let decl = self.plugin(name, plugin)?;
            plugins.insert(decl.name.clone(), decl);
        }
        let steps = self.items(&doc.steps, &doc.flow.value.0)?;
        Ok(FlowFile {
            path: self.path.to_path_buf(),
            flow: doc.flow.value.0,
            flow_at: doc.flow.at,
            plugins,
            data: doc.data,
            steps,
        })
    }

    /// Checks a step or flow name: the model reserves `/` and `:` for paths and events.
    fn name(&self, name: &str, at: Position, what: &str) -> Result<(), Diagnostic> {
        let bad = if name.is_empty() {
            return Err(self.error(
                at,
                format!("{what} is empty"),
                "write a name, e.g. `prepare`",
            ));
        } else if name.contains('/') {
            "`/`"
        } else if name.contains(':') {
            "`:`"
        } else if name.chars().any(char::is_control) {
            "a control character"
        } else {
            return self.visible_name(name, at, what);
        };
        Err(self.error(
            at,
            format!("{what} `{}` contains {bad}", name.escape_debug()),
            "stepflow uses `/` in step paths and `:` in events; choose a name without them, e.g. with `-` or `.`",
        ))
    }

    /// Refuses a name that displays unlike what it is: bidirectional overrides reorder it on
    /// screen, zero-width characters hide in it, white space alone looks like no name. The
    /// message shows the name escaped (`"re\u{202e}ady"`), never the characters themselves.
    fn visible_name(&self, name: &str, at: Position, what: &str) -> Result<(), Diagnostic> {
        let (problem, hint) = match misleading(name) {
            Some(Misleading::Bidi(c)) => (
                format!(
                    "contains the bidirectional-override character U+{:04X}",
                    u32::from(c)
                ),
                "it makes text display in another order than it is written, so the name can look like another; retype the name without it",
            ),
            Some(Misleading::ZeroWidth(c)) => (
                format!("contains the zero-width character U+{:04X}", u32::from(c)),
                "it cannot be seen, so two names could look the same; retype the name without it",
            ),
            Some(Misleading::Blank) => (
                "is only white space".to_string(),
                "give it a name you can see, e.g. `prepare`",
            ),
            None => return Ok(()),
        };
        Err(self.error(at, format!("{what} {name:?} {problem}"), hint))
    }

    fn plugin(
        &self,
        name: &Located<String>,
        plugin: &Located<PluginDoc>,
    ) -> Result<PluginDecl, Diagnostic> {
        if let Some(bad) = bad_plugin_name(&name.value) {
            return Err(self.error(
                name.at,
                format!("the plugin name `{}` {bad}", name.value.escape_debug()),
                "function references are `<plugin>.<function>`, so a plugin name has no `.`, `/`, `:` or spaces; e.g. `deploy`",
            ));
        }
        let doc = &plugin.value;
        if doc.wasm.value.is_empty() {
            return Err(self.error(
                doc.wasm.at,
                "the `wasm` path is empty",
                missing_hint("wasm"),
            ));
        }
        if let Some(build) = &doc.build
            && build.value.trim().is_empty()
        {
            return Err(self.error(
                build.at,
                "the `build` command is empty",
                "give the command that builds the component, or remove `build:`",
            ));
        }
        let mut env: Vec<String> = Vec::new();
        for var in &doc.env {
            if var.value.is_empty() || var.value.contains(['=', '\0']) {
                return Err(self.error(
                    var.at,
                    format!(
                        "`{}` is not an environment variable name",
                        var.value.escape_debug()
                    ),
                    "list variable names only, e.g. `env: [DEPLOY_TOKEN]`; their values come from the host's environment",
                ));
            }
            if env.contains(&var.value) {
                return Err(self.error(
                    var.at,
                    format!("`{}` is listed twice", var.value),
                    "list each variable once",
                ));
            }
            env.push(var.value.clone());
        }
        let mut secrets = Vec::new();
        for (key, secret) in &doc.secrets {
            secrets.push(self.secret(key, secret, &env)?);
        }
        let mut dirs: Vec<DirDecl> = Vec::new();
        for dir in &doc.dirs {
            dirs.push(self.dir_grant(&dir.value, &dirs)?);
        }
        let mut http = Vec::new();
        for grant in &doc.http {
            http.push(self.http_grant(grant)?);
        }
        let http_limits = match &doc.http_limits {
            Some(limits) if doc.http.is_empty() => {
                return Err(self.error(
                    limits.at,
                    "`http-limits` is set but the plugin has no `http` grant",
                    "grant what it may call, e.g. `http: [{url: \"https://api.example.com/v1/*\", methods: [GET]}]`, or remove `http-limits`",
                ));
            }
            Some(limits) => self.http_limits(limits)?,
            None => Default::default(),
        };
        let memory_bytes = doc.memory.as_ref().map(|m| m.value.0);
        let max_output_bytes = doc.max_output.as_ref().map(|m| m.value.0);
        let timeout = match &doc.timeout {
            Some(t) if t.value.0.is_zero() => {
                return Err(self.error(
                    t.at,
                    "`timeout` must be longer than 0",
                    "e.g. `timeout: 30s`",
                ));
            }
            Some(t) => Some(t.value.0),
            None => None,
        };
        let fuel = match &doc.fuel {
            Some(f) if f.value == 0 => {
                return Err(self.error(
                    f.at,
                    "`fuel` must be at least 1",
                    "leave `fuel` out for no limit",
                ));
            }
            Some(f) => Some(f.value),
            None => None,
        };
        Ok(PluginDecl {
            name: name.value.clone(),
            at: name.at,
            wasm: self.resolve(&doc.wasm.value),
            wasm_at: doc.wasm.at,
            build: doc.build.as_ref().map(|b| b.value.clone()),
            env,
            dirs,
            memory_bytes,
            timeout,
            fuel,
            max_output_bytes,
            reuse_instances: doc.reuse_instances,
            secrets,
            http,
            http_limits,
        })
    }

    /// One entry of a plugin's `secrets`: a name the plugin reads, and one source.
    fn secret(
        &self,
        name: &Located<String>,
        doc: &Located<SecretDoc>,
        env: &[String],
    ) -> Result<SecretDecl, Diagnostic> {
        let valid = name
            .value
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.value.is_empty() || !valid {
            return Err(self.error(
                name.at,
                format!("`{}` is not a secret name", name.value.escape_debug()),
                "name it like an environment variable, e.g. `API_TOKEN`: the plugin reads it by that name",
            ));
        }
        if env.contains(&name.value) {
            return Err(self.error(
                name.at,
                format!("`{}` is both in `env` and a secret", name.value),
                "keep it in one place: a secret if its value must not be shown",
            ));
        }
        let source =
            match (&doc.value.env, &doc.value.file) {
                (Some(var), None) if !var.value.is_empty() => SecretSource::Env(var.value.clone()),
                (None, Some(file)) if !file.value.is_empty() => {
                    SecretSource::File(self.resolve(&file.value))
                }
                _ => {
                    return Err(self.error(
                    doc.at,
                    format!("secret `{}` needs exactly one of `env` and `file`", name.value),
                    "e.g. `API_TOKEN: {env: DEPLOY_TOKEN}` or `API_TOKEN: {file: secrets/token}`",
                ));
                }
            };
        Ok(SecretDecl {
            name: name.value.clone(),
            source,
            at: name.at,
        })
    }

    fn dir_grant(&self, doc: &DirDoc, earlier: &[DirDecl]) -> Result<DirDecl, Diagnostic> {
        if doc.host.value.is_empty() {
            return Err(self.error(
                doc.host.at,
                "the `host` directory is empty",
                missing_hint("host"),
            ));
        }
        if !doc.guest.value.starts_with('/') {
            return Err(self.error(
                doc.guest.at,
                format!(
                    "the guest path `{}` is not absolute",
                    doc.guest.value.escape_debug()
                ),
                "write where the plugin sees the directory as an absolute path, e.g. `/work`",
            ));
        }
        if earlier.iter().any(|d| d.guest == doc.guest.value) {
            return Err(self.error(
                doc.guest.at,
                format!("the guest path `{}` is used twice", doc.guest.value),
                "give each directory its own guest path",
            ));
        }
        Ok(DirDecl {
            host: self.resolve(&doc.host.value),
            guest: doc.guest.value.clone(),
            writable: doc.writable,
        })
    }

    /// A list of sibling items; names must be unique among them.
    fn items(&self, docs: &[Located<ItemDoc>], parent: &str) -> Result<Vec<Item>, Diagnostic> {
        let mut items: Vec<Item> = Vec::with_capacity(docs.len());
        let mut seen: HashMap<String, Position> = HashMap::new();
        for doc in docs {
            let item = self.item(doc, parent)?;
            if let Some(first) = seen.get(&item.name) {
                let hint = match &item.kind {
                    ItemKind::Do { action: f }
                    | ItemKind::WaitFor { condition: f, .. }
                    | ItemKind::Case { condition: f, .. }
                    | ItemKind::LoopUntil { condition: f, .. }
                        if item.name_defaulted =>
                    {
                        format!(
                            "the name `{}` comes from the function `{f}`; give it a `name:` of its own",
                            item.name
                        )
                    }
                    _ => format!(
                        "rename one of them: each item's path (`{parent}/{}`) must be unique",
                        item.name
                    ),
                };
                return Err(self.error(
                    item.name_at,
                    format!(
                        "two items here are named `{}` (the first at line {})",
                        item.name, first.line
                    ),
                    hint,
                ));
            }
            seen.insert(item.name.clone(), item.name_at);
            items.push(item);
        }
        self.instance_names(&items)?;
        Ok(items)
    }

    fn item(&self, doc: &Located<ItemDoc>, parent: &str) -> Result<Item, Diagnostic> {
        let item = &doc.value;
        let rule = self.kind(doc)?;
        for (key, at) in item.wait_options() {
            if let Some(at) = at
                && !rule.wait_options
            {
                return Err(self.error(
                    at,
                    format!(
                        "`{key}` applies only to `wait-for`, and this is {}",
                        rule.what
                    ),
                    "remove it, or make the item a `wait-for: <plugin>.<function>`",
                ));
            }
        }
        for (key, at) in item.each_options() {
            if let Some(at) = at
                && !rule.each_options
            {
                return Err(self.error(
                    at,
                    format!(
                        "`{key}` applies only to `for-each`, and this is {}",
                        rule.what
                    ),
                    "remove it, or make the item a `for-each: <pointer>` with `results:` and `steps:`",
                ));
            }
        }
        let body = match (&item.steps, rule.body) {
            (Some(steps), false) if rule.key == "parallel" => {
                return Err(self.error(
                    steps.at,
                    "a `parallel` has no `steps` of its own: its branches hold them",
                    "move the items into a branch under `parallel:`, e.g. `- { name: eu, steps: [...] }`, or list them after the `parallel` as its siblings",
                ));
            }
            (Some(steps), false) => {
                return Err(self.error(
                    steps.at,
                    format!("{} has no `steps`", rule.what),
                    "list the steps that follow it as its siblings, or group steps in an item with only `name:` and `steps:`",
                ));
            }
            (Some(steps), true) if rule.body_not_empty && steps.value.is_empty() => {
                return Err(self.error(
                    steps.at,
                    format!("{} needs at least one item in `steps`, to run for each element", rule.what),
                    "list the steps that process one element; they see it as `/item` and its index as `/index`",
                ));
            }
            (None, true) => {
                return Err(self.error(
                    doc.at,
                    format!("{} needs `steps:`, the items it runs", rule.what),
                    "add `steps:` with a list of items below it",
                ));
            }
            (steps, _) => steps,
        };
        // The function the item is about (or, for a wait, the signal), which also gives it a
        // default name.
        let mut signal = None;
        let condition;
        let function = match rule.key {
            "do" => item.do_.as_ref(),
            "wait-for" => match &item.wait_for {
                Some(Located {
                    value: WaitTarget::Condition(reference),
                    at,
                }) => {
                    condition = Located {
                        value: reference.clone(),
                        at: *at,
                    };
                    Some(&condition)
                }
                Some(Located {
                    value: WaitTarget::Signal(wait),
                    at,
                }) => {
                    signal = Some(self.signal_wait(item, &wait.signal, *at)?);
                    None
                }
                None => None,
            },
            "case" => item.case.as_ref(),
            "loop-until" => item.loop_until.as_ref(),
            _ => None,
        };
        let function = function.map(|f| self.reference(f)).transpose()?;
        let (name, name_at, name_defaulted) = match (&item.name, &function, &signal) {
            (Some(name), _, _) => {
                self.name(&name.value.0, name.at, "the name")?;
                (name.value.0.clone(), name.at, false)
            }
            (None, Some(f), _) if !rule.name_required => {
                let short = default_name(&f.function).to_string();
                self.name(&short, f.at, "the name taken from the function")?;
                (short, f.at, true)
            }
            (None, None, Some((signal, at))) => {
                self.name(signal, *at, "the name taken from the signal")?;
                (signal.clone(), *at, true)
            }
            _ => {
                return Err(self.error(
                    doc.at,
                    format!("{} needs a `name`", rule.what),
                    "add e.g. `name: validation`; it is part of the path of every step inside",
                ));
            }
        };
        let path = format!("{parent}/{name}");
        // A for-each's own keys are written before its `steps`: check them first.
        let each = match &item.for_each {
            Some(over) => Some(self.for_each(doc, over)?),
            None => None,
        };
        let steps = match body {
            Some(steps) => self.items(&steps.value, &path)?,
            None => Vec::new(),
        };
        let branches = match &item.parallel {
            Some(branches) => self.branches(branches, &name, &path)?,
            None => Vec::new(),
        };
        let kind = match (rule.key, function) {
            ("do", Some(action)) => ItemKind::Do { action },
            ("wait-for", Some(condition)) => ItemKind::WaitFor {
                condition,
                every: item.every.as_ref().map(|e| e.value.0),
                timeout: item.timeout.as_ref().map(|t| t.value.0),
            },
            ("wait-for", None) => match signal {
                Some((signal, _)) => ItemKind::WaitForSignal {
                    signal,
                    timeout: item.timeout.as_ref().map(|t| t.value.0),
                },
                None => ItemKind::Group { steps },
            },
            ("case", Some(condition)) => ItemKind::Case { condition, steps },
            ("loop-until", Some(condition)) => ItemKind::LoopUntil { condition, steps },
            ("retry", _) => match &item.retry {
                Some(retry) => ItemKind::Retry {
                    retry: self.retry(retry)?,
                    steps,
                },
                None => ItemKind::Group { steps },
            },
            ("parallel", _) => ItemKind::Parallel { branches },
            ("for-each", _) => match each {
                Some(each) => ItemKind::ForEach { each, steps },
                None => ItemKind::Group { steps },
            },
            _ => ItemKind::Group { steps },
        };
        Ok(Item {
            name,
            name_defaulted,
            at: doc.at,
            name_at,
            kind,
        })
    }

    /// Which kind the item is: exactly one kind key, or a plain group.
    fn kind(&self, doc: &Located<ItemDoc>) -> Result<KindRule, Diagnostic> {
        let item = &doc.value;
        let mut present: Vec<(&str, Position)> = item
            .kind_keys()
            .into_iter()
            .filter_map(|(key, at)| at.map(|at| (key, at)))
            .collect();
        present.sort_by_key(|&(_, at)| at);
        let key = match present.as_slice() {
            [] if item.steps.is_some() => "steps",
            [] => {
                let keys: Vec<String> = KIND_KEYS.iter().map(|k| format!("`{k}`")).collect();
                return Err(self.error(
                    doc.at,
                    format!(
                        "this item does nothing: it has none of {}, or `steps`",
                        keys.join(", ")
                    ),
                    "make it a step with `do: <plugin>.<function>`, or a group with `name:` and `steps:`",
                ));
            }
            [(key, _)] => key,
            [(first, first_at), (second, second_at), ..] => {
                return Err(self.error(
                    *second_at,
                    format!(
                        "this item has both `{first}` (line {}) and `{second}`, but an item has exactly one kind",
                        first_at.line
                    ),
                    "split it into two items in a row, or nest one in the other's `steps`",
                ));
            }
        };
        KINDS
            .iter()
            .find(|rule| rule.key == key)
            .copied()
            .ok_or_else(|| self.error(doc.at, format!("unknown item kind `{key}`"), MINIMAL))
    }

    /// `<plugin>.<function>`, with a declared plugin.
    /// Checks the signal of a `wait-for: {signal: NAME}` written at `at`; returns its name and
    /// position.
    fn signal_wait(
        &self,
        item: &ItemDoc,
        signal: &str,
        at: Position,
    ) -> Result<(String, Position), Diagnostic> {
        if let Err(problem) = stepflow_model::check_signal_name(signal) {
            return Err(self.error(
                at,
                format!("the signal name {signal:?} {problem}"),
                "name the signal with letters, digits, `-`, `_` or `.`, e.g. `{signal: approve}`",
            ));
        }
        if let Some(every) = &item.every {
            return Err(self.error(
                every.at,
                "`every` does not apply to a wait for a signal: the signal moves it when it arrives",
                "remove `every`; `timeout` bounds the wait",
            ));
        }
        Ok((signal.to_string(), at))
    }

    fn reference(&self, text: &Located<ReferenceText>) -> Result<FunctionRef, Diagnostic> {
        let value = text.value.0.as_str();
        let example_plugin = self.plugins.first().map_or("deploy", String::as_str);
        let Some((plugin, function)) = value.split_once('.') else {
            return Err(self.error(
                text.at,
                format!("`{}` is not a function reference", value.escape_debug()),
                format!(
                    "write `<plugin>.<function>`, e.g. `{example_plugin}.{}`",
                    if value.is_empty() { "prepare" } else { value }
                ),
            ));
        };
        if plugin.is_empty()
            || function.is_empty()
            || function.starts_with('/')
            || function.ends_with('/')
            || function
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            || bad_plugin_name(plugin).is_some()
        {
            return Err(self.error(
                text.at,
                format!("`{}` is not a function reference", value.escape_debug()),
                format!("write `<plugin>.<function>`, e.g. `{example_plugin}.prepare` or `{example_plugin}.checks/ready`"),
            ));
        }
        if !self.plugins.iter().any(|p| p == plugin) {
            let hint = if self.plugins.is_empty() {
                format!(
                    "declare it under `plugins:`, e.g. `plugins: {{ {plugin}: {{ wasm: {plugin}.wasm }} }}`"
                )
            } else {
                format!(
                    "{} (plugins are declared under `plugins:`)",
                    suggest(
                        plugin,
                        self.plugins.iter().map(String::as_str),
                        "declared plugins"
                    )
                )
            };
            return Err(self.error(
                text.at,
                format!("no plugin named `{}`", plugin.escape_debug()),
                hint,
            ));
        }
        Ok(FunctionRef {
            plugin: plugin.to_string(),
            function: function.to_string(),
            at: text.at,
        })
    }

    fn retry(&self, doc: &Located<RetryDoc>) -> Result<RetryDecl, Diagnostic> {
        let retry = &doc.value;
        if retry.handler.is_none() && retry.max_attempts.is_none() {
            return Err(self.error(
                doc.at,
                "a `retry` needs `handler`, `max-attempts`, or both",
                "e.g. `max-attempts: 3`, or `handler: <plugin>.<function>` for an error handler that decides",
            ));
        }
        let handler = retry
            .handler
            .as_ref()
            .map(|h| self.reference(h))
            .transpose()?;
        let max_attempts = match &retry.max_attempts {
            Some(m) if m.value == 0 => {
                return Err(self.error(
                    m.at,
                    "`max-attempts` must be at least 1",
                    "it counts every run of the group, the first one included: `max-attempts: 3` retries twice",
                ));
            }
            Some(m) => Some(m.value),
            None => None,
        };
        let backoff = match &retry.backoff {
            Some(b) => {
                let b = &b.value;
                let multiplier = match &b.multiplier {
                    Some(m) if !(m.value.is_finite() && m.value >= 1.0) => {
                        return Err(self.error(
                            m.at,
                            format!("the `multiplier` must be at least 1, not {}", m.value),
                            "each wait is the previous one times `multiplier`; `2` doubles it, `1` keeps it",
                        ));
                    }
                    Some(m) => m.value,
                    None => 2.0,
                };
                if b.max.value.0 < b.initial.value.0 {
                    return Err(self.error(
                        b.max.at,
                        "the back-off's `max` is shorter than its `initial` wait",
                        "make `max` at least as long as `initial`",
                    ));
                }
                Some(Backoff {
                    initial: b.initial.value.0,
                    multiplier,
                    max: b.max.value.0,
                    jitter: b.jitter,
                })
            }
            None => None,
        };
        Ok(RetryDecl {
            handler,
            max_attempts,
            backoff,
        })
    }
}

/// Why a plugin name is refused, if it is.
fn bad_plugin_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('.') {
        Some("contains `.`")
    } else if name.contains('/') {
        Some("contains `/`")
    } else if name.contains(':') {
        Some("contains `:`")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains a space or control character")
    } else {
        None
    }
}

/// Why a name would mislead a reader (see `Checker::visible_name`).
enum Misleading {
    /// A bidirectional-override character: U+202A to U+202E, U+2066 to U+2069.
    Bidi(char),
    /// A zero-width character: U+200B to U+200D, U+2060, U+FEFF.
    ZeroWidth(char),
    /// Nothing but white space.
    Blank,
}

fn misleading(name: &str) -> Option<Misleading> {
    for c in name.chars() {
        match c {
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => return Some(Misleading::Bidi(c)),
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => {
                return Some(Misleading::ZeroWidth(c));
            }
            _ => {}
        }
    }
    name.chars()
        .all(char::is_whitespace)
        .then_some(Misleading::Blank)
}

/// The part of a function name after the last `.` or `/`: `checks/ready` names a step `ready`.
fn default_name(function: &str) -> &str {
    function.rsplit(['.', '/']).next().unwrap_or(function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        assert_eq!(default_name("prepare"), "prepare");
        assert_eq!(default_name("checks/ready"), "ready");
        assert_eq!(default_name("a.b/c.d"), "d");
    }
}
