//! How a flow behaves, item kind by item kind, and what it does better than the seed: a failed
//! apply keeps the state, a data document, attempts and back-off in the saved state, paced and
//! bounded waits, checked resumption, build validation and introspection.
//!
//! Time is always a [`ManualClock`]: nothing here sleeps or depends on how fast the machine is.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use stepflow_model::*;

/// The manual clock's starting time (Unix milliseconds).
const T0: u64 = 1_700_000_000_000;

/// Records every function call as `do <path>`, `check <path>` or `handle <path>: <error>`, with
/// the context it got.
#[derive(Default)]
struct Probe {
    log: Mutex<Vec<String>>,
    contexts: Mutex<Vec<StepContext>>,
}

impl Probe {
    fn new() -> Arc<Self> {
        Arc::default()
    }

    fn record(&self, entry: String, ctx: &StepContext) {
        self.log.lock().unwrap().push(entry);
        self.contexts.lock().unwrap().push(ctx.clone());
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// The contexts of the calls made to `path`, in order.
    fn contexts_of(&self, path: &str) -> Vec<StepContext> {
        let contexts = self.contexts.lock().unwrap();
        contexts
            .iter()
            .filter(|c| &*c.step == path)
            .cloned()
            .collect()
    }

    /// The attempt numbers the calls to `path` saw.
    fn attempts_of(&self, path: &str) -> Vec<u32> {
        self.contexts_of(path).iter().map(|c| c.attempt).collect()
    }

    /// An action that succeeds.
    fn ok(self: &Arc<Self>) -> impl Action + 'static {
        let probe = self.clone();
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            async { Ok::<(), StepError>(()) }
        }
    }

    /// An action that fails (retryably, with "boom") on its first `n` calls.
    fn fails(self: &Arc<Self>, n: usize) -> impl Action + 'static {
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
    fn fails_while(self: &Arc<Self>, broken: &Arc<AtomicBool>) -> impl Action + 'static {
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
    fn patches(self: &Arc<Self>, patch: Value) -> impl Action + 'static {
        let probe = self.clone();
        move |ctx: StepContext| {
            probe.record(format!("do {}", ctx.step), &ctx);
            let patch = patch.clone();
            async move { Ok::<Value, StepError>(patch) }
        }
    }

    /// A condition that gives `answers` in order, then repeats the last one.
    fn answers(self: &Arc<Self>, answers: &[bool]) -> impl Condition + 'static {
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
    fn handler(self: &Arc<Self>, answers: &[bool]) -> impl ErrorHandler + 'static {
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

async fn noop(_: StepContext) -> StepResult<()> {
    Ok(())
}

async fn yes(_: StepContext) -> StepResult<bool> {
    Ok(true)
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

fn run_context(clock: &Arc<ManualClock>) -> RunContext {
    RunContext::new("run-1").with_clock(clock.clone())
}

fn cursor(state: &State) -> Vec<&str> {
    state.cursor.iter().map(Event::as_str).collect()
}

/// Applies until the run completes or fails, checking after every apply that it made at most one
/// call besides the error handlers of a failure, and that [`Applied::call`] reports it. Returns
/// the state and the number of applies.
async fn drive(
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

fn check_one_call(calls: &[String], applied: &Applied) {
    let (handlers, others): (Vec<&String>, Vec<&String>) =
        calls.iter().partition(|c| c.starts_with("handle "));
    assert!(others.len() <= 1, "one apply made several calls: {calls:?}");
    assert_eq!(
        others.len(),
        usize::from(applied.call.is_some()),
        "calls {calls:?} but record {:?}",
        applied.call
    );
    if !handlers.is_empty() {
        let outcome = applied.call.as_ref().map(|c| &c.outcome);
        assert!(
            matches!(outcome, Some(Outcome::Retrying { .. } | Outcome::Failed(_))),
            "handlers {handlers:?} called without a failure: {outcome:?}"
        );
    }
}

/// Polls a future that never waits, once (the model's own futures never pend).
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a step function pended"),
    }
}

// ---------------------------------------------------------------------------------------------
// The six item kinds.

#[tokio::test]
async fn a_step_calls_its_action_once_then_the_flow_completes() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").step("a", p.ok()).step("b", p.ok())).unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.new_state(json!({}));
    assert_eq!(cursor(&state), ["start:t.v1"]);
    assert_eq!(flow.status(&state, T0), Status::Ready);

    let first = flow.apply_with_record(&ctx, state).await;
    assert_eq!(cursor(&first.state), ["completed:t.v1/a"]);
    let call = first.call.expect("a call");
    assert_eq!(&*call.step, "t.v1/a");
    assert_eq!(call.kind, CallKind::Step);
    assert_eq!(call.outcome, Outcome::Done(None));

    let (state, applies) = drive(&flow, &ctx, first.state, &p).await;
    assert_eq!(p.log(), ["do t.v1/a", "do t.v1/b"]);
    assert_eq!(applies, 1, "b lands straight on the end: no extra apply");
    assert_eq!(cursor(&state), ["completed:t.v1"]);
    assert_eq!(state.calls, 2);
    assert_eq!(flow.status(&state, T0), Status::Completed);

    let again = flow.apply_with_record(&ctx, state.clone()).await;
    assert!(again.call.is_none());
    assert_eq!(
        again.state, state,
        "applying a completed run changes nothing"
    );
    assert_eq!(p.len(), 2);
}

#[tokio::test]
async fn wait_for_rechecks_while_false_and_moves_on_when_true() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .step("a", p.ok())
            .wait_for("w", p.answers(&[false, false, true]))
            .step("b", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let mut state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    for _ in 0..2 {
        let applied = flow.apply_with_record(&ctx, state).await;
        assert_eq!(cursor(&applied.state), ["start:t.v1/w"]);
        assert_eq!(applied.call.unwrap().outcome, Outcome::Answered(false));
        assert_eq!(
            applied.state.not_before, None,
            "no pacing without Wait::every"
        );
        assert_eq!(flow.status(&applied.state, T0), Status::Ready);
        state = applied.state;
    }
    let applied = flow.apply_with_record(&ctx, state).await;
    assert_eq!(applied.call.unwrap().outcome, Outcome::Answered(true));
    assert_eq!(cursor(&applied.state), ["completed:t.v1/w"]);
    let (state, _) = drive(&flow, &ctx, applied.state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        [
            "do t.v1/a",
            "check t.v1/w",
            "check t.v1/w",
            "check t.v1/w",
            "do t.v1/b"
        ]
    );
}

#[tokio::test]
async fn nested_steps_run_in_order_under_their_group_paths() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .step("a", p.ok())
            .steps(
                Steps::named("g")
                    .step("b", p.ok())
                    .steps(Steps::named("h").step("c", p.ok()))
                    .step("d", p.ok()),
            )
            .step("e", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        [
            "do t.v1/a",
            "do t.v1/g/b",
            "do t.v1/g/h/c",
            "do t.v1/g/d",
            "do t.v1/e"
        ]
    );
}

async fn run_case(answer: bool) -> Vec<String> {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .case(
                "c",
                p.answers(&[answer]),
                Steps::new().step("x", p.ok()).step("y", p.ok()),
            )
            .step("after", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let first = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    assert_eq!(first.call.unwrap().outcome, Outcome::Answered(answer));
    let (state, _) = drive(&flow, &ctx, first.state, &p).await;
    assert!(flow.is_completed(&state));
    p.log()
}

#[tokio::test]
async fn case_runs_its_body_when_true() {
    assert_eq!(
        run_case(true).await,
        [
            "check t.v1/c",
            "do t.v1/c/x",
            "do t.v1/c/y",
            "do t.v1/after"
        ]
    );
}

#[tokio::test]
async fn case_skips_its_body_when_false() {
    assert_eq!(run_case(false).await, ["check t.v1/c", "do t.v1/after"]);
}

async fn run_loop(answers: &[bool]) -> Vec<String> {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .loop_until("l", p.answers(answers), Steps::new().step("x", p.ok()))
            .step("after", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    p.log()
}

#[tokio::test]
async fn loop_until_runs_its_body_once_even_when_the_condition_is_already_true() {
    assert_eq!(
        run_loop(&[true]).await,
        ["do t.v1/l/x", "check t.v1/l", "do t.v1/after"]
    );
}

#[tokio::test]
async fn loop_until_runs_its_body_again_until_the_condition_is_true() {
    assert_eq!(
        run_loop(&[false, false, true]).await,
        [
            "do t.v1/l/x",
            "check t.v1/l",
            "do t.v1/l/x",
            "check t.v1/l",
            "do t.v1/l/x",
            "check t.v1/l",
            "do t.v1/after"
        ]
    );
}

#[tokio::test]
async fn retry_handler_true_restarts_the_whole_group_from_its_start() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .retry(
                "r",
                RetryPolicy::handler(p.handler(&[true])),
                Steps::new().step("a", p.ok()).step("b", p.fails(1)),
            )
            .step("after", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let failed = flow.apply_with_record(&ctx, state).await;
    assert_eq!(
        failed.call.unwrap().outcome,
        Outcome::Retrying {
            error: StepError::retryable("boom"),
            group: "t.v1/r".into(),
            attempt: 2,
        }
    );
    assert_eq!(cursor(&failed.state), ["start:t.v1/r"]);
    assert_eq!(failed.state.error, None);

    let (state, _) = drive(&flow, &ctx, failed.state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        [
            "do t.v1/r/a",
            "do t.v1/r/b",
            "handle t.v1/r: boom",
            "do t.v1/r/a",
            "do t.v1/r/b",
            "do t.v1/after"
        ]
    );
    assert_eq!(
        p.attempts_of("t.v1/r/a"),
        [1, 2],
        "a handler also counts attempts"
    );
}

#[tokio::test]
async fn retry_handler_false_lets_the_error_stand() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .retry(
                "r",
                RetryPolicy::handler(p.handler(&[false])),
                Steps::new().step("a", p.ok()).step("b", p.fails(1)),
            )
            .step("after", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert_eq!(
        state.error,
        Some(Failure {
            step: "t.v1/r/b".into(),
            kind: ErrorKind::Retryable,
            message: "boom".into(),
        })
    );
    assert_eq!(cursor(&state), ["start:t.v1/r/b"]);
    assert_eq!(
        p.log(),
        ["do t.v1/r/a", "do t.v1/r/b", "handle t.v1/r: boom"]
    );
}

#[tokio::test]
async fn a_failing_handler_replaces_the_error() {
    let p = Probe::new();
    let handler = |_: StepContext, _: StepError| async {
        Err::<bool, StepError>(StepError::fatal("handler broke"))
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::handler(handler),
        Steps::new().step("a", p.fails(1)),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    let error = state.error.unwrap();
    assert_eq!(
        (error.step.as_str(), error.kind),
        ("t.v1/r/a", ErrorKind::Fatal)
    );
    assert_eq!(error.message, "handler broke");
}

#[tokio::test]
async fn nested_kinds_retry_inside_loop_inside_case() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .case(
                "c",
                p.answers(&[true]),
                Steps::new().loop_until(
                    "l",
                    p.answers(&[false, true]),
                    Steps::new().retry(
                        "r",
                        RetryPolicy::handler(p.handler(&[true])),
                        Steps::new()
                            .step("s", p.fails(1))
                            .wait_for("w", p.answers(&[false, true])),
                    ),
                ),
            )
            .step("end", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        [
            "check t.v1/c",
            "do t.v1/c/l/r/s",
            "handle t.v1/c/l/r: boom",
            "do t.v1/c/l/r/s",
            "check t.v1/c/l/r/w",
            "check t.v1/c/l/r/w",
            "check t.v1/c/l",
            "do t.v1/c/l/r/s",
            "check t.v1/c/l/r/w",
            "check t.v1/c/l",
            "do t.v1/end"
        ]
    );
}

#[tokio::test]
async fn nested_kinds_case_inside_loop_inside_retry() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(2),
        Steps::new().loop_until(
            "l",
            p.answers(&[true]),
            Steps::new().case("c", p.answers(&[true]), Steps::new().step("s", p.fails(1))),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        [
            "check t.v1/r/l/c",
            "do t.v1/r/l/c/s",
            "check t.v1/r/l/c",
            "do t.v1/r/l/c/s",
            "check t.v1/r/l"
        ]
    );
    assert_eq!(p.attempts_of("t.v1/r/l/c/s"), [1, 2]);
    assert!(state.attempts.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Apply: one call at a time, and the state survives failures.

#[tokio::test]
async fn each_apply_makes_at_most_one_call_plus_the_handlers_of_a_failure() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").step("a", p.ok()).retry(
        "outer",
        RetryPolicy::handler(p.handler(&[true])),
        Steps::new().step("b", p.ok()).retry(
            "inner",
            RetryPolicy::handler(p.handler(&[false])),
            Steps::new().step("s", p.fails(1)),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    let mut per_apply = Vec::new();
    while !flow.is_completed(&state) {
        let before = p.len();
        let applied = flow.apply_with_record(&ctx, state).await;
        check_one_call(&p.log()[before..], &applied);
        per_apply.push(p.log()[before..].to_vec());
        state = applied.state;
        assert!(per_apply.len() < 20, "runaway run: {per_apply:?}");
    }
    assert_eq!(
        per_apply,
        [
            vec!["do t.v1/a"],
            vec!["do t.v1/outer/b"],
            vec![
                "do t.v1/outer/inner/s",
                "handle t.v1/outer/inner: boom",
                "handle t.v1/outer: boom"
            ],
            vec!["do t.v1/outer/b"],
            vec!["do t.v1/outer/inner/s"],
        ]
    );
}

#[tokio::test]
async fn a_failed_apply_keeps_the_state_and_continues_once_fixed() {
    let p = Probe::new();
    let broken = Arc::new(AtomicBool::new(true));
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .step("a", p.ok())
            .steps(Steps::named("g").step("b", p.fails_while(&broken)))
            .step("c", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({ "k": 1 }))).await;
    let before = state.clone();
    let failed = flow.apply_with_record(&ctx, state).await;
    assert_eq!(
        failed.call.unwrap().outcome,
        Outcome::Failed(StepError::retryable("disk full"))
    );
    let state = failed.state;
    assert_eq!(cursor(&state), ["start:t.v1/g/b"]);
    let error = state.error.clone().unwrap();
    assert_eq!(error.step, "t.v1/g/b");
    assert_eq!(error.to_string(), "step `t.v1/g/b` failed: disk full");
    assert_eq!(flow.status(&state, T0), Status::Failed(error));
    assert_eq!(state.data, before.data, "the data document survives");
    assert_eq!(state.calls, before.calls, "a failed call is not counted");

    // Still broken: the same step fails again, nothing before it reruns.
    let state = flow.apply(&ctx, state).await;
    assert_eq!(cursor(&state), ["start:t.v1/g/b"]);
    assert!(state.error.is_some());

    broken.store(false, Ordering::SeqCst);
    let (state, _) = drive(&flow, &ctx, state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(state.error, None);
    assert_eq!(
        p.log(),
        [
            "do t.v1/a",
            "do t.v1/g/b",
            "do t.v1/g/b",
            "do t.v1/g/b",
            "do t.v1/c"
        ]
    );
}

/// A loop condition sits on the body's last `completed:` event; when it fails, the run must keep
/// that cursor (so the body does not run again), and the error must name the loop.
#[tokio::test]
async fn a_failing_loop_condition_is_blamed_on_the_loop() {
    let p = Probe::new();
    let condition =
        |_: StepContext| async { Err::<bool, StepError>(StepError::retryable("cannot tell")) };
    let flow = StepFlow::new(Steps::named("t.v1").loop_until(
        "l",
        condition,
        Steps::new().step("x", p.ok()),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let failed = flow.apply_with_record(&ctx, state).await;
    assert_eq!(&*failed.call.unwrap().step, "t.v1/l");
    assert_eq!(cursor(&failed.state), ["completed:t.v1/l/x"]);
    assert_eq!(p.log(), ["do t.v1/l/x"]);
    assert_eq!(failed.state.error.unwrap().step, "t.v1/l");
}

// ---------------------------------------------------------------------------------------------
// The data document and the step context.

#[tokio::test]
async fn actions_merge_patches_into_the_data_document() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .step(
                "first",
                p.patches(json!({ "a": 1, "b": { "c": 2 }, "drop": true })),
            )
            .step(
                "second",
                p.patches(json!({ "drop": null, "b": { "d": 3 }, "keep": null })),
            )
            .step("third", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.new_state(json!({ "keep": "x", "input": [1, 2] }));
    let first = flow.apply_with_record(&ctx, state).await;
    assert_eq!(
        first.call.unwrap().outcome,
        Outcome::Done(Some(json!({ "a": 1, "b": { "c": 2 }, "drop": true })))
    );
    let (state, _) = drive(&flow, &ctx, first.state, &p).await;

    let expected_between =
        json!({ "keep": "x", "input": [1, 2], "a": 1, "b": { "c": 2 }, "drop": true });
    assert_eq!(*p.contexts_of("t.v1/second")[0].data, expected_between);
    let expected_end = json!({ "input": [1, 2], "a": 1, "b": { "c": 2, "d": 3 } });
    assert_eq!(*p.contexts_of("t.v1/third")[0].data, expected_end);
    assert_eq!(*state.data, expected_end);
}

#[tokio::test]
async fn the_step_context_says_who_and_where() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("ctx.v1")
            .steps(Steps::named("group").step("leaf", p.ok()))
            .step("second", p.ok()),
    )
    .unwrap();
    let clock = manual_clock();
    let ctx = RunContext::new("run-7").with_clock(clock.clone());
    drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    let leaf = &p.contexts_of("ctx.v1/group/leaf")[0];
    assert_eq!(&*leaf.run_id, "run-7");
    assert_eq!(&*leaf.flow, "ctx.v1");
    assert_eq!(leaf.attempt, 1);
    assert_eq!(leaf.sequence, 0);
    assert!(!leaf.redelivered);
    assert_eq!(leaf.idempotency_key(), "run-7/ctx.v1/group/leaf#0");
    let second = &p.contexts_of("ctx.v1/second")[0];
    assert_eq!(second.sequence, 1);
    assert_ne!(second.idempotency_key(), leaf.idempotency_key());
}

#[tokio::test]
async fn a_reexecuted_call_keeps_its_idempotency_key() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").step("a", p.ok()).step("b", p.ok())).unwrap();
    let ctx = run_context(&manual_clock());
    let saved = flow.apply(&ctx, flow.new_state(json!({}))).await;

    // The host ran `b` but crashed before saving; it resumes from the saved state.
    let _lost = flow.apply(&ctx, saved.clone()).await;
    let resumed = RunContext {
        redelivered: true,
        ..ctx.clone()
    };
    let applied = flow.apply_with_record(&resumed, saved).await;
    assert!(applied.call.unwrap().redelivered);

    let calls = p.contexts_of("t.v1/b");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key(), calls[1].idempotency_key());
    assert_eq!(calls[0].idempotency_key(), "run-1/t.v1/b#1");
    assert!(!calls[0].redelivered);
    assert!(calls[1].redelivered);
}

// ---------------------------------------------------------------------------------------------
// Declarative retry policies and back-off.

#[tokio::test]
async fn attempts_retries_a_retryable_error_until_the_limit_then_it_stands() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(3),
        Steps::new().step("s", p.fails(usize::MAX)),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    let mut outcomes = Vec::new();
    while state.error.is_none() && outcomes.len() < 10 {
        let applied = flow.apply_with_record(&ctx, state).await;
        outcomes.extend(applied.call.map(|c| c.outcome));
        state = applied.state;
    }
    let boom = StepError::retryable("boom");
    assert_eq!(
        outcomes,
        [
            Outcome::Retrying {
                error: boom.clone(),
                group: "t.v1/r".into(),
                attempt: 2
            },
            Outcome::Retrying {
                error: boom.clone(),
                group: "t.v1/r".into(),
                attempt: 3
            },
            Outcome::Failed(boom),
        ]
    );
    assert_eq!(p.attempts_of("t.v1/r/s"), [1, 2, 3]);
    assert_eq!(state.error.unwrap().step, "t.v1/r/s");
}

#[tokio::test]
async fn a_fatal_error_is_not_retried_by_a_policy_without_handler() {
    let p = Probe::new();
    let p2 = p.clone();
    let fatal = move |ctx: StepContext| {
        p2.record(format!("do {}", ctx.step), &ctx);
        async { Err::<(), StepError>(StepError::fatal("bad config")) }
    };
    let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10));
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .retry(
                "r",
                RetryPolicy::attempts(5),
                Steps::new().step("s", fatal.clone()),
            )
            .retry(
                "b",
                RetryPolicy::default().backoff(backoff),
                Steps::new().step("s", fatal),
            ),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert_eq!(p.log(), ["do t.v1/r/s"]);
    let error = state.error.clone().unwrap();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::Fatal, "bad config")
    );
    assert!(state.attempts.is_empty());

    // The back-off-only group gives up at once too.
    let state = State {
        cursor: vec![Event::new("start:t.v1/b")],
        ..state
    };
    let (state, _) = drive(&flow, &ctx, state, &p).await;
    assert_eq!(p.log(), ["do t.v1/r/s", "do t.v1/b/s"]);
    assert_eq!(state.error.unwrap().step, "t.v1/b/s");
}

#[tokio::test]
async fn a_handler_is_still_asked_about_a_fatal_error() {
    let p = Probe::new();
    let fails = Arc::new(AtomicUsize::new(1));
    let p2 = p.clone();
    let fatal_once = move |ctx: StepContext| {
        p2.record(format!("do {}", ctx.step), &ctx);
        let fail = fails.fetch_sub(1, Ordering::SeqCst) == 1;
        async move {
            if fail {
                Err(StepError::fatal("odd"))
            } else {
                Ok(())
            }
        }
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(3).with_handler(p.handler(&[true])),
        Steps::new().step("s", fatal_once),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(
        p.log(),
        ["do t.v1/r/s", "handle t.v1/r: odd", "do t.v1/r/s"]
    );
}

/// An empty policy (no handler, no limit, no back-off) is a policy without handler, so it
/// should give up on a fatal error like the others.
#[tokio::test]
async fn an_empty_policy_gives_up_on_a_fatal_error() {
    let p = Probe::new();
    let p2 = p.clone();
    let fatal = move |ctx: StepContext| {
        p2.record(format!("do {}", ctx.step), &ctx);
        async { Err::<(), StepError>(StepError::fatal("bad config")) }
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::default(),
        Steps::new().step("s", fatal),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    for _ in 0..10 {
        state = flow.apply(&ctx, state).await;
        if state.error.is_some() {
            break;
        }
    }
    assert_eq!(p.log(), ["do t.v1/r/s"]);
    assert_eq!(state.error.unwrap().kind, ErrorKind::Fatal);
}

#[tokio::test]
async fn attempts_are_saved_in_the_state_and_cleared_when_the_group_completes() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .retry(
                "r",
                RetryPolicy::attempts(5),
                Steps::new().step("s", p.fails(2)),
            )
            .step("after", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let saved = serde_json::to_value(&state).unwrap();
    assert_eq!(saved["attempts"], json!({ "t.v1/r": 2 }));
    assert_eq!(saved["cursor"], json!(["start:t.v1/r"]));

    let state = flow.apply(&ctx, state).await;
    assert_eq!(
        serde_json::to_value(&state).unwrap()["attempts"],
        json!({ "t.v1/r": 3 })
    );
    let state = flow.apply(&ctx, state).await;
    assert_eq!(cursor(&state), ["completed:t.v1/r/s"]);
    assert_eq!(p.attempts_of("t.v1/r/s"), [1, 2, 3]);

    // The next apply leaves the group (and runs `after`, the last step): the count is gone.
    let state = flow.apply(&ctx, state).await;
    assert_eq!(cursor(&state), ["completed:t.v1"]);
    assert!(state.attempts.is_empty());
    let saved = serde_json::to_value(&state).unwrap();
    assert!(saved.get("attempts").is_none(), "{saved}");
}

#[tokio::test]
async fn a_retry_inside_a_loop_starts_at_attempt_one_each_iteration() {
    let p = Probe::new();
    let p2 = p.clone();
    let first_try_fails = move |ctx: StepContext| {
        p2.record(format!("do {}", ctx.step), &ctx);
        let fail = ctx.attempt == 1;
        async move {
            if fail {
                Err(StepError::retryable("cold cache"))
            } else {
                Ok(())
            }
        }
    };
    let flow = StepFlow::new(Steps::named("t.v1").loop_until(
        "l",
        p.answers(&[false, false, true]),
        Steps::new().retry(
            "r",
            RetryPolicy::attempts(3),
            Steps::new().step("s", first_try_fails),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, _) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(p.attempts_of("t.v1/l/r/s"), [1, 2, 1, 2, 1, 2]);
}

#[tokio::test]
async fn an_outer_retry_takes_what_an_inner_one_gives_up_and_resets_it() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "o",
        RetryPolicy::attempts(2),
        Steps::new().retry(
            "i",
            RetryPolicy::attempts(2),
            Steps::new().step("s", p.fails(usize::MAX)),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (state, applies) = drive(&flow, &ctx, flow.new_state(json!({})), &p).await;
    assert_eq!(applies, 4);
    assert_eq!(p.attempts_of("t.v1/o/i/s"), [1, 2, 1, 2]);
    assert_eq!(state.error.unwrap().step, "t.v1/o/i/s");
    let attempts: Vec<(&str, u32)> = state.attempts.iter().map(|(k, v)| (&**k, *v)).collect();
    assert_eq!(attempts, [("t.v1/o", 2), ("t.v1/o/i", 2)]);
}

#[tokio::test]
async fn backoff_holds_the_run_until_its_time() {
    let p = Probe::new();
    let backoff =
        Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(4).backoff(backoff),
        Steps::new().step("s", p.fails(2)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    assert_eq!(state.not_before, Some(T0 + 100));
    assert_eq!(state.error, None);
    assert_eq!(
        flow.status(&state, clock.now_ms()),
        Status::Waiting(T0 + 100)
    );

    clock.advance(99);
    let held = flow.apply_with_record(&ctx, state.clone()).await;
    assert!(held.call.is_none());
    assert_eq!(held.state, state, "an early apply changes nothing");
    assert_eq!(p.len(), 1);

    clock.advance(1);
    assert_eq!(flow.status(&state, clock.now_ms()), Status::Ready);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(p.len(), 2);
    assert_eq!(
        state.not_before,
        Some(T0 + 100 + 200),
        "the second wait doubles"
    );

    clock.advance(200);
    let (state, _) = drive(&flow, &ctx, state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(state.not_before, None);
    assert_eq!(p.attempts_of("t.v1/r/s"), [1, 2, 3]);
}

#[tokio::test]
async fn jittered_backoff_waits_between_half_and_all_of_the_delay() {
    let p = Probe::new();
    let backoff = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(60));
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(2).backoff(backoff),
        Steps::new().step("s", p.fails(1)),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let due = state.not_before.unwrap();
    assert!((T0 + 5_000..=T0 + 10_000).contains(&due), "{due}");
}

// ---------------------------------------------------------------------------------------------
// Paced and bounded waits.

#[tokio::test]
async fn wait_every_paces_the_checks() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").wait_for_with(
        "w",
        p.answers(&[false, false, true]),
        Wait::every(Duration::from_secs(10)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    assert_eq!(state.not_before, Some(T0 + 10_000));
    assert_eq!(
        flow.status(&state, clock.now_ms()),
        Status::Waiting(T0 + 10_000)
    );

    clock.advance(9_999);
    let held = flow.apply_with_record(&ctx, state.clone()).await;
    assert!(held.call.is_none());
    assert_eq!(held.state, state);
    assert_eq!(p.len(), 1);

    clock.advance(1);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(p.len(), 2);
    assert_eq!(state.not_before, Some(T0 + 20_000));

    clock.advance(10_000);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(
        cursor(&state),
        ["completed:t.v1"],
        "the wait was the last step"
    );
    assert_eq!(state.not_before, None);
    assert_eq!(flow.status(&state, clock.now_ms()), Status::Completed);
}

#[tokio::test]
async fn wait_timeout_fails_the_wait_once_it_has_lasted_too_long() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").wait_for_with(
        "w",
        p.answers(&[false]),
        Wait::default().timeout(Duration::from_secs(5)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let deadlines: Vec<(&str, u64)> = state.deadlines.iter().map(|(k, v)| (&**k, *v)).collect();
    assert_eq!(deadlines, [("t.v1/w", T0 + 5_000)]);

    clock.advance(4_999);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(state.error, None);
    assert_eq!(cursor(&state), ["start:t.v1/w"]);

    clock.advance(1);
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(matches!(applied.call.unwrap().outcome, Outcome::Failed(_)));
    let state = applied.state;
    let error = state.error.clone().unwrap();
    assert_eq!(
        (error.step.as_str(), error.kind),
        ("t.v1/w", ErrorKind::Retryable)
    );
    assert!(
        error.message.contains("gave up waiting"),
        "{}",
        error.message
    );
    assert_eq!(cursor(&state), ["start:t.v1/w"]);
    assert!(state.deadlines.is_empty());
    assert_eq!(p.len(), 3);
}

#[tokio::test]
async fn a_wait_timeout_can_be_taken_by_an_enclosing_retry() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .retry(
                "r",
                RetryPolicy::attempts(2),
                Steps::new().wait_for_with(
                    "w",
                    p.answers(&[false, false, true]),
                    Wait::default().timeout(Duration::from_secs(5)),
                ),
            )
            .step("after", p.ok()),
    )
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    clock.advance(5_000);
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(matches!(
        applied.call.unwrap().outcome,
        Outcome::Retrying { attempt: 2, .. }
    ));
    assert_eq!(cursor(&applied.state), ["start:t.v1/r"]);
    assert!(applied.state.deadlines.is_empty());

    let (state, _) = drive(&flow, &ctx, applied.state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(p.attempts_of("t.v1/r/w"), [1, 1, 2]);
    assert!(state.deadlines.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Saved states.

/// A flow of every kind whose functions decide from the state alone, so that two builds of it
/// behave the same.
fn every_kind(p: &Arc<Probe>) -> StepFlow {
    let count = |p: &Arc<Probe>| {
        let p = p.clone();
        move |ctx: StepContext| {
            p.record(format!("do {}", ctx.step), &ctx);
            let n = ctx.data["n"].as_u64().unwrap_or(0);
            async move { Ok::<Value, StepError>(json!({ "n": n + 1 })) }
        }
    };
    let at_least = |p: &Arc<Probe>, n: u64| {
        let p = p.clone();
        move |ctx: StepContext| {
            p.record(format!("check {}", ctx.step), &ctx);
            let answer = ctx.data["n"].as_u64().unwrap_or(0) >= n;
            async move { Ok::<bool, StepError>(answer) }
        }
    };
    let every_third = {
        let p = p.clone();
        move |ctx: StepContext| {
            p.record(format!("check {}", ctx.step), &ctx);
            let answer = ctx.sequence % 3 == 2;
            async move { Ok::<bool, StepError>(answer) }
        }
    };
    let first_try_fails = |p: &Arc<Probe>| {
        let p = p.clone();
        move |ctx: StepContext| {
            p.record(format!("do {}", ctx.step), &ctx);
            let fail = ctx.attempt == 1;
            async move {
                if fail {
                    Err(StepError::retryable("flaky"))
                } else {
                    Ok(())
                }
            }
        }
    };
    let second_chance = {
        let p = p.clone();
        move |ctx: StepContext, error: StepError| {
            p.record(format!("handle {}: {}", ctx.step, error.message), &ctx);
            let answer = ctx.attempt < 2;
            async move { Ok::<bool, StepError>(answer) }
        }
    };
    StepFlow::new(
        Steps::named("full.v1")
            .step("count", count(p))
            .wait_for("ready", every_third)
            .case(
                "big",
                at_least(p, 1),
                Steps::new()
                    .loop_until(
                        "again",
                        at_least(p, 3),
                        Steps::new().step("count", count(p)),
                    )
                    .retry(
                        "flaky",
                        RetryPolicy::attempts(3),
                        Steps::new().step("once", first_try_fails(p)),
                    ),
            )
            .steps(
                Steps::named("tail").retry(
                    "handled",
                    RetryPolicy::handler(second_chance),
                    Steps::new()
                        .step("bad", first_try_fails(p))
                        .step("count", count(p)),
                ),
            )
            .step("end", p.ok()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_state_saved_anywhere_continues_in_a_rebuilt_flow() {
    let reference = Probe::new();
    let flow = every_kind(&reference);
    let ctx = run_context(&manual_clock());
    let (expected, applies) = drive(&flow, &ctx, flow.new_state(json!({})), &reference).await;
    assert!(flow.is_completed(&expected));
    assert_eq!(*expected.data, json!({ "n": 4 }));
    assert!(
        applies >= 14,
        "the flow should exercise every kind ({applies} applies)"
    );

    for stop in 0..=applies {
        let before = Probe::new();
        let flow = every_kind(&before);
        let mut state = flow.new_state(json!({}));
        for _ in 0..stop {
            state = flow.apply(&ctx, state).await;
        }
        let saved = serde_json::to_string(&state).unwrap();

        let after = Probe::new();
        let rebuilt = every_kind(&after);
        let loaded: State = serde_json::from_str(&saved).unwrap();
        assert_eq!(loaded, state);
        rebuilt.check_state(&loaded).unwrap();
        let (end, _) = drive(&rebuilt, &ctx, loaded, &after).await;
        assert!(rebuilt.is_completed(&end), "stopped after {stop}");
        let mut log = before.log();
        log.extend(after.log());
        assert_eq!(log, reference.log(), "stopped after {stop}");
        assert_eq!(end, expected, "stopped after {stop}");
    }
}

async fn step1(_: StepContext) -> StepResult<()> {
    Err(StepError::retryable("not today"))
}

#[tokio::test]
async fn the_saved_state_is_readable_json() {
    let flow = StepFlow::new(
        Steps::named("quickstart.v1")
            .step("step1", step1)
            .wait_for("aCondition", yes)
            .step("step2", noop),
    )
    .unwrap();
    let hash = flow.definition_hash().to_string();
    assert_eq!(hash.len(), 16);
    let ctx = run_context(&manual_clock());
    let state = flow.new_state(json!({ "who": "me" }));
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        json!({
            "cursor": ["start:quickstart.v1"],
            "data": { "who": "me" },
            "calls": 0,
            "definition": hash,
        })
    );
    let state = flow.apply(&ctx, state).await;
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        json!({
            "cursor": ["start:quickstart.v1/step1"],
            "data": { "who": "me" },
            "error": { "step": "quickstart.v1/step1", "kind": "retryable", "message": "not today" },
            "calls": 0,
            "definition": hash,
        })
    );

    let unknown =
        serde_json::from_value::<State>(json!({ "cursor": [], "data": {}, "cursour": [] }));
    assert!(unknown.is_err(), "a misspelt field is refused, not ignored");
}

// ---------------------------------------------------------------------------------------------
// Resuming on another definition.

fn versioned(p: &Arc<Probe>, extra: bool) -> StepFlow {
    let mut steps = Steps::named("t.v1").step("a", p.ok()).step("b", p.ok());
    if extra {
        steps = steps.step("c", p.ok());
    }
    StepFlow::new(steps).unwrap()
}

#[test]
fn check_state_refuses_a_cursor_event_the_flow_does_not_have() {
    let flow = versioned(&Probe::new(), false);
    let state = State {
        cursor: vec![
            Event::new("completed:t.v1/a"),
            Event::new("start:t.v1/gone"),
        ],
        ..flow.new_state(json!({}))
    };
    let error = flow.check_state(&state).unwrap_err();
    assert_eq!(
        error,
        StateError::UnknownEvents {
            flow: "t.v1".into(),
            missing: vec!["start:t.v1/gone".into()],
        }
    );
    assert!(error.to_string().contains("`start:t.v1/gone`"), "{error}");
}

#[tokio::test]
async fn a_state_from_another_definition_is_accepted_when_its_events_exist() {
    let p = Probe::new();
    let old = versioned(&p, false);
    let new = versioned(&p, true);
    assert_ne!(old.definition_hash(), new.definition_hash());
    let ctx = run_context(&manual_clock());
    let state = old.apply(&ctx, old.new_state(json!({}))).await;
    assert_eq!(state.definition, old.definition_hash());

    let saved: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    new.check_state(&saved).unwrap();
    let (end, applies) = drive(&new, &ctx, saved, &p).await;
    assert!(new.is_completed(&end));
    assert_eq!(applies, 2, "b, then the added c, which lands on the end");
    assert_eq!(
        end.definition,
        old.definition_hash(),
        "the run keeps its origin"
    );
    assert_eq!(p.log(), ["do t.v1/a", "do t.v1/b", "do t.v1/c"]);
}

#[tokio::test]
async fn applying_a_foreign_state_records_an_error_instead_of_panicking() {
    let p = Probe::new();
    let flow = versioned(&p, false);
    let ctx = run_context(&manual_clock());
    let other = StepFlow::new(Steps::named("other.v1").step("x", noop)).unwrap();
    let foreign = other
        .apply(&ctx, other.new_state(json!({ "keep": 1 })))
        .await;
    let edited = |cursor: &[&str]| State {
        cursor: cursor.iter().map(|e| Event::new(*e)).collect(),
        ..flow.new_state(json!({}))
    };
    for state in [
        foreign,
        edited(&["nonsense"]),
        edited(&[""]),
        edited(&["start:t.v1/a/"]),
        edited(&["completed:t.v1", "completed:t.v1"]),
    ] {
        let applied = flow.apply_with_record(&ctx, state.clone()).await;
        assert!(applied.call.is_none());
        let error = applied.state.error.clone().expect("an error");
        assert_eq!(
            (error.step.as_str(), error.kind),
            ("t.v1", ErrorKind::Fatal)
        );
        assert_eq!(applied.state.cursor, state.cursor, "the cursor is kept");
        assert_eq!(applied.state.data, state.data, "the data is kept");
        assert!(matches!(flow.status(&applied.state, T0), Status::Failed(_)));
    }
    assert_eq!(p.len(), 0);
}

// ---------------------------------------------------------------------------------------------
// Build validation.

fn build_error(steps: Steps) -> BuildError {
    match StepFlow::new(steps) {
        Ok(_) => panic!("the flow should be refused"),
        Err(error) => error,
    }
}

#[test]
fn an_empty_name_is_refused_with_its_parent_and_position() {
    let error = build_error(Steps::named("t.v1").step("a", noop).step("", noop));
    assert_eq!(
        error,
        BuildError::EmptyName {
            parent: "t.v1".into(),
            position: 2
        }
    );
    assert!(error.to_string().contains("`t.v1`"), "{error}");

    let error = build_error(Steps::named("t.v1").steps(Steps::new()));
    assert_eq!(
        error,
        BuildError::EmptyName {
            parent: "t.v1".into(),
            position: 1
        }
    );
    let error = build_error(Steps::named(""));
    assert!(matches!(error, BuildError::EmptyName { parent, .. } if parent == "(root)"));
}

#[test]
fn reserved_characters_are_refused_with_their_parent() {
    let error = build_error(Steps::named("t.v1").case("c", yes, Steps::new().step("a/b", noop)));
    assert_eq!(
        error,
        BuildError::BadName {
            parent: "t.v1/c".into(),
            name: "a/b".into(),
            what: "`/`"
        }
    );
    assert!(error.to_string().contains("`t.v1/c`"), "{error}");

    let error =
        build_error(Steps::named("t.v1").loop_until("l", yes, Steps::new().step("start:x", noop)));
    assert_eq!(
        error,
        BuildError::BadName {
            parent: "t.v1/l".into(),
            name: "start:x".into(),
            what: "`:`"
        }
    );

    let error = build_error(Steps::named("t.v1").step("line\nbreak", noop));
    assert!(matches!(
        error,
        BuildError::BadName {
            what: "a control character",
            ..
        }
    ));
    let error = build_error(Steps::named("a/b.v1"));
    assert!(matches!(error, BuildError::BadName { parent, .. } if parent == "(root)"));
}

#[test]
fn duplicate_sibling_names_are_refused_in_every_kind_of_body() {
    let dup = || Steps::new().step("x", noop).wait_for("x", yes);
    let cases: Vec<(Steps, &str)> = vec![
        (Steps::named("t.v1").step("a", noop).step("a", noop), "t.v1"),
        (Steps::named("t.v1").steps(dup().renamed("g")), "t.v1/g"),
        (Steps::named("t.v1").case("c", yes, dup()), "t.v1/c"),
        (Steps::named("t.v1").loop_until("l", yes, dup()), "t.v1/l"),
        (
            Steps::named("t.v1").retry("r", RetryPolicy::attempts(2), dup()),
            "t.v1/r",
        ),
        (
            Steps::named("t.v1").retry(
                "r",
                RetryPolicy::attempts(2),
                Steps::new().case("c", yes, dup()),
            ),
            "t.v1/r/c",
        ),
    ];
    for (steps, parent) in cases {
        let error = build_error(steps);
        let name = if parent == "t.v1" { "a" } else { "x" };
        assert_eq!(
            error,
            BuildError::DuplicateName {
                parent: parent.into(),
                name: name.into()
            }
        );
        assert!(
            error.to_string().contains(&format!("`{parent}`")),
            "{error}"
        );
    }
    // The same name under different parents is fine.
    StepFlow::new(Steps::named("t.v1").step("x", noop).case(
        "c",
        yes,
        Steps::new().step("x", noop),
    ))
    .unwrap();
}

/// A random flow tree for the build property test.
#[derive(Clone, Debug)]
enum Node {
    Step(String),
    Wait(String),
    Group(String, Vec<Node>),
    Case(String, Vec<Node>),
    Loop(String, Vec<Node>),
    Retry(String, Vec<Node>),
}

impl Node {
    fn name(&self) -> &str {
        match self {
            Node::Step(n)
            | Node::Wait(n)
            | Node::Group(n, _)
            | Node::Case(n, _)
            | Node::Loop(n, _)
            | Node::Retry(n, _) => n,
        }
    }

    fn kids(&self) -> &[Node] {
        match self {
            Node::Step(_) | Node::Wait(_) => &[],
            Node::Group(_, k) | Node::Case(_, k) | Node::Loop(_, k) | Node::Retry(_, k) => k,
        }
    }
}

fn names() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        40 => prop::char::range('a', 'd'),
        1 => Just('/'),
        1 => Just(':'),
        1 => prop::char::range('\0', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{9f}'),
        1 => Just('"'),
        1 => Just('\\'),
        4 => any::<char>(),
    ];
    prop_oneof![
        1 => Just(String::new()),
        6 => prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
        24 => prop::collection::vec(ch, 1..4).prop_map(|c| c.into_iter().collect()),
    ]
}

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    let leaf = prop_oneof![names().prop_map(Node::Step), names().prop_map(Node::Wait)];
    let node = leaf.prop_recursive(3, 16, 3, |inner| {
        let kids = prop::collection::vec(inner, 0..3);
        prop_oneof![
            (names(), kids.clone()).prop_map(|(n, k)| Node::Group(n, k)),
            (names(), kids.clone()).prop_map(|(n, k)| Node::Case(n, k)),
            (names(), kids.clone()).prop_map(|(n, k)| Node::Loop(n, k)),
            (names(), kids).prop_map(|(n, k)| Node::Retry(n, k)),
        ]
    });
    prop::collection::vec(node, 0..4)
}

fn to_steps(name: &str, nodes: &[Node]) -> Steps {
    nodes
        .iter()
        .fold(Steps::named(name), |steps, node| match node {
            Node::Step(n) => steps.step(n.as_str(), noop),
            Node::Wait(n) => steps.wait_for(n.as_str(), yes),
            Node::Group(n, k) => steps.steps(to_steps(n, k)),
            Node::Case(n, k) => steps.case(n.as_str(), yes, to_steps("", k)),
            Node::Loop(n, k) => steps.loop_until(n.as_str(), yes, to_steps("", k)),
            Node::Retry(n, k) => steps.retry(n.as_str(), RetryPolicy::attempts(2), to_steps("", k)),
        })
}

fn name_error(parent: &str, position: usize, name: &str) -> Option<BuildError> {
    let what = if name.is_empty() {
        return Some(BuildError::EmptyName {
            parent: parent.into(),
            position,
        });
    } else if name.contains('/') {
        "`/`"
    } else if name.contains(':') {
        "`:`"
    } else if name.chars().any(char::is_control) {
        "a control character"
    } else {
        return None;
    };
    Some(BuildError::BadName {
        parent: parent.into(),
        name: name.into(),
        what,
    })
}

/// The error the builder documents for this tree: siblings are checked first, then each child's
/// body, depth first.
fn expected_error(parent: &str, nodes: &[Node]) -> Option<BuildError> {
    let mut seen = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(error) = name_error(parent, i + 1, node.name()) {
            return Some(error);
        }
        if !seen.insert(node.name()) {
            return Some(BuildError::DuplicateName {
                parent: parent.into(),
                name: node.name().into(),
            });
        }
    }
    nodes
        .iter()
        .find_map(|node| expected_error(&format!("{parent}/{}", node.name()), node.kids()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_names_build_or_are_refused_without_panicking(root in names(), tree in nodes()) {
        let expected = name_error("(root)", 1, &root).or_else(|| expected_error(&root, &tree));
        let built = StepFlow::new(to_steps(&root, &tree));
        match (built, expected) {
            (Ok(flow), None) => {
                prop_assert!(flow.to_mermaid().starts_with("stateDiagram-v2\n"));
                prop_assert!(flow.to_dot().starts_with("digraph "));
                let ctx = RunContext::new("prop");
                let mut state = flow.new_state(json!({}));
                for _ in 0..200 {
                    if flow.is_completed(&state) {
                        break;
                    }
                    state = now(flow.apply(&ctx, state));
                }
                prop_assert!(flow.is_completed(&state), "{:?}", state);
            }
            (Err(error), Some(expected)) => prop_assert_eq!(error, expected),
            (Ok(_), Some(expected)) => prop_assert!(false, "built, but expected {}", expected),
            (Err(error), None) => prop_assert!(false, "refused a valid flow: {}", error),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Introspection.

fn diagram_flow(name: &str) -> StepFlow {
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

#[test]
fn transitions_list_every_destination_with_its_reason() {
    let flow = diagram_flow("w");
    let transitions = flow.transitions();
    let find = |source: &str| {
        transitions
            .iter()
            .find(|t| t.source == source)
            .unwrap_or_else(|| panic!("no transition from {source}"))
    };
    let dests = |source: &str| -> Vec<(String, String)> {
        find(source)
            .destinations
            .iter()
            .map(|d| (d.event.clone(), d.reason.clone()))
            .collect()
    };
    let pair = |e: &str, r: &str| (e.to_string(), r.to_string());

    assert_eq!(
        find("start:t.v1/a").call,
        Some((CallKind::Step, "noop".into()))
    );
    assert_eq!(dests("start:t.v1/a"), [pair("completed:t.v1/a", "done")]);
    assert_eq!(find("completed:t.v1/a").call, None);
    assert_eq!(dests("completed:t.v1/a"), [pair("start:t.v1/r", "next")]);
    assert_eq!(
        dests("start:t.v1/r/w"),
        [
            pair("completed:t.v1/r/w", "ready"),
            pair("start:t.v1/r/w", "not yet"),
            pair("start:t.v1/r", "error: retry t.v1/r"),
        ]
    );
    assert_eq!(
        dests("start:t.v1/r/c"),
        [
            pair("start:t.v1/r/c/x", "true"),
            pair("completed:t.v1/r/c", "false"),
            pair("start:t.v1/r", "error: retry t.v1/r"),
        ]
    );
    assert_eq!(
        find("completed:t.v1/l/y").call,
        Some((CallKind::LoopUntil, "yes".into()))
    );
    assert_eq!(
        dests("completed:t.v1/l/y"),
        [
            pair("completed:t.v1/l", "done"),
            pair("start:t.v1/l/y", "again")
        ]
    );
    assert!(
        transitions.iter().all(|t| t.source != "completed:t.v1"),
        "nothing leaves the end"
    );
}

#[test]
fn diagrams_draw_every_destination() {
    let flow = diagram_flow("w");
    let destinations: usize = flow
        .transitions()
        .iter()
        .map(|t| t.destinations.len())
        .sum();

    let mermaid = flow.to_mermaid();
    assert!(mermaid.starts_with("stateDiagram-v2\n"), "{mermaid}");
    let edges = mermaid
        .lines()
        .filter(|l| l.contains(" --> ") && !l.contains("[*]"))
        .count();
    assert_eq!(edges, destinations, "{mermaid}");
    assert!(
        mermaid.contains("state \"start:t.v1/r/w\" as e"),
        "{mermaid}"
    );
    assert!(mermaid.contains("[*] --> e0"));

    let dot = flow.to_dot();
    assert!(dot.starts_with("digraph \"t.v1\" {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    assert_eq!(dot.matches(" -> ").count(), destinations, "{dot}");
    assert!(dot.contains("\"start:t.v1/r/w\" -> \"completed:t.v1/r/w\" [label=\"wait ready\""));
}

#[test]
fn the_definition_hash_is_stable_and_follows_the_names() {
    let one = diagram_flow("w");
    let two = diagram_flow("w");
    assert_eq!(one.definition_hash(), two.definition_hash());
    assert!(one.definition_hash().chars().all(|c| c.is_ascii_hexdigit()));
    let renamed = diagram_flow("w2");
    assert_ne!(one.definition_hash(), renamed.definition_hash());

    let policy =
        |n| StepFlow::new(Steps::named("t.v1").retry("r", RetryPolicy::attempts(n), Steps::new()));
    assert_ne!(
        policy(2).unwrap().definition_hash(),
        policy(3).unwrap().definition_hash(),
        "settings are part of the definition"
    );
}
