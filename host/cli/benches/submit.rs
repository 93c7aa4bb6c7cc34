//! Submissions per second: `stepflow submit` (a process per run: read the flow file, hash the
//! plugins, load the deployment from the compile cache, store the run) against the Rust API
//! (`start_run` on an open store with the flow loaded once). Both store the run durably (one
//! fsync each); the ratio shows what a process per submission costs.
//!
//! Run with `cargo bench -p stepflow-cli --bench submit`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stepflow_engine::{Engine, start_run};
use stepflow_store::{SqliteStore, Store};

fn flow_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("submitted.yaml");
    let yaml = format!(
        "flow: submitted.v1\nplugins:\n  n: {{ wasm: {} }}\nsteps:\n  - {{ name: a, do: n.noop }}\n  - {{ name: b, do: n.noop }}\n",
        stepflow_testkit::rust_plugin("noop").display()
    );
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

fn submit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = flow_file(dir.path());
    let cli_db = dir.path().join("cli.db");
    let submit_once = || {
        let out = Command::new(env!("CARGO_BIN_EXE_stepflow"))
            .arg("--db")
            .arg(&cli_db)
            .arg("submit")
            .arg(&flow)
            .env("STEPFLOW_LOG", "warn")
            .output()
            .expect("run stepflow submit");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The first submission compiles the plugin into the cache; the measured ones load it.
    submit_once();

    let engine = Engine::new(Some(
        stepflow_testkit::target_dir().join("bench-component-cache"),
    ))
    .expect("engine");
    let deployment = engine.deploy(&flow).expect("deploy");
    let loaded = engine.load_deployment(&deployment).expect("load");
    let mut store = SqliteStore::open(&dir.path().join("api.db")).expect("store");
    store
        .put_deployment(&deployment)
        .expect("store the deployment");

    let mut g = c.benchmark_group("submit");
    g.sample_size(20);
    let mut cli = Duration::ZERO;
    g.bench_function("stepflow_submit", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                submit_once();
            }
            let spent = t.elapsed();
            cli = spent / u32::try_from(iters.max(1)).unwrap_or(u32::MAX);
            spent
        });
    });
    let mut api = Duration::ZERO;
    g.bench_function("rust_api_start_run", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                // Run ids carry 24 random bits per second; a rare collision is retried.
                let started = (0..3).any(|_| start_run(&mut store, &loaded, None).is_ok());
                assert!(started, "cannot start a run");
            }
            let spent = t.elapsed();
            api = spent / u32::try_from(iters.max(1)).unwrap_or(u32::MAX);
            spent
        });
    });
    g.finish();
    let rate = |d: Duration| 1.0 / d.as_secs_f64().max(f64::EPSILON);
    println!(
        "submit: `stepflow submit` {:.0}/s ({:.1} ms each), Rust API {:.0}/s ({:.2} ms each): the API is {:.1}x the command",
        rate(cli),
        cli.as_secs_f64() * 1e3,
        rate(api),
        api.as_secs_f64() * 1e3,
        rate(api) / rate(cli)
    );
}

criterion_group!(benches, submit);
criterion_main!(benches);
