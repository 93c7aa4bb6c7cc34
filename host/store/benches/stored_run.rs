//! Steps per second of a 1,000-step flow of no-op plugin steps, measured in one run: in memory
//! (apply only), stored (apply, then the state and its history row saved in one SQLite
//! transaction, as `stepflow run` does), and the disk's floor two ways: a 4 KiB block
//! overwritten in place plus `fdatasync` (`fsync`), and a 4 KiB record appended to a log plus
//! `fdatasync` (`fsync_append`, what a write-ahead-log commit is). Read the ratios: stored time
//! per step / fsync time is what a step costs in fsyncs (target: at most 1.5); in-memory time
//! per step should stay within 2x of the plugin-call benchmark.
//!
//! Run with `cargo bench -p stepflow-store --bench stored_run`.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use stepflow_model::{RunContext, StepFlow, Steps};
use stepflow_plugin::{Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_store::{HistoryEntry, RunRecord, RunStatus, SqliteStore, Store};

const STEPS: usize = 1000;

fn flow() -> StepFlow {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("bench-component-cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let plugin = Plugin::load(
        &runtime,
        "noop",
        &stepflow_testkit::rust_plugin("noop"),
        PluginOptions::default(),
    )
    .expect("plugin");
    let noop = Arc::new(plugin.action("noop").expect("noop"));
    let mut steps = Steps::named("thousand.v1");
    for i in 0..STEPS {
        steps = steps.step_shared(format!("s{i}"), noop.clone());
    }
    StepFlow::new(steps).expect("flow")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn runs(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let flow = flow();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = SqliteStore::open(&dir.path().join("bench.db")).expect("store");
    let mut g = c.benchmark_group("thousand_step_run");
    g.sample_size(10);
    g.throughput(Throughput::Elements(STEPS as u64));

    g.bench_function("in_memory", |b| {
        b.iter(|| {
            rt.block_on(async {
                let ctx = RunContext::new("bench");
                let mut state = flow.new_state(json!({}));
                while !flow.is_completed(&state) {
                    state = flow.apply(&ctx, state).await;
                }
                state
            })
        })
    });

    let mut n = 0u64;
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            n += 1;
            let run_id = format!("run-{n}");
            let state = flow.new_state(json!({}));
            let now = now_ms();
            store
                .create_run(&RunRecord {
                    id: run_id.clone(),
                    flow: flow.name().into(),
                    flow_file: "bench".into(),
                    definition: flow.definition_hash().into(),
                    status: RunStatus::Running,
                    state: state.clone(),
                    next_check_ms: None,
                    last_error: None,
                    created_ms: now,
                    updated_ms: now,
                })
                .expect("create");
            rt.block_on(async {
                let ctx = RunContext::new(run_id.as_str());
                let mut state = state;
                while !flow.is_completed(&state) {
                    let started = Instant::now();
                    let applied = flow.apply_with_record(&ctx, state).await;
                    let took = started.elapsed().as_millis() as u64;
                    let history = applied
                        .call
                        .as_ref()
                        .map(|c| HistoryEntry::from_call(&run_id, c, now_ms(), took));
                    let status = if flow.is_completed(&applied.state) {
                        RunStatus::Completed
                    } else {
                        RunStatus::Running
                    };
                    store
                        .save_step(
                            &run_id,
                            status,
                            &applied.state,
                            None,
                            None,
                            history.as_ref(),
                        )
                        .expect("save");
                    state = applied.state;
                }
            })
        })
    });

    // The disk's floor, in the same run: one small write and fdatasync per step.
    let path = dir.path().join("fsync.bin");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("fsync file");
    let block = [7u8; 4096];
    g.bench_function("fsync", |b| {
        b.iter(|| {
            for _ in 0..STEPS {
                file.seek(SeekFrom::Start(0)).expect("seek");
                file.write_all(&block).expect("write");
                file.sync_data().expect("fdatasync");
            }
        })
    });
    // A durable append: a 4 KiB record added to a log file and fdatasync'd, as a write-ahead
    // log does (the file grows, so the flush carries its new size too).
    let log_path = dir.path().join("append.bin");
    g.bench_function("fsync_append", |b| {
        b.iter(|| {
            let mut log = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&log_path)
                .expect("log file");
            for _ in 0..STEPS {
                log.write_all(&block).expect("append");
                log.sync_data().expect("fdatasync");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);
