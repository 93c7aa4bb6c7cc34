//! From a checked flow file to the model's `Steps`: every function reference is resolved through
//! a [`Functions`] implementation (the CLI's, backed by real plugins), and every failure points
//! at the reference in the file.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use stepflow_model::{Action, Condition, ErrorHandler, ForEach, RetryPolicy, Steps, Wait};

use crate::diagnostic::{Diagnostic, Position};
use crate::types::{FlowFile, FunctionRef, Item, ItemKind};

pub use stepflow_model::FunctionKind;

/// A resolved step function, ready to put into `Steps`.
#[derive(Clone)]
pub enum Function {
    /// For `do`.
    Action(Arc<dyn Action>),
    /// For `wait-for`, `case`, `loop-until`.
    Condition(Arc<dyn Condition>),
    /// For a retry `handler`.
    ErrorHandler(Arc<dyn ErrorHandler>),
}

impl Function {
    /// Wraps an object that can serve as any kind (a plugin function, a placeholder) as the
    /// kind a use needs.
    pub fn of_kind<T: Action + Condition + ErrorHandler + 'static>(
        kind: FunctionKind,
        f: Arc<T>,
    ) -> Self {
        match kind {
            FunctionKind::Action => Function::Action(f),
            FunctionKind::Condition => Function::Condition(f),
            FunctionKind::ErrorHandler => Function::ErrorHandler(f),
        }
    }

    /// What the function is, to check a resolver's answer against the use.
    pub fn kind(&self) -> FunctionKind {
        match self {
            Function::Action(_) => FunctionKind::Action,
            Function::Condition(_) => FunctionKind::Condition,
            Function::ErrorHandler(_) => FunctionKind::ErrorHandler,
        }
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Function::{:?}", self.kind())
    }
}

/// Looks up `plugin.function` for one use; implemented by the CLI with real plugins (and by
/// tests with native functions). The error string is shown to the user as is.
pub trait Functions {
    /// The function `function` of `plugin`, checked to be usable as `kind`.
    fn resolve(&self, plugin: &str, function: &str, kind: FunctionKind)
    -> Result<Function, String>;
}

/// One use of a function in a flow file, so `validate` can check them all and report each at
/// its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The plugin's name.
    pub plugin: String,
    /// The function's name within the plugin.
    pub function: String,
    /// What the use needs.
    pub kind: FunctionKind,
    /// Where the reference is written.
    pub at: Position,
    /// The key it is written under: `do`, `wait-for`, `case`, `loop-until` or `handler`.
    pub key: &'static str,
    /// The path of the item that uses it, e.g. `deploy.v1/shouldDeploy`.
    pub step: String,
}

impl FlowFile {
    /// Every function use, in file order, with what it must be.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        collect(&self.flow, &self.steps, &mut out);
        out
    }

    /// Builds the model's `Steps`, resolving every reference through `functions`; the first
    /// failure comes back located at its reference, with the resolver's message.
    pub fn to_steps(&self, functions: &dyn Functions) -> Result<Steps, Diagnostic> {
        let resolver = Resolver {
            file: self,
            functions,
        };
        resolver.items(Steps::named(self.flow.clone()), &self.steps)
    }

    /// Checks that every plugin's `.wasm` file exists and is a WebAssembly component, pointing
    /// at its `wasm:` value when not: a missing file gets a hint to build it (`--build` and the
    /// plugin's `build` command, when it has one); a core module, a file that is not
    /// WebAssembly, or a component in another binary format say what the file is and how to
    /// build a component. Only the first 8 bytes (magic and version) are read.
    pub fn check_wasm_files(&self) -> Result<(), Diagnostic> {
        for plugin in self.plugins.values() {
            let what = format!(
                "the plugin `{}`'s component `{}`",
                plugin.name,
                plugin.wasm.display()
            );
            let problem = match std::fs::metadata(&plugin.wasm) {
                Ok(meta) if meta.is_file() => match header_problem(&plugin.wasm) {
                    None => continue,
                    Some((problem, hint)) => {
                        let message = format!(
                            "`{}` (the plugin `{}`) {problem}",
                            plugin.wasm.display(),
                            plugin.name
                        );
                        return Err(
                            Diagnostic::new(&self.path, plugin.wasm_at, message).with_hint(hint)
                        );
                    }
                },
                Ok(_) => "is not a file",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist",
                Err(_) => "cannot be read",
            };
            let message = format!("{what} {problem}");
            let hint = match &plugin.build {
                Some(build) => format!(
                    "build it with `stepflow run --build`, which runs `{build}` in {}; or run that command yourself",
                    self.dir().display()
                ),
                None => "build the plugin, or fix the path (it is relative to this flow file's directory); add `build:` with the command that builds it to let `stepflow run --build` do it".to_string(),
            };
            return Err(Diagnostic::new(&self.path, plugin.wasm_at, message).with_hint(hint));
        }
        Ok(())
    }

    /// The directory relative paths in the file are resolved from (and `build` runs in).
    pub fn dir(&self) -> std::path::PathBuf {
        crate::parse::base_dir(&self.path)
    }
}

fn collect(parent: &str, items: &[Item], out: &mut Vec<Reference>) {
    for item in items {
        let step = format!("{parent}/{}", item.name);
        let mut add = |f: &FunctionRef, kind: FunctionKind, key: &'static str| {
            out.push(Reference {
                plugin: f.plugin.clone(),
                function: f.function.clone(),
                kind,
                at: f.at,
                key,
                step: step.clone(),
            })
        };
        match &item.kind {
            ItemKind::Do { action } => add(action, FunctionKind::Action, "do"),
            ItemKind::WaitFor { condition, .. } => {
                add(condition, FunctionKind::Condition, "wait-for")
            }
            ItemKind::Case { condition, .. } => add(condition, FunctionKind::Condition, "case"),
            ItemKind::LoopUntil { condition, .. } => {
                add(condition, FunctionKind::Condition, "loop-until")
            }
            ItemKind::Retry { retry, .. } => {
                if let Some(handler) = &retry.handler {
                    add(handler, FunctionKind::ErrorHandler, "handler");
                }
            }
            ItemKind::WaitForSignal { .. }
            | ItemKind::Parallel { .. }
            | ItemKind::ForEach { .. }
            | ItemKind::Group { .. } => {}
        }
        for branch in item.kind.branches() {
            collect(&format!("{step}/{}", branch.name), &branch.steps, out);
        }
        collect(&step, item.kind.steps(), out);
    }
}

struct Resolver<'a> {
    file: &'a FlowFile,
    functions: &'a dyn Functions,
}

impl Resolver<'_> {
    fn items(&self, mut group: Steps, items: &[Item]) -> Result<Steps, Diagnostic> {
        for item in items {
            let name = item.name.clone();
            group = match &item.kind {
                ItemKind::Do { action } => group.step_shared(name, self.action(action)?),
                ItemKind::WaitFor {
                    condition,
                    every,
                    timeout,
                } => {
                    let wait = Wait {
                        every: *every,
                        timeout: *timeout,
                    };
                    group.wait_for_shared(name, self.condition(condition, "wait-for")?, wait)
                }
                ItemKind::WaitForSignal { signal, timeout } => match timeout {
                    Some(timeout) => group.wait_for_signal_within(name, signal.as_str(), *timeout),
                    None => group.wait_for_signal(name, signal.as_str()),
                },
                ItemKind::Case { condition, steps } => {
                    let condition = self.condition(condition, "case")?;
                    group.case_shared(name, condition, self.items(Steps::new(), steps)?)
                }
                ItemKind::LoopUntil { condition, steps } => {
                    let condition = self.condition(condition, "loop-until")?;
                    group.loop_until_shared(name, condition, self.items(Steps::new(), steps)?)
                }
                ItemKind::Retry { retry, steps } => {
                    let mut policy = match &retry.handler {
                        Some(handler) => RetryPolicy::handler_shared(self.handler(handler)?),
                        None => RetryPolicy::default(),
                    };
                    if let Some(max) = retry.max_attempts {
                        policy = policy.max_attempts(max);
                    }
                    if let Some(backoff) = retry.backoff {
                        policy = policy.backoff(backoff);
                    }
                    group.retry(name, policy, self.items(Steps::new(), steps)?)
                }
                ItemKind::Parallel { branches } => {
                    let branches = branches
                        .iter()
                        .map(|branch| self.items(Steps::named(branch.name.clone()), &branch.steps))
                        .collect::<Result<Vec<_>, _>>()?;
                    group.parallel(name, branches)
                }
                ItemKind::ForEach { each, steps } => {
                    let each = ForEach::new(each.over.clone(), each.results.clone())
                        .concurrency(each.concurrency);
                    group.for_each(name, each, self.items(Steps::new(), steps)?)
                }
                ItemKind::Group { steps } => group.steps(self.items(Steps::named(name), steps)?),
            };
        }
        Ok(group)
    }

    /// Asks the resolver; its error becomes a diagnostic at the reference.
    fn resolve(
        &self,
        f: &FunctionRef,
        kind: FunctionKind,
        used_as: &str,
    ) -> Result<Function, Diagnostic> {
        self.functions
            .resolve(&f.plugin, &f.function, kind)
            .map_err(|message| {
                Diagnostic::new(&self.file.path, f.at, message).with_hint(shape_hint(kind, used_as))
            })
    }

    /// A resolver that answers with another kind than asked for breaks its contract; say so at
    /// the reference rather than panic.
    fn wrong_kind(
        &self,
        f: &FunctionRef,
        kind: FunctionKind,
        got: &Function,
        used_as: &str,
    ) -> Diagnostic {
        Diagnostic::new(
            &self.file.path,
            f.at,
            format!(
                "`{f}` is used as {} here, but the resolver returned {}",
                kind.with_article(),
                got.kind().with_article()
            ),
        )
        .with_hint(shape_hint(kind, used_as))
    }

    fn action(&self, f: &FunctionRef) -> Result<Arc<dyn Action>, Diagnostic> {
        let used_as = "`do`";
        match self.resolve(f, FunctionKind::Action, used_as)? {
            Function::Action(a) => Ok(a),
            other => Err(self.wrong_kind(f, FunctionKind::Action, &other, used_as)),
        }
    }

    fn condition(&self, f: &FunctionRef, key: &str) -> Result<Arc<dyn Condition>, Diagnostic> {
        let used_as = format!("`{key}`");
        match self.resolve(f, FunctionKind::Condition, &used_as)? {
            Function::Condition(c) => Ok(c),
            other => Err(self.wrong_kind(f, FunctionKind::Condition, &other, &used_as)),
        }
    }

    fn handler(&self, f: &FunctionRef) -> Result<Arc<dyn ErrorHandler>, Diagnostic> {
        let used_as = "a retry `handler`";
        match self.resolve(f, FunctionKind::ErrorHandler, used_as)? {
            Function::ErrorHandler(h) => Ok(h),
            other => Err(self.wrong_kind(f, FunctionKind::ErrorHandler, &other, used_as)),
        }
    }
}

/// The WebAssembly magic number, which every module and component starts with.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// The version and layer after the magic in a core module (version 1, layer 0).
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// The version and layer after the magic in a component (version 0x0d, layer 1), the binary
/// format of the component model that the plugin runtime reads.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// How to build a component, for the hints of the header checks.
const BUILD_A_COMPONENT: &str = "build it as a component (e.g. `cargo build --target wasm32-wasip2`, or `wasm-tools component new`)";

/// What is wrong with the file's first 8 bytes, and what to do, when it is not a component.
fn header_problem(path: &std::path::Path) -> Option<(String, String)> {
    let mut header = Vec::with_capacity(8);
    let read = std::fs::File::open(path).and_then(|f| f.take(8).read_to_end(&mut header));
    if let Err(e) = read {
        return Some((
            format!("cannot be read: {e}"),
            "check the file's permissions".to_string(),
        ));
    }
    if header.len() < 4 || header[..4] != WASM_MAGIC {
        let starts = match header.as_slice() {
            [] => "it is empty".to_string(),
            bytes => format!("it starts with {}", describe_bytes(bytes)),
        };
        return Some((
            format!("is not WebAssembly ({starts}, not `\\0asm`)"),
            format!(
                "point `wasm:` at the `.wasm` file the plugin's build writes, and {BUILD_A_COMPONENT}"
            ),
        ));
    }
    let version = &header[4..];
    if version == CORE_MODULE_VERSION {
        return Some((
            "is a core WebAssembly module, not a component".to_string(),
            BUILD_A_COMPONENT.to_string(),
        ));
    }
    if version == COMPONENT_VERSION {
        return None;
    }
    let problem = if version.len() < 4 {
        format!(
            "is cut short: it ends {} bytes after the WebAssembly magic number",
            version.len()
        )
    } else {
        format!(
            "is WebAssembly of a binary format this stepflow does not read (version and layer {}; a component has {})",
            hex(version),
            hex(&COMPONENT_VERSION)
        )
    };
    Some((
        problem,
        format!("rebuild it with current tools: {BUILD_A_COMPONENT}"),
    ))
}

/// Bytes for a message: as text when they are printable ASCII, else in hex.
fn describe_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("the bytes {}", hex(bytes))
    }
}

/// `00 61 73 6d`.
fn hex(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(" ")
}

/// What the use needs, in WIT terms: the hint for every resolution failure.
fn shape_hint(kind: FunctionKind, used_as: &str) -> String {
    format!(
        "{used_as} needs {}: an export shaped `{}`",
        kind.with_article(),
        kind.signature()
    )
}
