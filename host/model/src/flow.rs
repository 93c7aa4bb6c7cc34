//! The executable flow: [`StepFlow::apply`] moves a run's state forward by at most one function
//! call, so the caller can save the state after every step.

use std::sync::Arc;

use serde_json::Value;

use crate::builder::{Backoff, Steps};
use crate::clock::{Clock, SystemClock};
use crate::function::{ErrorKind, StepContext, StepError};
use crate::graph::{
    self, BuildError, Call, CallKind, Graph, ItemKind, Next, completed, scope_of, start,
};
use crate::state::{Event, Failure, State, Status};

/// A compiled, validated flow, ready to apply to run states.
///
/// ```
/// use stepflow_model::{RunContext, State, StepContext, StepFlow, StepResult, Steps};
/// async fn step1(_: StepContext) -> StepResult<()> { Ok(()) }
/// async fn ready(_: StepContext) -> StepResult<bool> { Ok(true) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let flow = StepFlow::new(Steps::named("quickstart.v1").step("step1", step1).wait_for("ready", ready))?;
/// let ctx = RunContext::new("run-1");
/// let mut state = flow.new_state(serde_json::json!({}));
/// while !flow.is_completed(&state) {
///     state = flow.apply(&ctx, state).await;
///     // save `state` here: it is plain JSON
/// }
/// # Ok::<(), stepflow_model::BuildError>(())
/// # }).unwrap();
/// ```
pub struct StepFlow {
    graph: Graph,
    flow: Arc<str>,
}

/// Who is running: the run id, the clock, and whether the next call is a re-delivery.
#[derive(Clone)]
pub struct RunContext {
    /// The run's id, passed to every step.
    pub run_id: Arc<str>,
    /// Where time comes from (waits, timeouts, back-off).
    pub clock: Arc<dyn Clock>,
    /// Set by a runner that resumes after a crash: the next call may have run before.
    pub redelivered: bool,
}

impl RunContext {
    /// A context on the system clock.
    pub fn new(run_id: impl Into<Arc<str>>) -> Self {
        RunContext {
            run_id: run_id.into(),
            clock: Arc::new(SystemClock),
            redelivered: false,
        }
    }

    /// The same context on another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// What one apply did, for a runner's history.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The new state, to be saved.
    pub state: State,
    /// The function call made, if any.
    pub call: Option<CallRecord>,
}

/// One function call made by an apply (and the error handlers it caused).
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// The step path of the item that owns the function.
    pub step: Arc<str>,
    /// What kind of function it was.
    pub kind: CallKind,
    /// The attempt number the call saw.
    pub attempt: u32,
    /// The call's sequence number in the run.
    pub sequence: u64,
    /// Whether the call was marked as a re-delivery.
    pub redelivered: bool,
    /// How it ended; a failure carries the call's own error, even when a handler failed after it.
    pub outcome: Outcome,
    /// Every error-handler function the call's failure was offered to, innermost retry group
    /// first, with the error each was given and what it answered or its own error.
    ///
    /// Only calls of a handler function are listed: a group whose policy has no handler
    /// (`max_attempts` or back-off alone) decides without a call and is not listed, nor is a
    /// group whose limits rule a retry out before its handler would be asked (a handler is
    /// asked only while attempts remain). The list stops at the first group that restarts.
    /// Empty when the call did not fail or no handler was asked.
    pub handlers: Vec<HandlerCall>,
}

/// One error handler asked about a failed call: which retry group, the error it was given, and
/// its answer (`Ok(true)`: restart the group) or its own error, so a history can show why a
/// failure was (or was not) retried.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HandlerCall {
    /// The retry group whose handler was called.
    pub group: Arc<str>,
    /// The error the handler was given, as text: the failed call's own error, or the error of
    /// the handler before it when that one failed (a handler's error replaces the original for
    /// the groups further out, as in the seed).
    pub error: String,
    /// The handler's answer, or the text of its own error.
    pub answer: Result<bool, String>,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// An action succeeded, with the patch it returned.
    Done(Option<Value>),
    /// A condition answered.
    Answered(bool),
    /// The call failed and an enclosing retry restarts `group` (after `not_before`, if set).
    Retrying {
        /// The call's own error (what its handlers said is in [`CallRecord::handlers`]).
        error: StepError,
        /// The retry group that restarts.
        group: Arc<str>,
        /// Its next attempt number.
        attempt: u32,
    },
    /// The call failed and nothing took the error: the run has failed. The error is the call's
    /// own; what its handlers said is in [`CallRecord::handlers`].
    Failed(StepError),
}

/// Why a saved state does not fit a flow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Cursor events that this flow does not have (the definition changed under the run).
    #[error(
        "the saved run is at {}, which flow `{flow}` no longer has; finish it with the old definition or cancel it",
        .missing.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
    )]
    UnknownEvents {
        /// The flow's name.
        flow: String,
        /// The events that do not exist.
        missing: Vec<String>,
    },
    /// The item that decides what happens from a cursor event has another kind in this flow
    /// than when the state was saved (a `wait-for` edited into a `do`, say): continuing would
    /// call a different function, or the same one in another role, where the run stopped.
    #[error(
        "the saved run is at `{event}`, where `{step}` was {} and is now {} in flow `{flow}`, so the run cannot continue on this definition; finish the run with the old definition, or cancel it and start a new run",
        .was.with_article(), .now.with_article()
    )]
    ChangedKind {
        /// The flow's name.
        flow: String,
        /// The cursor event.
        event: String,
        /// The path of the item that changed kind: `x` for `start:x`, the item `x` is in for
        /// `completed:x`.
        step: String,
        /// Its kind when the state was saved.
        was: ItemKind,
        /// Its kind in this flow.
        now: ItemKind,
    },
}

impl StepFlow {
    /// Compiles and validates `root`; every problem names the path of the item at fault.
    pub fn new(root: Steps) -> Result<Self, BuildError> {
        let graph = graph::compile(&root)?;
        let flow = graph.scopes[0].path.clone();
        Ok(StepFlow { graph, flow })
    }

    /// The flow's name (its root scope).
    pub fn name(&self) -> &str {
        &self.flow
    }

    /// A fingerprint of the definition (16 hex digits), saved in each new run's state so that a
    /// runner can tell when a run resumes on a changed flow.
    ///
    /// It covers the definition's own data and nothing else: the flow's name; every item's
    /// kind, name, order and nesting; each `wait_for`'s `every` and `timeout`; each `retry`'s
    /// policy (whether it has an error handler, `max_attempts`, and the back-off's initial and
    /// longest wait, multiplier and jitter); and each function's
    /// [`identity`](crate::Action::identity), which is `plugin.function` for a plugin function.
    /// It does not cover Rust type names, labels, `Debug` output or function code: a native
    /// function counts by its kind and place alone, so renaming one (or rebuilding with another
    /// compiler) keeps the hash, and so does changing what it does. It is the same on every
    /// build and platform (FNV-1a over a versioned canonical text of the tree).
    pub fn definition_hash(&self) -> &str {
        &self.graph.hash
    }

    /// A fresh state at the start of the flow, with `data` as its data document.
    pub fn new_state(&self, data: Value) -> State {
        let mut state = State {
            data: Arc::new(data),
            definition: self.graph.hash.clone(),
            ..State::default()
        };
        self.set_cursor(&mut state, start(0));
        state
    }

    /// True when the run has finished (the cursor is exactly `completed:<root>`).
    pub fn is_completed(&self, state: &State) -> bool {
        state.cursor.len() == 1 && self.id_of(&state.cursor[0]) == Some(completed(0))
    }

    /// Where the run stands at `now_ms`.
    pub fn status(&self, state: &State, now_ms: u64) -> Status {
        if self.is_completed(state) {
            Status::Completed
        } else if let Some(error) = &state.error {
            Status::Failed(error.clone())
        } else {
            match state.not_before {
                Some(t) if t > now_ms => Status::Waiting(t),
                _ => self.signal_status(state, now_ms),
            }
        }
    }

    /// The names of the signals this flow's waits are for, in definition order, each once:
    /// a sender can refuse a signal that no wait would ever take.
    pub fn signal_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for dynamic in &self.graph.dynamics {
            if let Call::Signal(name) = &dynamic.call
                && !names.contains(&&**name)
            {
                names.push(name);
            }
        }
        names
    }

    /// The name of the signal the run stands waiting for, whether or not its inbox holds one:
    /// a runner reads its store's new signals into the state ([`State::deliver`]) while this is
    /// `Some`, and only then, so a run that waits for no signal costs no read.
    pub fn awaited_signal(&self, state: &State) -> Option<&str> {
        self.signal_wait(state).map(|(_, signal)| signal)
    }

    /// The dynamic transition and signal name of the wait for a signal the run stands at.
    fn signal_wait(&self, state: &State) -> Option<(&graph::Dynamic, &str)> {
        let dynamic = self.next_dynamic(state)?;
        match &dynamic.call {
            Call::Signal(signal) => Some((dynamic, signal)),
            _ => None,
        }
    }

    /// `Ready`, unless the run stands at a wait for a signal that its inbox lacks and whose
    /// deadline (if any) is recorded and not yet reached: an apply would do nothing.
    fn signal_status(&self, state: &State, now_ms: u64) -> Status {
        let Some((dynamic, signal)) = self.signal_wait(state) else {
            return Status::Ready;
        };
        if state.inbox.iter().any(|s| s.name == signal) {
            return Status::Ready;
        }
        let path = &*self.graph.scopes[dynamic.scope as usize].path;
        let until = state.deadlines.get(path).copied();
        match (dynamic.wait.timeout, until) {
            // The next apply records the deadline; one that has passed fails the wait.
            (Some(_), None) => Status::Ready,
            (_, Some(t)) if now_ms >= t => Status::Ready,
            _ => Status::AwaitingSignal {
                signal: signal.to_string(),
                until,
            },
        }
    }

    /// Checks that a saved state fits this flow: every cursor event must exist here, and the
    /// item that decides what happens from it must be of the kind [`State::kinds`] recorded (a
    /// `wait-for` edited into a `do` under a waiting run is refused; a finished step that
    /// changed kind is not, since what follows its `completed:` event is its parent's affair).
    /// A state saved under another definition hash is accepted when it passes; a state without
    /// recorded kinds (saved before they were) is checked by event names alone. Apply refuses
    /// the same states, recording the error.
    pub fn check_state(&self, state: &State) -> Result<(), StateError> {
        let missing: Vec<String> = state
            .cursor
            .iter()
            .filter(|e| self.id_of(e).is_none())
            .map(|e| e.name.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(StateError::UnknownEvents {
                flow: self.flow.to_string(),
                missing,
            });
        }
        self.check_kinds(state)
    }

    /// The first cursor event whose item changed kind since the state recorded it. Events this
    /// flow produced itself are skipped: they cannot have changed.
    fn check_kinds(&self, state: &State) -> Result<(), StateError> {
        if state.kinds.is_empty() {
            return Ok(());
        }
        for event in &state.cursor {
            if matches!(event.slot, Some((tag, _)) if tag == self.graph.tag) {
                continue;
            }
            let Some(id) = self.id_of(event) else {
                continue;
            };
            let scope = self.decider(id);
            match state.kinds.get(&*scope.path) {
                Some(&was) if was != scope.kind => {
                    return Err(StateError::ChangedKind {
                        flow: self.flow.to_string(),
                        event: event.name.to_string(),
                        step: scope.path.to_string(),
                        was,
                        now: scope.kind,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves the run forward: follows static transitions and makes at most one function call
    /// (plus the error handlers a failure calls). It never loses the state: on an error the
    /// cursor stays at the failing step and [`State::error`] says what happened.
    pub async fn apply(&self, ctx: &RunContext, mut state: State) -> State {
        self.advance(ctx, &mut state).await;
        state
    }

    /// [`StepFlow::apply`], also reporting the call it made.
    pub async fn apply_with_record(&self, ctx: &RunContext, mut state: State) -> Applied {
        let call = self.advance(ctx, &mut state).await;
        Applied { state, call }
    }

    /// The static part of an apply: the event and dynamic transition to call, if any.
    fn walk(&self, ctx: &RunContext, state: &mut State) -> Option<(u32, u32)> {
        if state.cursor.is_empty() {
            self.set_cursor(state, start(0));
        }
        if let Some(due) = state.not_before {
            if ctx.clock.now_ms() < due {
                return None;
            }
            state.not_before = None;
        }
        let mut at = match self.resume_point(state) {
            Ok(Some(at)) => at,
            Ok(None) => return None,
            Err(error) => {
                state.error = Some(Failure {
                    step: self.flow.to_string(),
                    kind: ErrorKind::Fatal,
                    message: error.to_string(),
                });
                return None;
            }
        };
        loop {
            match self.graph.next[at as usize] {
                Next::Static(to) => {
                    if self.graph.completes_retry[to as usize] {
                        state
                            .attempts
                            .remove(&*self.graph.scopes[scope_of(to) as usize].path);
                    }
                    at = to;
                }
                Next::Dynamic(d) => return Some((at, d)),
                Next::End => {
                    self.set_cursor(state, at);
                    state.error = None;
                    return None;
                }
            }
        }
    }

    /// The step whose function the next apply will call, and what kind of call it is; `None`
    /// when the run is complete or its state does not fit the flow. For progress displays.
    pub fn next_call(&self, state: &State) -> Option<(&str, CallKind)> {
        let dynamic = self.next_dynamic(state)?;
        let kind = match &dynamic.call {
            Call::Action(_) => CallKind::Step,
            Call::Condition(_, kind) => *kind,
            Call::Signal(_) => CallKind::WaitFor,
        };
        Some((&self.graph.scopes[dynamic.scope as usize].path, kind))
    }

    /// The dynamic transition the next apply reaches, past the static ones.
    fn next_dynamic(&self, state: &State) -> Option<&graph::Dynamic> {
        let mut at = match state.cursor.is_empty() {
            true => start(0),
            false => self.resume_point(state).ok()??,
        };
        loop {
            match self.graph.next[at as usize] {
                Next::Static(to) => at = to,
                Next::Dynamic(d) => return Some(&self.graph.dynamics[d as usize]),
                Next::End => return None,
            }
        }
    }

    /// The event to continue from: the first cursor event with a transition; `None` when done.
    fn resume_point(&self, state: &State) -> Result<Option<u32>, StateError> {
        self.check_kinds(state)?;
        let mut unknown = Vec::new();
        for event in &state.cursor {
            match self.id_of(event) {
                Some(id) if id == completed(0) && state.cursor.len() == 1 => return Ok(None),
                Some(id) if self.graph.next[id as usize] != Next::End => return Ok(Some(id)),
                Some(_) => {}
                None => unknown.push(event.name.to_string()),
            }
        }
        if unknown.is_empty() {
            // Every event is known but none leads anywhere: only a hand-edited state gets here.
            unknown = state.cursor.iter().map(|e| e.name.to_string()).collect();
        }
        Err(StateError::UnknownEvents {
            flow: self.flow.to_string(),
            missing: unknown,
        })
    }

    async fn advance(&self, ctx: &RunContext, state: &mut State) -> Option<CallRecord> {
        let (at, d) = self.walk(ctx, state)?;
        let dynamic = &self.graph.dynamics[d as usize];
        let path = &self.graph.scopes[dynamic.scope as usize].path;
        let step_ctx = self.step_context(ctx, state, path.clone(), dynamic.retry);
        let (attempt, sequence) = (step_ctx.attempt, step_ctx.sequence);
        let (kind, result) = match &dynamic.call {
            Call::Action(action) => (
                CallKind::Step,
                action.run(step_ctx).await.map(Outcome::Done),
            ),
            Call::Condition(condition, kind) => {
                if let (CallKind::WaitFor, Some(timeout)) = (kind, dynamic.wait.timeout) {
                    let t = ctx.clock.now_ms().saturating_add(millis(timeout));
                    state.deadlines.entry(path.clone()).or_insert(t);
                }
                (
                    *kind,
                    condition.check(step_ctx).await.map(Outcome::Answered),
                )
            }
            Call::Signal(signal) => match self.take_signal(ctx, state, at, dynamic, signal) {
                Some(result) => (CallKind::WaitFor, result),
                // Nothing arrived and the wait goes on: no call, nothing for the history.
                None => return None,
            },
        };
        let (outcome, handlers) = match self.settle(ctx, state, d, kind, result) {
            Ok(outcome) => (outcome, Vec::new()),
            Err(error) => {
                Box::pin(self.fail(ctx, state, at, dynamic.scope, dynamic.retry, error)).await
            }
        };
        Some(CallRecord {
            step: path.clone(),
            kind,
            attempt,
            sequence,
            redelivered: ctx.redelivered,
            outcome,
            handlers,
        })
    }

    /// A wait for `signal` at event `at`: the inbox's first signal of that name as the patch
    /// that stores its payload under `signals.<name>`; the timeout's error once the deadline
    /// has passed without one; `None` (the run stays at the wait) otherwise.
    fn take_signal(
        &self,
        ctx: &RunContext,
        state: &mut State,
        at: u32,
        dynamic: &graph::Dynamic,
        signal: &str,
    ) -> Option<Result<Outcome, StepError>> {
        let path = &self.graph.scopes[dynamic.scope as usize].path;
        let now = ctx.clock.now_ms();
        if let Some(timeout) = dynamic.wait.timeout {
            let t = now.saturating_add(millis(timeout));
            state.deadlines.entry(path.clone()).or_insert(t);
        }
        if let Some(i) = state.inbox.iter().position(|s| s.name == signal) {
            let taken = state.inbox.remove(i);
            let patch = serde_json::json!({ "signals": { signal: taken.payload } });
            return Some(Ok(Outcome::Done(Some(patch))));
        }
        if state.deadlines.get(&**path).is_some_and(|&t| now >= t) {
            state.deadlines.remove(&**path);
            let waited = dynamic.wait.timeout.unwrap_or_default();
            return Some(Err(StepError::retryable(format!(
                "gave up waiting: no signal `{signal}` arrived within {waited:?}"
            ))));
        }
        self.set_cursor(state, at);
        None
    }

    fn settle(
        &self,
        ctx: &RunContext,
        state: &mut State,
        d: u32,
        kind: CallKind,
        result: Result<Outcome, StepError>,
    ) -> Result<Outcome, StepError> {
        let dynamic = &self.graph.dynamics[d as usize];
        let path = &self.graph.scopes[dynamic.scope as usize].path;
        let now = || ctx.clock.now_ms();
        let outcome = match result {
            Ok(Outcome::Done(patch)) => {
                if kind == CallKind::WaitFor {
                    state.deadlines.remove(&**path);
                }
                if let Some(patch) = &patch {
                    json_patch::merge(Arc::make_mut(&mut state.data), patch);
                }
                self.land(state, dynamic.yes);
                Ok(Outcome::Done(patch))
            }
            Ok(Outcome::Answered(true)) => {
                if kind == CallKind::WaitFor && !state.deadlines.is_empty() {
                    state.deadlines.remove(&**path);
                }
                self.land(state, dynamic.yes);
                Ok(Outcome::Answered(true))
            }
            Ok(Outcome::Answered(false)) => {
                let timed_out = kind == CallKind::WaitFor
                    && state.deadlines.get(&**path).is_some_and(|&t| now() >= t);
                if timed_out {
                    state.deadlines.remove(&**path);
                    let waited = dynamic.wait.timeout.unwrap_or_default();
                    Err(StepError::retryable(format!(
                        "gave up waiting: the condition was still false after {waited:?}"
                    )))
                } else {
                    if let Some(every) = dynamic.wait.every {
                        // The next check is due after `every`, but never after the deadline,
                        // so a timeout shorter than `every` fires on time.
                        let next = now().saturating_add(millis(every));
                        let deadline = state.deadlines.get(&**path).copied();
                        state.not_before = Some(deadline.map_or(next, |t| next.min(t)));
                    }
                    self.set_cursor(state, dynamic.no);
                    Ok(Outcome::Answered(false))
                }
            }
            Ok(other) => Ok(other),
            Err(error) => Err(error),
        };
        if outcome.is_ok() {
            state.error = None;
            state.calls += 1;
        }
        outcome
    }

    /// Offers `own` (the call's error) to the enclosing retry groups, innermost first, as the
    /// seed does: a group that declines (or whose handler fails) passes the error on to the
    /// next one out, and a handler's own error replaces the one the next group is given. The
    /// outcome keeps the call's own error; every handler asked is returned, in order.
    ///
    /// When nothing takes the error, [`State::error`] is the call's own error, and the message
    /// says which handlers failed after it (e.g. "boom; the error handler of `x/r` failed: ...").
    async fn fail(
        &self,
        ctx: &RunContext,
        state: &mut State,
        at: u32,
        owner: u32,
        mut retry: Option<u32>,
        own: StepError,
    ) -> (Outcome, Vec<HandlerCall>) {
        let mut handlers = Vec::new();
        // What the next group is offered: the call's error, or the last failed handler's.
        let mut offered: Option<StepError> = None;
        while let Some(group) = retry {
            let scope = &self.graph.scopes[group as usize];
            let policy = scope.policy.as_ref();
            let attempt = state.attempts.get(&*scope.path).copied().unwrap_or(1);
            retry = scope.outer_retry;
            let Some(policy) = policy else { continue };
            let error = offered.as_ref().unwrap_or(&own);
            // A fatal error is never retried, and no handler is asked about it: it goes
            // straight out to the run (as does a handler's own fatal error).
            if !error.is_retryable() {
                break;
            }
            if policy.max_attempts.is_some_and(|max| attempt >= max) {
                continue;
            }
            if let Some(handler) = &policy.handler {
                let handler_ctx = self.step_context(ctx, state, scope.path.clone(), Some(group));
                let answer = handler.handle(handler_ctx, error.clone()).await;
                let given = error.to_string();
                let restart = matches!(answer, Ok(true));
                handlers.push(HandlerCall {
                    group: scope.path.clone(),
                    error: given,
                    answer: match answer {
                        Ok(yes) => Ok(yes),
                        Err(handler_error) => {
                            let text = handler_error.to_string();
                            offered = Some(handler_error);
                            Err(text)
                        }
                    },
                });
                if !restart {
                    continue;
                }
            }
            // Restart the group: a fresh count for everything nested inside it.
            let prefix = format!("{}/", scope.path);
            state.attempts.retain(|k, _| !k.starts_with(&prefix));
            state.deadlines.retain(|k, _| !k.starts_with(&prefix));
            state.attempts.insert(scope.path.clone(), attempt + 1);
            if let Some(backoff) = policy.backoff {
                let delay = backoff_delay(&backoff, attempt, &ctx.run_id, &scope.path);
                state.not_before = Some(ctx.clock.now_ms().saturating_add(delay));
            }
            state.error = None;
            state.calls += 1;
            self.set_cursor(state, start(group));
            let outcome = Outcome::Retrying {
                error: own,
                group: scope.path.clone(),
                attempt: attempt + 1,
            };
            return (outcome, handlers);
        }
        // Nobody took it: the cursor stays at the failing step.
        self.set_cursor(state, at);
        let mut message = own.message.clone();
        for call in &handlers {
            if let Err(handler_error) = &call.answer {
                message.push_str(&format!(
                    "; the error handler of `{}` failed: {handler_error}",
                    call.group
                ));
            }
        }
        state.error = Some(Failure {
            step: self.graph.scopes[owner as usize].path.to_string(),
            kind: own.kind,
            message,
        });
        (Outcome::Failed(own), handlers)
    }

    fn step_context(
        &self,
        ctx: &RunContext,
        state: &State,
        step: Arc<str>,
        retry: Option<u32>,
    ) -> StepContext {
        let attempt = match retry {
            Some(r) if !state.attempts.is_empty() => state
                .attempts
                .get(&*self.graph.scopes[r as usize].path)
                .copied()
                .unwrap_or(1),
            _ => 1,
        };
        StepContext {
            run_id: ctx.run_id.clone(),
            flow: self.flow.clone(),
            step,
            attempt,
            sequence: state.calls,
            redelivered: ctx.redelivered,
            data: state.data.clone(),
        }
    }

    /// Sets the cursor after a call; when only static transitions remain before the flow's end,
    /// goes straight to `completed:<root>`, so the caller sees completion without another apply.
    fn land(&self, state: &mut State, dest: u32) {
        let mut at = dest;
        loop {
            match self.graph.next[at as usize] {
                Next::Static(to) => at = to,
                Next::Dynamic(_) => break self.set_cursor(state, dest),
                Next::End => {
                    state.attempts.clear();
                    break self.set_cursor(state, at);
                }
            }
        }
    }

    /// Moves the cursor to `at` alone, and records the kind of the item that decides what happens
    /// from it ([`State::kinds`]).
    fn set_cursor(&self, state: &mut State, at: u32) {
        if state.cursor.len() == 1
            && state.cursor[0].slot == Some((self.graph.tag, at))
            && state.kinds.len() == 1
        {
            return;
        }
        let event = self.event(at);
        if state.cursor.len() == 1 {
            state.cursor[0] = event;
        } else {
            state.cursor.clear();
            state.cursor.push(event);
        }
        let scope = self.decider(at);
        let recorded = state.kinds.len() == 1 && state.kinds.get(&*scope.path) == Some(&scope.kind);
        if !recorded {
            state.kinds.clear();
            state.kinds.insert(scope.path.clone(), scope.kind);
        }
    }

    /// The item whose kind decides what happens from event `id`: for `start:x`, `x` itself; for
    /// `completed:x`, the item `x` is in (it moves on to the next sibling, asks a `loop-until`
    /// again, ...), or the root for `completed:<root>`.
    fn decider(&self, id: u32) -> &graph::Scope {
        let scope = &self.graph.scopes[scope_of(id) as usize];
        match scope.parent {
            Some(parent) if id == completed(scope_of(id)) => &self.graph.scopes[parent as usize],
            _ => scope,
        }
    }

    pub(crate) fn event(&self, id: u32) -> Event {
        Event {
            name: self.graph.names[id as usize].clone(),
            slot: Some((self.graph.tag, id)),
        }
    }

    fn id_of(&self, event: &Event) -> Option<u32> {
        match event.slot {
            Some((tag, id)) if tag == self.graph.tag => Some(id),
            _ => self.graph.by_name.get(&event.name).copied(),
        }
    }

    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }
}

/// The wait before retry number `attempt` (1 = after the first failure), in milliseconds.
/// Jitter comes from a hash of the run, group and attempt, so it is reproducible.
fn backoff_delay(backoff: &Backoff, attempt: u32, run_id: &str, group: &str) -> u64 {
    let factor = backoff
        .multiplier
        .max(1.0)
        .powi(attempt.saturating_sub(1) as i32);
    let max = millis(backoff.max) as f64;
    let full = (millis(backoff.initial) as f64 * factor).min(max).max(0.0);
    if !backoff.jitter {
        return full as u64;
    }
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(attempt);
    for byte in run_id.bytes().chain(group.bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    (full / 2.0 + unit * full / 2.0) as u64
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
            .without_jitter();
        let delays: Vec<u64> = (1..=6).map(|a| backoff_delay(&b, a, "r", "g")).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_is_reproducible() {
        let b = Backoff::exponential(Duration::from_millis(1000), Duration::from_secs(60));
        for attempt in 1..5 {
            let full = 1000u64 << (attempt - 1);
            let d = backoff_delay(&b, attempt, "run", "group");
            assert!(
                d >= full / 2 && d <= full,
                "{d} not in [{}, {full}]",
                full / 2
            );
            assert_eq!(d, backoff_delay(&b, attempt, "run", "group"));
        }
        assert_ne!(
            backoff_delay(&b, 3, "run-a", "g"),
            backoff_delay(&b, 3, "run-b", "g")
        );
    }
}
