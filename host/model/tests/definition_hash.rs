//! The definition hash covers the definition's own data (kinds, names, nesting, settings,
//! plugin references) and nothing of how the Rust code was built: no type names, no labels.

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stepflow_model::*;

use common::{diagram_flow, noop, yes};

#[test]
fn the_definition_hash_is_stable_and_follows_the_names() {
    let one = diagram_flow("w");
    let two = diagram_flow("w");
    assert_eq!(one.definition_hash(), two.definition_hash());
    assert!(one.definition_hash().chars().all(|c| c.is_ascii_hexdigit()));
    let renamed = diagram_flow("w2");
    assert_ne!(one.definition_hash(), renamed.definition_hash());

    let policy =
        |n| StepFlow::new(Steps::named("t.v1").retry("r", RetryPolicy::attempts(n), Steps::new()));
    assert_ne!(
        policy(2).unwrap().definition_hash(),
        policy(3).unwrap().definition_hash(),
        "settings are part of the definition"
    );
}

/// Stands in for a plugin function: it says `plugin.function` as its identity, and its label
/// may say something else.
struct Plugin {
    reference: &'static str,
    label: &'static str,
}

fn plugin(reference: &'static str) -> Arc<Plugin> {
    Arc::new(Plugin {
        reference,
        label: reference,
    })
}

impl Action for Plugin {
    fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        Box::pin(async { Ok(None) })
    }
    fn label(&self) -> String {
        self.label.to_string()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.to_string())
    }
}

impl Condition for Plugin {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn label(&self) -> String {
        self.label.to_string()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.to_string())
    }
}

impl ErrorHandler for Plugin {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
    fn label(&self) -> String {
        self.label.to_string()
    }
    fn identity(&self) -> Option<String> {
        Some(self.reference.to_string())
    }
}

fn hash(steps: Steps) -> String {
    StepFlow::new(steps).unwrap().definition_hash().to_string()
}

async fn prepare(_: StepContext) -> StepResult<()> {
    Ok(())
}

async fn prepare_renamed(_: StepContext) -> StepResult<()> {
    Ok(())
}

async fn ready(_: StepContext) -> StepResult<bool> {
    Ok(true)
}

async fn ready_renamed(_: StepContext) -> StepResult<bool> {
    Ok(true)
}

async fn should_retry(_: StepContext, _: StepError) -> StepResult<bool> {
    Ok(true)
}

async fn should_retry_renamed(_: StepContext, _: StepError) -> StepResult<bool> {
    Ok(true)
}

/// The same flow with native functions of other names (and a closure) in the same places.
#[test]
fn renaming_a_native_function_keeps_the_hash() {
    let one = Steps::named("t.v1")
        .step("prepare", prepare)
        .wait_for("ready", ready)
        .case("c", ready, Steps::new().step("x", prepare))
        .loop_until("l", ready, Steps::new().step("y", prepare))
        .retry(
            "r",
            RetryPolicy::handler(should_retry).max_attempts(3),
            Steps::new().step("z", prepare),
        );
    let other = Steps::named("t.v1")
        .step("prepare", prepare_renamed)
        .wait_for("ready", ready_renamed)
        .case("c", ready_renamed, Steps::new().step("x", prepare_renamed))
        .loop_until(
            "l",
            |_: StepContext| async { Ok(true) },
            Steps::new().step("y", prepare_renamed),
        )
        .retry(
            "r",
            RetryPolicy::handler(should_retry_renamed).max_attempts(3),
            Steps::new().step("z", prepare_renamed),
        );
    let one = StepFlow::new(one).unwrap();
    let other = StepFlow::new(other).unwrap();
    // The labels do differ: they are drawn from the Rust names.
    assert_ne!(one.transitions(), other.transitions());
    assert_eq!(one.definition_hash(), other.definition_hash());
}

#[test]
fn a_label_is_not_part_of_the_hash_but_a_plugin_reference_is() {
    let with = |f: Arc<Plugin>| hash(Steps::named("t.v1").step_shared("s", f));
    let relabelled = Arc::new(Plugin {
        reference: "deploy.prepare",
        label: "something else",
    });
    assert_eq!(with(plugin("deploy.prepare")), with(relabelled));
    assert_ne!(
        with(plugin("deploy.prepare")),
        with(plugin("deploy.prepare2"))
    );
    assert_ne!(
        with(plugin("deploy.prepare")),
        with(plugin("other.prepare"))
    );
    assert_ne!(
        with(plugin("deploy.prepare")),
        hash(Steps::named("t.v1").step("s", prepare)),
        "a plugin function is not a native one"
    );
}

/// A flow with every kind and every setting; each variation below changes one thing.
fn base(change: &str) -> Steps {
    let pick = |name: &str, reference: &'static str, changed: &'static str| {
        if change == name {
            plugin(changed)
        } else {
            plugin(reference)
        }
    };
    let mut wait = Wait::every(Duration::from_secs(1)).timeout(Duration::from_secs(60));
    match change {
        "every" => wait.every = Some(Duration::from_secs(2)),
        "no every" => wait.every = None,
        "timeout" => wait.timeout = Some(Duration::from_secs(61)),
        "no timeout" => wait.timeout = None,
        _ => {}
    }
    let mut backoff =
        Backoff::exponential(Duration::from_millis(200), Duration::from_secs(2)).without_jitter();
    match change {
        "initial" => backoff.initial = Duration::from_millis(201),
        "max" => backoff.max = Duration::from_secs(3),
        "multiplier" => backoff.multiplier = 3.0,
        "jitter" => backoff.jitter = true,
        _ => {}
    }
    let mut policy = RetryPolicy::handler_shared(pick("handler", "p.retry", "p.retry2"));
    policy = match change {
        "no handler" => RetryPolicy::default(),
        "native handler" => RetryPolicy::handler(should_retry),
        _ => policy,
    };
    policy = match change {
        "max attempts" => policy.max_attempts(4),
        "no max attempts" => policy,
        _ => policy.max_attempts(3),
    };
    if change != "no backoff" {
        policy = policy.backoff(backoff);
    }
    let body = Steps::new().step_shared("x", pick("case body", "p.x", "p.x2"));
    let condition = pick("case", "p.is", "p.is2");
    let group = match change {
        "kind" => Steps::new().loop_until_shared("c", condition, body),
        _ => Steps::new().case_shared("c", condition, body),
    };
    let mut flow = Steps::named(if change == "flow name" {
        "t.v2"
    } else {
        "t.v1"
    })
    .step_shared(
        if change == "step name" { "b" } else { "a" },
        pick("step", "p.a", "p.a2"),
    )
    .wait_for_shared("w", pick("wait", "p.ready", "p.ready2"), wait);
    flow = match change {
        "nesting" => flow
            .retry("r", policy, group.renamed("g"))
            .step("after", noop),
        _ => flow.retry("r", policy, group.renamed("g").step("after", noop)),
    };
    match change {
        "group kind" => flow.case("end", yes, Steps::new().step("z", noop)),
        _ => flow.steps(Steps::named("end").step("z", noop)),
    }
}

#[test]
fn a_change_of_name_kind_nesting_setting_or_plugin_reference_changes_the_hash() {
    let original = hash(base(""));
    assert_eq!(original, hash(base("")));
    let changes = [
        "flow name",
        "step name",
        "kind",
        "group kind",
        "nesting",
        "every",
        "no every",
        "timeout",
        "no timeout",
        "handler",
        "no handler",
        "native handler",
        "max attempts",
        "no max attempts",
        "no backoff",
        "initial",
        "max",
        "multiplier",
        "jitter",
        "step",
        "wait",
        "case",
        "case body",
    ];
    let mut seen = std::collections::HashMap::from([(original, "(none)")]);
    for change in changes {
        let changed = hash(base(change));
        if let Some(earlier) = seen.insert(changed, change) {
            panic!("`{change}` hashes like `{earlier}`");
        }
    }
}

/// A fixed flow and its hash: if this fails, the encoding changed, and every saved run will look
/// as if it started on another definition. Change the value only on purpose.
#[test]
fn a_fixed_small_flow_has_a_pinned_hash() {
    let flow = Steps::named("quickstart.v1")
        .step_shared("step1", plugin("quickstart.step1"))
        .wait_for_with(
            "ready",
            ready,
            Wait::every(Duration::from_secs(1)).timeout(Duration::from_secs(30)),
        )
        .retry(
            "again",
            RetryPolicy::attempts(3).backoff(Backoff::exponential(
                Duration::from_millis(100),
                Duration::from_secs(1),
            )),
            Steps::new().step("step2", prepare),
        );
    // FNV-1a 64 of this text (see `definition.rs`), worked out apart from the code:
    //   stepflow-definition 1
    //   steps 13:quickstart.v1 items=3
    //   step 5:step1 fn=16:quickstart.step1
    //   wait-for 5:ready fn=native every=1000000000ns timeout=30000000000ns
    //   retry 5:again handler=- max-attempts=3 backoff=100000000ns,1000000000ns,4000000000000000,true items=1
    //   step 5:step2 fn=native
    assert_eq!(hash(flow), "5b13a3a8cc6c4ae8");
}
