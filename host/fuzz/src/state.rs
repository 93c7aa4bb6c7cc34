//! Target `state`: a saved state, as arbitrary bytes, loaded into one of a few small flows that
//! together have every item kind: `serde_json::from_slice::<State>`, [`StepFlow::check_state`],
//! and when the state fits, a few applies whose step functions answer as the input scripts.
//!
//! Input layout: byte 0 picks the flow and whether the run is redelivered, byte 1 the number of
//! applies, byte 2 the length `n` of the script, the next `n` bytes are the script (one byte per
//! function call and per clock move), and the rest is the state's JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stepflow_model::{
    Action, Backoff, BoxFuture, Condition, ErrorHandler, ManualClock, RetryPolicy, RunContext,
    State, StepContext, StepError, StepFlow, StepResult, Steps, Wait,
};

/// The clock every run starts at (Unix milliseconds, late 2023).
const START_MS: u64 = 1_700_000_000_000;

/// The bytes that decide what each function call answers, read in order; zeros once used up.
#[derive(Default)]
struct Script {
    bytes: Vec<u8>,
    at: AtomicUsize,
}

impl Script {
    fn next(&self) -> u8 {
        let at = self.at.fetch_add(1, Ordering::Relaxed);
        self.bytes.get(at).copied().unwrap_or(0)
    }
}

/// A native step function of every kind, answering from the shared script.
#[derive(Clone)]
struct Scripted(Arc<Script>);

impl Action for Scripted {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        let b = self.0.next();
        let result = match b % 7 {
            0 => Ok(None),
            1 => Ok(Some(json!({ "n": b, "step": &*ctx.step }))),
            2 => Ok(Some(Value::Null)),
            3 => Ok(Some(json!([b]))),
            4 => Ok(Some(
                json!({ "nested": { "a": null, "b": [1, 2] }, "n": null }),
            )),
            5 => Err(StepError::retryable(format!("scripted failure {b}"))),
            _ => Err(StepError::fatal(format!("scripted fatal failure {b}"))),
        };
        Box::pin(async move { result })
    }
}

/// What a condition or an error handler answers for script byte `b`.
fn answer(b: u8) -> StepResult<bool> {
    match b % 4 {
        0 => Ok(true),
        1 => Ok(false),
        2 => Err(StepError::retryable(format!("scripted failure {b}"))),
        _ => Err(StepError::fatal(format!("scripted fatal failure {b}"))),
    }
}

impl Condition for Scripted {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let result = answer(self.0.next());
        Box::pin(async move { result })
    }
}

impl ErrorHandler for Scripted {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let result = answer(self.0.next());
        Box::pin(async move { result })
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The flows a state is loaded into; each item kind appears, nested and at the top.
fn flows(f: &Scripted) -> Vec<Steps> {
    let s = || f.clone();
    vec![
        // Every kind once, in a row.
        Steps::named("all.v1")
            .step("first", s())
            .wait_for_with("ready", s(), Wait::every(secs(1)).timeout(secs(5)))
            .case("maybe", s(), Steps::named("maybe").step("inside", s()))
            .loop_until("pages", s(), Steps::named("pages").step("page", s()))
            .retry(
                "validation",
                RetryPolicy::handler(s())
                    .max_attempts(3)
                    .backoff(Backoff::exponential(secs(1), secs(30))),
                Steps::named("validation")
                    .step("validate", s())
                    .steps(Steps::named("group").step("grouped", s())),
            )
            .step("last", s()),
        // Retries inside retries, with waits and conditions inside them.
        Steps::named("nested.v1").retry(
            "outer",
            RetryPolicy::handler(s()).max_attempts(2),
            Steps::named("outer")
                .retry(
                    "inner",
                    RetryPolicy::attempts(2)
                        .backoff(Backoff::exponential(secs(2), secs(4)).without_jitter()),
                    Steps::named("inner")
                        .step("work", s())
                        .wait_for("settled", s()),
                )
                .case(
                    "check",
                    s(),
                    Steps::named("check").loop_until(
                        "again",
                        s(),
                        Steps::named("again").step("each", s()),
                    ),
                ),
        ),
        // Waits with a timeout only, a handler-only retry, groups in groups.
        Steps::named("misc.v1")
            .wait_for_with(
                "deadline",
                s(),
                Wait {
                    every: None,
                    timeout: Some(secs(3)),
                },
            )
            .retry(
                "handled",
                RetryPolicy::handler(s()),
                Steps::named("handled")
                    .steps(Steps::named("deep").steps(Steps::named("deeper").step("leaf", s()))),
            )
            .loop_until(
                "spin",
                s(),
                Steps::named("spin").wait_for_with(
                    "tick",
                    s(),
                    Wait::every(Duration::from_millis(1)),
                ),
            )
            .case("empty", s(), Steps::named("empty").step("only", s())),
    ]
}

/// How far the clock moves before an apply, for script byte `b`.
fn clock_step(b: u8) -> u64 {
    match b % 6 {
        0 => 0,
        1 => 1,
        2 => 1_000,
        3 => 60_000,
        4 => 3_600_000,
        _ => 86_400_000,
    }
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    let [select, applies, script_len, rest @ ..] = data else {
        return;
    };
    let script_len = usize::from(*script_len).min(rest.len());
    let (script, json) = rest.split_at(script_len);
    let Ok(state) = serde_json::from_slice::<State>(json) else {
        return;
    };
    let script = Arc::new(Script {
        bytes: script.to_vec(),
        at: AtomicUsize::new(0),
    });
    let scripted = Scripted(script.clone());
    let mut all = flows(&scripted);
    let root = all.swap_remove(usize::from(select % 3));
    let flow = StepFlow::new(root).expect("the fixed flows build");
    exercise(&flow, state, &script, select & 0x80 != 0, applies % 8);
}

/// Checks `state` against `flow` and, when it fits, applies it up to `applies` times.
fn exercise(flow: &StepFlow, state: State, script: &Script, redelivered: bool, applies: u8) {
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut ctx = RunContext::new("fuzz-run").with_clock(clock.clone());
    ctx.redelivered = redelivered;
    let _ = flow.status(&state, START_MS);
    let _ = flow.next_call(&state);
    if let Err(e) = flow.check_state(&state) {
        let _ = e.to_string();
        return;
    }
    let mut state = state;
    for _ in 0..applies {
        clock.advance(clock_step(script.next()));
        let applied = crate::block_on(flow.apply_with_record(&ctx, state));
        for call in &applied.calls {
            let _ = format!("{call:?}");
        }
        state = applied.state;
        // What an apply leaves must be savable, loadable, and still fit the flow.
        let saved = serde_json::to_vec(&state).expect("a state serialises");
        let loaded: State = serde_json::from_slice(&saved).expect("a saved state loads again");
        assert!(
            flow.check_state(&loaded).is_ok(),
            "an applied state no longer fits its flow: {}",
            String::from_utf8_lossy(&saved)
        );
        let _ = flow.status(&state, START_MS);
        let _ = flow.next_call(&state);
        if flow.is_completed(&state) {
            break;
        }
    }
}

/// Valid inputs for the corpus: each flow run from the start with a script, its state saved
/// after every apply, each as an input that applies it once more.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (select, script) in [
        (0u8, &[1u8, 0, 0, 2, 1, 0, 5, 0, 3, 0][..]),
        (1, &[5, 2, 0, 3, 1, 0, 4][..]),
        (2, &[1, 0, 2, 1, 0, 0, 3][..]),
    ] {
        let script = Arc::new(Script {
            bytes: script.repeat(3),
            at: AtomicUsize::new(0),
        });
        let scripted = Scripted(script.clone());
        let mut all = flows(&scripted);
        let flow =
            StepFlow::new(all.swap_remove(usize::from(select))).expect("the fixed flows build");
        let clock = Arc::new(ManualClock::new(START_MS));
        let ctx = RunContext::new("seed").with_clock(clock.clone());
        let mut state = flow.new_state(json!({ "page": 1 }));
        for _ in 0..12 {
            clock.advance(60_000);
            state = crate::block_on(flow.apply(&ctx, state));
            let mut input = vec![select, 2, 4, 0, 1, 2, 3];
            input.extend(serde_json::to_vec(&state).expect("a state serialises"));
            seeds.push(input);
        }
    }
    seeds
}
