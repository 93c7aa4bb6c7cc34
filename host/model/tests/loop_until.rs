//! `loop_until`: runs its body, then asks; again until the answer is true. A failing condition
//! is the loop's, and a retry inside starts afresh each iteration.

mod common;

use serde_json::json;
use stepflow_model::*;

use common::{Probe, cursor, drive, manual_clock, run_context};

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
    assert_eq!(&*failed.call().cloned().unwrap().step, "t.v1/l");
    assert_eq!(cursor(&failed.state), ["completed:t.v1/l/x"]);
    assert_eq!(p.log(), ["do t.v1/l/x"]);
    assert_eq!(failed.state.error.unwrap().step, "t.v1/l");
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
