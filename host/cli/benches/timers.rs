//! 10,000 runs waiting on timers spread over the next minute, held by the real `stepflow server`
//! binary: its resident memory, its CPU time while nothing is due, and how late each run is
//! woken (the start of its step, from the history, against the time it was due).
//!
//! Run with `cargo bench -p stepflow-cli --bench timers` (`STEPFLOW_BENCH_TIMERS=N` for
//! another count). Targets (issue 10): resident memory at most 200 MiB, CPU near zero while
//! idle, p99 lateness at most 50 ms. It takes about two minutes: creating the runs (one
//! durable insert each), ten idle seconds, then the minute of timers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stepflow_engine::Engine;
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{RunRecord, RunStatus, SqliteStore, StepSave, Store};

/// How long after the runs are created the first one is due: the idle window measured.
const LEAD: Duration = Duration::from_secs(12);
/// Over how long the due times are spread.
const SPREAD: Duration = Duration::from_secs(60);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing to act on.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("STEPFLOW_BENCH_TIMERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("timers.db");
    let flow = dir.path().join("timer.yaml");
    std::fs::write(
        &flow,
        format!(
            "flow: timer.v1\nplugins:\n  n: {{ wasm: {} }}\nsteps:\n  - {{ name: woken, do: n.noop }}\n",
            stepflow_testkit::rust_plugin("noop").display()
        ),
    )
    .expect("write the flow file");

    eprintln!("creating {runs} waiting runs...");
    let due = create_waiting_runs(&db, &flow, runs);
    let first_due = due.iter().min().copied().unwrap_or(0);

    let (mut server, lines) = start_server(&db);
    let pid = server.id();
    wait_for(&lines, "server started", 1);
    // Settle: the start-up queries are done once the scheduler sleeps.
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, wall0) = (cpu_ms(pid), Instant::now());
    let idle_until = first_due.saturating_sub(500);
    let now = SystemClock.now_ms();
    std::thread::sleep(Duration::from_millis(idle_until.saturating_sub(now)));
    let (cpu1, wall1) = (cpu_ms(pid), Instant::now());
    let idle_secs = wall1.duration_since(wall0).as_secs_f64();
    let idle_rss = rss_kib(pid, "VmRSS");

    wait_for(&lines, "run completed", runs);
    let peak_rss = rss_kib(pid, "VmHWM");
    let cpu_total = cpu_ms(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();

    let store = SqliteStore::open_read_only(&db).expect("the database");
    let mut late: Vec<i64> = (0..runs)
        .map(|i| {
            let history = store.history(&run_id(i)).expect("history");
            let woken = history.first().expect("the step ran").started_ms;
            i64::try_from(woken).unwrap_or(i64::MAX) - i64::try_from(due[i]).unwrap_or(0)
        })
        .collect();
    late.sort_unstable();
    let pct = |p: f64| late[((late.len() as f64 - 1.0) * p).round() as usize];
    println!("timers/{runs} runs waiting over {}s:", SPREAD.as_secs());
    println!(
        "  resident memory: {:.1} MiB while idle, {:.1} MiB peak (target <= 200 MiB)",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "  CPU while nothing was due: {} ms in {idle_secs:.1} s ({:.2} ms/s; target near zero)",
        cpu1 - cpu0,
        (cpu1 - cpu0) as f64 / idle_secs
    );
    println!("  CPU in all: {cpu_total} ms");
    println!(
        "  lateness of the wake-up: p50 {} ms, p99 {} ms, max {} ms, earliest {} ms (target p99 <= 50 ms)",
        pct(0.5),
        pct(0.99),
        late[late.len() - 1],
        late[0]
    );
}

fn run_id(i: usize) -> String {
    format!("timer-{i:06}")
}

/// Creates `runs` runs of `flow`, each waiting until its own time in the minute after
/// [`LEAD`]; returns the due times (Unix ms) by run index.
fn create_waiting_runs(db: &Path, flow: &Path, runs: usize) -> Vec<u64> {
    let engine = Engine::new(Some(
        stepflow_testkit::target_dir().join("bench-component-cache"),
    ))
    .expect("engine");
    let deployment = engine.deploy(flow).expect("deploy");
    let loaded = engine.load_deployment(&deployment).expect("load");
    let mut store = SqliteStore::open(db).expect("store");
    store
        .put_deployment(&deployment)
        .expect("store the deployment");
    let far = SystemClock.now_ms() + 86_400_000;
    let mut states = Vec::with_capacity(runs);
    for i in 0..runs {
        let mut state = loaded.flow.new_state(loaded.file.data.clone());
        state.not_before = Some(far);
        store
            .create_run(&RunRecord {
                id: run_id(i),
                flow: loaded.flow.name().to_string(),
                flow_file: flow.display().to_string(),
                definition: loaded.flow.definition_hash().to_string(),
                status: RunStatus::Waiting,
                state: state.clone(),
                next_check_ms: Some(far),
                last_error: None,
                created_ms: SystemClock.now_ms(),
                updated_ms: SystemClock.now_ms(),
                lease: None,
                deployment: loaded.deployment.clone(),
            })
            .expect("create a run");
        states.push(state);
    }
    // Now the clock starts: every due time is set in one transaction.
    let start = SystemClock.now_ms() + LEAD.as_millis() as u64;
    let spread = SPREAD.as_millis() as u64;
    let due: Vec<u64> = (0..runs)
        .map(|i| start + spread * i as u64 / runs.max(1) as u64)
        .collect();
    for (state, due) in states.iter_mut().zip(&due) {
        state.not_before = Some(*due);
    }
    let ids: Vec<String> = (0..runs).map(run_id).collect();
    let saves: Vec<StepSave<'_>> = (0..runs)
        .map(|i| StepSave {
            run_id: &ids[i],
            status: RunStatus::Waiting,
            state: &states[i],
            next_check_ms: Some(due[i]),
            last_error: None,
            history: &[],
            lease: None,
        })
        .collect();
    for result in store.save_steps(&saves).expect("set the due times") {
        result.expect("set a due time");
    }
    due
}

/// The real binary as a server on `db`, its JSON log lines sent to the returned channel.
fn start_server(db: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepflow"))
        .arg("--db")
        .arg(db)
        .args(["server", "--log-format", "json", "--no-api"])
        .env("STEPFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stepflow server");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads log lines until `n` have contained `what`.
fn wait_for(lines: &mpsc::Receiver<String>, what: &str, n: usize) {
    let mut seen = 0;
    while seen < n {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("waiting for {what:?} ({seen} of {n}): {e}"));
        if line.contains(what) {
            seen += 1;
        }
    }
}

/// User plus system CPU time of process `pid`, in milliseconds (Linux clock ticks are 10 ms).
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 10
}

/// A memory figure of `/proc/PID/status` (`VmRSS`, `VmHWM`) in KiB.
fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
