//! Servers sharing one PostgreSQL: durable steps/s and runs completed/s with 1, 2 and 4
//! servers at 100 and 1,000 concurrent runs (100 no-op plugin steps each; each server count
//! measured twice, the faster kept), with SQLite (one
//! server, the same flow) in the same run for comparison; and per step, what the capacity of a
//! bigger machine can be computed from: statements sent, write commits (transaction ids
//! handed out: one per transaction that wrote, exact), WAL syncs and all transactions (both
//! from PostgreSQL's statistics, which its backends report with a lag of up to a second, so a
//! short measurement can miss some), and CPU time in the servers and in PostgreSQL (all of its
//! processes: backends, WAL writer, checkpointer; a backend that has ended by the second
//! reading is missed). Also an idle server's queries per second. Each of N servers gets 1/N of
//! the driver threads a lone server starts, as servers sharing one host should be run.
//!
//! The servers run in this process (one `Server` each, its own owner id, writer and driver
//! threads), so their statements are counted exactly by the store itself.
//!
//! Run with `cargo bench -p stepflow-server --bench scale_out` (needs `STEPFLOW_TEST_POSTGRES`;
//! without it only SQLite is measured). Targets (issue 12): at 100 concurrent runs at most 3
//! statements and 0.2 commits per step; adding a server never lowers the total rate by more
//! than 10%; an idle server issues at most one query per second.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use stepflow_engine::{Engine, Observer, Stop, start_run};
use stepflow_model::CallRecord;
use stepflow_server::{Server, ServerConfig};
use stepflow_store::Database;
use stepflow_testkit::postgres::ScratchDatabase;

/// Steps per run: enough that even 100 runs make a measurement of seconds, not a blip that
/// the machine's other work decides.
const STEPS: usize = 100;

/// Each server count is measured this many times and the fastest kept: what the servers can
/// do when nothing else on the machine gets in the way.
const REPEATS: usize = 2;

/// Counts durable steps of every server; notes the first and the last, and stops every
/// server at the last.
struct LastStep {
    left: Arc<AtomicUsize>,
    stop: Stop,
    span: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
}

impl Observer for LastStep {
    fn step_finished(&mut self, _: u64, _: &CallRecord, _: u64) {
        let now = Instant::now();
        let last = self.left.fetch_sub(1, Ordering::SeqCst) == 1;
        if let Ok(mut span) = self.span.lock() {
            span.0.get_or_insert(now);
            if last {
                span.1 = Some(now);
            }
        }
        if last {
            self.stop.request();
        }
    }
}

/// CPU time (user + system) of process `pid`, in seconds; 0 if it is gone.
fn cpu_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time of every `postgres` process on this machine.
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_of(&pid))
        .sum()
}

/// WAL syncs and committed transactions of the whole PostgreSQL server so far.
fn counters(admin: &str) -> stepflow_postgres::ServerCounters {
    stepflow_postgres::server_counters(admin).expect("the server's counters")
}

/// What one measurement found.
#[derive(Clone, Copy, Default)]
struct Figures {
    steps_per_s: f64,
    runs_per_s: f64,
    statements: f64,
    wal_syncs: f64,
    /// Every transaction, read-only ones included.
    transactions: f64,
    /// Transactions that wrote: the commits group commit is about.
    commits: f64,
    server_cpu_ms: f64,
    postgres_cpu_ms: f64,
}

/// This machine's cores.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `runs` runs driven to completion by `servers` servers on `db`.
fn measure(
    engine: &Engine,
    flow: &Path,
    db: &Database,
    admin: Option<&str>,
    servers: usize,
    runs: usize,
) -> Figures {
    let loaded = engine.load(flow).expect("load the flow");
    {
        let mut store = stepflow_engine::open_store(db).expect("store");
        for _ in 0..runs {
            start_run(store.as_mut(), &loaded, Some(&json!({}))).expect("start a run");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let (stop, requests) = Stop::new();
    let left = Arc::new(AtomicUsize::new(runs * STEPS));
    let span = Arc::new(Mutex::new((None, None)));
    let statements0 = stepflow_postgres::statements_sent();
    let before = admin.map(counters).unwrap_or_default();
    let (cpu0, pg0) = (cpu_of("self"), postgres_cpu());
    let done = rt.block_on(async {
        let mut running = Vec::new();
        for i in 0..servers {
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
                // Servers sharing this one machine share its driver threads: each gets its part
                // of the four per core a lone server starts, as an operator running several
                // servers on one host would set them (on hosts of their own each has its own
                // cores, and the default).
                drive_threads: Some((cores() * 4 / servers).max(1)),
                owner: format!("{}-{i}", stepflow_engine::this_owner()),
                ..ServerConfig::new(db.clone())
            })
            .with_observer(observer);
            running.push(tokio::spawn(server.run(engine.clone(), requests.clone())));
        }
        let mut completed = 0;
        for server in running {
            completed += server
                .await
                .expect("a server task")
                .expect("a server")
                .completed;
        }
        completed
    });
    let (cpu1, pg1) = (cpu_of("self"), postgres_cpu());
    let after = admin.map(counters).unwrap_or_default();
    let statements = stepflow_postgres::statements_sent() - statements0;
    assert_eq!(done, runs as u64, "every run completed");
    let (Some(first), Some(last)) = span.lock().map(|s| *s).unwrap_or_default() else {
        panic!("no step was heard of");
    };
    let secs = last.duration_since(first).as_secs_f64();
    let steps = (runs * STEPS) as f64;
    Figures {
        steps_per_s: (steps - 1.0) / secs,
        runs_per_s: runs as f64 / secs,
        statements: statements as f64 / steps,
        wal_syncs: (after.wal_syncs - before.wal_syncs) / steps,
        transactions: (after.transactions - before.transactions) / steps,
        commits: (after.write_transactions - before.write_transactions) / steps,
        server_cpu_ms: (cpu1 - cpu0) * 1000.0 / steps,
        postgres_cpu_ms: (pg1 - pg0) * 1000.0 / steps,
    }
}

/// Queries an idle server (nothing to do) sends per second, over `window`.
fn idle_queries(engine: &Engine, db: &Database, window: Duration) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let (stop, requests) = Stop::new();
    rt.block_on(async {
        let server = Server::new(ServerConfig::new(db.clone()));
        let task = tokio::spawn(server.run(engine.clone(), requests));
        // Started: its first look is done once its statements stop growing for a moment.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = stepflow_postgres::statements_sent();
        tokio::time::sleep(window).await;
        let sent = stepflow_postgres::statements_sent() - before;
        stop.request();
        let _ = task.await;
        sent as f64 / window.as_secs_f64()
    })
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = stepflow_testkit::noop_flow(dir.path(), "scale", STEPS);
    let engine = Engine::with_max_instances(
        Some(stepflow_testkit::target_dir().join("bench-component-cache")),
        4000,
    )
    .expect("engine");
    let admin = std::env::var(stepflow_testkit::postgres::URL_VAR).ok();
    if admin.is_none() {
        eprintln!(
            "skipped: PostgreSQL: {} is not set; measuring SQLite only",
            stepflow_testkit::postgres::URL_VAR
        );
    }
    let durable = stepflow_testkit::durable_dir().expect("a durable directory");
    let mut lines = Vec::new();
    for runs in [100, 1000] {
        let sqlite_dir = tempfile::tempdir_in(&durable).expect("tempdir");
        let sqlite = Database::File(sqlite_dir.path().join("bench.db"));
        // Warm the compile cache first, so no measurement compiles the plugin.
        let _ = measure(&engine, &flow, &sqlite, None, 1, 1);
        let f = measure(&engine, &flow, &sqlite, None, 1, runs);
        lines.push(format!(
            "sqlite     1 server , {runs:>4} runs: {:>7.0} steps/s {:>6.1} runs/s, server CPU {:.3} ms/step",
            f.steps_per_s, f.runs_per_s, f.server_cpu_ms
        ));
        let Some(admin) = admin.as_deref() else {
            continue;
        };
        for tuned in [false, true] {
            let (mut one, mut previous) = (None, None::<f64>);
            for servers in [1, 2, 4] {
                let f = (0..REPEATS)
                    .map(|_| {
                        let scratch =
                            ScratchDatabase::create(admin, "bench").expect("a scratch database");
                        if tuned {
                            // PostgreSQL set up for several writers: a commit waits 0.5 ms for
                            // others to share its WAL flush, so servers group-commit together.
                            scratch
                                .configure("commit_delay", "500")
                                .expect("commit_delay");
                            scratch
                                .configure("commit_siblings", "1")
                                .expect("commit_siblings");
                        }
                        let db = Database::Postgres(scratch.url.clone());
                        measure(&engine, &flow, &db, Some(admin), servers, runs)
                    })
                    .max_by(|a, b| a.steps_per_s.total_cmp(&b.steps_per_s))
                    .unwrap_or_default();
                let base = *one.get_or_insert(f.steps_per_s);
                let previous_rate = previous.replace(f.steps_per_s);
                lines.push(format!(
                "postgres{} {servers} server{} , {runs:>4} runs: {:>7.0} steps/s {:>6.1} runs/s ({:.2}x 1 server{}), \
                 {:.2} statements, {:.3} WAL syncs, {:.3} write commits \
                 ({:.3} transactions) per step; CPU per step: server {:.3} ms, PostgreSQL {:.3} ms",
                if tuned { " (commit_delay)" } else { "" },
                if servers == 1 { " " } else { "s" },
                f.steps_per_s,
                f.runs_per_s,
                f.steps_per_s / base,
                previous_rate.map_or(String::new(), |p| format!(
                    ", {:+.0}% on {} server{}",
                    (f.steps_per_s / p - 1.0) * 100.0,
                    servers / 2,
                    if servers / 2 == 1 { "" } else { "s" }
                )),
                f.statements,
                f.wal_syncs,
                f.commits,
                f.transactions,
                f.server_cpu_ms,
                f.postgres_cpu_ms
            ));
            }
        }
    }
    if let Some(admin) = admin.as_deref() {
        let scratch = ScratchDatabase::create(admin, "idle").expect("a scratch database");
        let db = Database::Postgres(scratch.url.clone());
        drop(stepflow_engine::open_store(&db).expect("store"));
        let q = idle_queries(&engine, &db, Duration::from_secs(10));
        lines.push(format!(
            "postgres idle server: {q:.2} statements per second (over 10 s)"
        ));
    }
    for line in lines {
        println!("{line}");
    }
}
