//! The `stepflow` command: run, resume and inspect flows of sandboxed WebAssembly steps.
//!
//! Only this crate knows about terminals, exit codes and where the database lives; it wires
//! the flow file reader, the plugin runtime, the model and the store together.

mod cli;
mod error;
mod load;
mod progress;
mod runner;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{Value, json};
use stepflow_model::State;
use stepflow_store::{RunRecord, RunStatus, SqliteStore, Store};

use crate::cli::{Cli, Command, GraphFormat, StatusArg};
use crate::error::{CANCELLED, Exit, FAILED, INTERRUPTED};
use crate::progress::Progress;
use crate::runner::{Driver, Finish, Interrupts, RunLock};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if !exit.message.is_empty() {
                eprintln!("error: {}", exit.message);
            }
            ExitCode::from(u8::try_from(exit.code).unwrap_or(1))
        }
    }
}

/// Plugin log lines and warnings go to stderr; `STEPFLOW_LOG` sets the level (default info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

async fn dispatch(cli: Cli) -> Result<(), Exit> {
    let json = cli.json;
    let db = cli.db.clone().unwrap_or_else(SqliteStore::default_path);
    match cli.command {
        Command::Run {
            flow,
            input,
            build,
            no_wait,
        } => run(&db, &flow, input, build, no_wait, json).await,
        Command::Resume { run, no_wait } => resume(&db, &run, no_wait, json).await,
        Command::Runs { status, limit } => runs(&db, status, limit, json),
        Command::Show { run } => show(&db, &run, json),
        Command::Validate { flow } => validate(&flow, json),
        Command::Inspect { plugin } => inspect(&plugin, json),
        Command::Graph { flow, format } => graph(&flow, format),
        Command::Cancel { run } => cancel(&db, &run, json),
    }
}

fn open_store(db: &Path) -> Result<SqliteStore, Exit> {
    Ok(SqliteStore::open(db)?)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A sortable, readable run id: UTC date and time plus 24 random bits.
fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let secs = now_ms() / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(u128::from(now_ms()) ^ u128::from(std::process::id()));
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{:06x}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        h.finish() & 0xff_ffff
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `--input`: JSON text or `@file` (`@-` reads stdin).
fn read_input(input: &str) -> Result<Value, Exit> {
    let text = match input.strip_prefix('@') {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Exit::usage(format!("cannot read --input from stdin: {e}")))?;
            s
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Exit::usage(format!("cannot read --input file {path}: {e}")))?,
        None => input.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| {
        Exit::usage(format!(
            "--input is not valid JSON ({e}); pass JSON text like '{{\"key\": 1}}' or @file.json"
        ))
    })
}

async fn run(
    db: &Path,
    flow_path: &Path,
    input: Option<String>,
    build: bool,
    no_wait: bool,
    json: bool,
) -> Result<(), Exit> {
    let input = input.as_deref().map(read_input).transpose()?;
    let file = load::read(flow_path)?;
    let runtime = load::runtime()?;
    let loaded = load::load(file, &runtime, build)?;
    let mut data = loaded.file.data.clone();
    if let Some(input) = &input {
        merge(&mut data, input);
    }
    let mut store = open_store(db)?;
    let run_id = new_run_id();
    let state = loaded.flow.new_state(data);
    let flow_file = std::fs::canonicalize(flow_path).unwrap_or_else(|_| flow_path.to_path_buf());
    let now = now_ms();
    store.create_run(&RunRecord {
        id: run_id.clone(),
        flow: loaded.flow.name().to_string(),
        flow_file: flow_file.display().to_string(),
        definition: loaded.flow.definition_hash().to_string(),
        status: RunStatus::Running,
        state: state.clone(),
        next_check_ms: None,
        last_error: None,
        created_ms: now,
        updated_ms: now,
    })?;
    let _lock = RunLock::take(db, &run_id)?;
    let progress = Progress::new(json);
    progress.line(&format!("run {run_id} of {} started", loaded.flow.name()));
    drive(
        &loaded.flow,
        &mut store,
        run_id,
        state,
        false,
        no_wait,
        progress,
        json,
    )
    .await
}

async fn resume(db: &Path, run_id: &str, no_wait: bool, json: bool) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let record = store.run(run_id)?;
    match record.status {
        RunStatus::Completed => return report(&record.id, "completed", &record.state, json),
        RunStatus::Cancelled => {
            return Err(Exit {
                code: CANCELLED,
                message: format!("run {run_id} was cancelled; start a new run instead"),
            });
        }
        _ => {}
    }
    let lock = RunLock::take(db, run_id)?;
    let file = load::read(Path::new(&record.flow_file)).map_err(|e| {
        Exit::usage(format!(
            "run {run_id} was started from {}: {}",
            record.flow_file, e.message
        ))
    })?;
    let runtime = load::runtime()?;
    let loaded = load::load(file, &runtime, false)?;
    let mut state = record.state.clone();
    loaded
        .flow
        .check_state(&state)
        .map_err(|e| Exit::usage(format!("cannot resume run {run_id}: {e}")))?;
    let progress = Progress::new(json);
    if record.definition != loaded.flow.definition_hash() {
        progress.line("note: the flow changed since this run started; every step it is at still exists, so it continues");
    }
    // A failed run is retried from its failing step.
    if state.error.take().is_some() {
        progress.line(&format!("retrying the failed step of run {run_id}"));
    }
    // A run left `running` was not stopped cleanly: the step it was in may have run already.
    let redelivered = record.status == RunStatus::Running;
    progress.line(&format!("run {run_id} of {} resumed", loaded.flow.name()));
    let result = drive(
        &loaded.flow,
        &mut store,
        run_id.to_string(),
        state,
        redelivered,
        no_wait,
        progress,
        json,
    )
    .await;
    drop(lock);
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    flow: &stepflow_model::StepFlow,
    store: &mut SqliteStore,
    run_id: String,
    state: State,
    redelivered: bool,
    no_wait: bool,
    progress: Progress,
    json: bool,
) -> Result<(), Exit> {
    let driver = Driver {
        flow,
        store: &mut *store,
        run_id: run_id.clone(),
        redelivered,
        no_wait,
        progress,
        interrupts: Interrupts::listen(),
    };
    match driver.drive(state).await? {
        Finish::Completed(state) => report(&run_id, "completed", &state, json),
        Finish::Failed(state) => {
            let error = state
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
            report(&run_id, "failed", &state, json)?;
            if !json {
                eprintln!(
                    "error: {error}\nfix the cause, then run `stepflow resume {run_id}` to retry the failing step"
                );
            }
            Err(Exit::quiet(FAILED))
        }
        Finish::Stopped(state) => {
            let (status, next) = runner::store_status(flow, &state, now_ms());
            let status = if status == RunStatus::Running {
                RunStatus::Waiting
            } else {
                status
            };
            store.save_step(&run_id, status, &state, next, None, None)?;
            report(&run_id, "stopped", &state, json)?;
            if !json {
                println!("saved; continue with: stepflow resume {run_id}");
            }
            Err(Exit::quiet(INTERRUPTED))
        }
        Finish::Cancelled(state) => {
            report(&run_id, "cancelled", &state, json)?;
            Err(Exit::quiet(CANCELLED))
        }
    }
}

/// The end of a run: one line (or one JSON object) with the outcome and the data document.
fn report(run_id: &str, outcome: &str, state: &State, json: bool) -> Result<(), Exit> {
    if json {
        let out = json!({
            "run": run_id,
            "status": outcome,
            "data": &*state.data,
            "error": state.error.as_ref().map(|e| e.to_string()),
        });
        println!("{out}");
    } else {
        println!("run {run_id} {outcome}");
        if outcome == "completed" {
            println!(
                "data: {}",
                serde_json::to_string_pretty(&*state.data).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// RFC 7386 merge of `patch` into `target` (for `--input`).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status_of(arg: StatusArg) -> RunStatus {
    match arg {
        StatusArg::Running => RunStatus::Running,
        StatusArg::Waiting => RunStatus::Waiting,
        StatusArg::Completed => RunStatus::Completed,
        StatusArg::Failed => RunStatus::Failed,
        StatusArg::Cancelled => RunStatus::Cancelled,
    }
}

fn status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Waiting => "waiting",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

fn runs(db: &Path, status: Option<StatusArg>, limit: usize, json: bool) -> Result<(), Exit> {
    let store = open_store(db)?;
    let runs = store.runs(status.map(status_of), limit)?;
    if json {
        let list: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "run": r.id, "flow": r.flow, "status": status_name(r.status),
                    "created_ms": r.created_ms, "updated_ms": r.updated_ms,
                    "next_check_ms": r.next_check_ms, "error": r.last_error,
                })
            })
            .collect();
        println!("{}", Value::Array(list));
        return Ok(());
    }
    if runs.is_empty() {
        println!(
            "no runs{}",
            if status.is_some() {
                " with that status"
            } else {
                ""
            }
        );
        return Ok(());
    }
    println!("{:<24} {:<20} {:<10} ERROR", "RUN", "FLOW", "STATUS");
    for r in runs {
        println!(
            "{:<24} {:<20} {:<10} {}",
            r.id,
            r.flow,
            status_name(r.status),
            r.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

fn show(db: &Path, run_id: &str, json: bool) -> Result<(), Exit> {
    let store = open_store(db)?;
    let run = store.run(run_id)?;
    let history = store.history(run_id)?;
    if json {
        let steps: Vec<Value> = history
            .iter()
            .map(|h| {
                json!({
                    "seq": h.seq, "step": h.step, "kind": h.kind, "attempt": h.attempt,
                    "outcome": h.outcome, "started_ms": h.started_ms, "duration_ms": h.duration_ms,
                    "error": h.error, "patch": h.patch, "redelivered": h.redelivered,
                })
            })
            .collect();
        let out = json!({
            "run": run.id, "flow": run.flow, "flow_file": run.flow_file, "status": status_name(run.status),
            "definition": run.definition, "cursor": run.state.cursor, "data": &*run.state.data,
            "error": run.last_error, "next_check_ms": run.next_check_ms, "history": steps,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    println!(
        "run {}  flow {}  status {}",
        run.id,
        run.flow,
        status_name(run.status)
    );
    println!("flow file {}", run.flow_file);
    println!();
    let w = history
        .iter()
        .map(|h| h.step.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:>4}  {:<w$}  {:<13} {:>7}  {:<9} {:>8}",
        "#", "STEP", "KIND", "ATTEMPT", "OUTCOME", "TIME"
    );
    for h in &history {
        let mark = if h.redelivered {
            "  ↺ redelivered"
        } else {
            ""
        };
        println!(
            "{:>4}  {:<w$}  {:<13} {:>7}  {:<9} {:>6}ms{mark}",
            h.seq, h.step, h.kind, h.attempt, h.outcome, h.duration_ms
        );
        if let Some(e) = &h.error {
            println!("      └ {e}");
        }
    }
    if let Some(e) = &run.last_error {
        println!("\nerror: {e}");
    }
    println!(
        "\ncursor: {}",
        run.state
            .cursor
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "data: {}",
        serde_json::to_string_pretty(&*run.state.data).unwrap_or_default()
    );
    Ok(())
}

fn validate(flow_path: &Path, json: bool) -> Result<(), Exit> {
    let file = load::read(flow_path)?;
    let runtime = load::runtime()?;
    let references = file.references().len();
    let plugins = file.plugins.len();
    let loaded = load::load(file, &runtime, false)?;
    if json {
        println!(
            "{}",
            json!({ "valid": true, "flow": loaded.flow.name(), "plugins": plugins, "references": references })
        );
    } else {
        println!(
            "{}: ok — flow {}, {plugins} plugin(s), {references} function use(s) checked",
            flow_path.display(),
            loaded.flow.name()
        );
    }
    Ok(())
}

fn inspect(path: &Path, json: bool) -> Result<(), Exit> {
    let runtime = load::runtime()?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin = stepflow_plugin::Plugin::load(&runtime, name, path, Default::default())
        .map_err(Exit::usage)?;
    let exports = plugin.exports();
    if json {
        let list: Vec<Value> = exports
            .iter()
            .map(|e| match &e.kind {
                Ok(kind) => json!({ "function": e.name, "kind": kind }),
                Err(why) => json!({ "function": e.name, "kind": null, "not_a_step_because": why }),
            })
            .collect();
        println!("{}", json!({ "plugin": name, "functions": list }));
        return Ok(());
    }
    println!("{}: step functions", path.display());
    for e in exports.iter().filter(|e| e.kind.is_ok()) {
        if let Ok(kind) = &e.kind {
            println!("  {:<30} {kind}", e.name);
        }
    }
    let others: Vec<_> = exports
        .iter()
        .filter_map(|e| e.kind.as_ref().err().map(|w| (&e.name, w)))
        .collect();
    if !others.is_empty() {
        println!("not step functions:");
        for (name, why) in others {
            println!("  {name:<30} {why}");
        }
    }
    Ok(())
}

fn graph(flow_path: &Path, format: GraphFormat) -> Result<(), Exit> {
    let file = load::read(flow_path)?;
    let flow = load::shape(&file)?;
    match format {
        GraphFormat::Mermaid => print!("{}", flow.to_mermaid()),
        GraphFormat::Dot => print!("{}", flow.to_dot()),
    }
    Ok(())
}

fn cancel(db: &Path, run_id: &str, json: bool) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let run = store.run(run_id)?;
    if matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(Exit::usage(format!(
            "run {run_id} is already {}; nothing to cancel",
            status_name(run.status)
        )));
    }
    store.set_status(run_id, RunStatus::Cancelled)?;
    if json {
        println!("{}", json!({ "run": run_id, "status": "cancelled" }));
    } else {
        println!("run {run_id} cancelled");
    }
    Ok(())
}
