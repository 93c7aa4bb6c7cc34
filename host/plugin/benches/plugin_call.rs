//! What a plugin step costs: one call with a fresh instance, with a reused instance, and the same
//! no-op step as a native Rust function, measured in one run; and loading a plugin by compiling
//! it versus from the on-disk cache.
//!
//! Run: `cargo bench -p stepflow-plugin --bench plugin_call`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_model::{Action, StepContext, StepResult};
use stepflow_plugin::{Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_testkit::rust_plugin;

fn context() -> StepContext {
    StepContext {
        run_id: "bench-run".into(),
        flow: "bench.v1".into(),
        step: "bench.v1/noop".into(),
        attempt: 1,
        sequence: 0,
        redelivered: false,
        data: Arc::new(json!({ "page": 1, "items": ["a", "b", "c"] })),
    }
}

async fn native_noop(_: StepContext) -> StepResult<()> {
    Ok(())
}

fn calls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("bench-component-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let path = rust_plugin("noop");
    let load = |reuse_instances| {
        let options = PluginOptions {
            reuse_instances,
            ..PluginOptions::default()
        };
        Plugin::load(&runtime, "noop", &path, options)
            .unwrap()
            .action("noop")
            .unwrap()
    };
    let fresh = load(false);
    let reused = load(true);
    let ctx = context();

    let mut g = c.benchmark_group("step_call");
    g.bench_function("native", |b| {
        b.iter(|| {
            rt.block_on(native_noop.run(black_box(ctx.clone())))
                .unwrap()
        })
    });
    g.bench_function("plugin_fresh_instance", |b| {
        b.iter(|| rt.block_on(fresh.run(black_box(ctx.clone()))).unwrap())
    });
    g.bench_function("plugin_reused_instance", |b| {
        b.iter(|| rt.block_on(reused.run(black_box(ctx.clone()))).unwrap())
    });
    g.finish();

    // Where a fresh-instance call spends its time (printed, not asserted).
    let profile = rt
        .block_on(fresh.profile_fresh_calls(&ctx, 20_000))
        .unwrap();
    println!("fresh-instance call breakdown (mean of 20000): {profile:?}");
}

fn loads(c: &mut Criterion) {
    let cache = std::env::temp_dir().join(format!("stepflow-bench-cache-{}", std::process::id()));
    let cached = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let uncached = Runtime::new(RuntimeConfig {
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let mut g = c.benchmark_group("plugin_load");
    g.sample_size(10);
    for name in ["noop", "quickstart", "deploy"] {
        let path = rust_plugin(name);
        Plugin::load(&cached, name, &path, PluginOptions::default()).unwrap();
        g.bench_function(format!("{name}_compile"), |b| {
            b.iter(|| Plugin::load(&uncached, name, &path, PluginOptions::default()).unwrap())
        });
        g.bench_function(format!("{name}_cached"), |b| {
            b.iter(|| Plugin::load(&cached, name, &path, PluginOptions::default()).unwrap())
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(cache);
}

criterion_group!(benches, calls, loads);
criterion_main!(benches);
