//! `case`: runs its body when the condition is true, skips it otherwise, and nests the other
//! kinds.

mod common;

use serde_json::json;
use stepflow_model::*;

use common::{Probe, drive, manual_clock, run_context};

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
    assert_eq!(
        first.call().cloned().unwrap().outcome,
        Outcome::Answered(answer)
    );
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
