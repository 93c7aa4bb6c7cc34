//! `parallel` and `for_each`: branches and instances run side by side (one call per strand per
//! apply), join in order, stop together on an error, and resume from a saved state.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use stepflow_model::*;

/// Applies until the run completes or fails, returning the calls of every apply.
async fn run_all(flow: &StepFlow, ctx: &RunContext, mut state: State) -> (State, Vec<Vec<String>>) {
    let mut applies = Vec::new();
    for _ in 0..1000 {
        if flow.is_completed(&state) || state.error.is_some() {
            break;
        }
        let applied = flow.apply_with_record(ctx, state).await;
        applies.push(applied.calls.iter().map(|c| c.step.to_string()).collect());
        state = applied.state;
    }
    (state, applies)
}

/// An action that records its call and patches `{<name>: <index or true>}`.
fn marks(p: &Arc<Probe>, name: &'static str) -> impl Action + 'static {
    let probe = p.clone();
    move |ctx: StepContext| {
        probe.record(format!("do {}", ctx.step), &ctx);
        let value = ctx.data.get("index").cloned().unwrap_or(Value::Bool(true));
        async move { Ok::<Value, StepError>(json!({ name: value })) }
    }
}

fn regions(p: &Arc<Probe>) -> Steps {
    Steps::named("t.v1").step("prepare", p.ok()).parallel(
        "regions",
        [
            Steps::named("eu")
                .step("a", marks(p, "eu"))
                .step("b", p.ok()),
            Steps::named("us").step("a", marks(p, "us")),
            Steps::named("ap")
                .step("a", p.ok())
                .step("b", p.ok())
                .step("c", marks(p, "ap")),
        ],
    )
}

#[tokio::test]
async fn branches_run_side_by_side_and_join_when_all_have_completed() {
    let p = Probe::new();
    let flow = StepFlow::new(regions(&p).step("after", p.ok())).unwrap();
    let ctx = run_context(&manual_clock());
    let (end, applies) = run_all(&flow, &ctx, flow.new_state(json!({}))).await;
    assert!(flow.is_completed(&end), "{:?}", end.cursor);
    assert_eq!(
        applies,
        [
            vec!["t.v1/prepare"],
            vec![
                "t.v1/regions/eu/a",
                "t.v1/regions/us/a",
                "t.v1/regions/ap/a"
            ],
            vec!["t.v1/regions/eu/b", "t.v1/regions/ap/b"],
            vec!["t.v1/regions/ap/c"],
            vec!["t.v1/after"],
        ]
        .map(|a| a.into_iter().map(str::to_string).collect::<Vec<_>>())
    );
    assert_eq!(*end.data, json!({ "eu": true, "us": true, "ap": true }));
    assert!(end.due.is_empty() && end.each.is_empty());
}

#[tokio::test]
async fn a_waiting_branch_holds_only_itself() {
    let p = Probe::new();
    let clock = manual_clock();
    let flow = StepFlow::new(Steps::named("t.v1").parallel(
        "both",
        [
            Steps::named("slow").wait_for_with(
                "ready",
                p.answers(&[false, true]),
                Wait::every(std::time::Duration::from_secs(10)),
            ),
            Steps::named("fast").step("a", p.ok()).step("b", p.ok()),
        ],
    ))
    .unwrap();
    let ctx = run_context(&clock);
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    assert_eq!(
        p.log(),
        ["check t.v1/both/slow/ready", "do t.v1/both/fast/a"]
    );
    assert_eq!(state.due.len(), 1, "the slow branch waits: {:?}", state.due);
    assert_eq!(
        flow.status(&state, T0),
        Status::Ready,
        "the fast one can go on"
    );
    let state = flow.apply(&ctx, state).await;
    assert_eq!(p.len(), 3, "only the fast branch moved: {:?}", p.log());
    assert_eq!(flow.status(&state, T0), Status::Waiting(T0 + 10_000));
    let state = flow.apply(&ctx, state).await;
    assert_eq!(p.len(), 3, "nothing is due");
    clock.advance(10_000);
    let state = flow.apply(&ctx, state).await;
    assert!(flow.is_completed(&state), "{:?}", state.cursor);
}

#[tokio::test]
async fn a_branch_error_no_retry_inside_takes_ends_its_siblings_and_restarts_the_group_around() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1").retry(
            "again",
            RetryPolicy::attempts(2),
            Steps::new().parallel(
                "regions",
                [
                    Steps::named("eu").step("a", p.fails(1)).step("b", p.ok()),
                    Steps::named("us")
                        .step("a", p.ok())
                        .step("b", p.ok())
                        .step("c", p.ok()),
                ],
            ),
        ),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let applied = flow
        .apply_with_record(&ctx, flow.new_state(json!({})))
        .await;
    let outcomes: Vec<_> = applied
        .calls
        .iter()
        .map(|c| (c.step.to_string(), c.outcome.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                "t.v1/again/regions/eu/a".to_string(),
                Outcome::Retrying {
                    error: StepError::retryable("boom"),
                    group: "t.v1/again".into(),
                    attempt: 2
                }
            ),
            ("t.v1/again/regions/us/a".to_string(), Outcome::Done(None)),
        ]
    );
    assert_eq!(
        cursor(&applied.state),
        [
            "start:t.v1/again/regions/eu/a",
            "start:t.v1/again/regions/us/a"
        ],
        "the group restarted: the us branch, at its second step, ended and started again"
    );
    assert_eq!(applied.state.attempts.get("t.v1/again"), Some(&2));
    let (end, _) = run_all(&flow, &ctx, applied.state).await;
    assert!(flow.is_completed(&end));
    assert_eq!(
        p.log().iter().filter(|c| c.ends_with("us/a")).count(),
        2,
        "the us branch ran again from its start: {:?}",
        p.log()
    );
}

#[tokio::test]
async fn a_branch_error_nothing_takes_fails_the_run_and_stops_the_other_branches() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").parallel(
        "regions",
        [
            Steps::named("eu").step("a", p.fails(1)),
            Steps::named("us").step("a", p.ok()).step("b", p.ok()),
        ],
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (failed, _) = run_all(&flow, &ctx, flow.new_state(json!({}))).await;
    let error = failed.error.clone().expect("the run failed");
    assert_eq!(error.step, "t.v1/regions/eu/a");
    assert_eq!(
        p.log(),
        ["do t.v1/regions/eu/a", "do t.v1/regions/us/a"],
        "us/b never started"
    );
    assert!(matches!(flow.status(&failed, T0), Status::Failed(_)));
    // Applying again retries the failing step, and the other branch goes on.
    let (end, _) = run_all(
        &flow,
        &ctx,
        State {
            error: None,
            ..failed
        },
    )
    .await;
    assert!(flow.is_completed(&end));
    assert_eq!(p.len(), 4);
}

fn files_flow(p: &Arc<Probe>, concurrency: u32) -> StepFlow {
    StepFlow::new(
        Steps::named("t.v1")
            .for_each(
                "files",
                ForEach::new("/files", "/done").concurrency(concurrency),
                Steps::new()
                    .step("read", marks(p, "read"))
                    .step("write", marks(p, "write")),
            )
            .step("after", p.ok()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_for_each_runs_each_element_once_at_most_n_at_a_time_and_collects_in_order() {
    let p = Probe::new();
    let flow = files_flow(&p, 3);
    let ctx = run_context(&manual_clock());
    let files = json!(["a", "b", "c", "d", "e", "f", "g"]);
    let (end, applies) = run_all(&flow, &ctx, flow.new_state(json!({ "files": files }))).await;
    assert!(flow.is_completed(&end), "{:?}", end.cursor);
    assert!(applies.iter().all(|a| a.len() <= 3), "{applies:?}");
    assert_eq!(
        applies[0],
        [
            "t.v1/files#0/read",
            "t.v1/files#1/read",
            "t.v1/files#2/read"
        ]
    );
    let expected: Vec<Value> = (0..7).map(|i| json!({ "read": i, "write": i })).collect();
    assert_eq!(end.data["done"], Value::Array(expected));
    assert_eq!(end.data["files"], files, "the array itself is untouched");
    for i in 0..7 {
        let path = format!("t.v1/files#{i}/read");
        let seen = p.contexts_of(&path);
        assert_eq!(seen.len(), 1, "{path} ran once");
        assert_eq!(seen[0].data["item"], files[i]);
        assert_eq!(seen[0].data["index"], i);
    }
    assert_eq!(p.log().last().map(String::as_str), Some("do t.v1/after"));
}

#[tokio::test]
async fn a_for_each_over_an_empty_array_completes_at_once_and_one_over_no_array_fails() {
    let p = Probe::new();
    let flow = files_flow(&p, 2);
    let ctx = run_context(&manual_clock());
    let (end, _) = run_all(&flow, &ctx, flow.new_state(json!({ "files": [] }))).await;
    assert!(flow.is_completed(&end));
    assert_eq!(end.data["done"], json!([]));
    assert_eq!(p.log(), ["do t.v1/after"]);

    for (data, says) in [
        (json!({}), "which is not in the data document"),
        (
            json!({ "files": { "a": 1 } }),
            "which holds an object instead of an array",
        ),
    ] {
        let state = flow.apply(&ctx, flow.new_state(data.clone())).await;
        let error = state.error.expect("a failure");
        assert_eq!(
            (error.step.as_str(), error.kind),
            ("t.v1/files", ErrorKind::Fatal)
        );
        assert!(
            error.message.contains("`/files`") && error.message.contains(says),
            "{error}"
        );
        assert_eq!(*state.data, data, "nothing was written");
    }
}

#[tokio::test]
async fn a_saved_state_in_the_middle_of_a_for_each_resumes_on_a_rebuilt_flow() {
    let p = Probe::new();
    let ctx = run_context(&manual_clock());
    let data = json!({ "files": [1, 2, 3, 4, 5] });
    let flow = files_flow(&p, 2);
    let mut state = flow.new_state(data.clone());
    for _ in 0..3 {
        state = flow.apply(&ctx, state).await;
    }
    let text = serde_json::to_string(&state).unwrap();
    assert!(
        text.contains("start:t.v1/files#2/read") || text.contains("files#2"),
        "{text}"
    );
    let saved: State = serde_json::from_str(&text).unwrap();
    let rebuilt = files_flow(&p, 2);
    rebuilt.check_state(&saved).unwrap();
    let (end, _) = run_all(&rebuilt, &ctx, saved).await;
    assert!(rebuilt.is_completed(&end));
    let expected: Vec<Value> = (0..5).map(|i| json!({ "read": i, "write": i })).collect();
    assert_eq!(end.data["done"], Value::Array(expected));
    let steps: Vec<String> = p.log();
    let unique: BTreeSet<&String> = steps.iter().collect();
    assert_eq!(unique.len(), steps.len(), "no step ran twice: {steps:?}");
    assert_eq!(steps.len(), 11);
}

#[tokio::test]
async fn nested_for_each_and_parallel_keep_their_places_apart() {
    let p = Probe::new();
    let flow = StepFlow::new(
        Steps::named("t.v1").for_each(
            "groups",
            ForEach::new("/groups", "/out").concurrency(2),
            Steps::new()
                .parallel(
                    "sides",
                    [
                        Steps::named("left").step("l", marks(&p, "l")),
                        Steps::named("right").step("r", marks(&p, "r")),
                    ],
                )
                .for_each(
                    "parts",
                    ForEach::new("/item/parts", "/parts").concurrency(5),
                    Steps::new().step("part", marks(&p, "part")),
                ),
        ),
    )
    .unwrap();
    let ctx = run_context(&manual_clock());
    let data = json!({ "groups": [{ "parts": [1, 2] }, { "parts": [] }, { "parts": [3] }] });
    let (end, _) = run_all(&flow, &ctx, flow.new_state(data)).await;
    assert!(flow.is_completed(&end), "{:?} {:?}", end.cursor, end.error);
    assert_eq!(
        end.data["out"],
        json!([
            { "l": 0, "r": 0, "parts": [{ "part": 0 }, { "part": 1 }] },
            { "l": 1, "r": 1, "parts": [] },
            { "l": 2, "r": 2, "parts": [{ "part": 0 }] },
        ])
    );
    assert!(
        p.log()
            .contains(&"do t.v1/groups#2/parts#0/part".to_string()),
        "{:?}",
        p.log()
    );
    let part = &p.contexts_of("t.v1/groups#0/parts#1/part")[0];
    assert_eq!(
        (part.data["item"].clone(), part.data["index"].clone()),
        (json!(2), json!(1))
    );
}

#[tokio::test]
async fn a_retry_inside_an_instance_restarts_only_that_instance() {
    let p = Probe::new();
    let flow = StepFlow::new(Steps::named("t.v1").for_each(
        "files",
        ForEach::new("/files", "/done").concurrency(4),
        Steps::new().retry(
            "r",
            RetryPolicy::attempts(3),
            Steps::new().step("first", p.ok()).step("flaky", p.fails(1)),
        ),
    ))
    .unwrap();
    let ctx = run_context(&manual_clock());
    let (end, _) = run_all(&flow, &ctx, flow.new_state(json!({ "files": [0, 1, 2] }))).await;
    assert!(flow.is_completed(&end));
    // Only the first flaky call fails (instance 0); only instance 0 runs `first` again.
    assert_eq!(p.attempts_of("t.v1/files#0/r/first"), [1, 2]);
    assert_eq!(p.attempts_of("t.v1/files#1/r/first"), [1]);
    assert_eq!(p.attempts_of("t.v1/files#2/r/flaky"), [1]);
    assert!(end.attempts.is_empty(), "{:?}", end.attempts);
}

#[test]
fn fan_out_items_are_checked_when_the_flow_is_built() {
    let p = Probe::new();
    let body = || Steps::new().step("x", p.ok());
    let cases: Vec<(Steps, &str)> = vec![
        (
            Steps::named("t.v1").parallel("p", []),
            "the parallel `p` has no branches",
        ),
        (
            Steps::named("t.v1").parallel("p", [Steps::named("a")]),
            "the branch `a` has no items",
        ),
        (
            Steps::named("t.v1").parallel("p", [body().renamed("a"), body().renamed("a")]),
            "two items are named `a`",
        ),
        (
            Steps::named("t.v1").parallel("p", [body().renamed("a/b")]),
            "contains `/`",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("/x", "/y").concurrency(0), body()),
            "has a concurrency of 0",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("x", "/y"), body()),
            "is not a JSON pointer",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("/x", "/y~2"), body()),
            "`~` must be followed by `0`",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("/x", ""), body()),
            "into the whole data document",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("/x", "/x/done"), body()),
            "overlaps the array it runs over",
        ),
        (
            Steps::named("t.v1").for_each("f", ForEach::new("/x", "/y"), Steps::new()),
            "has no items to run",
        ),
        (
            Steps::named("t.v1")
                .for_each("f", ForEach::new("/x", "/y"), body())
                .step("f#2", p.ok()),
            "spell one of its instances",
        ),
    ];
    for (steps, says) in cases {
        let error = StepFlow::new(steps).err().expect("refused");
        assert!(
            error.to_string().contains(says),
            "{error} does not say {says:?}"
        );
    }
}

#[test]
fn diagrams_show_forks_and_joins() {
    let flow = StepFlow::new(regions(&Probe::new())).unwrap();
    let mermaid = flow.to_mermaid();
    assert!(
        mermaid.contains("<<fork>>") && mermaid.contains("<<join>>"),
        "{mermaid}"
    );
    let dot = flow.to_dot();
    assert!(dot.contains("fork") && dot.contains("join"), "{dot}");
    let each = files_flow(&Probe::new(), 2);
    let mermaid = each.to_mermaid();
    assert!(mermaid.contains("for each"), "{mermaid}");
}
