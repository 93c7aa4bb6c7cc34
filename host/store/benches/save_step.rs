//! What saving a step costs: [`Store::save_step`] (one transaction, one commit, one fsync of the
//! WAL under `synchronous=FULL`) against the disk's floor, a bare 4 KiB write + `fdatasync`.
//!
//! Read the ratio `save_step / fsync`, not the absolute times: benchmark machines are often
//! shared and their disks noisy, so absolute times vary between runs. A ratio near 1 means the store adds little beyond the one
//! fsync it needs; `load` is reading a run back (`stepflow show`, resume).
//!
//! `checksums` measures what the CRC-32 of every row costs (`src/sqlite/checksum.rs`): the same
//! saves and loads with and without checksums, on the same disk, and again in memory (`/dev/shm`,
//! where an fsync costs nearly nothing, so the checksum's CPU time is not lost in the disk's
//! noise). The checksum's cost per step is `save_step` minus `save_step_without` in memory; its
//! share of a durable save is that over the durable `save_step` (target: under 2%).
//! `crc32_of_one_step` is the CRC work alone over as many bytes, a floor that noise hardly moves.
//!
//! Run with `cargo bench -p stepflow-store --bench save_step`.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
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

/// A store at `path` with run `run-1`, with or without checksums.
fn store_with_run(path: &Path, checksums: bool) -> SqliteStore {
    let store = SqliteStore::open(path).expect("a store");
    let mut store = if checksums {
        store
    } else {
        store.without_checksums_for_benchmarks()
    };
    store
        .create_run(&RunRecord {
            id: "run-1".into(),
            flow: "bench.v1".into(),
            flow_file: "/flows/bench.yaml".into(),
            definition: "0123456789abcdef".into(),
            deployment: None,
            status: RunStatus::Running,
            state: state(0),
            next_check_ms: None,
            last_error: None,
            created_ms: 1,
            updated_ms: 1,
            lease: None,
        })
        .expect("a run");
    store
}

/// One step of `run-1`: its state and history entry, as a driver saves them.
fn save(store: &mut SqliteStore, i: u64) {
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

    let mut store = store_with_run(&dir.path().join("bench.db"), true);
    let mut i = 0;
    group.bench_function("save_step", |b| {
        b.iter(|| {
            i += 1;
            save(&mut store, i);
        })
    });
    group.bench_function("load", |b| {
        b.iter(|| black_box(store.run("run-1").expect("loaded")))
    });
    group.finish();

    let mut group = c.benchmark_group("checksums");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    // The CRC work of one save alone, over as many bytes as `save_step` checksums: the stored
    // state (checked), the new state (the row's new checksum) and the history row.
    let (state_json, entry_json) = (
        serde_json::to_string(&state(7)).expect("a state"),
        serde_json::to_string(&entry(7)).expect("an entry"),
    );
    group.bench_function("crc32_of_one_step", |b| {
        b.iter(|| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(black_box(state_json.as_bytes()));
            let old = crc.finalize();
            let mut crc = crc32fast::Hasher::new();
            crc.update(black_box(state_json.as_bytes()));
            crc.update(black_box(entry_json.as_bytes()));
            black_box((old, crc.finalize()))
        })
    });
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let places = [
        ("disk", Some(dir.path())),
        ("memory", shm.as_ref().map(|d| d.path())),
    ];
    for (place, at) in places {
        let Some(at) = at else {
            eprintln!("skipped: checksums/{place}: no /dev/shm here");
            continue;
        };
        for checksums in [true, false] {
            let suffix = if checksums { "" } else { "_without" };
            let name = format!("{place}{suffix}.db");
            let mut store = store_with_run(&at.join(name), checksums);
            let mut i = 0;
            group.bench_function(format!("{place}/save_step{suffix}"), |b| {
                b.iter(|| {
                    i += 1;
                    save(&mut store, i);
                })
            });
            group.bench_function(format!("{place}/load{suffix}"), |b| {
                b.iter(|| black_box(store.run("run-1").expect("loaded")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
