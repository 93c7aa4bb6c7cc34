//! `retry`: error handlers, declarative policies (attempts, fatal errors) and back-off; attempts
//! live in the saved state, and nested retries pass on what they give up.

mod common;

use std::time::Duration;

use serde_json::json;
use stepflow_model::*;

use common::{Probe, T0, cursor, drive, manual_clock, run_context};

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
        failed.call().cloned().unwrap().outcome,
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

/// A failing handler's error is what the next group out is offered, but the run's failure is
/// the step's own error, and its message says that the handler failed too.
#[tokio::test]
async fn a_failing_handler_is_named_in_the_failure_and_the_step_keeps_its_error() {
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
        ("t.v1/r/a", ErrorKind::Retryable)
    );
    assert_eq!(
        error.message,
        "boom; the error handler of `t.v1/r` failed: handler broke (fatal)"
    );
    assert_eq!(
        error.to_string(),
        "step `t.v1/r/a` failed: boom; the error handler of `t.v1/r` failed: handler broke (fatal)"
    );
}

#[tokio::test]
async fn a_handler_that_says_yes_is_recorded_with_the_error_it_was_given() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::handler(p.handler(&[true])),
        Steps::new().step("s", p.fails(1)),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let record = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await
        .call()
        .cloned()
        .unwrap();
    assert_eq!(
        record.outcome,
        Outcome::Retrying {
            error: StepError::retryable("boom"),
            group: "t.v1/r".into(),
            attempt: 2,
        }
    );
    assert_eq!(
        record.handlers,
        [HandlerCall {
            group: "t.v1/r".into(),
            error: "boom".into(),
            answer: Ok(true),
        }]
    );
}

/// The issue's case: a step fails, the inner handler fails, the outer one declines. The record
/// keeps all three facts: the step's own error, the inner handler's error (and what it was
/// given), and the outer handler's answer (and what it was given).
#[tokio::test]
async fn nested_retry_records_the_steps_error_and_every_handler_asked() {
    let p = Probe::new();
    let p2 = p.clone();
    let inner = move |ctx: StepContext, error: StepError| {
        p2.record(format!("handle {}: {}", ctx.step, error.message), &ctx);
        async { Err::<bool, StepError>(StepError::retryable("inner handler broke")) }
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "o",
        RetryPolicy::handler(p.handler(&[false])),
        Steps::new().retry(
            "i",
            RetryPolicy::handler(inner),
            Steps::new().step("s", p.fails(1)),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let applied = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    assert_eq!(
        p.log(),
        [
            "do t.v1/o/i/s",
            "handle t.v1/o/i: boom",
            "handle t.v1/o: inner handler broke",
        ],
        "the outer handler is offered the inner handler's error, as in the seed"
    );
    let record = applied.call().cloned().unwrap();
    assert_eq!(record.step.as_ref(), "t.v1/o/i/s");
    assert_eq!(
        record.outcome,
        Outcome::Failed(StepError::retryable("boom"))
    );
    assert_eq!(
        record.handlers,
        [
            HandlerCall {
                group: "t.v1/o/i".into(),
                error: "boom".into(),
                answer: Err("inner handler broke".into()),
            },
            HandlerCall {
                group: "t.v1/o".into(),
                error: "inner handler broke".into(),
                answer: Ok(false),
            },
        ]
    );
    let failure = applied.state.error.clone().unwrap();
    assert_eq!(failure.step, "t.v1/o/i/s");
    assert_eq!(
        failure.message,
        "boom; the error handler of `t.v1/o/i` failed: inner handler broke"
    );
    assert_eq!(cursor(&applied.state), ["start:t.v1/o/i/s"]);
}

/// A policy without a handler decides without calling anything: no handler calls are recorded.
#[tokio::test]
async fn a_retry_without_handler_records_no_handler_calls() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "r",
        RetryPolicy::attempts(2),
        Steps::new().step("s", p.fails(usize::MAX)),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let first = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    let record = first.call().cloned().unwrap();
    assert!(matches!(record.outcome, Outcome::Retrying { .. }));
    assert_eq!(record.handlers, []);
    let second = flow.apply_with_record(&ctx, first.state).await;
    let record = second.call().cloned().unwrap();
    assert_eq!(
        record.outcome,
        Outcome::Failed(StepError::retryable("boom"))
    );
    assert_eq!(record.handlers, []);
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
        outcomes.extend(applied.call().cloned().map(|c| c.outcome));
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

/// A fatal error is never retried: the handler that would say yes is not even asked, and the
/// run fails at the step with the step's own (fatal) error.
#[tokio::test]
async fn a_fatal_error_is_never_retried_and_no_handler_is_asked() {
    let p = Probe::new();
    let p2 = p.clone();
    let fatal = move |ctx: StepContext| {
        p2.record(format!("do {}", ctx.step), &ctx);
        async { Err::<(), StepError>(StepError::fatal("odd")) }
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "o",
        RetryPolicy::attempts(3).with_handler(p.handler(&[true, true])),
        Steps::new().retry(
            "i",
            RetryPolicy::attempts(3).with_handler(p.handler(&[true, true])),
            Steps::new().step("s", fatal),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let applied = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    assert_eq!(p.log(), ["do t.v1/o/i/s"]);
    let record = applied.call().cloned().unwrap();
    assert_eq!(record.outcome, Outcome::Failed(StepError::fatal("odd")));
    assert!(record.handlers.is_empty(), "{:?}", record.handlers);
    let failure = applied.state.error.unwrap();
    assert_eq!(
        (failure.step.as_str(), failure.kind),
        ("t.v1/o/i/s", ErrorKind::Fatal)
    );
}

/// A handler that fails with a fatal error ends the offer too: the next group out is not
/// asked, and the run fails with the step's own error and the handler's named after it.
#[tokio::test]
async fn a_handlers_fatal_error_is_not_offered_to_the_next_group_out() {
    let p = Probe::new();
    let broken = |_: StepContext, _: StepError| async {
        Err::<bool, StepError>(StepError::fatal("handler broke"))
    };
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "o",
        RetryPolicy::handler(p.handler(&[true])),
        Steps::new().retry(
            "i",
            RetryPolicy::handler(broken),
            Steps::new().step("s", p.fails(1)),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let applied = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    assert_eq!(p.log(), ["do t.v1/o/i/s"], "the outer handler is not asked");
    let record = applied.call().cloned().unwrap();
    assert_eq!(record.handlers.len(), 1);
    assert_eq!(
        applied.state.error.unwrap().message,
        "boom; the error handler of `t.v1/o/i` failed: handler broke (fatal)"
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
    assert!(held.calls.is_empty());
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
        Steps::new().step("s", p.fails(usize::MAX)),
    ))
    .unwrap();
    // Each run waits between half and all of the 10 s delay, and the waits differ between
    // runs (the point of jitter: retries of many runs do not arrive together).
    let mut waits = Vec::new();
    for run in 0..20 {
        let ctx = RunContext::new(format!("run-{run}")).with_clock(manual_clock());
        let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
        waits.push(state.not_before.unwrap() - T0);
    }
    assert!(
        waits.iter().all(|w| (5_000..=10_000).contains(w)),
        "{waits:?}"
    );
    waits.sort_unstable();
    waits.dedup();
    assert!(waits.len() >= 15, "jitter barely varies: {waits:?}");
}
