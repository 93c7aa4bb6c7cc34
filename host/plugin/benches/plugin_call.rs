//! What a plugin step costs: one call with a fresh instance, with a reused instance, and the same
//! no-op step as a native Rust function, measured in one run; where the time of a fresh-instance
//! call goes, phase by phase; and loading a plugin by compiling it versus from the on-disk cache.
//!
//! Run: `cargo bench -p stepflow-plugin --bench plugin_call`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_model::{Action, StepContext, StepResult};
use stepflow_plugin::{Grants, Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_testkit::rust_plugin;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The `stepflow:plugin` world, bound again here: the profile drives wasmtime itself.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "stepflow:plugin/plugin",
    });
}
use bindings::stepflow::plugin::{host, types as wit};

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
        .block_on(profile_fresh_calls(runtime.engine(), &path, &ctx, 20_000))
        .unwrap();
    println!(
        "fresh-instance call breakdown (mean of 20000): {profile:?}, total {:?}",
        profile.total()
    );
}

/// Average time of each phase of a fresh-instance call.
#[derive(Clone, Copy, Debug, Default)]
struct FreshProfile {
    /// Building the WASI context (grants, captured stdio).
    wasi_context: Duration,
    /// Creating the store (without the WASI context): limiter, epoch deadline.
    store: Duration,
    /// Instantiating from the pre-linked `InstancePre`.
    instantiate: Duration,
    /// Looking the function up and calling it (lifting and lowering included).
    call: Duration,
    /// Dropping the store and instance (returning memory to the pool).
    drop: Duration,
}

impl FreshProfile {
    /// The phases added up: what a fresh-instance call costs besides the host's bookkeeping.
    fn total(&self) -> Duration {
        self.wasi_context + self.store + self.instantiate + self.call + self.drop
    }
}

/// What the profile's stores hold: the same parts as the host's (WASI, resources, memory cap).
struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for Sandbox {
    fn log(&mut self, _: host::Level, _: String, _: Vec<(String, String)>) {}
}

impl wit::Host for Sandbox {}

/// Times each phase of `n` fresh-instance calls of `noop.noop`, done the way the host does them
/// (same engine, a linker with WASI and `stepflow:plugin/host`, the default grants), and
/// averages them.
async fn profile_fresh_calls(
    engine: &Engine,
    path: &Path,
    ctx: &StepContext,
    n: u32,
) -> wasmtime::Result<FreshProfile> {
    let component = Component::from_file(engine, path)?;
    let mut linker = Linker::<Sandbox>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    host::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?;
    let pre = linker.instantiate_pre(&component)?;
    let index = component
        .get_export_index(None, "noop")
        .ok_or_else(|| wasmtime::format_err!("the noop plugin exports no `noop`"))?;
    let grants = Grants::default();
    // The host counts a call's time limit in 10 ms epoch ticks.
    let deadline = u64::try_from(grants.timeout.as_millis() / 10 + 1).unwrap_or(u64::MAX);
    let mut sum = [Duration::ZERO; 5];
    for _ in 0..n {
        let t0 = Instant::now();
        let output = MemoryOutputPipe::new(grants.max_log_bytes);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.clone());
        wasi.stderr(output);
        let wasi = wasi.build();
        let t1 = Instant::now();
        let mut store = Store::new(
            engine,
            Sandbox {
                wasi,
                table: ResourceTable::new(),
                limits: StoreLimitsBuilder::new()
                    .memory_size(grants.memory_bytes)
                    .build(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline);
        let t2 = Instant::now();
        let instance = pre.instantiate_async(&mut store).await?;
        let t3 = Instant::now();
        store.set_epoch_deadline(deadline);
        let noop = instance
            .get_typed_func::<(wit::StepContext,), (Result<Option<String>, wit::StepError>,)>(
                &mut store, index,
            )?;
        let (result,) = noop.call_async(&mut store, (to_wit(ctx),)).await?;
        result.map_err(|e| wasmtime::format_err!("noop failed: {e:?}"))?;
        let t4 = Instant::now();
        drop((instance, store));
        let t5 = Instant::now();
        for (slot, d) in sum
            .iter_mut()
            .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
        {
            *slot += d;
        }
    }
    let avg = |d: Duration| d / n.max(1);
    Ok(FreshProfile {
        wasi_context: avg(sum[0]),
        store: avg(sum[1]),
        instantiate: avg(sum[2]),
        call: avg(sum[3]),
        drop: avg(sum[4]),
    })
}

/// The context as the plugin sees it (as the host passes it).
fn to_wit(ctx: &StepContext) -> wit::StepContext {
    wit::StepContext {
        run_id: ctx.run_id.to_string(),
        flow: ctx.flow.to_string(),
        step: ctx.step.to_string(),
        attempt: ctx.attempt,
        idempotency_key: ctx.idempotency_key(),
        redelivered: ctx.redelivered,
        data: ctx.data.to_string(),
    }
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
