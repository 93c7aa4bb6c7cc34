//! The fluent API that describes a flow: a tree of items, of the six kinds of the seed and the
//! two that fan out ([`Steps::parallel`], [`Steps::for_each`]).
//!
//! Nothing here runs or checks anything; [`crate::StepFlow::new`] compiles and validates the tree.

use std::sync::Arc;
use std::time::Duration;

use crate::function::{Action, Condition, ErrorHandler};

/// A named sequence of items: the root of a flow, or a nested group.
///
/// ```
/// use stepflow_model::{Steps, StepContext, StepResult};
/// async fn build(_: StepContext) -> StepResult<()> { Ok(()) }
/// async fn ready(_: StepContext) -> StepResult<bool> { Ok(true) }
/// let flow = Steps::named("release.v1")
///     .step("build", build)
///     .wait_for("ready", ready);
/// assert_eq!(flow.name(), "release.v1");
/// ```
#[derive(Clone, Default)]
pub struct Steps {
    pub(crate) name: String,
    pub(crate) items: Vec<Item>,
}

/// One node of the flow tree.
#[derive(Clone)]
pub(crate) enum Item {
    Step {
        name: String,
        action: Arc<dyn Action>,
    },
    WaitFor {
        name: String,
        condition: Arc<dyn Condition>,
        wait: Wait,
    },
    WaitForSignal {
        name: String,
        signal: Arc<str>,
        timeout: Option<Duration>,
    },
    Steps(Steps),
    Case {
        name: String,
        condition: Arc<dyn Condition>,
        body: Steps,
    },
    LoopUntil {
        name: String,
        condition: Arc<dyn Condition>,
        body: Steps,
    },
    Retry {
        name: String,
        policy: RetryPolicy,
        body: Steps,
    },
    Parallel {
        name: String,
        branches: Vec<Steps>,
    },
    ForEach {
        name: String,
        each: ForEach,
        body: Steps,
    },
}

impl Item {
    pub(crate) fn name(&self) -> &str {
        match self {
            Item::Step { name, .. }
            | Item::WaitFor { name, .. }
            | Item::WaitForSignal { name, .. }
            | Item::Case { name, .. }
            | Item::LoopUntil { name, .. }
            | Item::Retry { name, .. }
            | Item::Parallel { name, .. }
            | Item::ForEach { name, .. } => name,
            Item::Steps(steps) => &steps.name,
        }
    }
}

impl Steps {
    /// A group with a name: the flow's root (`deploy.v1`) or a nested group.
    pub fn named(name: impl Into<String>) -> Self {
        Steps {
            name: name.into(),
            items: Vec::new(),
        }
    }

    /// An unnamed body for `case`, `loop_until` and `retry`, which give it their own name.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same items under another name (to nest a body built elsewhere, say).
    pub fn renamed(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a step that calls `action` (the seed's `Do`; `do` is a Rust keyword, and "step" is
    /// what the item is in the domain).
    pub fn step(mut self, name: impl Into<String>, action: impl Action + 'static) -> Self {
        self.items.push(Item::Step {
            name: name.into(),
            action: Arc::new(action),
        });
        self
    }

    /// Adds a step from an already shared action (a plugin function, say).
    pub fn step_shared(mut self, name: impl Into<String>, action: Arc<dyn Action>) -> Self {
        self.items.push(Item::Step {
            name: name.into(),
            action,
        });
        self
    }

    /// Waits until `condition` is true, re-checking whenever the run is applied again.
    pub fn wait_for(self, name: impl Into<String>, condition: impl Condition + 'static) -> Self {
        self.wait_for_with(name, condition, Wait::default())
    }

    /// Waits until `condition` is true, re-checking at most every `wait.every` and failing after
    /// `wait.timeout`.
    pub fn wait_for_with(
        self,
        name: impl Into<String>,
        condition: impl Condition + 'static,
        wait: Wait,
    ) -> Self {
        self.wait_for_shared(name, Arc::new(condition), wait)
    }

    /// [`Steps::wait_for_with`] for an already shared condition.
    pub fn wait_for_shared(
        mut self,
        name: impl Into<String>,
        condition: Arc<dyn Condition>,
        wait: Wait,
    ) -> Self {
        self.items.push(Item::WaitFor {
            name: name.into(),
            condition,
            wait,
        });
        self
    }

    /// Waits until a signal called `signal` has arrived for the run (from `stepflow signal`,
    /// say): a person's approval or another system's callback. Its payload replaces
    /// `signals.<signal>` in the data document. A signal that arrived before the run got here
    /// is kept for it; each signal moves at most one wait.
    pub fn wait_for_signal(self, name: impl Into<String>, signal: impl Into<Arc<str>>) -> Self {
        self.push_signal_wait(name.into(), signal.into(), None)
    }

    /// [`Steps::wait_for_signal`] that fails with a retryable error when no signal has arrived
    /// within `timeout`, so an enclosing `retry` can take it.
    pub fn wait_for_signal_within(
        self,
        name: impl Into<String>,
        signal: impl Into<Arc<str>>,
        timeout: Duration,
    ) -> Self {
        self.push_signal_wait(name.into(), signal.into(), Some(timeout))
    }

    fn push_signal_wait(
        mut self,
        name: String,
        signal: Arc<str>,
        timeout: Option<Duration>,
    ) -> Self {
        self.items.push(Item::WaitForSignal {
            name,
            signal,
            timeout,
        });
        self
    }

    /// Nests a named group.
    pub fn steps(mut self, group: Steps) -> Self {
        self.items.push(Item::Steps(group));
        self
    }

    /// Runs `body` only when `condition` is true; skips it otherwise.
    pub fn case(
        self,
        name: impl Into<String>,
        condition: impl Condition + 'static,
        body: Steps,
    ) -> Self {
        self.case_shared(name, Arc::new(condition), body)
    }

    /// [`Steps::case`] for an already shared condition.
    pub fn case_shared(
        mut self,
        name: impl Into<String>,
        condition: Arc<dyn Condition>,
        body: Steps,
    ) -> Self {
        self.items.push(Item::Case {
            name: name.into(),
            condition,
            body,
        });
        self
    }

    /// Runs `body`, then asks `condition`; runs it again until the answer is true (at least once).
    pub fn loop_until(
        self,
        name: impl Into<String>,
        condition: impl Condition + 'static,
        body: Steps,
    ) -> Self {
        self.loop_until_shared(name, Arc::new(condition), body)
    }

    /// [`Steps::loop_until`] for an already shared condition.
    pub fn loop_until_shared(
        mut self,
        name: impl Into<String>,
        condition: Arc<dyn Condition>,
        body: Steps,
    ) -> Self {
        self.items.push(Item::LoopUntil {
            name: name.into(),
            condition,
            body,
        });
        self
    }

    /// Runs `body`; when anything inside fails, `policy` decides whether the whole group restarts.
    pub fn retry(mut self, name: impl Into<String>, policy: RetryPolicy, body: Steps) -> Self {
        self.items.push(Item::Retry {
            name: name.into(),
            policy,
            body,
        });
        self
    }
}

impl Steps {
    /// Runs every branch side by side (each a named group: `Steps::named("eu")`); the item
    /// completes when all of them have. When a branch fails with an error that no `retry`
    /// inside it takes, the other branches stop (a call in flight finishes and its result is
    /// kept, but nothing after it starts) and the error goes to the retry groups around the
    /// `parallel`, as any step's error does.
    pub fn parallel(
        mut self,
        name: impl Into<String>,
        branches: impl IntoIterator<Item = Steps>,
    ) -> Self {
        self.items.push(Item::Parallel {
            name: name.into(),
            branches: branches.into_iter().collect(),
        });
        self
    }

    /// Runs `body` once for every element of an array in the data document, at most
    /// `each.concurrency` at a time: see [`ForEach`] for what each instance sees and where its
    /// results go. The item completes when every element's instance has.
    pub fn for_each(mut self, name: impl Into<String>, each: ForEach, body: Steps) -> Self {
        self.items.push(Item::ForEach {
            name: name.into(),
            each,
            body,
        });
        self
    }
}

/// What a `for_each` runs over, where its results go and how many instances run at once.
///
/// When the `for_each` starts it reads the array at `over` (a JSON pointer into the data its
/// steps would see) and fixes the number of instances: one per element, numbered from 0. The
/// steps of instance `i` see the run's data document with two fields set: `item`, the
/// element, and `index`, `i`. Their merge patches land in element `i` of the array at
/// `results` (created with one `null` per element when the `for_each` starts), never in the
/// document itself, so instances cannot overwrite each other and the results are in the
/// order of the elements. Inside a `for_each`, a nested one's `over` is read from what its
/// steps see (so `/item/parts` works) and its `results` lie inside the outer instance's place.
///
/// ```
/// use stepflow_model::ForEach;
/// let each = ForEach::new("/files", "/processed").concurrency(8);
/// assert_eq!(each.over(), "/files");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForEach {
    pub(crate) over: String,
    pub(crate) results: String,
    pub(crate) concurrency: u32,
}

impl ForEach {
    /// One instance per element of the array at `over`, results into the array at `results`
    /// (both JSON pointers, like `/files`), one instance at a time.
    pub fn new(over: impl Into<String>, results: impl Into<String>) -> Self {
        ForEach {
            over: over.into(),
            results: results.into(),
            concurrency: 1,
        }
    }

    /// Lets up to `limit` instances run at once (at least 1; the flow refuses 0).
    pub fn concurrency(mut self, limit: u32) -> Self {
        self.concurrency = limit;
        self
    }

    /// The pointer to the array the instances run over.
    pub fn over(&self) -> &str {
        &self.over
    }

    /// The pointer to the array that collects the instances' results.
    pub fn results(&self) -> &str {
        &self.results
    }

    /// How many instances may run at once.
    pub fn limit(&self) -> u32 {
        self.concurrency
    }
}

/// How a `wait_for` paces and bounds its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wait {
    /// The least time between two checks; the state records when the next check is due.
    pub every: Option<Duration>,
    /// How long the condition may stay false before the wait fails with a retryable error.
    pub timeout: Option<Duration>,
}

impl Wait {
    /// Checks at most once per `interval`.
    pub fn every(interval: Duration) -> Self {
        Wait {
            every: Some(interval),
            timeout: None,
        }
    }

    /// Fails the wait once it has lasted `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// When a failing `retry` group runs again: an error-handler function, a declarative policy, or
/// both (the policy's limits are checked first, then the handler has the last word).
#[derive(Clone, Default)]
pub struct RetryPolicy {
    pub(crate) handler: Option<Arc<dyn ErrorHandler>>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) backoff: Option<Backoff>,
}

/// Exponential back-off: the n-th retry waits `initial * multiplier^(n-1)`, capped at `max`, of
/// which the upper half is jittered so that many runs do not retry in lock-step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The growth factor per retry (at least 1).
    pub multiplier: f64,
    /// The longest wait.
    pub max: Duration,
    /// Whether to jitter (on by default).
    pub jitter: bool,
}

impl Backoff {
    /// Doubling back-off from `initial` up to `max`, with jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            multiplier: 2.0,
            max,
            jitter: true,
        }
    }

    /// The same delays without jitter (predictable, for tests and demos).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }
}

impl RetryPolicy {
    /// Asks `handler` after every failure (the seed's `Retry`): true restarts the group.
    pub fn handler(handler: impl ErrorHandler + 'static) -> Self {
        Self::handler_shared(Arc::new(handler))
    }

    /// [`RetryPolicy::handler`] for an already shared handler.
    pub fn handler_shared(handler: Arc<dyn ErrorHandler>) -> Self {
        RetryPolicy {
            handler: Some(handler),
            ..Self::default()
        }
    }

    /// Retries retryable errors until the group has run `max_attempts` times in all.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts: Some(max_attempts),
            ..Self::default()
        }
    }

    /// Adds a cap on the number of attempts.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Adds a wait before each retry.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Adds (or replaces) the error handler.
    pub fn with_handler(mut self, handler: impl ErrorHandler + 'static) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }
}
