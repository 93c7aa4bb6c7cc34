//! `wait_for_signal`: a wait that the run's inbox moves, not a function. It takes the first
//! signal of its name (one that arrived early is kept), stores its payload under
//! `signals.<name>`, makes no call while nothing arrived, and a timeout is an error an enclosing
//! retry can take.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use stepflow_model::*;

use common::{Probe, T0, cursor, manual_clock, run_context};

fn signal(seq: u64, name: &str, payload: Value) -> Signal {
    Signal {
        seq,
        id: format!("id-{seq}"),
        name: name.to_string(),
        payload,
        received_ms: T0,
    }
}

fn approval_flow(p: &std::sync::Arc<Probe>) -> StepFlow {
    StepFlow::new(
        Steps::named("t.v1")
            .step("a", p.ok())
            .wait_for_signal("approval", "approve")
            .step("b", p.ok()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_signal_wait_makes_no_call_until_its_signal_is_delivered_then_stores_the_payload() {
    let p = Probe::new();
    let flow = approval_flow(&p);
    let ctx = run_context(&manual_clock());
    let state = flow.apply(&ctx, flow.new_state(json!({"x": 1}))).await;
    assert_eq!(flow.awaited_signal(&state), Some("approve"));
    assert_eq!(
        flow.status(&state, T0),
        Status::AwaitingSignal {
            signal: "approve".into(),
            until: None
        }
    );
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(applied.calls.is_empty(), "no signal, no call");
    assert_eq!(cursor(&applied.state), ["start:t.v1/approval"]);
    let mut state = applied.state;

    // Another signal's name does not move the wait, and stays in the inbox.
    assert!(state.deliver([
        signal(1, "other", json!(1)),
        signal(2, "approve", json!({"by": "ana"}))
    ]));
    assert_eq!(flow.status(&state, T0), Status::Ready);
    let applied = flow.apply_with_record(&ctx, state).await;
    let call = applied
        .call()
        .cloned()
        .expect("taking the signal is recorded");
    assert_eq!(call.kind, CallKind::WaitFor);
    assert_eq!(call.step.as_ref(), "t.v1/approval");
    assert_eq!(
        call.outcome,
        Outcome::Done(Some(json!({"signals": {"approve": {"by": "ana"}}})))
    );
    let state = applied.state;
    assert_eq!(state.data["signals"]["approve"], json!({"by": "ana"}));
    assert_eq!(state.data["x"], json!(1));
    assert_eq!(state.inbox, [signal(1, "other", json!(1))]);
    assert_eq!(state.signals_read, 2);
    assert_eq!(flow.awaited_signal(&state), None);
    let state = flow.apply(&ctx, state).await;
    assert!(flow.is_completed(&state));
    assert_eq!(p.log(), ["do t.v1/a", "do t.v1/b"]);
}

#[tokio::test]
async fn a_signal_that_arrived_early_is_kept_for_the_wait() {
    let p = Probe::new();
    let flow = approval_flow(&p);
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    assert_eq!(flow.awaited_signal(&state), None, "not at the wait yet");
    state.deliver([signal(1, "approve", json!(true))]);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(state.inbox.len(), 1, "step `a` does not touch the inbox");
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(matches!(
        applied.call().cloned().map(|c| c.outcome),
        Some(Outcome::Done(_))
    ));
    assert!(applied.state.inbox.is_empty());
    assert_eq!(applied.state.data["signals"]["approve"], json!(true));
}

#[tokio::test]
async fn delivering_the_same_signals_again_adds_nothing() {
    let mut state = State::default();
    assert!(state.deliver([signal(1, "a", json!(1)), signal(2, "a", json!(2))]));
    assert!(!state.deliver([signal(1, "a", json!(1)), signal(2, "a", json!(2))]));
    assert!(state.deliver([signal(2, "a", json!(2)), signal(3, "a", json!(3))]));
    let seqs: Vec<u64> = state.inbox.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn each_signal_moves_one_wait() {
    let flow = StepFlow::new(
        Steps::named("t.v1")
            .wait_for_signal("first", "go")
            .wait_for_signal("second", "go"),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    state.deliver([signal(1, "go", json!({"n": 1}))]);
    let state = flow.apply(&ctx, state).await;
    assert_eq!(cursor(&state), ["completed:t.v1/first"]);
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(
        applied.calls.is_empty(),
        "the one signal was taken by the first wait"
    );
    let mut state = applied.state;
    state.deliver([signal(2, "go", json!({"n": 2}))]);
    let state = flow.apply(&ctx, state).await;
    assert!(flow.is_completed(&state));
    assert_eq!(state.data["signals"]["go"], json!({"n": 2}));
}

#[tokio::test]
async fn a_signal_timeout_is_an_error_an_enclosing_retry_takes() {
    let flow = StepFlow::new(Steps::named("t.v1").retry(
        "again",
        RetryPolicy::attempts(2),
        Steps::named("body").wait_for_signal_within("approval", "approve", Duration::from_secs(60)),
    ))
    .unwrap();
    let clock = manual_clock();
    let ctx = run_context(&clock);
    let state = flow.new_state(json!({}));
    assert_eq!(
        flow.status(&state, T0),
        Status::Ready,
        "the deadline is not set yet"
    );
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(applied.calls.is_empty());
    let state = applied.state;
    assert_eq!(
        flow.status(&state, T0),
        Status::AwaitingSignal {
            signal: "approve".into(),
            until: Some(T0 + 60_000)
        }
    );
    clock.advance(60_000);
    assert_eq!(flow.status(&state, clock.now_ms()), Status::Ready);
    let applied = flow.apply_with_record(&ctx, state).await;
    let call = applied.call().cloned().expect("the timeout is recorded");
    let Outcome::Retrying { error, attempt, .. } = &call.outcome else {
        panic!("expected a retry, got {:?}", call.outcome);
    };
    assert_eq!(*attempt, 2);
    assert!(error.is_retryable());
    assert!(
        error
            .message
            .contains("no signal `approve` arrived within 60s"),
        "{error}"
    );
    // The second attempt gets a fresh deadline, and fails the run when it passes.
    let state = flow.apply(&ctx, applied.state).await;
    assert_eq!(
        flow.status(&state, clock.now_ms()),
        Status::AwaitingSignal {
            signal: "approve".into(),
            until: Some(T0 + 120_000)
        }
    );
    clock.advance(60_000);
    let applied = flow.apply_with_record(&ctx, state).await;
    assert!(matches!(
        applied.call().cloned().map(|c| c.outcome),
        Some(Outcome::Failed(_))
    ));
    assert!(matches!(
        flow.status(&applied.state, clock.now_ms()),
        Status::Failed(_)
    ));
}

#[test]
fn a_signal_name_that_could_not_be_sent_is_refused_at_build() {
    let err = StepFlow::new(Steps::named("t.v1").wait_for_signal("w", "app rove"))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        matches!(err, BuildError::BadSignalName { .. }) && text.contains("\"app rove\""),
        "{text}"
    );
    assert!(StepFlow::new(Steps::named("t.v1").wait_for_signal("w", "")).is_err());
    assert!(check_signal_name("deploy.prod-ok_2").is_ok());
    assert!(check_signal_name(&"a".repeat(MAX_SIGNAL_NAME + 1)).is_err());
}

#[test]
fn signal_waits_are_drawn_and_hashed_by_their_signal() {
    let a = StepFlow::new(Steps::named("t.v1").wait_for_signal("w", "approve")).unwrap();
    let b = StepFlow::new(Steps::named("t.v1").wait_for_signal("w", "reject")).unwrap();
    assert_ne!(a.definition_hash(), b.definition_hash());
    let mermaid = a.to_mermaid();
    assert!(mermaid.contains("wait signalled"), "{mermaid}");
    let transitions = a.transitions();
    assert!(
        transitions
            .iter()
            .any(|t| t.call == Some((CallKind::WaitFor, "signal approve".into()))),
        "{transitions:?}"
    );
}
