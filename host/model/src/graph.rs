//! Compiles the item tree into a table of transitions indexed by integer event ids.
//!
//! Each item kind knows only how to produce its own transitions inside a parent scope
//! ([`Item::compile`]); the table is what [`crate::StepFlow::apply`] walks. Scope `i` owns the
//! events `2i` (`start:`) and `2i + 1` (`completed:`).
//!
//! Scope names: every item's scope is `<parent>/<name>`. Unlike the seed, we do not append the
//! item kind to the name and we do not wrap `case` / `loop_until` / `retry` bodies in a scope of
//! their own: the body's items are children of the item itself (`deploy.v1/shouldDeploy/deploy`),
//! and the body's entry and exit are edges, not events. The sequence of function calls is the
//! same as the seed's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::builder::{Item, RetryPolicy, Steps, Wait};
use crate::function::{Action, Condition};

/// Why a flow definition was refused; each variant names the path of the offending item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// An item has an empty name.
    #[error("in `{parent}`: item number {position} has an empty name; give every step a name")]
    EmptyName {
        /// The scope that holds the item.
        parent: String,
        /// 1-based position among its siblings.
        position: usize,
    },
    /// A name contains a character that the event syntax reserves.
    #[error(
        "in `{parent}`: the name `{name}` contains {what}, which stepflow reserves for scope paths and events; rename it"
    )]
    BadName {
        /// The scope that holds the item.
        parent: String,
        /// The offending name.
        name: String,
        /// The offending character, described.
        what: &'static str,
    },
    /// A name that could mislead whoever reads it: it contains a bidirectional-override or
    /// zero-width character (so it displays unlike what it is, or like another name), or it is
    /// only white space. The message shows the name escaped, e.g. `"re\u{202e}ady"`.
    #[error("in `{parent}`: the name {name:?} {problem}; rename it with visible characters only")]
    MisleadingName {
        /// The scope that holds the item.
        parent: String,
        /// The offending name.
        name: String,
        /// What is wrong with it, e.g. "contains the bidirectional-override character U+202E".
        problem: String,
    },
    /// Two siblings share a name.
    #[error(
        "in `{parent}`: two items are named `{name}`; names must be unique among siblings so that each step has its own path"
    )]
    DuplicateName {
        /// The scope that holds both items.
        parent: String,
        /// The shared name.
        name: String,
    },
    /// Two transitions leave the same event.
    #[error("the event `{event}` has two transitions; this is a bug in an item kind")]
    DuplicateSource {
        /// The event.
        event: String,
    },
    /// A `wait_for_signal` names a signal that could never be sent or stored under
    /// `signals.<name>` as written.
    #[error("in `{parent}`: the wait `{step}` waits for the signal {signal:?}, which {problem}")]
    BadSignalName {
        /// The scope that holds the wait.
        parent: String,
        /// The wait's name.
        step: String,
        /// The signal name given.
        signal: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A `parallel` without branches, or a branch without items: there is nothing to run side
    /// by side.
    #[error("in `{parent}`: {problem}")]
    EmptyFanOut {
        /// The scope that holds the `parallel` or `for_each`.
        parent: String,
        /// What is empty, and what to write instead.
        problem: String,
    },
    /// A `for_each` whose settings cannot work: a pointer that is not a JSON pointer, a
    /// concurrency of 0, results that overlap the array they collect.
    #[error("in `{parent}`: the for-each `{name}` {problem}")]
    BadForEach {
        /// The scope that holds the `for_each`.
        parent: String,
        /// The `for_each`'s name.
        name: String,
        /// What is wrong, and what to write instead.
        problem: String,
    },
    /// A name that a for-each instance's path would also spell: `files#3` next to a for-each
    /// named `files`, whose instance 3 is `files#3`.
    #[error(
        "in `{parent}`: the name `{name}` is how the paths of the for-each `{for_each}` spell one of its instances; rename one of them"
    )]
    InstanceName {
        /// The scope that holds both items.
        parent: String,
        /// The offending name.
        name: String,
        /// The sibling `for_each`.
        for_each: String,
    },
    /// Static transitions form a loop that no function call could ever break.
    #[error("static transitions loop through `{event}` without calling any function")]
    StaticCycle {
        /// An event on the loop.
        event: String,
    },
}

/// What leaves an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing: only the root's `completed:` event.
    End,
    /// A fixed destination event.
    Static(u32),
    /// A function call decides (index into `Graph::dynamics`).
    Dynamic(u32),
    /// The start of the `parallel` scope: its branches start, each a strand of its own.
    Fork(u32),
    /// The completion of a branch of the `parallel` scope: the strand waits here until every
    /// branch has completed, then they become one strand at the `parallel`'s completion.
    Join(u32),
    /// The start of the `for_each` scope: its instances start, up to its concurrency.
    Each(u32),
    /// The end of one instance's body of the `for_each` scope: the next instance starts, or,
    /// after the last, the `for_each` completes.
    EachDone(u32),
}

/// The function a dynamic transition calls.
#[derive(Clone)]
pub(crate) enum Call {
    Action(Arc<dyn Action>),
    Condition(Arc<dyn Condition>, CallKind),
    /// A `wait_for_signal`: no function, the run's inbox decides (the signal's name).
    Signal(Arc<str>),
}

/// What kind of item a call serves (for records, diagrams and messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// A `step` (the seed's `Do`).
    Step,
    /// The condition of a `wait_for`.
    WaitFor,
    /// The condition of a `case`.
    Case,
    /// The condition of a `loop_until`.
    LoopUntil,
    /// The error handler of a `retry`.
    ErrorHandler,
}

impl CallKind {
    /// Every kind, for listings and for checks that each spelling round-trips.
    pub const ALL: [CallKind; 5] = [
        CallKind::Step,
        CallKind::WaitFor,
        CallKind::Case,
        CallKind::LoopUntil,
        CallKind::ErrorHandler,
    ];

    /// The kind as history, messages and serde spell it (`wait-for`): the one spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Step => "step",
            CallKind::WaitFor => "wait-for",
            CallKind::Case => "case",
            CallKind::LoopUntil => "loop-until",
            CallKind::ErrorHandler => "error-handler",
        }
    }
}

impl std::fmt::Display for CallKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CallKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown call kind `{s}`"))
    }
}

/// A transition that calls a function.
#[derive(Clone)]
pub(crate) struct Dynamic {
    /// The scope of the item that owns the call (its path is the step path).
    pub scope: u32,
    pub call: Call,
    /// Where an `Ok` action or a true condition goes.
    pub yes: u32,
    /// Where a false condition goes (unused for actions).
    pub no: u32,
    /// The innermost enclosing `retry` scope.
    pub retry: Option<u32>,
    pub wait: Wait,
}

/// The kind of an item of the flow tree (and of the scope it compiles to), saved with a run's
/// cursor so that a resumed run can tell when the item at its cursor changed kind.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// A step that calls an action (`do` in flow files).
    Step,
    /// A `wait_for`.
    WaitFor,
    /// A named group of items (`steps`), the root included.
    Steps,
    /// A `case`.
    Case,
    /// A `loop_until`.
    LoopUntil,
    /// A `retry` group.
    Retry,
    /// A `parallel`.
    Parallel,
    /// A `for_each`.
    ForEach,
}

impl ItemKind {
    /// Every kind, for listings and for checks that each spelling round-trips.
    pub const ALL: [ItemKind; 8] = [
        ItemKind::Step,
        ItemKind::WaitFor,
        ItemKind::Steps,
        ItemKind::Case,
        ItemKind::LoopUntil,
        ItemKind::Retry,
        ItemKind::Parallel,
        ItemKind::ForEach,
    ];

    /// The kind as saved states and messages spell it (`wait-for`): the one spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Step => "step",
            ItemKind::WaitFor => "wait-for",
            ItemKind::Steps => "steps",
            ItemKind::Case => "case",
            ItemKind::LoopUntil => "loop-until",
            ItemKind::Retry => "retry",
            ItemKind::Parallel => "parallel",
            ItemKind::ForEach => "for-each",
        }
    }

    /// "a step (`do`)", "a `wait-for`", ...: for sentences.
    pub fn with_article(self) -> &'static str {
        match self {
            ItemKind::Step => "a step (`do`)",
            ItemKind::WaitFor => "a `wait-for`",
            ItemKind::Steps => "a group (`steps`)",
            ItemKind::Case => "a `case`",
            ItemKind::LoopUntil => "a `loop-until`",
            ItemKind::Retry => "a `retry`",
            ItemKind::Parallel => "a `parallel`",
            ItemKind::ForEach => "a `for-each`",
        }
    }
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone)]
pub(crate) struct Scope {
    pub path: Arc<str>,
    pub kind: ItemKind,
    /// The enclosing scope; `None` for the root.
    pub parent: Option<u32>,
    /// For a retry scope: the next enclosing retry scope.
    pub outer_retry: Option<u32>,
    /// For a retry scope: its policy.
    pub policy: Option<RetryPolicy>,
    /// For a `parallel` scope: its branches' scopes, in order.
    pub branches: Vec<u32>,
    /// For a `for_each` scope: what it runs over and where its body starts.
    pub each: Option<Arc<EachSpec>>,
    /// The `for_each` scopes this one is inside, outermost first, with the length of each one's
    /// path: an instance's path puts `#<index>` there (`flow/files#3/process`).
    pub instanced: Vec<(u32, usize)>,
}

/// A compiled `for_each`: its pointers taken apart into tokens.
#[derive(Clone, Debug)]
pub(crate) struct EachSpec {
    /// Where the array is, in the data its start sees.
    pub over: Vec<String>,
    /// Where the results array goes, inside the place its own patches would land.
    pub results: Vec<String>,
    /// How many instances may run at once.
    pub concurrency: u32,
    /// The event an instance starts at.
    pub entry: u32,
}

/// The compiled flow.
pub(crate) struct Graph {
    /// Distinguishes event ids of this graph from another's.
    pub tag: u64,
    pub scopes: Vec<Scope>,
    /// Event id to its text form.
    pub names: Vec<Arc<str>>,
    pub by_name: HashMap<Arc<str>, u32>,
    pub next: Vec<Next>,
    pub dynamics: Vec<Dynamic>,
    /// Event ids that complete a `retry` scope (its attempt count is cleared there).
    pub completes_retry: Vec<bool>,
    /// Scope paths (without instance numbers) to scopes, for reading saved instance events.
    pub by_path: HashMap<Arc<str>, u32>,
    /// Whether any item fans out (`parallel`, `for_each`): only then can a run have several
    /// strands.
    pub fans_out: bool,
    /// The definition hash (see `definition.rs`).
    pub hash: String,
}

pub(crate) const fn start(scope: u32) -> u32 {
    scope * 2
}

pub(crate) const fn completed(scope: u32) -> u32 {
    scope * 2 + 1
}

pub(crate) const fn scope_of(event: u32) -> u32 {
    event / 2
}

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

struct Builder {
    scopes: Vec<Scope>,
    next: Vec<Option<Next>>,
    dynamics: Vec<Dynamic>,
}

impl Builder {
    fn scope(&mut self, parent: Option<u32>, name: &str, kind: ItemKind) -> u32 {
        let (path, instanced): (Arc<str>, _) = match parent {
            Some(p) => {
                let parent = &self.scopes[p as usize];
                let mut instanced = parent.instanced.clone();
                if parent.kind == ItemKind::ForEach {
                    instanced.push((p, parent.path.len()));
                }
                (format!("{}/{}", parent.path, name).into(), instanced)
            }
            None => (name.into(), Vec::new()),
        };
        let id = self.scopes.len() as u32;
        self.scopes.push(Scope {
            path,
            kind,
            parent,
            outer_retry: None,
            policy: None,
            branches: Vec::new(),
            each: None,
            instanced,
        });
        self.next.push(None);
        self.next.push(None);
        id
    }

    fn set(&mut self, event: u32, next: Next) -> Result<(), BuildError> {
        let slot = &mut self.next[event as usize];
        if slot.is_some() {
            let scope = &self.scopes[scope_of(event) as usize];
            let kind = if event.is_multiple_of(2) {
                "start"
            } else {
                "completed"
            };
            return Err(BuildError::DuplicateSource {
                event: format!("{kind}:{}", scope.path),
            });
        }
        *slot = Some(next);
        Ok(())
    }

    fn link(&mut self, from: u32, to: u32) -> Result<(), BuildError> {
        self.set(from, Next::Static(to))
    }

    fn dynamic(&mut self, at: u32, dynamic: Dynamic) -> Result<(), BuildError> {
        let id = self.dynamics.len() as u32;
        self.dynamics.push(dynamic);
        self.set(at, Next::Dynamic(id))
    }

    /// Compiles `items` as children of `parent`, chained in order; returns the first child's
    /// start and the last child's completion, or `None` for an empty body.
    fn chain(
        &mut self,
        parent: u32,
        items: &[Item],
        retry: Option<u32>,
    ) -> Result<Option<(u32, u32)>, BuildError> {
        check_names(
            &self.scopes[parent as usize].path,
            items.iter().map(Item::name),
        )?;
        check_instance_names(&self.scopes[parent as usize].path, items)?;
        let mut ends: Option<(u32, u32)> = None;
        for item in items {
            let child = item.compile(Some(parent), retry, self)?;
            ends = Some(match ends {
                None => (start(child), completed(child)),
                Some((first, last)) => {
                    self.link(last, start(child))?;
                    (first, completed(child))
                }
            });
        }
        Ok(ends)
    }

    /// Wires a body inside `scope`: `start:scope` enters it (or completes at once when empty).
    fn body(&mut self, scope: u32, items: &[Item], retry: Option<u32>) -> Result<(), BuildError> {
        match self.chain(scope, items, retry)? {
            Some((first, last)) => {
                self.link(start(scope), first)?;
                self.link(last, completed(scope))
            }
            None => self.link(start(scope), completed(scope)),
        }
    }
}

impl Item {
    /// Adds this item's scope and transitions under `parent`; returns its scope.
    fn compile(
        &self,
        parent: Option<u32>,
        retry: Option<u32>,
        b: &mut Builder,
    ) -> Result<u32, BuildError> {
        match self {
            Item::Step { name, action } => {
                let s = b.scope(parent, name, ItemKind::Step);
                b.dynamic(
                    start(s),
                    Dynamic {
                        scope: s,
                        call: Call::Action(action.clone()),
                        yes: completed(s),
                        no: completed(s),
                        retry,
                        wait: Wait::default(),
                    },
                )?;
                Ok(s)
            }
            Item::WaitFor {
                name,
                condition,
                wait,
            } => {
                let s = b.scope(parent, name, ItemKind::WaitFor);
                b.dynamic(
                    start(s),
                    Dynamic {
                        scope: s,
                        call: Call::Condition(condition.clone(), CallKind::WaitFor),
                        yes: completed(s),
                        no: start(s),
                        retry,
                        wait: *wait,
                    },
                )?;
                Ok(s)
            }
            Item::WaitForSignal {
                name,
                signal,
                timeout,
            } => {
                if let Err(problem) = check_signal_name(signal) {
                    return Err(BuildError::BadSignalName {
                        parent: parent_path(b, parent),
                        step: name.clone(),
                        signal: signal.to_string(),
                        problem,
                    });
                }
                let s = b.scope(parent, name, ItemKind::WaitFor);
                b.dynamic(
                    start(s),
                    Dynamic {
                        scope: s,
                        call: Call::Signal(signal.clone()),
                        yes: completed(s),
                        no: start(s),
                        retry,
                        wait: Wait {
                            every: None,
                            timeout: *timeout,
                        },
                    },
                )?;
                Ok(s)
            }
            Item::Steps(steps) => {
                let s = b.scope(parent, &steps.name, ItemKind::Steps);
                b.body(s, &steps.items, retry)?;
                Ok(s)
            }
            Item::Case {
                name,
                condition,
                body,
            } => {
                let s = b.scope(parent, name, ItemKind::Case);
                let entry = b.chain(s, &body.items, retry)?;
                let yes = match entry {
                    Some((first, last)) => {
                        b.link(last, completed(s))?;
                        first
                    }
                    None => completed(s),
                };
                b.dynamic(
                    start(s),
                    Dynamic {
                        scope: s,
                        call: Call::Condition(condition.clone(), CallKind::Case),
                        yes,
                        no: completed(s),
                        retry,
                        wait: Wait::default(),
                    },
                )?;
                Ok(s)
            }
            Item::LoopUntil {
                name,
                condition,
                body,
            } => {
                let s = b.scope(parent, name, ItemKind::LoopUntil);
                let entry = b.chain(s, &body.items, retry)?;
                // The condition is asked when the body completes; an empty body asks it at once.
                let (ask_at, again) = match entry {
                    Some((first, last)) => {
                        b.link(start(s), first)?;
                        (last, first)
                    }
                    None => (start(s), start(s)),
                };
                b.dynamic(
                    ask_at,
                    Dynamic {
                        scope: s,
                        call: Call::Condition(condition.clone(), CallKind::LoopUntil),
                        yes: completed(s),
                        no: again,
                        retry,
                        wait: Wait::default(),
                    },
                )?;
                Ok(s)
            }
            Item::Retry { name, policy, body } => {
                let s = b.scope(parent, name, ItemKind::Retry);
                let scope = &mut b.scopes[s as usize];
                scope.outer_retry = retry;
                scope.policy = Some(policy.clone());
                b.body(s, &body.items, Some(s))?;
                Ok(s)
            }
            Item::Parallel { name, branches } => {
                let s = b.scope(parent, name, ItemKind::Parallel);
                let path = b.scopes[s as usize].path.clone();
                if branches.is_empty() {
                    return Err(BuildError::EmptyFanOut {
                        parent: parent_path(b, parent),
                        problem: format!(
                            "the parallel `{name}` has no branches; give it at least one"
                        ),
                    });
                }
                check_names(&path, branches.iter().map(Steps::name))?;
                let mut scopes = Vec::with_capacity(branches.len());
                for branch in branches {
                    if branch.items.is_empty() {
                        return Err(BuildError::EmptyFanOut {
                            parent: path.to_string(),
                            problem: format!(
                                "the branch `{}` has no items; give it a step or leave it out",
                                branch.name
                            ),
                        });
                    }
                    let bs = b.scope(Some(s), &branch.name, ItemKind::Steps);
                    b.body(bs, &branch.items, retry)?;
                    b.set(completed(bs), Next::Join(s))?;
                    scopes.push(bs);
                }
                b.scopes[s as usize].branches = scopes;
                b.set(start(s), Next::Fork(s))?;
                Ok(s)
            }
            Item::ForEach { name, each, body } => {
                let bad = |b: &Builder, problem: String| BuildError::BadForEach {
                    parent: parent_path(b, parent),
                    name: name.clone(),
                    problem,
                };
                if each.concurrency == 0 {
                    return Err(bad(
                        b,
                        "has a concurrency of 0, so no instance could ever run; give it at least 1"
                            .into(),
                    ));
                }
                let over = pointer_tokens(&each.over).map_err(|problem| {
                    bad(b, format!("runs over {:?}, which {problem}", each.over))
                })?;
                let results = pointer_tokens(&each.results).map_err(|problem| {
                    bad(
                        b,
                        format!("collects into {:?}, which {problem}", each.results),
                    )
                })?;
                if results.is_empty() {
                    return Err(bad(
                        b,
                        "collects its results into the whole data document (`\"\"`); name a place in it, e.g. `/results`".into(),
                    ));
                }
                let overlaps = over.starts_with(&results) || results.starts_with(&over);
                if overlaps && !over.is_empty() {
                    return Err(bad(
                        b,
                        format!(
                            "collects into {:?}, which overlaps the array it runs over ({:?}), so results would overwrite elements; collect them elsewhere",
                            each.results, each.over
                        ),
                    ));
                }
                if body.items.is_empty() {
                    return Err(BuildError::EmptyFanOut {
                        parent: parent_path(b, parent),
                        problem: format!(
                            "the for-each `{name}` has no items to run for each element; give it a step"
                        ),
                    });
                }
                let s = b.scope(parent, name, ItemKind::ForEach);
                let Some((first, last)) = b.chain(s, &body.items, retry)? else {
                    unreachable!("the body was checked to be non-empty");
                };
                b.set(last, Next::EachDone(s))?;
                b.set(start(s), Next::Each(s))?;
                b.scopes[s as usize].each = Some(Arc::new(EachSpec {
                    over,
                    results,
                    concurrency: each.concurrency,
                    entry: first,
                }));
                Ok(s)
            }
        }
    }
}

fn parent_path(b: &Builder, parent: Option<u32>) -> String {
    parent.map_or_else(String::new, |p| b.scopes[p as usize].path.to_string())
}

/// Why a text is not a JSON pointer (RFC 6901); the message completes "`<text>` ...".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// It is neither `""` nor starts with `/`.
    #[error("is not a JSON pointer: one starts with `/`, e.g. `/files`")]
    NoSlash,
    /// A `~` is not followed by `0` or `1`.
    #[error("is not a JSON pointer: `~` must be followed by `0` (for `~`) or `1` (for `/`)")]
    Tilde,
}

/// The tokens of a JSON pointer (RFC 6901), decoded (`~1` is `/`, `~0` is `~`; `""` has none):
/// how a `for_each` reads its `over` and `results`, for whoever checks them before a build.
pub fn pointer_tokens(pointer: &str) -> Result<Vec<String>, PointerError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PointerError::NoSlash);
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(PointerError::Tilde),
                    },
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

/// The longest signal name: it travels in URLs, command lines and the data document.
pub const MAX_SIGNAL_NAME: usize = 128;

/// Checks a signal name, for flows and for whoever sends signals: 1 to [`MAX_SIGNAL_NAME`]
/// ASCII letters, digits, `-`, `_` and `.`, so it is the same word in a flow file, a URL, a
/// shell and the data document's `signals` object. The error says what is wrong.
pub fn check_signal_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty; name the signal, e.g. `approve`".into());
    }
    if name.len() > MAX_SIGNAL_NAME {
        return Err(format!(
            "is {} bytes long; a signal name has at most {MAX_SIGNAL_NAME}",
            name.len()
        ));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "contains {c:?}; a signal name has only ASCII letters, digits, `-`, `_` and `.`"
        )),
        None => Ok(()),
    }
}

fn check_names<'a>(
    parent: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), BuildError> {
    let mut seen = HashSet::new();
    for (i, name) in names.into_iter().enumerate() {
        check_name(parent, i + 1, name)?;
        if !seen.insert(name) {
            return Err(BuildError::DuplicateName {
                parent: parent.to_string(),
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// Refuses `files#3` beside a for-each named `files`: both would have the path `…/files#3`.
fn check_instance_names(parent: &str, items: &[Item]) -> Result<(), BuildError> {
    for item in items {
        let Some((base, _)) = split_instance(item.name()) else {
            continue;
        };
        if let Some(each) = items
            .iter()
            .find(|other| matches!(other, Item::ForEach { name, .. } if name == base))
        {
            return Err(BuildError::InstanceName {
                parent: parent.to_string(),
                name: item.name().to_string(),
                for_each: each.name().to_string(),
            });
        }
    }
    Ok(())
}

/// `files#3` as (`files`, 3): how a path segment names instance 3 of the `for_each` `files`, so
/// a checker can refuse a sibling named like one, as the build does.
pub fn split_instance(segment: &str) -> Option<(&str, u32)> {
    let (base, number) = segment.rsplit_once('#')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, number.parse().ok()?))
}

fn check_name(parent: &str, position: usize, name: &str) -> Result<(), BuildError> {
    if name.is_empty() {
        return Err(BuildError::EmptyName {
            parent: parent.to_string(),
            position,
        });
    }
    let what = if name.contains('/') {
        Some("`/`")
    } else if name.contains(':') {
        Some("`:`")
    } else if name.chars().any(char::is_control) {
        Some("a control character")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(BuildError::BadName {
            parent: parent.to_string(),
            name: name.to_string(),
            what,
        });
    }
    match misleading(name) {
        Some(problem) => Err(BuildError::MisleadingName {
            parent: parent.to_string(),
            name: name.to_string(),
            problem,
        }),
        None => Ok(()),
    }
}

/// What makes a name misleading, if anything: a bidirectional-override character (U+202A to
/// U+202E, U+2066 to U+2069), a zero-width one (U+200B to U+200D, U+2060, U+FEFF), or nothing
/// but white space.
fn misleading(name: &str) -> Option<String> {
    for c in name.chars() {
        let what = match c {
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                "the bidirectional-override character"
            }
            '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}' => "the zero-width character",
            _ => continue,
        };
        return Some(format!("contains {what} U+{:04X}", u32::from(c)));
    }
    name.chars()
        .all(char::is_whitespace)
        .then(|| "is only white space".to_string())
}

/// Compiles a root group into a graph, checking everything that can be checked before a run.
pub(crate) fn compile(root: &Steps) -> Result<Graph, BuildError> {
    check_name("(root)", 1, &root.name)?;
    let mut b = Builder {
        scopes: Vec::new(),
        next: Vec::new(),
        dynamics: Vec::new(),
    };
    let root_scope = Item::Steps(root.clone()).compile(None, None, &mut b)?;
    debug_assert_eq!(root_scope, 0);

    let mut names = Vec::with_capacity(b.next.len());
    let mut by_name = HashMap::with_capacity(b.next.len());
    for scope in &b.scopes {
        for kind in ["start", "completed"] {
            let name: Arc<str> = format!("{kind}:{}", scope.path).into();
            by_name.insert(name.clone(), names.len() as u32);
            names.push(name);
        }
    }
    let next: Vec<Next> = b.next.iter().map(|n| n.unwrap_or(Next::End)).collect();
    let by_path = b
        .scopes
        .iter()
        .enumerate()
        .map(|(i, scope)| (scope.path.clone(), i as u32))
        .collect();
    let fans_out = b
        .scopes
        .iter()
        .any(|s| matches!(s.kind, ItemKind::Parallel | ItemKind::ForEach));
    check_static_cycles(&next, &names)?;
    let completes_retry = (0..next.len())
        .map(|e| !e.is_multiple_of(2) && b.scopes[e / 2].kind == ItemKind::Retry)
        .collect();
    Ok(Graph {
        tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
        hash: crate::definition::definition_hash(root),
        scopes: b.scopes,
        names,
        by_name,
        next,
        dynamics: b.dynamics,
        completes_retry,
        by_path,
        fans_out,
    })
}

/// Every event has at most one static successor, so a walk that meets its own path loops.
fn check_static_cycles(next: &[Next], names: &[Arc<str>]) -> Result<(), BuildError> {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut mark = vec![NEW; next.len()];
    let mut path = Vec::new();
    for from in 0..next.len() {
        let mut at = from;
        while mark[at] == NEW {
            mark[at] = ON_PATH;
            path.push(at);
            match next[at] {
                Next::Static(to) => at = to as usize,
                _ => break,
            }
        }
        if mark[at] == ON_PATH && matches!(next[at], Next::Static(_)) && path.contains(&at) {
            return Err(BuildError::StaticCycle {
                event: names[at].to_string(),
            });
        }
        for done in path.drain(..) {
            mark[done] = DONE;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_cycle_is_found() {
        let names: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let next = vec![Next::Static(1), Next::Static(2), Next::Static(1)];
        let err = check_static_cycles(&next, &names).unwrap_err();
        assert!(matches!(err, BuildError::StaticCycle { .. }), "{err}");
    }

    #[test]
    fn a_dynamic_back_edge_is_no_cycle() {
        let names: Vec<Arc<str>> = vec!["a".into(), "b".into(), "c".into()];
        let next = vec![Next::Static(1), Next::Static(2), Next::Dynamic(0)];
        assert!(check_static_cycles(&next, &names).is_ok());
    }

    #[test]
    fn each_call_kind_has_one_spelling_that_serde_shares() {
        for kind in CallKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::from(kind.as_str()))
            );
            assert_eq!(kind.as_str().parse::<CallKind>(), Ok(kind));
        }
        assert!("wait".parse::<CallKind>().is_err());
    }

    #[test]
    fn pointers_are_taken_apart_into_decoded_tokens() {
        assert_eq!(pointer_tokens("").ok(), Some(vec![]));
        assert_eq!(pointer_tokens("/").ok(), Some(vec![String::new()]));
        assert_eq!(
            pointer_tokens("/a~1b/~0/0").ok(),
            Some(vec!["a/b".to_string(), "~".to_string(), "0".to_string()])
        );
        assert!(matches!(pointer_tokens("a"), Err(PointerError::NoSlash)));
        assert!(matches!(pointer_tokens("/a~"), Err(PointerError::Tilde)));
        assert!(matches!(pointer_tokens("/a~2"), Err(PointerError::Tilde)));
    }

    #[test]
    fn instance_segments() {
        assert_eq!(split_instance("files#3"), Some(("files", 3)));
        assert_eq!(split_instance("a#b#12"), Some(("a#b", 12)));
        assert_eq!(split_instance("files#"), None);
        assert_eq!(split_instance("files#+3"), None);
        assert_eq!(split_instance("files"), None);
        assert_eq!(split_instance("files#99999999999"), None);
    }
}
