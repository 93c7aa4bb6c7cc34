//! What the model's behaviour tests share: a probe that records every call, the clock they all
//! run on, and a driver that checks after every apply that it made at most one call.
//!
//! Time is always a [`ManualClock`]: nothing sleeps or depends on how fast the machine is.
//! Each test file uses a part of these helpers, so the unused rest is not an error there.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use stepflow_model::*;

/// The manual clock's starting time (Unix milliseconds).
pub const T0: u64 = 1_700_000_000_000;

/// Records every function call as `do <path>`, `check <path>` or `handle <path>: <error>`, with
/// the context it got.
#[derive(Default)]
pub struct Probe {
    log: Mutex<Vec<String>>,
    contexts: Mutex<Vec<StepContext>>,
}

impl Probe {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn record(&self, entry: String, ctx: &StepContext) {
        self.log.lock().unwrap().push(entry);
        self.contexts.lock().unwrap().push(ctx.clone());
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The contexts of the calls made to `path`, in order.
    pub fn contexts_of(&self, path: &str) -> Vec<StepContext> {
        let contexts = self.contexts.lock().unwrap();
        contexts
            .iter()
            .filter(|c| &*c.step == path)
            .cloned()
            .collect()
    }

    /// The attempt numbers the calls to `path` saw.
    pub fn attempts_of(&self, path: &str) -> Vec<u32> {
        self.contexts_of(path).iter().map(|c| c.attempt).collect()
    }

    /// An action that succeeds.
    pub fn ok(self: &Arc<Self>) -> impl Action + 'static {
        let probe = self.clone();
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            async { Ok::<(), StepError>(()) }
        }
    }

    /// An action that fails (retryably, with "boom") on its first `n` calls.
    pub fn fails(self: &Arc<Self>, n: usize) -> impl Action + 'static {
        let probe = self.clone();
        let count = AtomicUsize::new(0);
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            let fail = count.fetch_add(1, Ordering::SeqCst) < n;
            async move {
                if fail {
                    Err(StepError::retryable("boom"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// An action that fails while `broken` is set.
    pub fn fails_while(self: &Arc<Self>, broken: &Arc<AtomicBool>) -> impl Action + 'static {
        let probe = self.clone();
        let broken = broken.clone();
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            let fail = broken.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err(StepError::retryable("disk full"))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// An action that returns `patch` as its merge patch.
    pub fn patches(self: &Arc<Self>, patch: Value) -> impl Action + 'static {
        let probe = self.clone();
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            let patch = patch.clone();
            async move { Ok::<Value, StepError>(patch) }
        }
    }

    /// A condition that gives `answers` in order, then repeats the last one.
    pub fn answers(self: &Arc<Self>, answers: &[bool]) -> impl Condition + 'static {
        let probe = self.clone();
        let answers = answers.to_vec();
        let count = AtomicUsize::new(0);
        move |ctx: StepContext| {
            probe.record(format!("check {}", ctx.step), &ctx);
            let i = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers.get(i).or(answers.last()).copied().unwrap_or(true);
            async move { Ok(answer) }
        }
    }

    /// An error handler that gives `answers` in order, then repeats the last one.
    pub fn handler(self: &Arc<Self>, answers: &[bool]) -> impl ErrorHandler + 'static {
        let probe = self.clone();
        let answers = answers.to_vec();
        let count = AtomicUsize::new(0);
        move |ctx: StepContext, error: StepError| {
            probe.record(format!("handle {}: {}", ctx.step, error.message), &ctx);
            let i = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers.get(i).or(answers.last()).copied().unwrap_or(false);
            async move { Ok(answer) }
        }
    }
}

pub async fn noop(_: StepContext) -> StepResult<()> {
    Ok(())
}

pub async fn yes(_: StepContext) -> StepResult<bool> {
    Ok(true)
}

pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

pub fn run_context(clock: &Arc<ManualClock>) -> RunContext {
    RunContext::new("run-1").with_clock(clock.clone())
}

pub fn cursor(state: &State) -> Vec<&str> {
    state.cursor.iter().map(Event::as_str).collect()
}

/// Applies until the run completes or fails, checking after every apply that it made at most one
/// call besides the error handlers of a failure, and that [`Applied::call`] reports it. Returns
/// the state and the number of applies.
pub async fn drive(
    flow: &StepFlow,
    ctx: &RunContext,
    mut state: State,
    probe: &Probe,
) -> (State, usize) {
    for applies in 1..=1000 {
        let before = probe.len();
        let applied = flow.apply_with_record(ctx, state).await;
        check_one_call(&probe.log()[before..], &applied);
        state = applied.state;
        if flow.is_completed(&state) || state.error.is_some() {
            return (state, applies);
        }
    }
    panic!("the run did not finish in 1000 applies");
}

pub fn check_one_call(calls: &[String], applied: &Applied) {
    let (handlers, others): (Vec<&String>, Vec<&String>) =
        calls.iter().partition(|c| c.starts_with("handle "));
    assert!(others.len() <= 1, "one apply made several calls: {calls:?}");
    assert_eq!(
        others.len(),
        usize::from(!applied.calls.is_empty()),
        "calls {calls:?} but record {:?}",
        applied.calls
    );
    let recorded = applied.call().map_or(0, |c| c.handlers.len());
    assert!(
        handlers.len() <= recorded,
        "handlers {handlers:?} called but {recorded} recorded: {:?}",
        applied.calls
    );
    if !handlers.is_empty() {
        let outcome = applied.call().map(|c| &c.outcome);
        assert!(
            matches!(outcome, Some(Outcome::Retrying { .. } | Outcome::Failed(_))),
            "handlers {handlers:?} called without a failure: {outcome:?}"
        );
    }
}

/// A flow of most kinds whose `wait_for` is named `name`: for the diagram and hash tests.
pub fn diagram_flow(name: &str) -> StepFlow {
    StepFlow::new(
        Steps::named("t.v1")
            .step("a", noop)
            .retry(
                "r",
                RetryPolicy::attempts(3),
                Steps::new()
                    .wait_for(name, yes)
                    .case("c", yes, Steps::new().step("x", noop)),
            )
            .loop_until("l", yes, Steps::new().step("y", noop)),
    )
    .unwrap()
}
