//! The example flow files: what they parse into, that `to_steps` builds exactly what the fluent
//! API would, and that the result runs to completion with native stand-ins for the plugins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stepflow_flowfile::{
    FlowFile, ForEachDecl, Function, FunctionKind, Functions, ItemKind, Position, Reference, load,
};
use stepflow_model::{
    Action, Backoff, BoxFuture, Condition, ErrorHandler, ForEach, ManualClock, RetryPolicy,
    RunContext, StepContext, StepError, StepFlow, StepResult, Steps, Wait,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example(name: &str) -> FlowFile {
    let path = examples().join(name);
    match load(&path) {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    }
}

/// A native stand-in for a plugin function: its reference is its identity, as a plugin
/// function's is; it logs the reference when called; `transform` fails on every other call,
/// `last-page` is true on its third call, `fanout.check` returns `{checked: true}`, everything
/// else succeeds.
struct Fake {
    reference: String,
    calls: AtomicU32,
    log: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn call(&self) -> u32 {
        if let Ok(mut log) = self.log.lock() {
            log.push(self.reference.clone());
        }
        self.calls.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Action for Fake {
    fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        let n = self.call();
        let flaky = self.reference == "dataproc.transform" && n % 2 == 1;
        let checked = self.reference == "fanout.check";
        Box::pin(async move {
            match (flaky, checked) {
                (true, _) => Err(StepError::retryable("flaky")),
                (false, true) => Ok(Some(json!({ "checked": true }))),
                (false, false) => Ok(None),
            }
        })
    }
    fn label(&self) -> String {
        self.reference.clone()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.clone())
    }
}

impl Condition for Fake {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let n = self.call();
        let answer = self.reference != "dataproc.last-page" || n >= 3;
        Box::pin(async move { Ok(answer) })
    }
    fn label(&self) -> String {
        self.reference.clone()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.clone())
    }
}

impl ErrorHandler for Fake {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        self.call();
        Box::pin(async { Ok(true) })
    }
    fn label(&self) -> String {
        self.reference.clone()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.clone())
    }
}

/// Hands out one shared fake per reference and kind, so a flow built by hand can use the very
/// same functions.
#[derive(Default)]
struct Fakes {
    log: Arc<Mutex<Vec<String>>>,
    made: Mutex<HashMap<String, Arc<Fake>>>,
}

impl Fakes {
    fn fake(&self, reference: &str) -> Arc<Fake> {
        let mut made = self.made.lock().unwrap();
        made.entry(reference.to_string())
            .or_insert_with(|| {
                Arc::new(Fake {
                    reference: reference.to_string(),
                    calls: AtomicU32::new(0),
                    log: self.log.clone(),
                })
            })
            .clone()
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Functions for Fakes {
    fn resolve(
        &self,
        plugin: &str,
        function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        let fake = self.fake(&format!("{plugin}.{function}"));
        Ok(match kind {
            FunctionKind::Action => Function::Action(fake),
            FunctionKind::Condition => Function::Condition(fake),
            FunctionKind::ErrorHandler => Function::ErrorHandler(fake),
        })
    }
}

fn names(items: &[stepflow_flowfile::Item]) -> Vec<&str> {
    items.iter().map(|i| i.name.as_str()).collect()
}

#[test]
fn quickstart_parses_into_its_items() {
    let file = example("quickstart.yaml");
    assert_eq!(file.flow, "quickstart.v1");
    assert_eq!(names(&file.steps), ["step1", "aCondition", "step2"]);
    assert!(file.steps[0].name_defaulted);
    assert!(!file.steps[1].name_defaulted);
    match &file.steps[1].kind {
        ItemKind::WaitFor {
            condition,
            every,
            timeout,
        } => {
            assert_eq!(condition.to_string(), "quickstart.a-condition");
            assert_eq!(*every, Some(Duration::from_secs(1)));
            assert_eq!(*timeout, None);
        }
        other => panic!("expected a wait-for, got {other:?}"),
    }
    let plugin = &file.plugins["quickstart"];
    assert_eq!(
        plugin.wasm,
        examples().join("../plugins/rust/target/wasm32-wasip2/release/quickstart.wasm")
    );
    assert_eq!(plugin.build.as_deref(), Some("../plugins/rust/build"));
    assert_eq!(plugin.wasm_at, Position::new(6, 11));
    assert_eq!(file.dir(), examples());
    assert_eq!(file.data, json!({}));
}

#[test]
fn deploy_parses_into_its_items() {
    let file = example("deploy.yaml");
    assert_eq!(file.flow, "deploy.v1");
    assert_eq!(
        names(&file.steps),
        ["prepare", "ready", "shouldDeploy", "cleanup"]
    );
    assert_eq!(
        names(file.steps[2].kind.steps()),
        ["deploy", "deployed", "validation"]
    );
    assert_eq!(
        file.data,
        json!({ "api": "http://127.0.0.1:8700", "version": "2.0" })
    );
    let plugin = &file.plugins["deploy"];
    assert_eq!(plugin.http.len(), 1);
    let grant = &plugin.http[0];
    assert_eq!(
        (
            grant.plain,
            grant.host.as_str(),
            grant.port,
            grant.path.as_str()
        ),
        (true, "127.0.0.1", Some(8700), "/v1/*")
    );
    assert_eq!(grant.methods, ["GET", "POST"]);
    assert_eq!(plugin.http_limits.max_requests, Some(20));
    assert_eq!(plugin.http_limits.max_response_bytes, Some(1 << 20));
    assert_eq!(plugin.memory_bytes, Some(64 << 20));
    assert_eq!(plugin.timeout, Some(Duration::from_secs(30)));
    assert!(plugin.env.is_empty() && plugin.dirs.is_empty() && !plugin.reuse_instances);
}

#[test]
fn references_list_every_use_with_its_kind_and_place() {
    let file = example("deploy.yaml");
    let refs = file.references();
    let short: Vec<(String, FunctionKind, &str, &str)> = refs
        .iter()
        .map(|r| {
            (
                format!("{}.{}", r.plugin, r.function),
                r.kind,
                r.key,
                r.step.as_str(),
            )
        })
        .collect();
    use FunctionKind::*;
    assert_eq!(
        short,
        [
            ("deploy.prepare".into(), Action, "do", "deploy.v1/prepare"),
            (
                "deploy.checks/ready".into(),
                Condition,
                "wait-for",
                "deploy.v1/ready"
            ),
            (
                "deploy.checks/should-deploy".into(),
                Condition,
                "case",
                "deploy.v1/shouldDeploy"
            ),
            (
                "deploy.deploy".into(),
                Action,
                "do",
                "deploy.v1/shouldDeploy/deploy"
            ),
            (
                "deploy.checks/deployed".into(),
                Condition,
                "wait-for",
                "deploy.v1/shouldDeploy/deployed"
            ),
            (
                "deploy.should-retry".into(),
                ErrorHandler,
                "handler",
                "deploy.v1/shouldDeploy/validation"
            ),
            (
                "deploy.validate".into(),
                Action,
                "do",
                "deploy.v1/shouldDeploy/validation/validate"
            ),
            ("deploy.cleanup".into(), Action, "do", "deploy.v1/cleanup"),
        ]
    );
    let Reference { at, .. } = &refs[0];
    assert_eq!(*at, Position::new(23, 9));
}

fn built(file: &FlowFile, fakes: &Fakes) -> StepFlow {
    let steps = match file.to_steps(fakes) {
        Ok(steps) => steps,
        Err(e) => panic!("{e}"),
    };
    match StepFlow::new(steps) {
        Ok(flow) => flow,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn to_steps_builds_what_the_fluent_api_builds() {
    let fakes = Fakes::default();
    let from_file = built(&example("deploy.yaml"), &fakes);
    let f = |r: &str| fakes.fake(r);
    let (a, c, h) = (
        |r: &str| -> Arc<dyn Action> { f(r) },
        |r: &str| -> Arc<dyn Condition> { f(r) },
        |r: &str| -> Arc<dyn ErrorHandler> { f(r) },
    );
    let by_hand = StepFlow::new(
        Steps::named("deploy.v1")
            .step_shared("prepare", a("deploy.prepare"))
            .wait_for_shared(
                "ready",
                c("deploy.checks/ready"),
                Wait::every(Duration::from_secs(1)).timeout(Duration::from_secs(300)),
            )
            .case_shared(
                "shouldDeploy",
                c("deploy.checks/should-deploy"),
                Steps::new()
                    .step_shared("deploy", a("deploy.deploy"))
                    .wait_for_shared(
                        "deployed",
                        c("deploy.checks/deployed"),
                        Wait::every(Duration::from_secs(1)),
                    )
                    .retry(
                        "validation",
                        RetryPolicy::handler_shared(h("deploy.should-retry"))
                            .max_attempts(3)
                            .backoff(Backoff::exponential(
                                Duration::from_millis(200),
                                Duration::from_secs(2),
                            )),
                        Steps::new().step_shared("validate", a("deploy.validate")),
                    ),
            )
            .step_shared("cleanup", a("deploy.cleanup")),
    )
    .unwrap();
    assert_eq!(from_file.definition_hash(), by_hand.definition_hash());

    // The hash sees every setting and every plugin reference, so the equality above is not
    // vacuous.
    let path = examples().join("deploy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in [
        ("max-attempts: 3", "max-attempts: 4"),
        ("every: 1s", "every: 2s"),
        ("timeout: 5m", "timeout: 6m"),
        ("initial: 200ms", "initial: 300ms"),
        (
            "wait-for: deploy.checks/ready",
            "wait-for: deploy.checks/ready2",
        ),
        (
            "handler: deploy.should-retry",
            "handler: deploy.retry-or-not",
        ),
    ] {
        assert!(text.contains(from));
        let changed = stepflow_flowfile::parse(&text.replacen(from, to, 1), &path).unwrap();
        let other = built(&changed, &fakes);
        assert_ne!(from_file.definition_hash(), other.definition_hash(), "{to}");
    }
}

/// Applies until the run completes or fails, moving the clock past every wait and back-off.
async fn run(flow: &StepFlow, data: Value) -> stepflow_model::State {
    let clock = Arc::new(ManualClock::new(0));
    let ctx = RunContext::new("run-1").with_clock(clock.clone());
    let mut state = flow.new_state(data);
    for _ in 0..500 {
        // A failed run does not move again: return it for the caller's assertion to show.
        if flow.is_completed(&state) || state.error.is_some() {
            return state;
        }
        state = flow.apply(&ctx, state).await;
        clock.advance(60_000);
    }
    panic!("the run did not complete: {state:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_deploy_example_runs_its_steps_in_order() {
    let file = example("deploy.yaml");
    let fakes = Fakes::default();
    let flow = built(&file, &fakes);
    let state = run(&flow, file.data.clone()).await;
    assert!(state.error.is_none(), "{state:?}");
    assert_eq!(
        fakes.log(),
        [
            "deploy.prepare",
            "deploy.checks/ready",
            "deploy.checks/should-deploy",
            "deploy.deploy",
            "deploy.checks/deployed",
            "deploy.validate",
            "deploy.cleanup",
        ]
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_data_processing_example_loops_and_retries() {
    let file = example("data-processing.yaml");
    assert_eq!(file.data, json!({ "pages": 5, "flaky": true }));
    let fakes = Fakes::default();
    let flow = built(&file, &fakes);
    let state = run(&flow, file.data.clone()).await;
    assert!(state.error.is_none(), "{state:?}");
    let page = [
        "dataproc.fetch-page",
        "dataproc.transform",
        "dataproc.transform",
        "dataproc.last-page",
    ];
    let expected: Vec<&str> = page
        .iter()
        .chain(&page)
        .chain(&page)
        .copied()
        .chain(["dataproc.summarize"])
        .collect();
    assert_eq!(fakes.log(), expected);
}

#[tokio::test(flavor = "current_thread")]
async fn the_quickstart_example_runs() {
    let file = example("quickstart.yaml");
    let fakes = Fakes::default();
    let flow = built(&file, &fakes);
    let state = run(&flow, file.data.clone()).await;
    assert!(state.error.is_none(), "{state:?}");
    assert_eq!(
        fakes.log(),
        [
            "quickstart.step1",
            "quickstart.a-condition",
            "quickstart.step2"
        ]
    );
}

#[test]
fn the_format_example_in_the_crate_docs_parses() {
    // The annotated example of lib.rs, minus its comments' claims: every key it shows is real.
    let text = include_str!("../src/lib.rs")
        .lines()
        .skip_while(|l| !l.starts_with("//! ```yaml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| l.strip_prefix("//! ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let file = match stepflow_flowfile::parse(&text, Path::new("examples/doc.yaml")) {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    let plugin = &file.plugins["deploy"];
    assert_eq!(plugin.env, ["DEPLOY_TOKEN"]);
    assert_eq!(plugin.dirs.len(), 1);
    assert_eq!(plugin.dirs[0].host, Path::new("examples/./work"));
    assert_eq!(plugin.dirs[0].guest, "/work");
    assert!(plugin.dirs[0].writable);
    assert_eq!(plugin.fuel, Some(1_000_000));
    assert_eq!(plugin.max_output_bytes, Some(1 << 20));
    match &file.steps[4].kind {
        ItemKind::Retry { retry, .. } => {
            assert_eq!(retry.max_attempts, Some(3));
            assert_eq!(
                retry.backoff,
                Some(Backoff::exponential(
                    Duration::from_secs(1),
                    Duration::from_secs(30)
                ))
            );
            assert_eq!(
                retry.handler.as_ref().map(ToString::to_string).as_deref(),
                Some("deploy.should-retry")
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    match &file.steps[5].kind {
        ItemKind::Parallel { branches } => {
            assert_eq!(
                branches.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
                ["eu", "us"]
            );
        }
        other => panic!("expected a parallel, got {other:?}"),
    }
    match &file.steps[6].kind {
        ItemKind::ForEach { each, steps } => {
            assert_eq!(
                (each.over.as_str(), each.results.as_str()),
                ("/files", "/processed")
            );
            assert_eq!(each.concurrency, 8);
            assert_eq!(names(steps), ["process-file"]);
        }
        other => panic!("expected a for-each, got {other:?}"),
    }
    assert!(matches!(file.steps[7].kind, ItemKind::Group { .. }));
}

#[test]
fn a_signal_wait_builds_what_the_fluent_api_builds_and_is_named_after_its_signal() {
    let text = "flow: s.v1\nplugins:\n  deploy: { wasm: deploy.wasm }\nsteps:\n  - do: deploy.prepare\n  - wait-for: { signal: approve }\n    timeout: 1h\n  - name: again\n    wait-for: { signal: approve }\n";
    let file = match stepflow_flowfile::parse(text, Path::new("flows/s.yaml")) {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(names(&file.steps), ["prepare", "approve", "again"]);
    assert!(
        file.references().iter().all(|r| r.key == "do"),
        "a signal wait calls no function"
    );
    let fakes = Fakes::default();
    let flow = built(&file, &fakes);
    let fluent = StepFlow::new(
        Steps::named("s.v1")
            .step_shared("prepare", fakes.fake("deploy.prepare"))
            .wait_for_signal_within("approve", "approve", std::time::Duration::from_secs(3600))
            .wait_for_signal("again", "approve"),
    )
    .expect("fluent flow");
    assert_eq!(flow.definition_hash(), fluent.definition_hash());
    assert_eq!(flow.signal_names(), ["approve"]);
}

fn fan_out_file() -> FlowFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/fan-out.yaml");
    match load(&path) {
        Ok(file) => file,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn parallel_and_for_each_parse_into_their_items_nested_in_each_other() {
    let file = fan_out_file();
    assert_eq!(
        names(&file.steps),
        ["prepare", "regions", "batches", "finish"]
    );
    let regions = &file.steps[1];
    assert!(!regions.name_defaulted);
    assert!(regions.kind.steps().is_empty());
    let branches = regions.kind.branches();
    assert_eq!(
        branches.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        ["eu", "us"]
    );
    assert_eq!(branches[0].at, Position::new(16, 9));
    assert_eq!(branches[0].name_at, Position::new(16, 15));
    assert_eq!(names(&branches[0].steps), ["region", "hosts"]);
    match &branches[0].steps[1].kind {
        ItemKind::ForEach { each, steps } => {
            assert_eq!(
                *each,
                ForEachDecl {
                    over: "/hosts".into(),
                    over_at: Position::new(20, 23),
                    results: "/eu-checks".into(),
                    results_at: Position::new(21, 22),
                    concurrency: 2,
                }
            );
            assert_eq!(names(steps), ["check"]);
        }
        other => panic!("expected a for-each, got {other:?}"),
    }
    let batches = &file.steps[2];
    match &batches.kind {
        ItemKind::ForEach { each, steps } => {
            assert_eq!(each.over, "/batches");
            assert_eq!(each.results, "/batch-results");
            assert_eq!(each.concurrency, 1, "the default");
            assert_eq!(names(steps), ["sides", "parts"]);
            let sides = steps[0].kind.branches();
            assert_eq!(
                sides.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
                ["left", "right"]
            );
            assert!(
                matches!(&steps[1].kind, ItemKind::ForEach { each, .. } if each.over == "/item/parts")
            );
        }
        other => panic!("expected a for-each, got {other:?}"),
    }
}

#[test]
fn references_inside_branches_and_for_each_bodies_have_their_paths() {
    let file = fan_out_file();
    let refs = file.references();
    let steps: Vec<(String, &str)> = refs
        .iter()
        .map(|r| (format!("{}.{}", r.plugin, r.function), r.step.as_str()))
        .collect();
    let expected = [
        ("fanout.prepare", "fanout.v1/prepare"),
        ("fanout.region", "fanout.v1/regions/eu/region"),
        ("fanout.check", "fanout.v1/regions/eu/hosts/check"),
        ("fanout.region", "fanout.v1/regions/us/region"),
        ("fanout.left", "fanout.v1/batches/sides/left/left"),
        ("fanout.right", "fanout.v1/batches/sides/right/right"),
        ("fanout.check", "fanout.v1/batches/parts/check"),
        ("fanout.finish", "fanout.v1/finish"),
    ];
    let expected: Vec<(String, &str)> = expected.iter().map(|(f, s)| (f.to_string(), *s)).collect();
    assert_eq!(steps, expected);
}

#[test]
fn parallel_and_for_each_build_what_the_fluent_api_builds() {
    let fakes = Fakes::default();
    let file = fan_out_file();
    let from_file = built(&file, &fakes);
    let a = |r: &str| -> Arc<dyn Action> { fakes.fake(r) };
    let by_hand = StepFlow::new(
        Steps::named("fanout.v1")
            .step_shared("prepare", a("fanout.prepare"))
            .parallel(
                "regions",
                [
                    Steps::named("eu")
                        .step_shared("region", a("fanout.region"))
                        .for_each(
                            "hosts",
                            ForEach::new("/hosts", "/eu-checks").concurrency(2),
                            Steps::new().step_shared("check", a("fanout.check")),
                        ),
                    Steps::named("us").step_shared("region", a("fanout.region")),
                ],
            )
            .for_each(
                "batches",
                ForEach::new("/batches", "/batch-results"),
                Steps::new()
                    .parallel(
                        "sides",
                        [
                            Steps::named("left").step_shared("left", a("fanout.left")),
                            Steps::named("right").step_shared("right", a("fanout.right")),
                        ],
                    )
                    .for_each(
                        "parts",
                        ForEach::new("/item/parts", "/parts"),
                        Steps::new().step_shared("check", a("fanout.check")),
                    ),
            )
            .step_shared("finish", a("fanout.finish")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_file.definition_hash(), by_hand.definition_hash());

    // Every setting of the new kinds reaches the definition.
    let path = file.path.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in [
        ("concurrency: 2", "concurrency: 3"),
        ("for-each: /hosts", "for-each: /servers"),
        ("results: /eu-checks", "results: /checks"),
        ("- name: us", "- name: ap"),
        (
            "results: /batch-results",
            "results: /batch-results\n    concurrency: 2",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let changed = match stepflow_flowfile::parse(&text.replacen(from, to, 1), &path) {
            Ok(changed) => changed,
            Err(e) => panic!("{e}"),
        };
        let other = built(&changed, &fakes);
        assert_ne!(from_file.definition_hash(), other.definition_hash(), "{to}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_fan_out_flow_runs_every_branch_and_element() {
    let file = fan_out_file();
    let fakes = Fakes::default();
    let flow = built(&file, &fakes);
    let state = run(&flow, file.data.clone()).await;
    assert!(state.error.is_none(), "{state:?}");
    let mut log = fakes.log();
    assert_eq!(log.first().map(String::as_str), Some("fanout.prepare"));
    assert_eq!(log.last().map(String::as_str), Some("fanout.finish"));
    log.sort();
    let count = |r: &str| log.iter().filter(|l| *l == r).count();
    // Three hosts, then one check per part of the two batches (2 + 1).
    assert_eq!(count("fanout.check"), 6, "{log:?}");
    assert_eq!(count("fanout.region"), 2, "{log:?}");
    assert_eq!(
        (count("fanout.left"), count("fanout.right")),
        (2, 2),
        "{log:?}"
    );
    let checked = json!({ "checked": true });
    assert_eq!(state.data["eu-checks"], json!([checked, checked, checked]));
    assert_eq!(
        state.data["batch-results"],
        json!([{ "parts": [checked, checked] }, { "parts": [checked] }])
    );
}
