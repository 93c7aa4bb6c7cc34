//! The sandbox holds for plugins in every language: the hostile case that matters for each
//! runtime (a Python infinite loop, a JavaScript memory bomb, a C out-of-bounds write) becomes a
//! step error naming plugin, function and step, and the process goes on running good steps.
//!
//! A language whose toolchain cannot be installed here is skipped loudly; under CI a skip fails.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stepflow_model::{RunContext, StepFlow, Steps};
use stepflow_plugin::{Grants, Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_testkit::{in_ci, language_plugin};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("test-component-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

/// Loads `name` of `language`, or says loudly why this machine cannot build it.
fn plugin(rt: &Runtime, language: &str, name: &str, grants: Grants) -> Option<Plugin> {
    match language_plugin(language, name) {
        Ok(path) => Some(
            Plugin::load(
                rt,
                name,
                &path,
                PluginOptions {
                    grants,
                    reuse_instances: false,
                },
            )
            .unwrap_or_else(|e| panic!("{language}: {e}")),
        ),
        Err(why) => {
            assert!(!in_ci(), "CI must build every language: {language}: {why}");
            let _ = writeln!(std::io::stderr(), "skipped: {language}: {why}");
            None
        }
    }
}

/// Runs `function` of the hostile plugin as a one-step flow; returns the error it left.
async fn contained(rt: &Runtime, language: &str, function: &str, grants: Grants) -> Option<String> {
    let hostile = plugin(rt, language, "hostile", grants)?;
    let flow = StepFlow::new(
        Steps::named("hostile.v1")
            .step_shared("victim", Arc::new(hostile.action(function).unwrap())),
    )
    .unwrap();
    let ctx = RunContext::new("r");
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    let failure = state
        .error
        .unwrap_or_else(|| panic!("{language} {function} did not fail"));
    assert_eq!(failure.step, "hostile.v1/victim");
    assert!(
        failure.message.contains(&format!(
            "plugin `hostile` function `{function}` at step `hostile.v1/victim`"
        )),
        "{}",
        failure.message
    );
    // The same process still runs a good step of the same language.
    let good = plugin(
        rt,
        language,
        "dataproc",
        Grants {
            memory_bytes: 256 << 20,
            ..Grants::default()
        },
    )?;
    let flow = StepFlow::new(
        Steps::named("good.v1").step_shared("fetch", Arc::new(good.action("fetch-page").unwrap())),
    )
    .unwrap();
    let state = flow.apply(&ctx, flow.new_state(json!({}))).await;
    assert!(flow.is_completed(&state), "{language}: {:?}", state.error);
    assert_eq!(state.data["page"], 1);
    Some(failure.message)
}

#[tokio::test]
async fn a_python_infinite_loop_is_stopped() {
    let rt = runtime();
    let grants = Grants {
        timeout: Duration::from_secs(2),
        memory_bytes: 256 << 20,
        ..Grants::default()
    };
    if let Some(message) = contained(&rt, "python", "spin", grants).await {
        assert!(message.contains("timed out"), "{message}");
    }
}

#[tokio::test]
async fn a_javascript_memory_bomb_hits_the_cap() {
    let rt = runtime();
    let grants = Grants {
        memory_bytes: 128 << 20,
        ..Grants::default()
    };
    if let Some(message) = contained(&rt, "javascript", "memory-bomb", grants).await {
        assert!(
            message.contains("ran out of memory: it tried to grow past its cap of 128 MiB"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_javascript_step_that_returns_the_wrong_type_is_told_so() {
    let rt = runtime();
    if let Some(message) = contained(&rt, "javascript", "wrong-type", Grants::default()).await {
        assert!(
            message.contains(
                "returned a value of the wrong type (expected a string, received [object]); \
                 an action `wrong-type` must be `func(ctx: step-context) -> \
                 result<option<string>, step-error>`"
            ),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_c_out_of_bounds_write_traps() {
    let rt = runtime();
    if let Some(message) = contained(&rt, "c", "oob-write", Grants::default()).await {
        assert!(message.contains("out-of-bounds"), "{message}");
    }
}
