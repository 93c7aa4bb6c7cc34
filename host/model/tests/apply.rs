//! What every apply guarantees: at most one call (plus the error handlers of a failure), a
//! failed call keeps the state, actions patch the data document, and the step context says
//! who, where and which call it is.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use stepflow_model::*;

use common::{Probe, T0, check_one_call, cursor, drive, manual_clock, run_context};

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
        failed.call().cloned().unwrap().outcome,
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
        first.call().cloned().unwrap().outcome,
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
    assert!(applied.call().cloned().unwrap().redelivered);

    let calls = p.contexts_of("t.v1/b");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key(), calls[1].idempotency_key());
    assert_eq!(calls[0].idempotency_key(), "run-1/t.v1/b#1");
    assert!(!calls[0].redelivered);
    assert!(calls[1].redelivered);
}
