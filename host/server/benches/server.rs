//! Durable steps per second of the server with 1, 10 and 100 concurrent runs of 100 no-op
//! plugin steps each, and the writer's step-save transactions (fsyncs) per step at each level.
//! Each level is one server over a fresh database, measured in the same process; the ratios
//! (rate at 10 and 100 runs over the rate at 1) are printed at the end.
//!
//! Run with `cargo bench -p stepflow-server --bench server`. Targets (issue 10): at 100
//! concurrent runs at least 10x the single-run rate and at most 0.1 fsync per step.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_engine::{Engine, Stop, start_run};
use stepflow_server::{Server, ServerConfig};
use stepflow_store::{SqliteStore, Store};

const STEPS: usize = 100;
const LEVELS: [usize; 3] = [1, 10, 100];

fn flow_file(dir: &Path) -> std::path::PathBuf {
    let wasm = stepflow_testkit::rust_plugin("noop");
    let mut yaml = format!(
        "flow: hundred.v1\nplugins:\n  noop:\n    wasm: {}\nsteps:\n",
        wasm.display()
    );
    for i in 0..STEPS {
        let _ = writeln!(yaml, "  - {{ name: s{i}, do: noop.noop }}");
    }
    let path = dir.join("hundred.yaml");
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

/// One measurement: `runs` runs driven at once to completion; returns (steps/s, fsyncs/step).
fn measure(engine: &Engine, flow: &Path, runs: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let loaded = engine.load(flow).expect("load the flow");
    let ids: Vec<String> = {
        let mut store = SqliteStore::open(&db).expect("store");
        (0..runs)
            .map(|_| {
                // Run ids carry 24 random bits per second: retry the rare collision.
                let mut tries = 0;
                loop {
                    match start_run(&mut store, &loaded, Some(&json!({}))) {
                        Ok((id, _)) => break id,
                        Err(e) if tries < 3 => {
                            tries += 1;
                            eprintln!("starting a run failed, trying again: {e}");
                        }
                        Err(e) => panic!("cannot start a run: {e}"),
                    }
                }
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let server = Server::new(ServerConfig {
        concurrency: runs,
        idle_poll: Duration::from_millis(100),
        ..ServerConfig::new(db.clone())
    });
    let stats = server.stats();
    let started = Instant::now();
    let summary = rt.block_on(async {
        let (stop, requests) = Stop::new();
        let watch = async {
            let store = SqliteStore::open(&db).expect("store");
            loop {
                let done = ids.iter().all(|id| {
                    store
                        .run(id)
                        .map(|r| r.status.is_finished())
                        .unwrap_or(true)
                });
                if done {
                    stop.request();
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (summary, ended) = tokio::join!(server.run(engine.clone(), requests), watch);
        (summary.expect("server"), ended)
    });
    let (summary, ended) = summary;
    assert_eq!(summary.completed, runs as u64, "{summary:?}");
    let secs = ended.duration_since(started).as_secs_f64();
    let (transactions, saves, _) = stats.snapshot();
    let steps = (runs * STEPS) as f64;
    let _ = saves;
    (steps / secs, transactions as f64 / steps)
}

fn server(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = flow_file(dir.path());
    let engine = Engine::new(Some(
        stepflow_testkit::target_dir().join("bench-component-cache"),
    ))
    .expect("engine");
    // Warm the compile cache, so no level pays for compiling the plugin.
    measure(&engine, &flow, 1);
    let mut results = Vec::new();
    let mut g = c.benchmark_group("server");
    g.sample_size(10);
    for runs in LEVELS {
        let mut last = (0.0, 0.0);
        g.bench_function(format!("{runs}_runs_of_{STEPS}_steps"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    last = measure(&engine, &flow, runs);
                    total += t.elapsed();
                }
                total
            });
        });
        results.push((runs, last));
    }
    g.finish();
    let base = results.first().map_or(1.0, |(_, (rate, _))| *rate);
    for (runs, (rate, fsyncs)) in &results {
        println!(
            "server/{runs:>3} runs: {rate:>8.0} durable steps/s ({:>5.1}x the single run), \
             {fsyncs:.3} step transactions (fsyncs) per step",
            rate / base
        );
    }
}

criterion_group!(benches, server);
criterion_main!(benches);
