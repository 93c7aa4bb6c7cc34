//! Durable steps per second of the server with 1, 10, 100 and 1,000 concurrent runs of 100
//! no-op plugin steps each, and the writer's write transactions per step at each level, step
//! saves and claims and releases alike (SQLite in WAL mode with `synchronous=FULL` syncs the
//! log once per commit: one fsync per transaction, plus the rare checkpoint). Each level is
//! one server over a fresh database, measured in the same process; the ratios over the
//! single-run rate are printed at the end.
//! The clock runs from the first step's save to the last one's (the observer hears of a step
//! only after it is durable), so nothing polls the store while it is measured, and the
//! server's start, which costs more the more drivers it opens, is not counted as steps.
//!
//! Run with `cargo bench -p stepflow-server --bench server`. Targets (issue 10): at 100
//! concurrent runs at least 10x the single-run rate and at most 0.1 fsync per step.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_engine::{Engine, Observer, Stop, start_run};
use stepflow_model::CallRecord;
use stepflow_server::{Server, ServerConfig};
use stepflow_store::SqliteStore;

/// When the first and the last durable step were heard of.
#[derive(Default, Clone, Copy)]
struct Span {
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Counts durable steps across all runs; notes when the first and the last were saved, and
/// stops the server at the last.
struct LastStep {
    left: Arc<AtomicUsize>,
    stop: Stop,
    span: Arc<Mutex<Span>>,
}

impl Observer for LastStep {
    fn step_finished(&mut self, _: u64, _: &CallRecord, _: u64) {
        let now = Instant::now();
        let last = self.left.fetch_sub(1, Ordering::SeqCst) == 1;
        if let Ok(mut span) = self.span.lock() {
            span.first.get_or_insert(now);
            if last {
                span.last = Some(now);
            }
        }
        if last {
            self.stop.request();
        }
    }
}

const STEPS: usize = 100;
const LEVELS: [usize; 4] = [1, 10, 100, 1000];

/// One measurement: `runs` runs driven at once to completion; returns (steps/s, fsyncs/step).
fn measure(engine: &Engine, flow: &Path, runs: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let loaded = engine.load(flow).expect("load the flow");
    {
        let mut store = SqliteStore::open(&db).expect("store");
        for _ in 0..runs {
            // A run id that is taken is retried by the engine itself.
            start_run(&mut store, &loaded, Some(&json!({}))).expect("start a run");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let (stop, requests) = Stop::new();
    let left = Arc::new(AtomicUsize::new(runs * STEPS));
    let span = Arc::new(Mutex::new(Span::default()));
    let observer = {
        let (left, stop, span) = (left.clone(), stop.clone(), span.clone());
        Arc::new(move |_: &str| -> Box<dyn Observer> {
            Box::new(LastStep {
                left: left.clone(),
                stop: stop.clone(),
                span: span.clone(),
            })
        })
    };
    let server = Server::new(ServerConfig {
        concurrency: runs,
        idle_poll: Duration::from_millis(100),
        ..ServerConfig::new(stepflow_store::Database::File(db.clone()))
    })
    .with_observer(observer);
    let stats = server.stats();
    let summary = rt
        .block_on(server.run(engine.clone(), requests))
        .expect("server");
    assert_eq!(summary.completed, runs as u64, "{summary:?}");
    // From the first durable step to the last: the server's start (a read connection per
    // driver, the first claims) is not a step, and would weigh more the more runs there are.
    let span = span.lock().map(|s| *s).unwrap_or_default();
    let (Some(first), Some(last)) = (span.first, span.last) else {
        panic!("no step was heard of");
    };
    let secs = last.duration_since(first).as_secs_f64();
    // Every write transaction is one fsync of the WAL: the step saves' and the others
    // (claims, lease releases, marking a run finished).
    let (saves, _, others) = stats.snapshot();
    let steps = (runs * STEPS) as f64;
    ((steps - 1.0) / secs, (saves + others) as f64 / steps)
}

fn server(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = stepflow_testkit::noop_flow(dir.path(), "hundred", STEPS);
    // An instance slot per run at the largest level, as `stepflow server` sizes it.
    let engine = Engine::with_max_instances(
        Some(stepflow_testkit::target_dir().join("bench-component-cache")),
        LEVELS[LEVELS.len() - 1] as u32,
    )
    .expect("engine");
    // Warm the compile cache, so no level pays for compiling the plugin.
    measure(&engine, &flow, 1);
    let mut results = Vec::new();
    let mut g = c.benchmark_group("server");
    g.sample_size(10);
    // The 1,000-run level drives 100,000 steps per sample.
    g.sampling_mode(criterion::SamplingMode::Flat);
    for runs in LEVELS {
        let mut samples = Vec::new();
        g.bench_function(format!("{runs}_runs_of_{STEPS}_steps"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    samples.push(measure(&engine, &flow, runs));
                    total += t.elapsed();
                }
                total
            });
        });
        // A level left out by a filter (`-- server/100_runs`) has no samples and no line.
        if !samples.is_empty() {
            results.push((runs, median(samples)));
        }
    }
    g.finish();
    let single = results
        .iter()
        .find(|(runs, _)| *runs == 1)
        .map(|(_, (rate, _))| *rate);
    for (runs, (rate, fsyncs)) in &results {
        let ratio = single.map_or_else(String::new, |base| {
            format!(" ({:>5.1}x the single run)", rate / base)
        });
        println!(
            "server/{runs:>4} runs: {rate:>8.0} durable steps/s{ratio}, {fsyncs:.3} write \
             transactions (fsyncs) per step (medians of every sample)"
        );
    }
}

/// The median rate of the samples (with its fsyncs per step): the single-run rate waits on
/// the disk's fsync at every step, whose latency on a shared machine varies from sample to
/// sample, so one sample alone makes a ratio that moves by half from run to run.
fn median(mut samples: Vec<(f64, f64)>) -> (f64, f64) {
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

criterion_group!(benches, server);
criterion_main!(benches);
