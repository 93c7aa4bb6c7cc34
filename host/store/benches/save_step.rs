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
//! `batch` is group commit's primitive: 100 steps of 100 runs saved one by one (100 commits,
//! 100 fsyncs) against the same 100 in one [`Store::save_steps`] call (one commit), on disk.
//! Criterion reports each as time per 100 steps; the bench then prints the time per step of
//! both and their ratio, measured in the same run.
//!
//! Run with `cargo bench -p stepflow-store --bench save_step` (`-- batch` for that group alone).

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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

/// How many runs (one step each) a `batch` measurement saves.
const BATCH: usize = 100;

/// A store at `path` with runs `run-0`..`run-99`, with checksums.
fn store_with_runs(path: &Path) -> SqliteStore {
    let mut store = SqliteStore::open(path).expect("a store");
    for n in 0..BATCH {
        store
            .create_run(&RunRecord {
                id: format!("run-{n}"),
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
    }
    store
}

/// The states and history entries of one step of each of the [`BATCH`] runs.
fn batch_data(i: u64) -> (Vec<String>, Vec<State>, Vec<HistoryEntry>) {
    let ids = (0..BATCH).map(|n| format!("run-{n}")).collect::<Vec<_>>();
    let states = (0..BATCH).map(|_| state(i)).collect();
    let entries = ids
        .iter()
        .map(|id| HistoryEntry {
            run_id: id.clone(),
            ..entry(i)
        })
        .collect();
    (ids, states, entries)
}

/// The saves of one step of each run, as drivers hand them over.
fn batch_steps<'a>(
    ids: &'a [String],
    states: &'a [State],
    entries: &'a [HistoryEntry],
) -> Vec<StepSave<'a>> {
    ids.iter()
        .zip(states)
        .zip(entries)
        .map(|((id, state), entry)| StepSave {
            run_id: id,
            status: RunStatus::Running,
            state,
            next_check_ms: None,
            last_error: None,
            history: std::slice::from_ref(entry),
            lease: None,
        })
        .collect()
}

/// Saves one step of every run: one `save_step` each, or all in one `save_steps`.
fn save_batch(store: &mut SqliteStore, i: u64, together: bool) {
    let (ids, states, entries) = batch_data(i);
    let steps = batch_steps(&ids, &states, &entries);
    if together {
        let results = store.save_steps(&steps).expect("saved");
        assert!(results.iter().all(Result::is_ok), "every step saved");
    } else {
        for step in &steps {
            store.save_step(step).expect("saved");
        }
    }
}

/// Whether to print [`report_batch`]: under `cargo bench` (not `cargo test --benches`), with
/// no filter or one that names the `batch` group.
fn wants_report() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    args.iter().any(|a| a == "--bench")
        && (positional.is_empty()
            || positional
                .iter()
                .any(|f| "batch/report".contains(f.as_str()) || f.contains("batch")))
}

/// Prints the time per step of saving one by one and in one transaction, and their ratio:
/// the median of `rounds` rounds of [`BATCH`] steps each, alternating, on the same disk.
fn report_batch(dir: &Path, rounds: usize) {
    let mut one_by_one = store_with_runs(&dir.join("report-one.db"));
    let mut together = store_with_runs(&dir.join("report-batch.db"));
    let (mut singles, mut batches) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let i = u64::try_from(round).unwrap_or_default();
        let started = Instant::now();
        save_batch(&mut one_by_one, i, false);
        singles.push(started.elapsed());
        let started = Instant::now();
        save_batch(&mut together, i, true);
        batches.push(started.elapsed());
    }
    let per_step = |times: &mut Vec<Duration>| {
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        median.as_secs_f64() * 1e6 / BATCH as f64
    };
    let (single, batch) = (per_step(&mut singles), per_step(&mut batches));
    println!(
        "batch/report: {BATCH} steps of {BATCH} runs, median of {rounds} rounds: one by one \
         {single:.1} µs/step, save_steps {batch:.1} µs/step, ratio {:.1}x",
        single / batch
    );
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
            history: std::slice::from_ref(&entry),
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

    let mut group = c.benchmark_group("batch");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(BATCH as u64));
    for (name, together) in [("one_by_one", false), ("save_steps", true)] {
        let mut store = store_with_runs(&dir.path().join(format!("batch-{name}.db")));
        let mut i = 0;
        group.bench_function(format!("{name}_{BATCH}"), |b| {
            b.iter(|| {
                i += 1;
                save_batch(&mut store, i, together);
            })
        });
    }
    group.finish();
    if wants_report() {
        report_batch(dir.path(), 21);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
