//! What a step function is: the context it is called with, what it may return, and the three
//! traits (action, condition, error handler) that native Rust functions and plugin functions
//! both implement, so a flow can mix them freely.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A boxed, sendable future: the return type of every step function, so trait objects work.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result every step function returns.
pub type StepResult<T> = Result<T, StepError>;

/// Everything a step function learns about the call it serves.
///
/// It is cheap to clone (shared strings and a shared data document), so it is passed by value and
/// a step may keep it across `.await` points.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The run this call belongs to.
    pub run_id: Arc<str>,
    /// The name of the flow (its root scope).
    pub flow: Arc<str>,
    /// The full slash-separated path of the step, e.g. `deploy.v1/release/push`.
    pub step: Arc<str>,
    /// 1 on the first try; counts up each time an enclosing `retry` restarts its group.
    pub attempt: u32,
    /// How many step calls the run has completed before this one; with the run id and step path
    /// it forms the idempotency key.
    pub sequence: u64,
    /// True when this exact call may have run before (the host crashed before saving its result).
    pub redelivered: bool,
    /// The run's data document as it is before this call.
    pub data: Arc<Value>,
}

impl StepContext {
    /// A key that is the same when this call is re-executed after a crash and different for every
    /// other call of the run, so a step can make its side effects idempotent.
    pub fn idempotency_key(&self) -> String {
        format!("{}/{}#{}", self.run_id, self.step, self.sequence)
    }
}

/// Whether retrying a failed step can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// A transient failure: an enclosing `retry` may run its group again (its error handler, if
    /// it has one, is asked).
    Retryable,
    /// A failure that retrying will not fix: never retried, by a policy or a handler, and no
    /// error handler is asked about it; the run fails at the step.
    Fatal,
}

/// Why a step function failed, as the step itself reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Whether a retry can help.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl StepError {
    /// A failure worth retrying (the default for errors converted with `?`).
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    /// A failure no retry will fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        StepError {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }

    /// True when a retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Retryable => f.write_str(&self.message),
            ErrorKind::Fatal => write!(f, "{} (fatal)", self.message),
        }
    }
}

/// Lets native steps use `?` on any standard error; such errors count as retryable.
impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError::retryable(error.to_string())
    }
}

/// What an action may return: nothing, or a JSON merge patch (RFC 7386) for the data document.
pub trait IntoPatch {
    /// The merge patch to apply, if any.
    fn into_patch(self) -> Option<Value>;
}

impl IntoPatch for () {
    fn into_patch(self) -> Option<Value> {
        None
    }
}

impl IntoPatch for Value {
    fn into_patch(self) -> Option<Value> {
        Some(self)
    }
}

impl IntoPatch for Option<Value> {
    fn into_patch(self) -> Option<Value> {
        self
    }
}

/// The three shapes of step function, shared by flow files (what a use needs) and plugins
/// (what an export is), so both speak of them alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FunctionKind {
    /// Does the work of a step (`do`).
    Action,
    /// Answers a `wait-for`, `case` or `loop-until`.
    Condition,
    /// Decides whether a `retry` group runs again.
    ErrorHandler,
}

impl FunctionKind {
    /// The WIT signature of this shape, for messages and hints.
    pub fn signature(self) -> &'static str {
        match self {
            FunctionKind::Action => "func(ctx: step-context) -> result<option<string>, step-error>",
            FunctionKind::Condition => "func(ctx: step-context) -> result<bool, step-error>",
            FunctionKind::ErrorHandler => {
                "func(ctx: step-context, error: string) -> result<bool, step-error>"
            }
        }
    }

    /// "an action", "a condition", "an error handler": for sentences.
    pub fn with_article(self) -> &'static str {
        match self {
            FunctionKind::Action => "an action",
            FunctionKind::Condition => "a condition",
            FunctionKind::ErrorHandler => "an error handler",
        }
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionKind::Action => "action",
            FunctionKind::Condition => "condition",
            FunctionKind::ErrorHandler => "error handler",
        })
    }
}

/// A step that does something (`step` in the builder, `do` in the seed and in flow files).
pub trait Action: Send + Sync {
    /// Runs the step; `Ok(Some(patch))` merges the patch into the data document.
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>>;

    /// A label for diagrams and progress displays; not part of the definition hash. Defaults
    /// to [`Action::identity`], so a plugin function is drawn as `plugin.function`.
    fn label(&self) -> String {
        self.identity().unwrap_or_default()
    }

    /// What names this function in [`crate::StepFlow::definition_hash`]; it must be the same
    /// in every build: `plugin.function` for a plugin function. `None` (the default, and what
    /// native Rust functions say) lets the hash know the function only by its kind and place
    /// in the flow, so renaming a native function does not change the hash.
    fn identity(&self) -> Option<String> {
        None
    }
}

/// A yes/no question (`wait_for`, `case`, `loop_until`).
pub trait Condition: Send + Sync {
    /// Answers the question for this run.
    fn check(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<bool>>;

    /// A label for diagrams and progress displays; not part of the definition hash. Defaults
    /// to [`Condition::identity`].
    fn label(&self) -> String {
        self.identity().unwrap_or_default()
    }

    /// What names this function in [`crate::StepFlow::definition_hash`]: `plugin.function` for
    /// a plugin function, `None` (the default) for a native one; see [`Action::identity`].
    fn identity(&self) -> Option<String> {
        None
    }
}

/// Decides whether a `retry` group runs again after `error`.
pub trait ErrorHandler: Send + Sync {
    /// `Ok(true)` restarts the group; `Ok(false)` lets the error stand; an error of its own
    /// replaces the original one for any enclosing retry (a fatal one ends the retrying).
    /// It is asked only about retryable errors: `error.kind` is always
    /// [`ErrorKind::Retryable`], since a fatal error is never retried.
    fn handle(&self, ctx: StepContext, error: StepError) -> BoxFuture<'static, StepResult<bool>>;

    /// A label for diagrams and progress displays; not part of the definition hash. Defaults
    /// to [`ErrorHandler::identity`].
    fn label(&self) -> String {
        self.identity().unwrap_or_default()
    }

    /// What names this function in [`crate::StepFlow::definition_hash`]: `plugin.function` for
    /// a plugin function, `None` (the default) for a native one; see [`Action::identity`].
    fn identity(&self) -> Option<String> {
        None
    }
}

impl<F, Fut, P> Action for F
where
    F: Fn(StepContext) -> Fut + Send + Sync,
    Fut: Future<Output = StepResult<P>> + Send + 'static,
    P: IntoPatch,
{
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        let fut = self(ctx);
        Box::pin(async move { fut.await.map(IntoPatch::into_patch) })
    }

    fn label(&self) -> String {
        short_type_name::<F>()
    }
}

impl<F, Fut> Condition for F
where
    F: Fn(StepContext) -> Fut + Send + Sync,
    Fut: Future<Output = StepResult<bool>> + Send + 'static,
{
    fn check(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(self(ctx))
    }

    fn label(&self) -> String {
        short_type_name::<F>()
    }
}

impl<F, Fut> ErrorHandler for F
where
    F: Fn(StepContext, StepError) -> Fut + Send + Sync,
    Fut: Future<Output = StepResult<bool>> + Send + 'static,
{
    fn handle(&self, ctx: StepContext, error: StepError) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(self(ctx, error))
    }

    fn label(&self) -> String {
        short_type_name::<F>()
    }
}

/// `my_crate::module::step1` becomes `step1`; closures keep a readable tail. For labels only:
/// type names are not stable between builds, so the definition hash never sees them.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    match full.find("::{{closure}}") {
        Some(at) => {
            let head = &full[..at];
            let tail = head.rsplit("::").next().unwrap_or(head);
            format!("{tail}::{{closure}}")
        }
        None => full.rsplit("::").next().unwrap_or(full).to_string(),
    }
}
