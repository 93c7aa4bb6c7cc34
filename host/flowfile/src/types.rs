//! A checked flow file: what [`crate::load`] returns. Paths are resolved, sizes and durations
//! parsed, names defaulted and checked; every part keeps its position for later errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::diagnostic::Position;

/// A parsed and structurally checked flow file, ready to be turned into `Steps` once its
/// plugins are loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowFile {
    /// The file it was read from (positions refer to it; relative paths were resolved from its
    /// directory).
    pub path: PathBuf,
    /// The flow's name: the root scope of every step path.
    pub flow: String,
    /// Where the flow's name is written.
    pub flow_at: Position,
    /// The declared plugins, by the name function references use.
    pub plugins: BTreeMap<String, PluginDecl>,
    /// The data document a new run starts with.
    pub data: Value,
    /// The root's items, in order.
    pub steps: Vec<Item>,
}

/// A declared plugin: which component to load and what its sandbox may use, so the CLI can load
/// it with exactly these grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDecl {
    /// The name steps refer to it by.
    pub name: String,
    /// Where the plugin is declared (its name under `plugins:`).
    pub at: Position,
    /// The component file, resolved against the flow file's directory.
    pub wasm: PathBuf,
    /// Where the `wasm` path is written (its value), to point at it when the file is missing.
    pub wasm_at: Position,
    /// The command that builds `wasm`, to run in the flow file's directory.
    pub build: Option<String>,
    /// Host environment variables passed through, by name.
    pub env: Vec<String>,
    /// Preopened host directories.
    pub dirs: Vec<DirDecl>,
    /// Memory cap in bytes (`None`: the runtime's default, 64 MiB).
    pub memory_bytes: Option<u64>,
    /// Time limit per call (`None`: the runtime's default, 30 s).
    pub timeout: Option<Duration>,
    /// Fuel per call (`None`: unlimited).
    pub fuel: Option<u64>,
    /// Cap on what one step may return (`None`: the runtime's default, 1 MiB).
    pub max_output_bytes: Option<u64>,
    /// Whether calls may reuse an instance.
    pub reuse_instances: bool,
    /// Secrets the plugin reads as environment variables, by name.
    pub secrets: Vec<SecretDecl>,
    /// What the plugin may call over HTTP.
    pub http: Vec<HttpDecl>,
    /// Limits on each call's HTTP, where the flow sets them.
    pub http_limits: HttpLimitsDecl,
}

/// One place a plugin may call over HTTP, taken apart so the host compares requests with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpDecl {
    /// The URL as written, for messages.
    pub url: String,
    /// Whether it is plain `http://` rather than `https://`.
    pub plain: bool,
    /// The host, lowercase (`*.example.com` for its subdomains, `[::1]` for IPv6).
    pub host: String,
    /// The port, if written.
    pub port: Option<u16>,
    /// The path pattern (`*` for any run of characters); `/*` when none is written.
    pub path: String,
    /// The methods, uppercase.
    pub methods: Vec<String>,
    /// Where the grant is written.
    pub at: Position,
}

/// Limits on a call's HTTP requests; `None` is the host's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpLimitsDecl {
    /// Longest wait for a connection.
    pub connect_timeout: Option<Duration>,
    /// Longest one request may take.
    pub timeout: Option<Duration>,
    /// Largest response body.
    pub max_response_bytes: Option<u64>,
    /// Most requests per call.
    pub max_requests: Option<u32>,
}

/// A secret a plugin is given: the name it reads it by, and where its value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretDecl {
    /// The environment variable the plugin reads it from.
    pub name: String,
    /// Where the host reads its value.
    pub source: SecretSource,
    /// Where the flow file names it.
    pub at: Position,
}

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A host environment variable.
    Env(String),
    /// A file (resolved against the flow file's directory).
    File(PathBuf),
}

/// A host directory a plugin may see, so the sandbox can preopen it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirDecl {
    /// The host directory, resolved against the flow file's directory.
    pub host: PathBuf,
    /// Where the plugin sees it (an absolute guest path).
    pub guest: String,
    /// Whether the plugin may change it.
    pub writable: bool,
}

/// One item of the flow tree, with its name settled and its position kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The name, unique among siblings.
    pub name: String,
    /// True when `name:` was not written and the name was taken from the function.
    pub name_defaulted: bool,
    /// Where the item starts (its first key).
    pub at: Position,
    /// Where the name is written, or the function reference it was taken from.
    pub name_at: Position,
    /// What the item does.
    pub kind: ItemKind,
}

/// The kinds of item, as in the model.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind {
    /// `do`: calls an action.
    Do {
        /// The action.
        action: FunctionRef,
    },
    /// `wait-for`: checks a condition until it is true.
    WaitFor {
        /// The condition.
        condition: FunctionRef,
        /// Least time between two checks.
        every: Option<Duration>,
        /// How long the condition may stay false.
        timeout: Option<Duration>,
    },
    /// `wait-for: {signal: NAME}`: waits until a signal of that name arrives for the run.
    WaitForSignal {
        /// The signal's name.
        signal: String,
        /// How long to wait before the wait fails.
        timeout: Option<Duration>,
    },
    /// `case`: runs `steps` when the condition is true.
    Case {
        /// The condition.
        condition: FunctionRef,
        /// The body.
        steps: Vec<Item>,
    },
    /// `loop-until`: runs `steps` until the condition, asked after each pass, is true.
    LoopUntil {
        /// The condition.
        condition: FunctionRef,
        /// The body.
        steps: Vec<Item>,
    },
    /// `retry`: runs `steps` again when they fail and the policy allows.
    Retry {
        /// The policy.
        retry: RetryDecl,
        /// The body.
        steps: Vec<Item>,
    },
    /// `parallel`: runs its branches side by side; completes when all of them have.
    Parallel {
        /// The branches, in the order written.
        branches: Vec<Branch>,
    },
    /// `for-each`: runs `steps` once for every element of an array in the data.
    ForEach {
        /// What it runs over, where the results go, how many at once.
        each: ForEachDecl,
        /// The body, run once per element.
        steps: Vec<Item>,
    },
    /// A plain named group of steps.
    Group {
        /// The body.
        steps: Vec<Item>,
    },
}

impl ItemKind {
    /// The nested items, if the kind has any; a `parallel` has none of its own (its items are
    /// in its branches: see [`ItemKind::branches`]).
    pub fn steps(&self) -> &[Item] {
        match self {
            ItemKind::Do { .. }
            | ItemKind::WaitFor { .. }
            | ItemKind::WaitForSignal { .. }
            | ItemKind::Parallel { .. } => &[],
            ItemKind::Case { steps, .. }
            | ItemKind::LoopUntil { steps, .. }
            | ItemKind::Retry { steps, .. }
            | ItemKind::ForEach { steps, .. }
            | ItemKind::Group { steps } => steps,
        }
    }

    /// A `parallel`'s branches (none for every other kind), so walkers of the tree reach the
    /// items inside them.
    pub fn branches(&self) -> &[Branch] {
        match self {
            ItemKind::Parallel { branches } => branches,
            _ => &[],
        }
    }
}

/// One branch of a `parallel`: a named list of items that runs beside the other branches.
#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    /// The name, unique among the branches; part of the path of every step inside.
    pub name: String,
    /// Where the branch starts (its first key).
    pub at: Position,
    /// Where the name is written.
    pub name_at: Position,
    /// The items, run in order (at least one).
    pub steps: Vec<Item>,
}

/// A `for-each` item's settings, checked: both pointers valid and apart, so the model accepts
/// them; positions kept for errors found when a run reads the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForEachDecl {
    /// The JSON pointer of the array it runs over, in the data its steps see (`""`: the whole
    /// document).
    pub over: String,
    /// Where `for-each`'s value is written.
    pub over_at: Position,
    /// The JSON pointer of the array that collects the results (never `""`).
    pub results: String,
    /// Where `results`'s value is written.
    pub results_at: Position,
    /// How many elements are processed at once (at least 1; 1 when not written).
    pub concurrency: u32,
}

/// A `retry` item's policy, declarative parts already checked.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryDecl {
    /// The error handler, if any.
    pub handler: Option<FunctionRef>,
    /// Most runs of the group in all.
    pub max_attempts: Option<u32>,
    /// The wait before each retry.
    pub backoff: Option<stepflow_model::Backoff>,
}

/// A reference `<plugin>.<function>` as written, so errors can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRef {
    /// The plugin's name (before the first `.`).
    pub plugin: String,
    /// The function's name (after the first `.`; may contain `/`, e.g. `checks/ready`).
    pub function: String,
    /// Where the reference is written.
    pub at: Position,
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.plugin, self.function)
    }
}
