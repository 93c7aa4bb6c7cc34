//! What saving a step costs: [`Store::save_step`] (one transaction, one commit, one fsync of the
//! WAL under `synchronous=FULL`) against the disk's floor, a bare 4 KiB write + `fdatasync`.
//!
//! Read the ratio `save_step / fsync`, not the absolute times: benchmark machines are often
//! shared and their disks noisy, so absolute times vary between runs. A ratio near 1 means the store adds little beyond the one
//! fsync it needs; `load` is reading a run back (`stepflow show`, resume).
//!
//! Run with `cargo bench -p stepflow-store --bench save_step`.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stepflow_model::{CallKind, Event, State};
use stepflow_store::{
    HistoryEntry, RunRecord, RunStatus, SqliteStore, StepOutcome, StepSave, Store,
};

/// A state of about 1 KiB: a cursor and a data document with some fields.
fn state(i: u64) -> State {
    State {
        cursor: vec![Event::new("start:bench.v1/step")],
        data: Arc::new(json!({
            "counter": i,
            "target": "https://deploy.example.invalid/api/v2/releases",
            "artifacts": (0..20).map(|n| format!("artifact-{n}.tar.gz")).collect::<Vec<_>>(),
        })),
        calls: i,
        definition: "0123456789abcdef".into(),
        ..State::default()
    }
}

fn entry(i: u64) -> HistoryEntry {
    HistoryEntry {
        run_id: "run-1".into(),
        seq: 0,
        step: "bench.v1/step".into(),
        kind: CallKind::Step,
        attempt: 0,
        outcome: StepOutcome::Done,
        started_ms: 1_700_000_000_000 + i,
        duration_ms: 1,
        error: None,
        patch: Some(json!({ "counter": i })),
        redelivered: false,
        handlers: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut group = c.benchmark_group("persist");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));

    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("fsync.bin"))
        .expect("a scratch file");
    let page = [7u8; 4096];
    group.bench_function("fsync", |b| {
        b.iter(|| {
            file.seek(SeekFrom::Start(0)).expect("seek");
            file.write_all(&page).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });

    let mut store = SqliteStore::open(&dir.path().join("bench.db")).expect("a store");
    store
        .create_run(&RunRecord {
            id: "run-1".into(),
            flow: "bench.v1".into(),
            flow_file: "/flows/bench.yaml".into(),
            definition: "0123456789abcdef".into(),
            status: RunStatus::Running,
            state: state(0),
            next_check_ms: None,
            last_error: None,
            created_ms: 1,
            updated_ms: 1,
            lease: None,
        })
        .expect("a run");
    let mut i = 0;
    group.bench_function("save_step", |b| {
        b.iter(|| {
            i += 1;
            let (state, entry) = (state(i), entry(i));
            store
                .save_step(&StepSave {
                    run_id: "run-1",
                    status: RunStatus::Running,
                    state: &state,
                    next_check_ms: None,
                    last_error: None,
                    history: Some(&entry),
                    lease: None,
                })
                .expect("saved");
        })
    });
    group.bench_function("load", |b| {
        b.iter(|| black_box(store.run("run-1").expect("loaded")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
