//! Steps per second of a 1,000-step flow of no-op plugin steps, driven by the engine's real
//! [`Driver`] and measured in one run: in memory (apply only, no store), stored (the driver
//! saves the state and its history entry in one SQLite transaction after every step, as
//! `stepflow run` does), and the disk's floor two ways: a 4 KiB block overwritten in place plus
//! `fdatasync` (`fsync`), and a 4 KiB record appended to a log plus `fdatasync`
//! (`fsync_append`, what a write-ahead-log commit is), and the stored run without row checksums
//! (`sqlite_without_checksums`: its ratio to `sqlite` is what checksums cost). Read the ratios: stored time per step /
//! fsync time is what a step costs in fsyncs; in-memory time per step should stay within 2x of
//! the plugin-call benchmark (`cargo bench -p stepflow-plugin --bench plugin_call`).
//!
//! Run with `cargo bench -p stepflow-engine --bench stored_run`.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use stepflow_engine::{DriveOptions, Driver, Engine, Finish, StopRequests, start_run};
use stepflow_model::RunContext;
use stepflow_store::SqliteStore;

const STEPS: usize = 1000;

/// A flow file of `STEPS` no-op plugin steps, written to `dir`.
fn flow_file(dir: &std::path::Path) -> std::path::PathBuf {
    let wasm = stepflow_testkit::rust_plugin("noop");
    let mut yaml = format!(
        "flow: thousand.v1\nplugins:\n  noop:\n    wasm: {}\nsteps:\n",
        wasm.display()
    );
    for i in 0..STEPS {
        let _ = writeln!(yaml, "  - {{ name: s{i}, do: noop.noop }}");
    }
    let path = dir.join("thousand.yaml");
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

fn runs(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(Some(
        stepflow_testkit::target_dir().join("bench-component-cache"),
    ))
    .expect("engine");
    let loaded = engine.load(&flow_file(dir.path())).expect("load the flow");
    let flow = &loaded.flow;
    let mut store = SqliteStore::open(&dir.path().join("bench.db")).expect("store");
    let mut unchecked = SqliteStore::open(&dir.path().join("unchecked.db"))
        .expect("store")
        .without_checksums_for_benchmarks();
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

    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let (run_id, state) = start_run(&mut store, &loaded, None).expect("start");
            let finish = rt
                .block_on(
                    Driver::new(flow, &mut store, &mut (), StopRequests::never()).drive(
                        &run_id,
                        state,
                        DriveOptions::default(),
                    ),
                )
                .expect("drive");
            assert!(matches!(finish, Finish::Completed(_)));
        })
    });

    // The same without row checksums: the ratio to `sqlite` is what the checksums cost a step.
    g.bench_function("sqlite_without_checksums", |b| {
        b.iter(|| {
            let (run_id, state) = start_run(&mut unchecked, &loaded, None).expect("start");
            let finish = rt
                .block_on(
                    Driver::new(flow, &mut unchecked, &mut (), StopRequests::never()).drive(
                        &run_id,
                        state,
                        DriveOptions::default(),
                    ),
                )
                .expect("drive");
            assert!(matches!(finish, Finish::Completed(_)));
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
