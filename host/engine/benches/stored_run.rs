//! Steps per second of a 1,000-step flow of no-op plugin steps, driven by the engine's real
//! [`Driver`] and measured in one run: in memory (apply only, no store), stored (the driver
//! saves the state and its history entry in one SQLite transaction after every step, as
//! `stepflow run` does), the stored run without row checksums (`sqlite_without_checksums`: its
//! ratio to `sqlite` is what checksums cost), and the disk's floor as SQLite's WAL meets it
//! (`wal_floor`): a preallocated file written sequentially and wrapped, as many bytes per
//! commit as the stored run wrote per step (read from `/proc/self/io`), one `fdatasync` each.
//!
//! After criterion, a summary measured in the same run prints `(stored − in-memory) / floor`,
//! what a step costs in disk syncs with its CPU time taken out (1.0 is one sync per step, no
//! more), and how many `fdatasync`/`fsync` calls a stored run made per step (counted by
//! re-running one stored run under `strace -c`, when strace is installed). In-memory time per
//! step should stay within 2x of the plugin-call benchmark (`cargo bench -p stepflow-plugin
//! --bench plugin_call`).
//!
//! The databases live in `$STEPFLOW_BENCH_DIR` (default: the target directory); the bench
//! refuses a directory on tmpfs, where `fdatasync` does nothing.
//!
//! Run with `cargo bench -p stepflow-engine --bench stored_run`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde_json::json;
use stepflow_engine::{DriveOptions, Driver, Engine, Finish, LoadedFlow, StopRequests, start_run};
use stepflow_model::RunContext;
use stepflow_store::SqliteStore;

const STEPS: usize = 1000;

/// What every measurement shares: the loaded flow, a runtime and a scratch directory on a disk.
struct Bench {
    rt: tokio::runtime::Runtime,
    loaded: LoadedFlow,
    dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        let durable = stepflow_testkit::durable_dir().unwrap_or_else(|why| panic!("{why}"));
        let dir = tempfile::tempdir_in(durable).expect("tempdir");
        let engine = Engine::new(Some(
            stepflow_testkit::target_dir().join("bench-component-cache"),
        ))
        .expect("engine");
        let loaded = engine
            .load(&stepflow_testkit::noop_flow(dir.path(), "thousand", STEPS))
            .expect("load the flow");
        Bench { rt, loaded, dir }
    }

    fn in_memory(&self) {
        let flow = &self.loaded.flow;
        self.rt.block_on(async {
            let ctx = RunContext::new("bench");
            let mut state = flow.new_state(json!({}));
            while !flow.is_completed(&state) {
                state = flow.apply(&ctx, state).await;
            }
        });
    }

    fn stored(&self, store: &mut SqliteStore) {
        let (run_id, state) = start_run(store, &self.loaded, None).expect("start");
        let flow = &self.loaded.flow;
        let finish = self
            .rt
            .block_on(
                Driver::new(flow, store, &mut (), StopRequests::never()).drive(
                    &run_id,
                    state,
                    DriveOptions::default(),
                ),
            )
            .expect("drive");
        assert!(matches!(finish, Finish::Completed(_)));
    }
}

/// The disk's floor as a write-ahead log meets it: `bytes` per commit written at advancing
/// offsets of a preallocated file that wraps, one `fdatasync` per commit.
struct WalFloor {
    file: File,
    bytes: Vec<u8>,
    offset: u64,
}

/// How large the floor's file is: it wraps like a WAL that is checkpointed and reused.
const WAL_FILE_BYTES: u64 = 4 << 20;

impl WalFloor {
    fn new(path: &Path, bytes_per_commit: usize) -> WalFloor {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(path)
            .expect("floor file");
        // Preallocated and synced once: the commits below rewrite blocks that exist.
        file.write_all_at(&vec![0u8; WAL_FILE_BYTES as usize], 0)
            .expect("preallocate");
        file.sync_all().expect("sync");
        WalFloor {
            file,
            bytes: vec![7u8; bytes_per_commit.max(1)],
            offset: 0,
        }
    }

    fn commits(&mut self, n: usize) {
        for _ in 0..n {
            if self.offset + self.bytes.len() as u64 > WAL_FILE_BYTES {
                self.offset = 0;
            }
            self.file
                .write_all_at(&self.bytes, self.offset)
                .expect("write");
            self.file.sync_data().expect("fdatasync");
            self.offset += self.bytes.len() as u64;
        }
    }
}

/// Bytes this process has passed to `write` so far (`wchar` in `/proc/self/io`).
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
}

/// How many bytes a stored run writes per step: what the floor writes per commit.
fn bytes_per_step(bench: &Bench, store: &mut SqliteStore) -> usize {
    let before = written_bytes();
    bench.stored(store);
    match (before, written_bytes()) {
        (Some(a), Some(b)) => usize::try_from((b - a) / STEPS as u64).unwrap_or(8 << 10),
        // Two WAL frames of a 4 KiB page, as a commit of one row and one index entry appends.
        _ => 2 * (4096 + 24),
    }
}

/// The criterion measurements; returns the bytes a stored step writes, for the summary.
fn runs(c: &mut Criterion, bench: &Bench) -> usize {
    let mut store = SqliteStore::open(&bench.dir.path().join("bench.db")).expect("store");
    let mut unchecked = SqliteStore::open(&bench.dir.path().join("unchecked.db"))
        .expect("store")
        .without_checksums_for_benchmarks();
    let mut g = c.benchmark_group("thousand_step_run");
    g.sample_size(10);
    g.throughput(Throughput::Elements(STEPS as u64));
    g.bench_function("in_memory", |b| b.iter(|| bench.in_memory()));
    g.bench_function("sqlite", |b| b.iter(|| bench.stored(&mut store)));
    // The same without row checksums: the ratio to `sqlite` is what the checksums cost a step.
    g.bench_function("sqlite_without_checksums", |b| {
        b.iter(|| bench.stored(&mut unchecked))
    });
    let per_commit = bytes_per_step(bench, &mut store);
    let mut floor = WalFloor::new(&bench.dir.path().join("wal-floor.bin"), per_commit);
    g.bench_function("wal_floor", |b| b.iter(|| floor.commits(STEPS)));
    g.finish();
    per_commit
}

/// The best of `n` timings of `f`, per step.
fn per_step(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed() / STEPS as u32
        })
        .min()
        .unwrap_or_default()
}

/// `fdatasync` and `fsync` calls per step of one stored run, counted by strace in a child run
/// of this benchmark; `None` without strace.
fn syncs_per_step() -> Option<f64> {
    let calls = stepflow_testkit::syncs_of_child_run("STEPFLOW_BENCH_ONE_STORED_RUN", "1")?;
    Some(calls as f64 / STEPS as f64)
}

fn summary(bench: &Bench, per_commit: usize) {
    let mut store = SqliteStore::open(&bench.dir.path().join("summary.db")).expect("store");
    let mut floor = WalFloor::new(&bench.dir.path().join("summary-floor.bin"), per_commit);
    let memory = per_step(5, || bench.in_memory());
    let stored = per_step(5, || bench.stored(&mut store));
    let disk = per_step(5, || floor.commits(STEPS));
    let ratio = stored.saturating_sub(memory).as_secs_f64() / disk.as_secs_f64().max(1e-9);
    println!(
        "\nthousand_step_run summary (best of 5, per step, in {}):",
        bench.dir.path().display()
    );
    println!(
        "  in memory {memory:?}, stored {stored:?}, WAL floor {disk:?} ({per_commit} bytes per commit)"
    );
    println!(
        "  (stored - in memory) / floor = {ratio:.2} (1.00: one disk sync per step, nothing more)"
    );
    match syncs_per_step() {
        Some(n) => println!("  fdatasync + fsync calls per step of a stored run: {n:.3} (strace)"),
        None => println!("  fdatasync calls per step: not counted (strace is not installed)"),
    }
}

fn main() {
    let bench = Bench::new();
    if std::env::var_os("STEPFLOW_BENCH_ONE_STORED_RUN").is_some() {
        // The child run `syncs_per_step` counts: one stored run, nothing else.
        let mut store = SqliteStore::open(&bench.dir.path().join("one.db")).expect("store");
        bench.stored(&mut store);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let per_commit = runs(&mut c, &bench);
    c.final_summary();
    summary(&bench, per_commit);
}
