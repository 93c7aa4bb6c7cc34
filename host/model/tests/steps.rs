//! A step calls its action once; nested groups run in order under their own paths.

mod common;

use serde_json::json;
use stepflow_model::*;

use common::{Probe, T0, cursor, drive, manual_clock, run_context};

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
    let call = first.call().cloned().expect("a call");
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
    assert!(again.calls.is_empty());
    assert_eq!(
        again.state, state,
        "applying a completed run changes nothing"
    );
    assert_eq!(p.len(), 2);
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
