//! `wait_for`: re-checks while false, paced by `every`, bounded by `timeout` (a timeout is an
//! error an enclosing retry can take).

mod common;

use std::time::Duration;

use serde_json::json;
use stepflow_model::*;

use common::{Probe, T0, cursor, drive, manual_clock, run_context};

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
        assert_eq!(
            applied.call().cloned().unwrap().outcome,
            Outcome::Answered(false)
        );
        assert_eq!(
            applied.state.not_before, None,
            "no pacing without Wait::every"
        );
        assert_eq!(flow.status(&applied.state, T0), Status::Ready);
        state = applied.state;
    }
    let applied = flow.apply_with_record(&ctx, state).await;
    assert_eq!(
        applied.call().cloned().unwrap().outcome,
        Outcome::Answered(true)
    );
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
    assert!(held.calls.is_empty());
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
    assert!(matches!(
        applied.call().cloned().unwrap().outcome,
        Outcome::Failed(_)
    ));
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
        applied.call().cloned().unwrap().outcome,
        Outcome::Retrying { attempt: 2, .. }
    ));
    assert_eq!(cursor(&applied.state), ["start:t.v1/r"]);
    assert!(applied.state.deadlines.is_empty());

    let (state, _) = drive(&flow, &ctx, applied.state, &p).await;
    assert!(flow.is_completed(&state));
    assert_eq!(p.attempts_of("t.v1/r/w"), [1, 1, 2]);
    assert!(state.deadlines.is_empty());
}

/// B8: `every: 1h, timeout: 3s` must not sleep an hour before noticing the timeout; the next
/// check is the earlier of `now + every` and the deadline.
#[tokio::test]
async fn a_timeout_shorter_than_every_fires_at_the_deadline() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").wait_for_with(
        "w",
        p.answers(&[false]),
        Wait::every(Duration::from_secs(3600)).timeout(Duration::from_secs(3)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    assert_eq!(state.not_before, Some(T0 + 3_000), "due at the deadline");
    assert_eq!(
        flow.status(&state, clock.now_ms()),
        Status::Waiting(T0 + 3_000)
    );

    clock.advance(2_999);
    let held = flow.apply_with_record(&ctx, state.clone()).await;
    assert!(held.calls.is_empty(), "nothing is due before the deadline");

    clock.advance(1);
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(matches!(
        applied.call().cloned().unwrap().outcome,
        Outcome::Failed(_)
    ));
    let error = applied.state.error.clone().unwrap();
    assert!(error.message.contains("gave up waiting"), "{error}");
    assert_eq!(p.len(), 2, "one check at the start, one at the deadline");
}

/// When `every` ends before the deadline, the check is paced by `every` as before.
#[tokio::test]
async fn every_shorter_than_the_timeout_still_paces_the_checks() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").wait_for_with(
        "w",
        p.answers(&[false]),
        Wait::every(Duration::from_secs(2)).timeout(Duration::from_secs(5)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let mut state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let mut due = Vec::new();
    while state.error.is_none() && due.len() < 10 {
        due.extend(state.not_before);
        clock.set(state.not_before.unwrap_or(clock.now_ms()));
        state = flow.apply(&ctx, state).await;
    }
    assert_eq!(due, [T0 + 2_000, T0 + 4_000, T0 + 5_000]);
    assert!(state.error.unwrap().message.contains("gave up waiting"));
}
