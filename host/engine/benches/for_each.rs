//! Steps per second of a `for-each` over 1,000 elements whose body is one no-op plugin step,
//! at concurrency 1, 8 and 64, each run driven by the engine's real [`Driver`] and saved in
//! SQLite on a real disk after every apply (`stepflow run` does the same). With concurrency N
//! an apply calls up to N instances side by side and saves all their results in one
//! transaction, so a step costs 1/N of a disk sync; the target is concurrency 64 at least 5x
//! concurrency 1.
//!
//! After criterion, a summary measured in the same run prints steps/s for each concurrency,
//! the ratio to concurrency 1, and the `fdatasync`/`fsync` calls per step of one stored run
//! (counted by re-running it under `strace -c`, when strace is installed).
//!
//! The databases live in `$STEPFLOW_BENCH_DIR` (default: the target directory); the bench
//! refuses a directory on tmpfs, where `fdatasync` does nothing.
//!
//! Run with `cargo bench -p stepflow-engine --bench for_each`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use stepflow_engine::{DriveOptions, Driver, Engine, Finish, LoadedFlow, StopRequests, start_run};
use stepflow_store::SqliteStore;

const ELEMENTS: usize = 1000;
const CONCURRENCY: [u32; 3] = [1, 8, 64];
/// The child run whose disk syncs `syncs_per_step` counts: its concurrency.
const ONE_RUN: &str = "STEPFLOW_BENCH_ONE_FOR_EACH_RUN";

struct Bench {
    rt: tokio::runtime::Runtime,
    flows: Vec<(u32, LoadedFlow)>,
    dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        // Multi-threaded, as `stepflow run`'s: the calls an apply makes side by side run on
        // every core.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let durable = stepflow_testkit::durable_dir().unwrap_or_else(|why| panic!("{why}"));
        let dir = tempfile::tempdir_in(durable).expect("tempdir");
        let engine = Engine::new(Some(
            stepflow_testkit::target_dir().join("bench-component-cache"),
        ))
        .expect("engine");
        let flows = CONCURRENCY
            .iter()
            .map(|&n| {
                let path = dir.path().join(format!("each{n}.yaml"));
                std::fs::write(&path, flow_file(n)).expect("write the flow file");
                (n, engine.load(&path).expect("load the flow"))
            })
            .collect();
        Bench { rt, flows, dir }
    }

    fn stored(&self, concurrency: u32, store: &mut SqliteStore) {
        let Some((_, loaded)) = self.flows.iter().find(|(n, _)| *n == concurrency) else {
            panic!("no flow of concurrency {concurrency}");
        };
        let (run_id, state) = start_run(store, loaded, None).expect("start");
        let finish = self
            .rt
            .block_on(
                Driver::new(&loaded.flow, store, &mut (), StopRequests::never()).drive(
                    &run_id,
                    state,
                    DriveOptions::default(),
                ),
            )
            .expect("drive");
        let Finish::Completed(state) = finish else {
            panic!("the run did not complete: {finish:?}");
        };
        assert_eq!(
            state.data["done"].as_array().map(Vec::len),
            Some(ELEMENTS),
            "one result per element"
        );
    }

    fn store(&self, name: &str) -> SqliteStore {
        SqliteStore::open(&self.dir.path().join(format!("{name}.db"))).expect("store")
    }
}

/// A flow of one `for-each` over `/items` (1,000 numbers) whose body is one no-op step.
fn flow_file(concurrency: u32) -> String {
    let mut yaml = format!(
        "flow: each{concurrency}.v1\nplugins:\n  noop:\n    wasm: {}\ndata:\n  items: [",
        stepflow_testkit::rust_plugin("noop").display()
    );
    for i in 0..ELEMENTS {
        let _ = write!(yaml, "{}{i}", if i == 0 { "" } else { ", " });
    }
    let _ = write!(
        yaml,
        "]\nsteps:\n  - name: items\n    for-each: /items\n    results: /done\n    concurrency: {concurrency}\n    steps:\n      - do: noop.noop\n"
    );
    yaml
}

/// The best of `n` timings of a stored run, per step.
fn per_step(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed() / ELEMENTS as u32
        })
        .min()
        .unwrap_or_default()
}

fn summary(bench: &Bench) {
    println!(
        "\nfor_each summary (best of 3, {ELEMENTS} elements, in {}):",
        bench.dir.path().display()
    );
    let mut base = None;
    for n in CONCURRENCY {
        let mut store = bench.store(&format!("summary{n}"));
        let step = per_step(3, || bench.stored(n, &mut store));
        let rate = 1.0 / step.as_secs_f64().max(1e-12);
        let ratio = rate / *base.get_or_insert(rate);
        let syncs = stepflow_testkit::syncs_of_child_run(ONE_RUN, &n.to_string())
            .map_or("not counted (strace is not installed)".to_string(), |s| {
                format!("{:.3}", s as f64 / ELEMENTS as f64)
            });
        println!(
            "  concurrency {n:>2}: {rate:>8.0} steps/s ({ratio:>5.2}x concurrency 1), fdatasync + fsync per step: {syncs}"
        );
    }
}

fn main() {
    let bench = Bench::new();
    if let Some(n) = std::env::var(ONE_RUN).ok().and_then(|n| n.parse().ok()) {
        // The child run `syncs_of_child_run` counts: one stored run, nothing else.
        let mut store = bench.store("one");
        bench.stored(n, &mut store);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("for_each_1000");
        g.sample_size(10);
        g.throughput(Throughput::Elements(ELEMENTS as u64));
        for n in CONCURRENCY {
            let mut store = bench.store(&format!("criterion{n}"));
            g.bench_function(format!("concurrency_{n}"), |b| {
                b.iter(|| bench.stored(n, &mut store))
            });
        }
        g.finish();
    }
    c.final_summary();
    summary(&bench);
}
