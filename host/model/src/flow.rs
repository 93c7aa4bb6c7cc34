//! The executable flow: [`StepFlow::apply`] moves a run's state forward by at most one function
//! call per strand (one, unless the run is inside a `parallel` or a `for_each`), so the caller
//! can save the state after every step.

use std::sync::Arc;

use serde_json::Value;

use crate::builder::{Backoff, Steps};
use crate::clock::{Clock, SystemClock};
use crate::function::{BoxFuture, ErrorKind, StepContext, StepError, StepResult};
use crate::graph::{
    self, BuildError, Call, CallKind, Graph, ItemKind, Next, completed, scope_of, start,
};
use crate::state::{Event, Failure, State, Status};
use crate::strands::{Strand, Work};

/// What a strand does next, seen without moving it.
enum Peek<'a> {
    /// It calls a function (or takes a signal).
    Call(&'a graph::Dynamic),
    /// It fans out or in, which an apply does without a call.
    Moves,
    /// It waits for its sibling branches, or the run is complete.
    Parked,
}

/// A call an apply started: the strand's slot, the event and dynamic transition it left from,
/// and what the call saw.
struct Started {
    k: usize,
    at: u32,
    d: u32,
    path: Arc<str>,
    attempt: u32,
    sequence: u64,
}

/// A call's result, to come: the function's own future (no second box around it), or a
/// signal wait's result at once.
enum Pending {
    Action(BoxFuture<'static, StepResult<Option<Value>>>),
    Condition(BoxFuture<'static, StepResult<bool>>),
    Ready(Result<Outcome, StepError>),
}

impl Pending {
    async fn resolve(self) -> Result<Outcome, StepError> {
        match self {
            Pending::Action(run) => run.await.map(Outcome::Done),
            Pending::Condition(check) => check.await.map(Outcome::Answered),
            Pending::Ready(result) => result,
        }
    }
}

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
    /// The function calls made, in strand order: none, one, or with several strands up to one
    /// per strand.
    pub calls: Vec<CallRecord>,
}

impl Applied {
    /// The first call the apply made: the only one, for a run with one strand.
    pub fn call(&self) -> Option<&CallRecord> {
        self.calls.first()
    }
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

    /// Where the run stands at `now_ms`. With several strands: `Ready` when any strand can move,
    /// else waiting for the earliest strand's time or for a signal.
    pub fn status(&self, state: &State, now_ms: u64) -> Status {
        if self.is_completed(state) {
            return Status::Completed;
        }
        if let Some(error) = &state.error {
            return Status::Failed(error.clone());
        }
        if state.cursor.len() <= 1 {
            return match state.not_before {
                Some(t) if t > now_ms => Status::Waiting(t),
                _ => self.signal_status(state, &self.first_strand(state), now_ms),
            };
        }
        let mut earliest: Option<u64> = None;
        let mut awaited: Option<String> = None;
        for event in &state.cursor {
            let Some(strand) = self.resolve(event) else {
                // The next apply records the problem.
                return Status::Ready;
            };
            if let Some(&t) = state.due.get(&event.name)
                && t > now_ms
            {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
                continue;
            }
            match self.peek(&strand, state) {
                Peek::Parked => {}
                Peek::Moves => return Status::Ready,
                Peek::Call(_) => match self.signal_status(state, &Some(strand), now_ms) {
                    Status::AwaitingSignal { signal, until } => {
                        if let Some(t) = until {
                            earliest = Some(earliest.map_or(t, |e| e.min(t)));
                        }
                        awaited.get_or_insert(signal);
                    }
                    _ => return Status::Ready,
                },
            }
        }
        match (awaited, earliest) {
            (Some(signal), until) => Status::AwaitingSignal { signal, until },
            (None, Some(t)) => Status::Waiting(t),
            (None, None) => Status::Ready,
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

    /// The name of a signal the run stands waiting for (with several strands, the first
    /// strand's that waits for one), whether or not its inbox holds one: a runner reads its
    /// store's new signals into the state ([`State::deliver`]) while this is `Some`, and only
    /// then, so a run that waits for no signal costs no read.
    pub fn awaited_signal(&self, state: &State) -> Option<&str> {
        self.strands_of(state)
            .into_iter()
            .find_map(|strand| match self.peek(&strand, state) {
                Peek::Call(dynamic) => match &dynamic.call {
                    Call::Signal(signal) => Some(&**signal),
                    _ => None,
                },
                _ => None,
            })
    }

    /// `Ready`, unless the strand stands at a wait for a signal that its inbox lacks and whose
    /// deadline (if any) is recorded and not yet reached: an apply would do nothing there.
    fn signal_status(&self, state: &State, strand: &Option<Strand>, now_ms: u64) -> Status {
        let Some(strand) = strand else {
            return Status::Ready;
        };
        let Peek::Call(dynamic) = self.peek(strand, state) else {
            return Status::Ready;
        };
        let Call::Signal(signal) = &dynamic.call else {
            return Status::Ready;
        };
        if state.inbox.iter().any(|s| s.name == **signal) {
            return Status::Ready;
        }
        let until = if state.deadlines.is_empty() {
            None
        } else {
            let path = self.path(dynamic.scope, &strand.instance);
            state.deadlines.get(&path).copied()
        };
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
            .filter(|e| self.resolve(e).is_none())
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
            let Some(strand) = self.resolve(event) else {
                continue;
            };
            let scope = self.decider(strand.id);
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
    /// per strand (plus the error handlers a failure calls); the calls of several strands run
    /// concurrently. It never loses the state: on an error the cursor stays at the failing
    /// step and [`State::error`] says what happened.
    pub async fn apply(&self, ctx: &RunContext, mut state: State) -> State {
        self.advance(ctx, &mut state).await;
        state
    }

    /// [`StepFlow::apply`], also reporting the calls it made.
    pub async fn apply_with_record(&self, ctx: &RunContext, mut state: State) -> Applied {
        let calls = self.advance(ctx, &mut state).await;
        Applied { state, calls }
    }

    /// The strands of a saved state, with when each may go on; `Ok(None)` when the run is
    /// complete.
    fn load(&self, state: &State) -> Result<Option<Work>, StateError> {
        self.check_kinds(state)?;
        if state.cursor.len() <= 1 || !self.graph.fans_out {
            return Ok(self
                .resume_point(state)?
                .map(|strand| Work::new(vec![strand], vec![state.not_before])));
        }
        let mut strands = Vec::with_capacity(state.cursor.len());
        let mut unknown = Vec::new();
        for event in &state.cursor {
            match self.resolve(event) {
                // Several strands and one at the flow's end: only a hand-edited state.
                Some(strand) if strand.id != completed(0) && !strands.contains(&strand) => {
                    strands.push(strand);
                }
                _ => unknown.push(event.name.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(StateError::UnknownEvents {
                flow: self.flow.to_string(),
                missing: unknown,
            });
        }
        let due = state
            .cursor
            .iter()
            .map(|e| state.due.get(&e.name).copied())
            .collect();
        Ok(Some(Work::new(strands, due)))
    }

    /// The strands of a state as they stand, for looking ahead (no checks).
    fn strands_of(&self, state: &State) -> Vec<Strand> {
        if state.cursor.len() <= 1 || !self.graph.fans_out {
            return self.first_strand(state).into_iter().collect();
        }
        state
            .cursor
            .iter()
            .filter_map(|e| self.resolve(e))
            .collect()
    }

    /// The one strand of a run that has one (`start:<root>` before it starts).
    fn first_strand(&self, state: &State) -> Option<Strand> {
        match state.cursor.is_empty() {
            true => Some(Strand::at(start(0))),
            false => self.resume_point(state).ok()?,
        }
    }

    /// What the strand does next, past the static transitions, without moving it.
    fn peek(&self, strand: &Strand, state: &State) -> Peek<'_> {
        let mut at = strand.id;
        loop {
            match self.graph.next[at as usize] {
                Next::Static(to) => at = to,
                Next::Dynamic(d) => return Peek::Call(&self.graph.dynamics[d as usize]),
                Next::End => return Peek::Parked,
                Next::Join(p) => {
                    let all = self.graph.scopes[p as usize].branches.iter().all(|&b| {
                        b == scope_of(at)
                            || state.cursor.iter().any(|e| {
                                self.resolve(e).is_some_and(|s| {
                                    s.id == completed(b) && s.instance == strand.instance
                                })
                            })
                    });
                    return if all { Peek::Moves } else { Peek::Parked };
                }
                Next::Fork(_) | Next::Each(_) | Next::EachDone(_) => return Peek::Moves,
            }
        }
    }

    /// Walks the strand in slot `k` through the transitions that call nothing; returns the
    /// event and dynamic transition it stops at, if it stops at a call.
    fn walk(&self, state: &mut State, work: &mut Work, k: usize) -> Option<(u32, u32)> {
        loop {
            let strand = work.strands[k].as_mut()?;
            let at = strand.id;
            match self.graph.next[at as usize] {
                Next::Static(to) => {
                    if self.graph.completes_retry[to as usize] && !state.attempts.is_empty() {
                        let path = self.path(scope_of(to), &strand.instance);
                        state.attempts.remove(&path);
                    }
                    strand.id = to;
                }
                Next::Dynamic(d) => return Some((at, d)),
                Next::End => {
                    state.error = None;
                    return None;
                }
                Next::Fork(_) | Next::Join(_) | Next::Each(_) | Next::EachDone(_) => {
                    match self.fan_out(state, work, k) {
                        Ok(true) => {}
                        Ok(false) => return None,
                        Err(error) => {
                            if !work.failed {
                                work.failed = true;
                                state.error = Some(Failure {
                                    step: error.step.to_string(),
                                    kind: ErrorKind::Fatal,
                                    message: error.message,
                                });
                            }
                            return None;
                        }
                    }
                }
            }
        }
    }

    /// Writes the strands back into the state: the cursor, the kinds of their deciding items,
    /// and when each may go on.
    fn store(&self, state: &mut State, work: Work) {
        let mut strands = Vec::with_capacity(work.strands.len());
        let mut due = Vec::with_capacity(work.strands.len());
        for (strand, t) in work.strands.into_iter().zip(work.due) {
            if let Some(strand) = strand {
                strands.push(strand);
                due.push(t);
            }
        }
        if let [one] = strands.as_slice()
            && one.instance.is_empty()
        {
            self.set_cursor(state, one.id);
            state.not_before = due[0];
            state.due.clear();
            return;
        }
        state.not_before = None;
        state.due.clear();
        state.kinds.clear();
        state.cursor.clear();
        let single = strands.len() == 1;
        for (strand, t) in strands.iter().zip(due) {
            let event = self.strand_event(strand);
            match t {
                Some(t) if single => state.not_before = Some(t),
                Some(t) => {
                    state.due.insert(event.name.clone(), t);
                }
                None => {}
            }
            let scope = self.decider(strand.id);
            state.kinds.insert(scope.path.clone(), scope.kind);
            state.cursor.push(event);
        }
    }

    /// The step whose function the next apply will call (with several strands, the first
    /// strand's that stands at a call), and what kind of call it is; `None` when the run is
    /// complete or its state does not fit the flow. For progress displays.
    pub fn next_call(&self, state: &State) -> Option<(Arc<str>, CallKind)> {
        self.strands_of(state).into_iter().find_map(|strand| {
            let Peek::Call(dynamic) = self.peek(&strand, state) else {
                return None;
            };
            let kind = match &dynamic.call {
                Call::Action(_) => CallKind::Step,
                Call::Condition(_, kind) => *kind,
                Call::Signal(_) => CallKind::WaitFor,
            };
            Some((self.path(dynamic.scope, &strand.instance), kind))
        })
    }

    /// The strand to continue from: the first cursor event with a transition; `None` when
    /// done.
    fn resume_point(&self, state: &State) -> Result<Option<Strand>, StateError> {
        if state.cursor.is_empty() {
            return Ok(Some(Strand::at(start(0))));
        }
        let mut unknown = Vec::new();
        for event in &state.cursor {
            match self.resolve(event) {
                Some(s) if s.id == completed(0) && state.cursor.len() == 1 => return Ok(None),
                Some(s) if self.graph.next[s.id as usize] != Next::End => return Ok(Some(s)),
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

    async fn advance(&self, ctx: &RunContext, state: &mut State) -> Vec<CallRecord> {
        if state.cursor.is_empty() {
            self.set_cursor(state, start(0));
        }
        let now = ctx.clock.now_ms();
        if state.cursor.len() == 1
            && let Some(due) = state.not_before
            && now < due
        {
            return Vec::new();
        }
        let mut work = match self.load(state) {
            Ok(Some(work)) => work,
            Ok(None) => return Vec::new(),
            Err(error) => {
                state.error = Some(Failure {
                    step: self.flow.to_string(),
                    kind: ErrorKind::Fatal,
                    message: error.to_string(),
                });
                return Vec::new();
            }
        };
        // Every strand that may go on walks to its call.
        let mut stops = Vec::new();
        let mut k = 0;
        while k < work.strands.len() {
            match work.due[k] {
                Some(t) if now < t => {}
                _ => {
                    work.due[k] = None;
                    if let Some((at, d)) = self.walk(state, &mut work, k) {
                        stops.push((k, at, d));
                    }
                }
            }
            k += 1;
        }
        // The calls, side by side.
        let mut calls = Vec::with_capacity(stops.len());
        let mut pending = Vec::with_capacity(stops.len());
        for (k, at, d) in stops {
            let Some(strand) = work.strands[k].clone() else {
                continue;
            };
            let dynamic = &self.graph.dynamics[d as usize];
            let path = self.path(dynamic.scope, &strand.instance);
            let offset = calls.len() as u64;
            let step_ctx =
                self.step_context(ctx, state, &strand, dynamic.scope, dynamic.retry, offset);
            let (attempt, sequence) = (step_ctx.attempt, step_ctx.sequence);
            let started = Started {
                k,
                at,
                d,
                path,
                attempt,
                sequence,
            };
            match &dynamic.call {
                Call::Action(action) => {
                    pending.push(Pending::Action(action.run(step_ctx)));
                    calls.push((started, CallKind::Step));
                }
                Call::Condition(condition, kind) => {
                    if let (CallKind::WaitFor, Some(timeout)) = (kind, dynamic.wait.timeout) {
                        let t = now.saturating_add(millis(timeout));
                        state.deadlines.entry(started.path.clone()).or_insert(t);
                    }
                    pending.push(Pending::Condition(condition.check(step_ctx)));
                    calls.push((started, *kind));
                }
                Call::Signal(signal) => {
                    // Nothing arrived and the wait goes on: no call, nothing for the history.
                    if let Some(result) =
                        self.take_signal(ctx, state, &started.path, dynamic, signal)
                    {
                        pending.push(Pending::Ready(result));
                        calls.push((started, CallKind::WaitFor));
                    }
                }
            }
        }
        let results = match pending.len() {
            0 => Vec::new(),
            1 => match pending.pop() {
                Some(one) => vec![one.resolve().await],
                None => Vec::new(),
            },
            _ => futures_util::future::join_all(pending.into_iter().map(Pending::resolve)).await,
        };
        // Settled in strand order: first every success (its result is kept even when another
        // strand's failure ends its strand), then the failures.
        let mut records: Vec<Option<CallRecord>> = vec![None; calls.len()];
        let mut failures = Vec::new();
        for (i, ((started, kind), result)) in calls.iter().zip(results).enumerate() {
            match result {
                Ok(outcome) => match self.settle(ctx, state, &mut work, started, *kind, outcome) {
                    Ok(outcome) => {
                        records[i] = Some(self.record(ctx, started, *kind, outcome, Vec::new()))
                    }
                    Err(error) => failures.push((i, error)),
                },
                Err(error) => failures.push((i, error)),
            }
        }
        for (i, error) in failures {
            let (started, kind) = &calls[i];
            let dynamic = &self.graph.dynamics[started.d as usize];
            let (outcome, handlers) = match work.ended_by[started.k].clone() {
                Some((group, attempt)) if work.strands[started.k].is_none() => {
                    state.calls += 1;
                    (
                        Outcome::Retrying {
                            error,
                            group,
                            attempt,
                        },
                        Vec::new(),
                    )
                }
                _ => {
                    Box::pin(self.fail(
                        ctx,
                        state,
                        &mut work,
                        started,
                        dynamic.scope,
                        dynamic.retry,
                        error,
                    ))
                    .await
                }
            };
            records[i] = Some(self.record(ctx, started, *kind, outcome, handlers));
        }
        if self.graph.fans_out {
            // In a flow that fans out, every strand moves on to its next call (or its join) now,
            // so the state shows where each one is and a finished run is complete at once.
            let mut k = 0;
            while k < work.strands.len() {
                if work.due[k].is_none_or(|t| now >= t) {
                    self.walk(state, &mut work, k);
                }
                k += 1;
            }
        }
        self.store(state, work);
        records.into_iter().flatten().collect()
    }

    fn record(
        &self,
        ctx: &RunContext,
        started: &Started,
        kind: CallKind,
        outcome: Outcome,
        handlers: Vec<HandlerCall>,
    ) -> CallRecord {
        CallRecord {
            step: started.path.clone(),
            kind,
            attempt: started.attempt,
            sequence: started.sequence,
            redelivered: ctx.redelivered,
            outcome,
            handlers,
        }
    }

    /// A wait for `signal` at `path`: the inbox's first signal of that name as the patch that
    /// stores its payload under `signals.<name>`; the timeout's error once the deadline has
    /// passed without one; `None` (the strand stays at the wait) otherwise.
    fn take_signal(
        &self,
        ctx: &RunContext,
        state: &mut State,
        path: &Arc<str>,
        dynamic: &graph::Dynamic,
        signal: &str,
    ) -> Option<Result<Outcome, StepError>> {
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
        None
    }

    fn settle(
        &self,
        ctx: &RunContext,
        state: &mut State,
        work: &mut Work,
        started: &Started,
        kind: CallKind,
        outcome: Outcome,
    ) -> Result<Outcome, StepError> {
        let dynamic = &self.graph.dynamics[started.d as usize];
        let path = &started.path;
        let k = started.k;
        let Some(instance) = work.strands[k].as_ref().map(|s| s.instance.clone()) else {
            return Ok(outcome);
        };
        let now = || ctx.clock.now_ms();
        let outcome = match outcome {
            Outcome::Done(patch) => {
                if kind == CallKind::WaitFor {
                    state.deadlines.remove(&**path);
                }
                if let Some(patch) = &patch {
                    self.merge_patch(state, dynamic.scope, &instance, patch);
                }
                self.land(state, work, k, dynamic.yes);
                Ok(Outcome::Done(patch))
            }
            Outcome::Answered(true) => {
                if kind == CallKind::WaitFor && !state.deadlines.is_empty() {
                    state.deadlines.remove(&**path);
                }
                self.land(state, work, k, dynamic.yes);
                Ok(Outcome::Answered(true))
            }
            Outcome::Answered(false) => {
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
                        work.due[k] = Some(deadline.map_or(next, |t| next.min(t)));
                    }
                    if let Some(strand) = work.strands[k].as_mut() {
                        strand.id = dynamic.no;
                    }
                    Ok(Outcome::Answered(false))
                }
            }
            other => Ok(other),
        };
        if outcome.is_ok() {
            if !work.failed {
                state.error = None;
            }
            state.calls += 1;
        }
        outcome
    }

    /// Offers `own` (the call's error) to the enclosing retry groups, innermost first, as the
    /// seed does: a group that declines (or whose handler fails) passes the error on to the
    /// next one out, and a handler's own error replaces the one the next group is given. The
    /// outcome keeps the call's own error; every handler asked is returned, in order. A group
    /// that restarts ends every other strand inside it.
    ///
    /// When nothing takes the error, [`State::error`] is the call's own error (the first such
    /// error of the apply, with several strands), and the message says which handlers failed
    /// after it (e.g. "boom; the error handler of `x/r` failed: ...").
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        ctx: &RunContext,
        state: &mut State,
        work: &mut Work,
        started: &Started,
        owner: u32,
        mut retry: Option<u32>,
        own: StepError,
    ) -> (Outcome, Vec<HandlerCall>) {
        let k = started.k;
        let instance = work.strands[k]
            .as_ref()
            .map(|s| s.instance.clone())
            .unwrap_or_default();
        let mut handlers = Vec::new();
        // What the next group is offered: the call's error, or the last failed handler's.
        let mut offered: Option<StepError> = None;
        while let Some(group) = retry {
            let scope = &self.graph.scopes[group as usize];
            let policy = scope.policy.as_ref();
            let group_instance = &instance[..scope.instanced.len().min(instance.len())];
            let group_path = self.path(group, group_instance);
            let attempt = state.attempts.get(&*group_path).copied().unwrap_or(1);
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
                let strand = Strand {
                    id: start(group),
                    instance: group_instance.to_vec(),
                };
                let handler_ctx = self.step_context(ctx, state, &strand, group, Some(group), 0);
                let answer = handler.handle(handler_ctx, error.clone()).await;
                let given = error.to_string();
                let restart = matches!(answer, Ok(true));
                handlers.push(HandlerCall {
                    group: group_path.clone(),
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
            // Restart the group: a fresh count for everything nested inside it, and no other
            // strand left inside it.
            let prefix = format!("{group_path}/");
            state.attempts.retain(|k, _| !k.starts_with(&prefix));
            state.deadlines.retain(|k, _| !k.starts_with(&prefix));
            state.each.retain(|k, _| !k.starts_with(&prefix));
            state.attempts.insert(group_path.clone(), attempt + 1);
            for j in 0..work.strands.len() {
                let inside = work.strands[j].as_ref().is_some_and(|s| {
                    let path = self.path(scope_of(s.id), &s.instance);
                    path.starts_with(&prefix)
                });
                if j != k && inside {
                    work.end(j);
                    work.ended_by[j] = Some((group_path.clone(), attempt + 1));
                }
            }
            work.strands[k] = Some(Strand {
                id: start(group),
                instance: group_instance.to_vec(),
            });
            work.due[k] = policy.backoff.map(|backoff| {
                let delay = backoff_delay(&backoff, attempt, &ctx.run_id, &group_path);
                ctx.clock.now_ms().saturating_add(delay)
            });
            if !work.failed {
                state.error = None;
            }
            state.calls += 1;
            let outcome = Outcome::Retrying {
                error: own,
                group: group_path,
                attempt: attempt + 1,
            };
            return (outcome, handlers);
        }
        // Nobody took it: the strand stays at the failing step.
        if let Some(strand) = work.strands[k].as_mut() {
            strand.id = started.at;
        }
        if !work.failed {
            work.failed = true;
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
                step: self.path(owner, &instance).to_string(),
                kind: own.kind,
                message,
            });
        }
        (Outcome::Failed(own), handlers)
    }

    /// The context of a call of `scope` by `strand`: the data it sees, its attempt (that of
    /// the innermost retry group `retry`) and its sequence number (`offset` after the run's
    /// count, for the calls of several strands in one apply).
    fn step_context(
        &self,
        ctx: &RunContext,
        state: &State,
        strand: &Strand,
        scope: u32,
        retry: Option<u32>,
        offset: u64,
    ) -> StepContext {
        let attempt = match retry {
            Some(r) if !state.attempts.is_empty() => {
                let levels = self.graph.scopes[r as usize].instanced.len();
                let path = self.path(r, &strand.instance[..levels.min(strand.instance.len())]);
                state.attempts.get(&*path).copied().unwrap_or(1)
            }
            _ => 1,
        };
        StepContext {
            run_id: ctx.run_id.clone(),
            flow: self.flow.clone(),
            step: self.path(scope, &strand.instance),
            attempt,
            sequence: state.calls + offset,
            redelivered: ctx.redelivered,
            data: self.view(&state.data, scope, &strand.instance),
        }
    }

    /// Moves the strand in slot `k` after a call; when only static transitions remain before
    /// the flow's end, goes straight to `completed:<root>`, so the caller sees completion
    /// without another apply.
    fn land(&self, state: &mut State, work: &mut Work, k: usize, dest: u32) {
        let Some(strand) = work.strands[k].as_mut() else {
            return;
        };
        let mut at = dest;
        strand.id = loop {
            match self.graph.next[at as usize] {
                Next::Static(to) => at = to,
                Next::End => {
                    state.attempts.clear();
                    break at;
                }
                _ => break dest,
            }
        };
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
            instance: Vec::new(),
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
