//! API latency with 100,000 runs in the store, over a real socket on 127.0.0.1 with a
//! keep-alive client: the runs list (first page, filtered by status, and pages deep in the
//! listing), the counts by status, and a run's page (the run and the first page of its 10,000
//! history entries), as p50 and p99; and the delivery latency of a run's server-sent event,
//! from the commit of a step's save to the event's arrival at an HTTP client and in headless
//! chromium's `EventSource`, as the web page receives it (`tests/web/sse-probe.mjs`; skipped,
//! saying why, where `tests/web/install` cannot install the browser).
//!
//! The database is built on tmpfs when there is one (`/dev/shm`): this measures reads, which
//! fsync does not touch, and 100,000 durable inserts would only make the setup slow.
//!
//! Run with `cargo bench -p stepflow-api --bench api`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stepflow_api::{ApiConfig, Token};
use stepflow_model::{CallKind, Event, State};
use stepflow_store::{
    HistoryEntry, RunRecord, RunStatus, SqliteStore, StepOutcome, StepSave, Store,
};

const RUNS: usize = 100_000;
const HISTORY: usize = 10_000;
const STATUSES: [RunStatus; 4] = [
    RunStatus::Completed,
    RunStatus::Waiting,
    RunStatus::Failed,
    RunStatus::Running,
];

fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("stepflow-api-bench-{}", std::process::id()))
}

fn state(i: usize) -> State {
    State {
        cursor: vec![Event::new(format!("start:f{}.v1/step", i % 5))],
        data: Arc::new(json!({ "n": i, "version": "2.0", "note": "x".repeat(120) })),
        ..State::default()
    }
}

/// 100,000 runs of five flows, newest last, and one run (`busy`) with 10,000 history entries.
fn build(db: &Path) -> String {
    let started = Instant::now();
    let mut store = SqliteStore::open(db).expect("store");
    for i in 0..RUNS {
        let status = STATUSES[i % STATUSES.len()];
        store
            .create_run(&RunRecord {
                id: format!("20261201-{:06}-{:06x}", i / 1000, i),
                flow: format!("f{}.v1", i % 5),
                flow_file: "/flows/f.yaml".into(),
                definition: "d".into(),
                deployment: None,
                status,
                state: state(i),
                next_check_ms: None,
                last_error: (status == RunStatus::Failed).then(|| "boom".to_string()),
                created_ms: 1_700_000_000_000 + i as u64,
                updated_ms: 1_700_000_000_000 + i as u64,
                lease: None,
            })
            .expect("create");
    }
    let busy = "20261201-busy".to_string();
    store
        .create_run(&RunRecord {
            id: busy.clone(),
            flow: "busy.v1".into(),
            flow_file: "/flows/busy.yaml".into(),
            definition: "d".into(),
            deployment: None,
            status: RunStatus::Running,
            state: state(0),
            next_check_ms: None,
            last_error: None,
            created_ms: 1_800_000_000_000,
            updated_ms: 1_800_000_000_000,
            lease: None,
        })
        .expect("create");
    for i in 0..HISTORY {
        save(&mut store, &busy, i);
    }
    eprintln!(
        "built {RUNS} runs and a run of {HISTORY} history entries in {:.1?}",
        started.elapsed()
    );
    busy
}

/// Saves one step of `run`: what the server's writer does.
fn save(store: &mut SqliteStore, run: &str, i: usize) {
    let entry = HistoryEntry {
        run_id: run.into(),
        seq: 0,
        step: format!("busy.v1/step{}", i % 7),
        kind: CallKind::Step,
        attempt: 1,
        outcome: StepOutcome::Done,
        started_ms: 1_800_000_000_000 + i as u64,
        duration_ms: 1,
        error: None,
        patch: Some(json!({ "n": i })),
        redelivered: false,
        handlers: Vec::new(),
    };
    let state = state(i);
    store
        .save_step(&StepSave {
            run_id: run,
            status: RunStatus::Running,
            state: &state,
            next_check_ms: None,
            last_error: None,
            history: std::slice::from_ref(&entry),
            lease: None,
        })
        .expect("save");
}

/// p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3)
}

async fn timed(http: &reqwest::Client, url: &str, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http.get(url).send().await.expect("get");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let _ = response.bytes().await.expect("body");
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

fn row(what: &str, (p50, p99): (f64, f64)) {
    println!("{what:<58} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
}

async fn bench(db: PathBuf, busy: String) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let config = ApiConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        db: stepflow_store::Database::File(db.clone()),
        token: Token::generate().expect("token"),
        reads_need_token: false,
        submissions: None,
    };
    tokio::spawn(stepflow_api::serve(
        config,
        move |addr| {
            let _ = tx.send(addr);
        },
        std::future::pending(),
    ));
    let base = format!("http://{}", rx.await.expect("bound"));
    let http = reqwest::Client::new();
    let api = format!("{base}/api/v1");
    // Warm the connections and SQLite's page cache.
    timed(&http, &format!("{api}/runs"), 50).await;

    println!("API latency, {RUNS} runs in the store (keep-alive client on 127.0.0.1):");
    row(
        "runs list, first page of 50",
        timed(&http, &format!("{api}/runs"), 500).await,
    );
    row(
        "runs list, waiting runs only",
        timed(&http, &format!("{api}/runs?status=waiting"), 500).await,
    );
    row(
        "runs list, one flow, searched by name",
        timed(&http, &format!("{api}/runs?q=f3.v1"), 500).await,
    );
    // Pages deep in the listing: follow the cursor 200 pages (10,000 runs) down.
    let mut url = format!("{api}/runs?limit=50");
    let mut deep = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let page: Value = http
            .get(&url)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        deep.push(started.elapsed());
        let cursor = page["next_cursor"].as_str().expect("a next page");
        url = format!("{api}/runs?limit=50&cursor={cursor}");
    }
    row(
        "runs list, each of the first 200 pages (cursor paging)",
        percentiles(deep),
    );
    row(
        "counts by status",
        timed(&http, &format!("{api}/runs/counts"), 200).await,
    );
    let mut page = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        for url in [
            format!("{api}/runs/{busy}"),
            format!("{api}/runs/{busy}/history?limit=100"),
            format!("{api}/runs/{busy}/history?after=9900&limit=100"),
        ] {
            let response = http.get(&url).send().await.expect("get");
            assert!(response.status().is_success());
            let _ = response.bytes().await.expect("body");
        }
        page.push(started.elapsed());
    }
    row(
        "run page: the run + first and last history page (10,000)",
        percentiles(page),
    );

    // Server-sent events: the time from a save's commit to its event at the client.
    let mut events = http
        .get(format!("{api}/runs/{busy}/events"))
        .send()
        .await
        .expect("events");
    next_event(&mut events).await;
    let mut store = SqliteStore::open(&db).expect("writer");
    let mut delivery = Vec::new();
    for i in 0..100 {
        let db_save = tokio::task::block_in_place(|| {
            save(&mut store, &busy, HISTORY + i);
            Instant::now()
        });
        next_event(&mut events).await;
        delivery.push(db_save.elapsed());
    }
    row(
        "event delivery, saved step to client (SSE)",
        percentiles(delivery),
    );
    match browser_delivery(&base, &busy, &db).await {
        Ok(samples) => row(
            "event delivery, saved step to the browser (EventSource)",
            percentiles(samples),
        ),
        Err(why) => println!("event delivery to the browser: skipped: {why}"),
    }
}

/// The same delivery measured in headless chromium (`tests/web/sse-probe.mjs`): the page's
/// `EventSource` notes the wall-clock time each event arrived; a save's commit time is taken
/// on the same clock.
async fn browser_delivery(base: &str, run: &str, db: &Path) -> Result<Vec<Duration>, String> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let installed = Command::new(repo.join("tests/web/install"))
        .output()
        .map_err(|e| format!("cannot run tests/web/install: {e}"))?;
    if !installed.status.success() {
        return Err(String::from_utf8_lossy(&installed.stdout)
            .trim()
            .to_string());
    }
    let mut probe = Command::new("node")
        .arg(repo.join("tests/web/sse-probe.mjs"))
        .env("STEPFLOW_URL", base)
        .env("RUN", run)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start node: {e}"))?;
    let mut lines = BufReader::new(probe.stdout.take().ok_or("no stdout")?).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    if next() != "ready" {
        return Err("the browser probe did not start".into());
    }
    let mut store = SqliteStore::open(db).map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    for i in 0..100 {
        let saved = tokio::task::block_in_place(|| {
            save(&mut store, run, 2 * HISTORY + i);
            std::time::SystemTime::now()
        });
        let line = next();
        let Some(us) = line
            .strip_prefix("event ")
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return Err(format!("the browser probe said {line:?}"));
        };
        let arrived = std::time::UNIX_EPOCH + Duration::from_micros(us);
        samples.push(arrived.duration_since(saved).unwrap_or_default());
    }
    drop(probe.stdin.take());
    let _ = probe.wait();
    Ok(samples)
}

/// Reads up to the end of the next server-sent event.
async fn next_event(response: &mut reqwest::Response) {
    let mut text = String::new();
    while !text.contains("\n\n") || !text.contains("data:") {
        let chunk = response.chunk().await.expect("stream").expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names no benchmark here skips it.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "api")
    {
        return;
    }
    let dir = scratch();
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let db = dir.join("runs.db");
    let busy = build(&db);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench(db, busy));
    let _ = std::fs::remove_dir_all(&dir);
}
