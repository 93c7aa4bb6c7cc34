//! Saved states: readable JSON that continues in a rebuilt flow from any point; `check_state`
//! and apply accept a state from another definition when its events exist, and refuse a
//! foreign one without panicking or losing it.

mod common;

use std::sync::Arc;

use serde_json::{Value, json};
use stepflow_model::*;

use common::{Probe, T0, drive, manual_clock, noop, run_context, yes};

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
            "kinds": { "quickstart.v1": "steps" },
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
            "kinds": { "quickstart.v1/step1": "step" },
        })
    );

    let unknown =
        serde_json::from_value::<State>(json!({ "cursor": [], "data": {}, "cursour": [] }));
    assert!(unknown.is_err(), "a misspelt field is refused, not ignored");
}

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
        assert!(applied.calls.is_empty());
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

/// `ready` is a `wait-for` in one version of the flow and a step (`do`) in the other, as when a
/// flow file's `wait-for: p.ready` is edited into `do: p.ready`.
fn ready_as(p: &Arc<Probe>, wait: bool) -> StepFlow {
    let steps = Steps::named("t.v1").step("a", p.ok());
    let steps = if wait {
        steps.wait_for("ready", p.answers(&[false]))
    } else {
        steps.step("ready", p.ok())
    };
    StepFlow::new(steps.step("b", p.ok())).unwrap()
}

/// B7: a run waiting at `start:t.v1/ready` must not resume on a flow where `ready` became a
/// step: it would run an action where a condition was awaited.
#[tokio::test]
async fn a_cursor_item_that_changed_kind_is_refused() {
    let p = Probe::new();
    let old = ready_as(&p, true);
    let ctx = run_context(&manual_clock());
    let mut state = old.new_state(json!({}));
    for _ in 0..2 {
        state = old.apply(&ctx, state).await;
    }
    assert_eq!(common::cursor(&state), ["start:t.v1/ready"], "waiting");
    let saved: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

    let new = ready_as(&p, false);
    let error = new.check_state(&saved).unwrap_err();
    assert_eq!(
        error,
        StateError::ChangedKind {
            flow: "t.v1".into(),
            event: "start:t.v1/ready".into(),
            step: "t.v1/ready".into(),
            was: ItemKind::WaitFor,
            now: ItemKind::Step,
        }
    );
    let text = error.to_string();
    for part in [
        "`start:t.v1/ready`",
        "`t.v1/ready` was a `wait-for` and is now a step (`do`)",
        "finish the run with the old definition, or cancel it",
    ] {
        assert!(text.to_lowercase().contains(&part.to_lowercase()), "{text}");
    }

    // Apply refuses it too, keeping the state, and calls nothing.
    let calls = p.len();
    let applied = new.apply_with_record(&ctx, saved.clone()).await;
    assert!(applied.calls.is_empty());
    assert_eq!(p.len(), calls, "nothing ran");
    let failure = applied.state.error.clone().unwrap();
    assert_eq!(
        (failure.step.as_str(), failure.kind),
        ("t.v1", ErrorKind::Fatal)
    );
    assert_eq!(failure.message, text);
    assert_eq!(applied.state.cursor, saved.cursor);

    // The same flow, rebuilt, takes it.
    let rebuilt = ready_as(&p, true);
    rebuilt.check_state(&saved).unwrap();
    let applied = rebuilt.apply_with_record(&ctx, saved).await;
    assert_eq!(
        applied.call().cloned().unwrap().outcome,
        Outcome::Answered(false)
    );
}

/// States saved before kinds were recorded keep today's rule: events are checked by name.
#[tokio::test]
async fn a_state_without_recorded_kinds_is_checked_by_name_alone() {
    let p = Probe::new();
    let new = ready_as(&p, false);
    let old_format = serde_json::from_value::<State>(json!({
        "cursor": ["start:t.v1/ready"],
        "data": {},
        "calls": 1,
    }))
    .unwrap();
    assert!(old_format.kinds.is_empty());
    new.check_state(&old_format).unwrap();
    let ctx = run_context(&manual_clock());
    let (end, _) = drive(&new, &ctx, old_format, &p).await;
    assert!(new.is_completed(&end));
    assert_eq!(p.log(), ["do t.v1/ready", "do t.v1/b"]);
}

/// Every kind's recorded spelling reads back, and the kind is the item's at every stop of a
/// run of every kind.
#[tokio::test]
async fn every_apply_records_the_kind_of_the_item_at_the_cursor() {
    for kind in ItemKind::ALL {
        let text = serde_json::to_value(kind).unwrap();
        assert_eq!(text, Value::from(kind.as_str()));
        assert_eq!(serde_json::from_value::<ItemKind>(text).unwrap(), kind);
    }
    let p = Probe::new();
    let flow = every_kind(&p);
    let ctx = run_context(&manual_clock());
    let mut state = flow.new_state(json!({}));
    let mut seen = std::collections::BTreeSet::new();
    while !flow.is_completed(&state) {
        state = flow.apply(&ctx, state).await;
        // `start:x` is decided by `x`, `completed:x` by the item `x` is in.
        let deciders: Vec<&str> = state
            .cursor
            .iter()
            .map(|e| match e.as_str().split_once(':').unwrap() {
                ("completed", x) => x.rsplit_once('/').map_or(x, |(parent, _)| parent),
                (_, x) => x,
            })
            .collect();
        let kinds: Vec<&str> = state.kinds.keys().map(|k| &**k).collect();
        assert_eq!(kinds, deciders, "one kind per cursor event");
        seen.extend(state.kinds.values().copied());
    }
    assert!(seen.len() >= 4, "{seen:?}");
}

/// A run stopped between steps sits at `completed:t.v1/a`; what follows is decided by the group
/// `a` is in, so `a` itself may have changed kind (it has run already).
#[tokio::test]
async fn a_finished_item_that_changed_kind_does_not_stop_the_run() {
    let p = Probe::new();
    let old = StepFlow::new(
        Steps::named("t.v1")
            .step("a", p.ok())
            .step("b", p.ok())
            .step("c", p.ok()),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let state = old.apply(&ctx, old.new_state(json!({}))).await;
    assert_eq!(common::cursor(&state), ["completed:t.v1/a"]);
    let saved: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

    let new = StepFlow::new(
        Steps::named("t.v1")
            .wait_for("a", p.answers(&[true]))
            .step("b", p.ok())
            .step("c", p.ok()),
    )
    .unwrap();
    new.check_state(&saved).unwrap();
    let (end, _) = drive(&new, &ctx, saved, &p).await;
    assert!(new.is_completed(&end));
    assert_eq!(p.log(), ["do t.v1/a", "do t.v1/b", "do t.v1/c"]);
}

/// At `completed:t.v1/l/y` a `loop-until` asks its condition; had `l` become a `case`, the run
/// would skip that question: refused, naming `l`.
#[tokio::test]
async fn a_changed_parent_at_a_completed_event_is_refused() {
    let p = Probe::new();
    let body = |p: &Arc<Probe>| Steps::new().step("y", p.ok()).step("z", p.ok());
    let old =
        StepFlow::new(Steps::named("t.v1").loop_until("l", p.answers(&[true]), body(&p))).unwrap();
    let ctx = run_context(&manual_clock());
    let state = old.apply(&ctx, old.new_state(json!({}))).await;
    assert_eq!(common::cursor(&state), ["completed:t.v1/l/y"]);
    let saved: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();

    let new = StepFlow::new(Steps::named("t.v1").case("l", p.answers(&[true]), body(&p))).unwrap();
    let error = new.check_state(&saved).unwrap_err();
    assert_eq!(
        error,
        StateError::ChangedKind {
            flow: "t.v1".into(),
            event: "completed:t.v1/l/y".into(),
            step: "t.v1/l".into(),
            was: ItemKind::LoopUntil,
            now: ItemKind::Case,
        }
    );
}
