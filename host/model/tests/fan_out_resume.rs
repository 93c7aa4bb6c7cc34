//! For random flow trees with `parallel` and `for_each` among the other kinds, and function
//! results that depend only on what each call is told (its step, sequence number and attempt):
//!
//! - a crash at any apply (the state saved before it reloaded into a freshly built flow, the
//!   calls of that apply made again as re-deliveries) ends in the same state as a run without
//!   it, having made the same calls plus the re-delivered ones;
//! - every step that must run ran, in every branch and for every element, and every element's
//!   instance left its results in its own place;
//! - no apply calls a strand twice, no `for_each` has more instances in flight than its limit,
//!   and its counts never pass the number of elements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use serde_json::{Value, json};
use stepflow_model::{
    ForEach, RetryPolicy, RunContext, State, StepContext, StepError, StepFlow, StepResult, Steps,
};

#[derive(Clone, Debug)]
enum Tree {
    Do(String),
    Wait(String),
    Steps(String, Vec<Tree>),
    Case(String, Vec<Tree>),
    Loop(String, Vec<Tree>),
    Retry(String, Vec<Tree>),
    Parallel(String, Vec<Vec<Tree>>),
    /// Name, concurrency, array length, body.
    ForEach(String, u32, usize, Vec<Tree>),
}

fn tree() -> impl Strategy<Value = Vec<Tree>> {
    let leaf = prop_oneof![
        3 => Just(Tree::Do(String::new())),
        1 => Just(Tree::Wait(String::new())),
    ];
    let item = leaf.prop_recursive(4, 32, 4, |inner| {
        let kids = prop::collection::vec(inner.clone(), 0..4);
        let body = prop::collection::vec(inner, 1..4);
        prop_oneof![
            1 => kids.clone().prop_map(|k| Tree::Steps(String::new(), k)),
            1 => kids.clone().prop_map(|k| Tree::Case(String::new(), k)),
            1 => kids.clone().prop_map(|k| Tree::Loop(String::new(), k)),
            1 => kids.prop_map(|k| Tree::Retry(String::new(), k)),
            2 => prop::collection::vec(body.clone(), 1..4)
                .prop_map(|b| Tree::Parallel(String::new(), b)),
            2 => (1u32..4, 0usize..5, body)
                .prop_map(|(c, n, b)| Tree::ForEach(String::new(), c, n, b)),
        ]
    });
    prop::collection::vec(item, 1..5).prop_map(|mut items| {
        let mut n = 0;
        for item in &mut items {
            rename(item, &mut n);
        }
        items
    })
}

fn rename(tree: &mut Tree, n: &mut usize) {
    let name = match tree {
        Tree::Do(name)
        | Tree::Wait(name)
        | Tree::Steps(name, _)
        | Tree::Case(name, _)
        | Tree::Loop(name, _)
        | Tree::Retry(name, _)
        | Tree::Parallel(name, _)
        | Tree::ForEach(name, ..) => name,
    };
    *name = format!("n{n}");
    *n += 1;
    match tree {
        Tree::Steps(_, kids)
        | Tree::Case(_, kids)
        | Tree::Loop(_, kids)
        | Tree::Retry(_, kids)
        | Tree::ForEach(_, _, _, kids) => kids.iter_mut().for_each(|k| rename(k, n)),
        Tree::Parallel(_, branches) => branches.iter_mut().flatten().for_each(|k| rename(k, n)),
        Tree::Do(_) | Tree::Wait(_) => {}
    }
}

/// The world: each call's result is drawn from the seed and what the call is told, so a
/// re-delivered call gets the same result; every call is logged.
struct Script {
    seed: u64,
    log: Mutex<Vec<String>>,
    /// Whether to count instance completions (not in a run whose calls are re-delivered).
    strict: bool,
    /// Completions of each for-each instance since its for-each last started, by instance path.
    completions: Mutex<BTreeMap<String, u32>>,
}

impl Script {
    fn roll(&self, ctx: &StepContext, what: &str) -> u64 {
        self.log
            .lock()
            .unwrap()
            .push(format!("{what} {} #{}", ctx.step, ctx.sequence));
        let mut x = self.seed ^ ctx.sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in ctx.step.bytes().chain([ctx.attempt as u8]) {
            x = (x ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
}

/// `(/arr<name>, /res<name>)`: where a `for_each` reads and writes.
fn places(name: &str) -> (String, String) {
    (format!("/arr{name}"), format!("/res{name}"))
}

fn build(items: &[Tree], script: &Arc<Script>, in_retry: bool) -> Steps {
    let mut steps = Steps::new();
    for item in items {
        steps = match item {
            Tree::Do(name) => {
                let (s, n) = (script.clone(), name.clone());
                steps.step(name.as_str(), move |ctx: StepContext| {
                    let roll = s.roll(&ctx, "do");
                    let index_matches = match ctx.step.rsplit_once('#') {
                        Some((_, rest)) => {
                            let i: u64 = rest.split('/').next().unwrap().parse().unwrap();
                            ctx.data["index"] == i
                        }
                        None => true,
                    };
                    let n = n.clone();
                    async move {
                        assert!(index_matches, "a step sees its own instance's index");
                        if in_retry && roll.is_multiple_of(5) {
                            Err(StepError::retryable("flaky"))
                        } else {
                            Ok(json!({ n: true }))
                        }
                    }
                })
            }
            Tree::Wait(name) => steps.wait_for(name.as_str(), condition(script, "wait")),
            Tree::Steps(name, kids) => {
                steps.steps(build(kids, script, in_retry).renamed(name.as_str()))
            }
            Tree::Case(name, kids) => steps.case(
                name.as_str(),
                condition(script, "case"),
                build(kids, script, in_retry),
            ),
            Tree::Loop(name, kids) => steps.loop_until(
                name.as_str(),
                condition(script, "loop"),
                build(kids, script, in_retry),
            ),
            Tree::Retry(name, kids) => steps.retry(
                name.as_str(),
                RetryPolicy::attempts(4),
                build(kids, script, true),
            ),
            Tree::Parallel(name, branches) => steps.parallel(
                name.as_str(),
                branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| build(b, script, in_retry).renamed(format!("b{i}"))),
            ),
            Tree::ForEach(name, concurrency, len, kids) => {
                let (over, results) = places(name);
                // Around each for-each, steps that count how often each instance completes
                // between its start (`pre`) and its end (`post`): exactly once.
                let (pre, end, post) = (script.clone(), script.clone(), script.clone());
                let len = *len;
                steps
                    .step(format!("{name}pre"), move |ctx: StepContext| {
                        let each = ctx.step.strip_suffix("pre").unwrap().to_string();
                        pre.completions
                            .lock()
                            .unwrap()
                            .retain(|k, _| !k.starts_with(&format!("{each}#")));
                        async { Ok::<(), StepError>(()) }
                    })
                    .for_each(
                        name.as_str(),
                        ForEach::new(over, results).concurrency(*concurrency),
                        build(kids, script, in_retry).step("end", move |ctx: StepContext| {
                            let instance = ctx.step.strip_suffix("/end").unwrap().to_string();
                            let mut seen = end.completions.lock().unwrap();
                            let n = seen.entry(instance.clone()).or_default();
                            *n += 1;
                            assert!(!end.strict || *n == 1, "{instance} completed {n} times");
                            async { Ok::<(), StepError>(()) }
                        }),
                    )
                    .step(format!("{name}post"), move |ctx: StepContext| {
                        let each = ctx.step.strip_suffix("post").unwrap().to_string();
                        let seen = post.completions.lock().unwrap();
                        for i in 0..len {
                            let n = seen.get(&format!("{each}#{i}")).copied().unwrap_or(0);
                            assert!(!post.strict || n == 1, "{each}#{i} completed {n} times");
                        }
                        async { Ok::<(), StepError>(()) }
                    })
            }
        };
    }
    steps
}

fn condition(
    script: &Arc<Script>,
    kind: &'static str,
) -> impl Fn(StepContext) -> std::pin::Pin<Box<dyn Future<Output = StepResult<bool>> + Send>>
+ Send
+ Sync
+ 'static {
    let s = script.clone();
    move |ctx: StepContext| {
        let roll = s.roll(&ctx, kind);
        Box::pin(async move { Ok(roll.is_multiple_of(2)) })
    }
}

/// The data a run starts with: an array for every `for_each`, of its length.
fn data(items: &[Tree], out: &mut serde_json::Map<String, Value>) {
    for item in items {
        match item {
            Tree::ForEach(name, _, len, kids) => {
                out.insert(format!("arr{name}"), json!((0..*len).collect::<Vec<_>>()));
                data(kids, out);
            }
            Tree::Steps(_, kids)
            | Tree::Case(_, kids)
            | Tree::Loop(_, kids)
            | Tree::Retry(_, kids) => data(kids, out),
            Tree::Parallel(_, branches) => branches.iter().for_each(|b| data(b, out)),
            Tree::Do(_) | Tree::Wait(_) => {}
        }
    }
}

/// Every `for_each`'s path (without instance numbers) and concurrency.
fn limits(items: &[Tree], scope: &str, out: &mut BTreeMap<String, u32>) {
    for item in items {
        match item {
            Tree::ForEach(name, c, _, kids) => {
                let path = format!("{scope}/{name}");
                out.insert(path.clone(), *c);
                limits(kids, &path, out);
            }
            Tree::Steps(name, kids)
            | Tree::Case(name, kids)
            | Tree::Loop(name, kids)
            | Tree::Retry(name, kids) => limits(kids, &format!("{scope}/{name}"), out),
            Tree::Parallel(name, branches) => {
                for (i, b) in branches.iter().enumerate() {
                    limits(b, &format!("{scope}/{name}/b{i}"), out);
                }
            }
            Tree::Do(_) | Tree::Wait(_) => {}
        }
    }
}

/// The paths of the steps that must run (not inside a `case`), with instance numbers; and for
/// each `for_each` instance place, the names of its body's steps that must leave a mark there.
fn must_run(items: &[Tree], scope: &str, out: &mut BTreeSet<String>) {
    for item in items {
        match item {
            Tree::Do(name) => {
                out.insert(format!("{scope}/{name}"));
            }
            Tree::Wait(_) | Tree::Case(..) => {}
            Tree::Steps(name, kids) | Tree::Loop(name, kids) | Tree::Retry(name, kids) => {
                must_run(kids, &format!("{scope}/{name}"), out);
            }
            Tree::Parallel(name, branches) => {
                for (i, b) in branches.iter().enumerate() {
                    must_run(b, &format!("{scope}/{name}/b{i}"), out);
                }
            }
            Tree::ForEach(name, _, len, kids) => {
                for i in 0..*len {
                    must_run(kids, &format!("{scope}/{name}#{i}"), out);
                }
            }
        }
    }
}

const MAX_APPLIES: usize = 3000;

struct Outcome {
    state: State,
    log: Vec<String>,
}

/// Runs the tree until it completes or fails. With `crash_at = Some(n)`, apply number `n` is
/// made and then forgotten, as if the process died before saving it: the state saved before
/// it is loaded into a freshly built flow, which goes on.
fn run(items: &[Tree], seed: u64, crash_at: Option<usize>, check: bool) -> (Outcome, Vec<String>) {
    let script = Arc::new(Script {
        seed,
        log: Mutex::new(Vec::new()),
        strict: crash_at.is_none(),
        completions: Mutex::default(),
    });
    let root = || build(items, &script, false).renamed("root");
    let mut flow = StepFlow::new(root()).expect("generated flows are valid");
    let mut limit = BTreeMap::new();
    limits(items, "root", &mut limit);
    let mut start = serde_json::Map::new();
    data(items, &mut start);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut ctx = RunContext::new("run");
    let mut state = flow.new_state(Value::Object(start));
    let mut redelivered = Vec::new();
    for n in 0..MAX_APPLIES {
        if flow.is_completed(&state) || state.error.is_some() {
            break;
        }
        let before = script.log.lock().unwrap().len();
        let applied = rt.block_on(flow.apply_with_record(&ctx, state.clone()));
        ctx.redelivered = false;
        if check {
            check_apply(&applied, &limit);
        }
        if crash_at == Some(n) {
            redelivered = script.log.lock().unwrap()[before..].to_vec();
            let text = serde_json::to_string(&state).unwrap();
            state = serde_json::from_str(&text).unwrap();
            flow = StepFlow::new(root()).unwrap();
            flow.check_state(&state).unwrap();
            ctx.redelivered = true;
            continue;
        }
        state = applied.state;
    }
    let log = script.log.lock().unwrap().clone();
    (Outcome { state, log }, redelivered)
}

/// What must hold after every apply.
fn check_apply(applied: &stepflow_model::Applied, limit: &BTreeMap<String, u32>) {
    let steps: BTreeSet<&str> = applied.calls.iter().map(|c| &*c.step).collect();
    assert_eq!(
        steps.len(),
        applied.calls.len(),
        "a strand called twice in one apply"
    );
    let state = &applied.state;
    let events: BTreeSet<&str> = state.cursor.iter().map(|e| e.as_str()).collect();
    assert_eq!(events.len(), state.cursor.len(), "two strands at one event");
    for (key, p) in &state.each {
        assert!(p.done <= p.started && p.started <= p.count, "{key}: {p:?}");
    }
    // Instances in flight per for-each instance: within the limit.
    let mut in_flight: BTreeMap<(String, String), BTreeSet<u32>> = BTreeMap::new();
    for event in &state.cursor {
        let path = event.as_str().split_once(':').unwrap().1;
        let (mut spelled, mut template) = (String::new(), String::new());
        for (i, segment) in path.split('/').enumerate() {
            let sep = if i > 0 { "/" } else { "" };
            if let Some((base, n)) = segment.rsplit_once('#') {
                let each = (
                    format!("{spelled}{sep}{base}"),
                    format!("{template}{sep}{base}"),
                );
                in_flight
                    .entry(each)
                    .or_default()
                    .insert(n.parse().unwrap());
                template = format!("{template}{sep}{base}");
            } else {
                template = format!("{template}{sep}{segment}");
            }
            spelled = format!("{spelled}{sep}{segment}");
        }
    }
    for ((key, template), indices) in in_flight {
        let max = limit[&template];
        assert!(
            indices.len() as u32 <= max,
            "{key}: {indices:?} in flight, limit {max}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_anywhere_ends_in_the_same_state_with_every_step_run(
        items in tree(),
        seed in any::<u64>(),
        crash in 0usize..40,
    ) {
        let (plain, _) = run(&items, seed, None, true);
        let (crashed, redelivered) = run(&items, seed, Some(crash), false);
        prop_assert_eq!(
            serde_json::to_value(&crashed.state).unwrap(),
            serde_json::to_value(&plain.state).unwrap()
        );
        // The same calls, plus the forgotten apply's, made again.
        let mut log = crashed.log.clone();
        if !redelivered.is_empty() {
            let at = (0..=log.len() - redelivered.len())
                .find(|&i| log[i..i + redelivered.len()] == redelivered[..])
                .expect("the forgotten calls are in the log");
            log.drain(at..at + redelivered.len());
        }
        prop_assert_eq!(&log, &plain.log);

        let completed = plain.state.error.is_none()
            && plain.state.cursor.len() == 1
            && plain.state.cursor[0].as_str() == "completed:root";
        if completed {
            let mut needed = BTreeSet::new();
            must_run(&items, "root", &mut needed);
            let ran: BTreeSet<String> = plain
                .log
                .iter()
                .filter_map(|l| l.strip_prefix("do "))
                .map(|l| l.split(" #").next().unwrap().to_string())
                .collect();
            let missing: Vec<&String> = needed.difference(&ran).collect();
            prop_assert!(missing.is_empty(), "never ran: {:?}", missing);
            prop_assert!(plain.state.each.is_empty() && plain.state.due.is_empty());
            check_results(&items, &plain.state.data)?;
        }
    }
}

/// Every top-level `for_each` has one result per element, and each element holds the marks of
/// its body's plain steps: its instance completed there, and only there.
fn check_results(items: &[Tree], data: &Value) -> Result<(), TestCaseError> {
    for item in items {
        if let Tree::ForEach(name, _, len, kids) = item {
            let results = &data[format!("res{name}")];
            let results = results.as_array().expect("a results array");
            prop_assert_eq!(results.len(), *len);
            for result in results {
                for kid in kids {
                    if let Tree::Do(step) = kid {
                        prop_assert_eq!(&result[step], &json!(true), "{}", result);
                    }
                }
            }
        }
    }
    Ok(())
}
