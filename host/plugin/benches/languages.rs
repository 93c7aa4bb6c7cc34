//! What a plugin costs in each language, measured in one run: component size, cold compile
//! (printed once: Python and JavaScript take seconds), load from the on-disk cache, and one call
//! of the same near no-op condition (`dataproc.last-page` on a tiny data document) with a fresh
//! instance and with a reused one. Languages whose toolchain is missing are skipped loudly.
//!
//! Run: `cargo bench -p stepflow-plugin --bench languages`

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_model::{Condition, StepContext};
use stepflow_plugin::{Grants, Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_testkit::{LANGUAGES, language_plugin};

fn context() -> StepContext {
    StepContext {
        run_id: "bench".into(),
        flow: "bench.v1".into(),
        step: "bench.v1/last".into(),
        attempt: 1,
        sequence: 0,
        redelivered: false,
        data: Arc::new(json!({ "page": 1, "pages": 3 })),
    }
}

fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = std::env::temp_dir().join(format!("stepflow-lang-bench-{}", std::process::id()));
    let cached = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let grants = Grants {
        memory_bytes: 256 << 20,
        ..Grants::default()
    };
    let options = |reuse_instances| PluginOptions {
        grants: grants.clone(),
        reuse_instances,
    };
    let ctx = context();
    let mut g = c.benchmark_group("language");
    g.sample_size(20);
    for language in LANGUAGES {
        let path = match language_plugin(language, "dataproc") {
            Ok(path) => path,
            Err(why) => {
                let _ = writeln!(std::io::stderr(), "skipped: {language}: {why}");
                continue;
            }
        };
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let started = Instant::now();
        let fresh = Plugin::load(&cached, "dataproc", &path, options(false)).unwrap();
        let compile = started.elapsed();
        println!(
            "{language}: component {:.2} MiB, cold compile {:.2} s",
            size as f64 / (1 << 20) as f64,
            compile.as_secs_f64()
        );
        g.bench_function(format!("{language}/cached_load"), |b| {
            b.iter(|| Plugin::load(&cached, "dataproc", &path, options(false)).unwrap())
        });
        let fresh_fn = fresh.condition("last-page").unwrap();
        g.bench_function(format!("{language}/call_fresh_instance"), |b| {
            b.iter(|| rt.block_on(fresh_fn.check(ctx.clone())).unwrap())
        });
        let reused = Plugin::load(&cached, "dataproc", &path, options(true)).unwrap();
        let reused_fn = reused.condition("last-page").unwrap();
        g.bench_function(format!("{language}/call_reused_instance"), |b| {
            b.iter(|| rt.block_on(reused_fn.check(ctx.clone())).unwrap())
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(cache);
}

criterion_group!(benches, languages);
criterion_main!(benches);
