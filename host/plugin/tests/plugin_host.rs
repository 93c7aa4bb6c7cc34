//! The plugin host against real components built from `plugins/rust`: exports and their kinds,
//! lookups, the compile cache, flows that mix plugin and native steps, and the sandbox.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use stepflow_model::{
    Action, ErrorKind, RetryPolicy, RunContext, State, StepContext, StepFlow, StepResult, Steps,
};
use stepflow_plugin::{
    DirGrant, FunctionKind, Grants, LoadedFrom, Plugin, PluginError, PluginOptions, Runtime,
    RuntimeConfig,
};
use stepflow_testkit::rust_plugin;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = stepflow_testkit::target_dir().join("test-component-cache");
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir),
            ..RuntimeConfig::default()
        })
        .expect("runtime")
    })
}

fn load(name: &str, grants: Grants) -> Plugin {
    Plugin::load(
        runtime(),
        name,
        &rust_plugin(name),
        PluginOptions {
            grants,
            reuse_instances: false,
        },
    )
    .expect("plugin loads")
}

/// Runs a flow to its end (or its first unhandled error) and returns the final state.
async fn run(flow: &StepFlow, data: Value) -> State {
    let ctx = RunContext::new("test-run");
    let mut state = flow.new_state(data);
    for _ in 0..1000 {
        if flow.is_completed(&state) || state.error.is_some() {
            return state;
        }
        state = flow.apply(&ctx, state).await;
    }
    panic!("the flow did not finish in 1000 applies: {state:?}");
}

#[test]
fn exports_are_classified_by_signature() {
    let deploy = load("deploy", Grants::default());
    let kinds: Vec<(String, Result<FunctionKind, String>)> = deploy
        .exports()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    let kind = |n: &str| {
        kinds
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, k)| k.clone())
    };
    assert_eq!(kind("prepare"), Some(Ok(FunctionKind::Action)));
    assert_eq!(kind("should-retry"), Some(Ok(FunctionKind::ErrorHandler)));
    assert_eq!(kind("checks/ready"), Some(Ok(FunctionKind::Condition)));
    assert_eq!(kind("checks/deployed"), Some(Ok(FunctionKind::Condition)));

    let hostile = load("hostile", Grants::default());
    let add = hostile
        .exports()
        .into_iter()
        .find(|e| e.name == "add")
        .unwrap();
    let why = add.kind.unwrap_err();
    assert!(why.contains("step-context"), "{why}");
}

#[test]
fn a_use_of_the_wrong_kind_is_refused_before_any_run() {
    let deploy = load("deploy", Grants::default());
    let err = deploy.action("checks/ready").err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, PluginError::WrongKind { .. }), "{msg}");
    assert!(
        msg.contains("`deploy.checks/ready` is used as an action, but it is a condition"),
        "{msg}"
    );
    // A bare name finds an interface function when it is unique.
    assert_eq!(
        deploy.condition("ready").unwrap().reference(),
        "deploy.checks/ready"
    );

    let err = deploy.action("prepar").err().unwrap().to_string();
    assert!(
        err.contains("has no step function `prepar`; did you mean prepare (an action)?"),
        "{err}"
    );

    let hostile = load("hostile", Grants::default());
    let err = hostile.action("add").err().unwrap().to_string();
    assert!(err.contains("not a step function"), "{err}");
    let err = hostile
        .condition("does-not-exist")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("has no step function `does-not-exist`"),
        "{err}"
    );
}

#[test]
fn a_second_load_comes_from_the_cache_and_a_corrupt_entry_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let path = rust_plugin("quickstart");
    let first = Plugin::load(&rt, "quickstart", &path, PluginOptions::default()).unwrap();
    assert_eq!(first.loaded_from(), LoadedFrom::Compiled);
    let second = Plugin::load(&rt, "quickstart", &path, PluginOptions::default()).unwrap();
    assert_eq!(second.loaded_from(), LoadedFrom::Cache);

    // Flip one byte in every entry: the checksum catches it and the component is recompiled.
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let third = Plugin::load(&rt, "quickstart", &path, PluginOptions::default()).unwrap();
    assert_eq!(third.loaded_from(), LoadedFrom::Compiled);
    let fourth = Plugin::load(&rt, "quickstart", &path, PluginOptions::default()).unwrap();
    assert_eq!(fourth.loaded_from(), LoadedFrom::Cache);

    // A truncated entry is no better.
    std::fs::write(&entries[0], &bytes[..100]).unwrap();
    let fifth = Plugin::load(&rt, "quickstart", &path, PluginOptions::default()).unwrap();
    assert_eq!(fifth.loaded_from(), LoadedFrom::Compiled);
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"not wasm at all").unwrap();
    let err = Plugin::load(runtime(), "junk", &path, PluginOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("plugin `junk`") && err.contains("not a usable WebAssembly component"),
        "{err}"
    );
    let err = Plugin::load(
        runtime(),
        "gone",
        &dir.path().join("gone.wasm"),
        PluginOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("cannot read plugin `gone`"), "{err}");
}

async fn double(ctx: StepContext) -> StepResult<Value> {
    let n = ctx.data["rollout"]["version"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    Ok(json!({ "native_saw": n }))
}

#[tokio::test]
async fn a_flow_mixes_plugin_and_native_steps_and_passes_data_between_them() {
    let deploy = load("deploy", Grants::default());
    let flow = StepFlow::new(
        Steps::named("deploy.v1")
            .step_shared("prepare", Arc::new(deploy.action("prepare").unwrap()))
            .wait_for_shared(
                "ready",
                Arc::new(deploy.condition("ready").unwrap()),
                Default::default(),
            )
            .case_shared(
                "shouldDeploy",
                Arc::new(deploy.condition("should-deploy").unwrap()),
                Steps::new()
                    .step_shared("deploy", Arc::new(deploy.action("deploy").unwrap()))
                    .step("inspect", double)
                    .wait_for_shared(
                        "deployed",
                        Arc::new(deploy.condition("deployed").unwrap()),
                        Default::default(),
                    )
                    .retry(
                        "validation",
                        RetryPolicy::handler_shared(Arc::new(
                            deploy.error_handler("should-retry").unwrap(),
                        )),
                        Steps::new()
                            .step_shared("validate", Arc::new(deploy.action("validate").unwrap())),
                    ),
            )
            .step_shared("cleanup", Arc::new(deploy.action("cleanup").unwrap())),
    )
    .unwrap();
    let state = run(
        &flow,
        json!({ "version": "2.0", "current": "1.0", "flaky_validations": 1 }),
    )
    .await;
    assert!(flow.is_completed(&state), "{:?}", state.error);
    assert_eq!(
        *state.data,
        json!({
            "version": "2.0",
            "current": "2.0",
            "flaky_validations": 1,
            "native_saw": "2.0",
            "validated_on_attempt": 2,
            "cleaned": true
        })
    );

    // Nothing to deploy: the case is skipped.
    let state = run(&flow, json!({ "version": "1.0", "current": "1.0" })).await;
    assert!(flow.is_completed(&state));
    assert_eq!(state.data.get("native_saw"), None);
}

/// Runs one hostile function as the only step of a flow and returns the error it left.
async fn hostile(function: &str, grants: Grants, data: Value) -> stepflow_model::Failure {
    let plugin = load("hostile", grants);
    let flow = StepFlow::new(
        Steps::named("hostile.v1")
            .step_shared("victim", Arc::new(plugin.action(function).unwrap())),
    )
    .unwrap();
    let state = run(&flow, data).await;
    let failure = state
        .error
        .clone()
        .unwrap_or_else(|| panic!("{function} did not fail: {state:?}"));
    assert_eq!(failure.step, "hostile.v1/victim");
    assert!(
        failure.message.contains(&format!(
            "plugin `hostile` function `{function}` at step `hostile.v1/victim`"
        )),
        "{}",
        failure.message
    );
    assert_eq!(
        state.cursor[0].as_str(),
        "start:hostile.v1/victim",
        "the state is kept"
    );
    failure
}

/// After every hostile case the same process still runs a good flow.
async fn still_healthy() {
    let q = load("quickstart", Grants::default());
    let flow = StepFlow::new(
        Steps::named("quickstart.v1")
            .step_shared("step1", Arc::new(q.action("step1").unwrap()))
            .wait_for_shared(
                "aCondition",
                Arc::new(q.condition("a-condition").unwrap()),
                Default::default(),
            )
            .step_shared("step2", Arc::new(q.action("step2").unwrap())),
    )
    .unwrap();
    let state = run(&flow, json!({})).await;
    assert!(flow.is_completed(&state), "{:?}", state.error);
    assert_eq!(*state.data, json!({ "step1": "done", "step2": "done" }));
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_time_limit() {
    let grants = Grants {
        timeout: Duration::from_millis(200),
        ..Grants::default()
    };
    let f = hostile("spin", grants, json!({})).await;
    assert!(f.message.contains("timed out"), "{}", f.message);
    assert_eq!(f.kind, ErrorKind::Retryable);
    still_healthy().await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_cap() {
    let grants = Grants {
        memory_bytes: 16 << 20,
        ..Grants::default()
    };
    let f = hostile("memory-bomb", grants, json!({})).await;
    assert!(
        f.message.contains("ran out of memory") && f.message.contains("16 MiB"),
        "{}",
        f.message
    );
    assert_eq!(f.kind, ErrorKind::Fatal);
    still_healthy().await;
}

/// Wasm's own call stack overflowing is told apart from every other trap.
#[tokio::test]
async fn a_call_stack_overflow_is_a_step_error_that_says_so() {
    let f = hostile("deep-recursion", Grants::default(), json!({})).await;
    assert!(
        f.message
            .ends_with("`deep-recursion` at step `hostile.v1/victim`: overflowed its stack"),
        "{}",
        f.message
    );
    still_healthy().await;
}

/// Rust keeps big stack frames in linear memory, so overflowing them is an out-of-bounds access,
/// which the host cannot tell from a bad pointer: its message names both.
#[tokio::test]
async fn a_stack_overflow_in_linear_memory_is_an_out_of_bounds_trap() {
    let f = hostile("stack-overflow", Grants::default(), json!({})).await;
    assert!(
        f.message.ends_with(
            "trapped: out-of-bounds memory access (a stack overflow or a bad pointer in the plugin)"
        ),
        "{}",
        f.message
    );
    still_healthy().await;
}

#[tokio::test]
async fn a_panic_is_a_step_error() {
    let f = hostile("panic", Grants::default(), json!({})).await;
    assert!(f.message.contains("panicked"), "{}", f.message);
    still_healthy().await;
}

#[tokio::test]
async fn enormous_output_is_refused() {
    let f = hostile("big-output", Grants::default(), json!({})).await;
    assert!(
        f.message.contains("more than the 1048576 bytes"),
        "{}",
        f.message
    );
    still_healthy().await;
}

#[tokio::test]
async fn an_invalid_patch_is_refused() {
    let f = hostile("bad-json", Grants::default(), json!({})).await;
    assert!(f.message.contains("not JSON"), "{}", f.message);
}

#[tokio::test]
async fn a_host_file_that_was_not_granted_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let f = hostile("read-file", Grants::default(), json!({ "path": secret })).await;
    assert!(f.message.contains("cannot read"), "{}", f.message);
    assert!(!f.message.contains("top secret"));
}

#[tokio::test]
async fn an_env_var_that_was_not_granted_cannot_be_read() {
    assert!(std::env::var_os("PATH").is_some());
    let f = hostile("read-env", Grants::default(), json!({ "var": "PATH" })).await;
    assert!(f.message.contains("cannot read $PATH"), "{}", f.message);
}

/// A directory granted without `writable` can be read but not written: the write fails in the
/// plugin and the host's directory is unchanged.
#[tokio::test]
async fn a_read_only_directory_grant_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "kept").unwrap();
    let grants = |writable| Grants {
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            writable,
        }],
        ..Grants::default()
    };
    for path in ["/data/input.txt", "/data/new.txt"] {
        let data = json!({ "path": path, "content": "overwritten" });
        let f = hostile("write-file", grants(false), data).await;
        assert!(
            f.message.contains(&format!("cannot write {path}")),
            "{}",
            f.message
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("input.txt")).unwrap(),
        "kept"
    );
    assert!(!dir.path().join("new.txt").exists());
    // The same write with `writable: true` goes through: the refusal above is the grant's.
    let plugin = load("hostile", grants(true));
    let flow = StepFlow::new(
        Steps::named("w.v1").step_shared("write", Arc::new(plugin.action("write-file").unwrap())),
    )
    .unwrap();
    let state = run(&flow, json!({ "path": "/data/new.txt", "content": "new" })).await;
    assert!(flow.is_completed(&state), "{:?}", state.error);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "new"
    );
}

/// A plugin has no network: a connection to a listening port on this host is refused inside
/// the sandbox, and the listener never sees it.
#[tokio::test]
async fn a_plugin_cannot_open_a_network_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let f = hostile("connect", Grants::default(), json!({ "addr": addr })).await;
    assert!(
        f.message.contains(&format!("cannot connect to {addr}")),
        "{}",
        f.message
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
}

#[tokio::test]
async fn granted_files_and_env_vars_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "hello from the host").unwrap();
    let grants = Grants {
        dirs: vec![DirGrant {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
            writable: false,
        }],
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        ..Grants::default()
    };
    let plugin = load("hostile", grants);
    let flow = StepFlow::new(
        Steps::named("granted.v1")
            .step_shared("file", Arc::new(plugin.action("read-file").unwrap()))
            .step_shared("env", Arc::new(plugin.action("read-env").unwrap())),
    )
    .unwrap();
    let state = run(
        &flow,
        json!({ "path": "/data/input.txt", "var": "GREETING" }),
    )
    .await;
    assert!(flow.is_completed(&state), "{:?}", state.error);
    assert_eq!(state.data["content"], "hello from the host");
    assert_eq!(state.data["value"], "hi");
}

#[tokio::test]
async fn loud_output_is_captured_and_bounded() {
    let plugin = load("hostile", Grants::default());
    let flow = StepFlow::new(
        Steps::named("loud.v1")
            .step_shared("print", Arc::new(plugin.action("print-lots").unwrap())),
    )
    .unwrap();
    let state = run(&flow, json!({})).await;
    assert!(flow.is_completed(&state), "{:?}", state.error);
    assert_eq!(state.data["printed"], true);
}

#[tokio::test]
async fn fuel_stops_a_long_computation() {
    let rt = Runtime::new(RuntimeConfig {
        fuel: true,
        pooling: false,
        cache_dir: Some(stepflow_testkit::target_dir().join("test-component-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let options = PluginOptions {
        grants: Grants {
            fuel: Some(1_000_000),
            ..Grants::default()
        },
        reuse_instances: false,
    };
    let plugin = Plugin::load(&rt, "hostile", &rust_plugin("hostile"), options).unwrap();
    let flow = StepFlow::new(Steps::named("fuel.v1").wait_for_shared(
        "burn",
        Arc::new(plugin.condition("burn").unwrap()),
        Default::default(),
    ))
    .unwrap();
    let state = run(&flow, json!({})).await;
    let f = state.error.unwrap();
    assert!(f.message.contains("ran out of fuel"), "{}", f.message);

    // Without fuel metering in the runtime, a fuel grant is refused at load time.
    let err = Plugin::load(
        runtime(),
        "hostile",
        &rust_plugin("hostile"),
        PluginOptions {
            grants: Grants {
                fuel: Some(10),
                ..Grants::default()
            },
            reuse_instances: false,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("fuel"), "{err}");
}

#[tokio::test]
async fn a_reused_instance_gets_a_new_time_limit_for_every_call() {
    let options = PluginOptions {
        grants: Grants {
            timeout: Duration::from_millis(100),
            ..Grants::default()
        },
        reuse_instances: true,
    };
    let noop = Plugin::load(runtime(), "noop", &rust_plugin("noop"), options)
        .unwrap()
        .action("noop")
        .unwrap();
    let ctx = StepContext {
        run_id: "reuse-run".into(),
        flow: "reuse.v1".into(),
        step: "reuse.v1/noop".into(),
        attempt: 1,
        sequence: 0,
        redelivered: false,
        data: Arc::new(json!({})),
    };
    // Each pause outlasts the time limit: a deadline left over from the last call would trap.
    for _ in 0..3 {
        assert_eq!(noop.run(ctx.clone()).await, Ok(None));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn reused_instances_give_the_same_results_and_a_trapped_one_is_dropped() {
    let options = PluginOptions {
        grants: Grants::default(),
        reuse_instances: true,
    };
    let q = Plugin::load(
        runtime(),
        "quickstart",
        &rust_plugin("quickstart"),
        options.clone(),
    )
    .unwrap();
    let flow = StepFlow::new(
        Steps::named("quickstart.v1")
            .step_shared("step1", Arc::new(q.action("step1").unwrap()))
            .step_shared("step2", Arc::new(q.action("step2").unwrap())),
    )
    .unwrap();
    for _ in 0..3 {
        let state = run(&flow, json!({})).await;
        assert_eq!(*state.data, json!({ "step1": "done", "step2": "done" }));
    }
    let h = Plugin::load(runtime(), "hostile", &rust_plugin("hostile"), options).unwrap();
    let flow = StepFlow::new(
        Steps::named("reuse.v1").step_shared("panic", Arc::new(h.action("panic").unwrap())),
    )
    .unwrap();
    for _ in 0..2 {
        let state = run(&flow, json!({})).await;
        assert!(state.error.unwrap().message.contains("panicked"));
    }
}

/// The `count` export keeps a static counter: a fresh instance per call answers 1 every time,
/// a reused one counts on, and after a trap the next call starts on a fresh instance.
#[tokio::test]
async fn a_fresh_instance_per_call_keeps_nothing_and_a_reused_one_does() {
    let ctx = |n: u64| StepContext {
        run_id: "count-run".into(),
        flow: "count.v1".into(),
        step: "count.v1/count".into(),
        attempt: 1,
        sequence: n,
        redelivered: false,
        data: Arc::new(json!({})),
    };
    let counts = |reuse_instances: bool| async move {
        let h = Plugin::load(
            runtime(),
            "hostile",
            &rust_plugin("hostile"),
            PluginOptions {
                grants: Grants::default(),
                reuse_instances,
            },
        )
        .expect("plugin loads");
        let count = h.action("count").expect("count");
        let panic = h.action("panic").expect("panic");
        let mut answers = Vec::new();
        for n in 0..2 {
            answers.push(count.run(ctx(n)).await.expect("count")?["count"].clone());
        }
        assert!(panic.run(ctx(2)).await.is_err(), "panic traps");
        answers.push(count.run(ctx(3)).await.expect("count")?["count"].clone());
        Some(answers)
    };
    assert_eq!(
        counts(false).await,
        Some(vec![json!(1), json!(1), json!(1)])
    );
    // Reused: the counter goes on; the panic traps that same instance, which is dropped, so
    // the call after it starts again from a fresh one.
    assert_eq!(counts(true).await, Some(vec![json!(1), json!(2), json!(1)]));
}

/// More calls at once than the pool has instance slots: the extra call waits for a slot
/// instead of failing to instantiate (a server driving more runs than slots loses none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_beyond_the_instance_slots_waits_for_one() {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("test-component-cache")),
        max_instances: 1,
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let work = tempfile::tempdir().expect("tempdir");
    let grants = Grants {
        dirs: vec![DirGrant {
            host: work.path().to_path_buf(),
            guest: "/work".into(),
            writable: true,
        }],
        ..Grants::default()
    };
    let plugin = Plugin::load(
        &runtime,
        "hostile",
        &rust_plugin("hostile"),
        PluginOptions {
            grants,
            reuse_instances: false,
        },
    )
    .expect("plugin loads");
    let flow = Arc::new(
        StepFlow::new(
            Steps::named("slots.v1")
                .step_shared("hold", Arc::new(plugin.action("checkpoint").unwrap())),
        )
        .unwrap(),
    );
    let start = |run: &'static str, data: Value| {
        let flow = flow.clone();
        tokio::spawn(async move {
            let state = flow.new_state(data);
            flow.apply(&RunContext::new(run), state).await
        })
    };
    // The first call holds the only slot until the file `release` appears.
    let first = start("first", json!({ "block_in": "slots.v1/hold" }));
    let marker = work.path().join("first_slots.v1_hold#0");
    while !marker.exists() && !work.path().join("first_slots.v1_hold#1").exists() {
        tokio::task::yield_now().await;
    }
    let second = start("second", json!({}));
    // Without a wait for a slot the second call fails at once ("maximum concurrent limit");
    // give it the chance to, then let the first go.
    for _ in 0..100_000 {
        if second.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    std::fs::write(work.path().join("release"), "go").unwrap();
    for (name, task) in [("first", first), ("second", second)] {
        let state = task.await.expect("the task");
        assert!(state.error.is_none(), "{name}: {:?}", state.error);
    }
}
