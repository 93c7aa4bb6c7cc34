//! `stepflow run` and `stepflow resume`: start or continue a run and drive it to its end.

use std::io::Read;
use std::path::Path;
use std::time::Duration;
use stepflow_store::Database;

use serde_json::Value;
use stepflow_engine::{
    DriveOptions, Driver, EngineError, Finish, LoadedFlow, claim, lease_ttl, prepare_resume,
    start_claimed_run, this_owner,
};
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{Lease, RunRecord, RunStatus, Store};

use super::{engine, open_store};
use crate::error::{CANCELLED, Exit, FAILED, INTERRUPTED};
use crate::progress::Progress;
use crate::views::outcome;

/// `stepflow run FLOW`.
pub async fn run(
    db: &Database,
    flow_path: &Path,
    input: Option<&str>,
    max_input: u64,
    build: Option<Duration>,
    no_wait: bool,
    json: bool,
) -> Result<(), Exit> {
    let input = input.map(|i| read_input(i, max_input)).transpose()?;
    let stop = crate::signals::stop_requests();
    let engine = engine()?;
    let mut progress = Progress::new(json);
    let deployment = if let Some(build_timeout) = build {
        engine
            .build_and_deploy(flow_path, build_timeout, &stop, &mut progress)
            .await?
    } else {
        engine.deploy(flow_path)?
    };
    // Loaded from the deployment's bytes, so what runs now is what a resume will run.
    progress.status("loading the flow's plugins");
    let loaded = engine.load_deployment(&deployment)?;
    let mut store = open_store(db)?;
    store.put_deployment(&deployment)?;
    // Created already claimed: a server sharing the database cannot take it first.
    let ttl = lease_ttl(loaded.longest_call());
    let (run_id, state, lease) =
        start_claimed_run(&mut store, &loaded, input.as_ref(), &this_owner(), ttl)?;
    progress.line(&format!("run {run_id} of {} started", loaded.flow.name()));
    progress.set_run(&run_id);
    let options = DriveOptions {
        redelivered: false,
        stop_at_wait: no_wait,
        max_data_bytes: super::max_data_bytes(),
    };
    let finish = Driver::new(&loaded.flow, &mut store, &mut progress, stop)
        .with_lease(lease, ttl)
        .drive(&run_id, state, options)
        .await;
    progress.finish();
    report(finish, &loaded.flow, &run_id, json)
}

/// `stepflow resume RUN`.
pub async fn resume(
    db: &Database,
    run_id: &str,
    now: bool,
    no_wait: bool,
    json: bool,
) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let record = store.run(run_id)?;
    if record.status == RunStatus::Completed {
        outcome::print(&record.id, "completed", &record.state, json);
        return Ok(());
    }
    if record.status == RunStatus::Cancelled {
        return Err(stepflow_engine::EngineError::Cancelled { run: record.id }.into());
    }
    let loaded = load_run_flow(&store, &record)?;
    let (lease, ttl) = claim_lease(&mut store, &loaded, run_id)?;
    // Read again under the lease: what the previous driver saved last is what goes on.
    let record = store.run(run_id)?;
    let mut resumable = prepare_resume(&record, &loaded.flow, Some(&lease))?;
    if now {
        resumable.state.not_before = None;
    }
    let mut progress = Progress::new(json);
    if resumable.definition_changed {
        progress.line(
            "note: the flow changed since this run started; every step it is at still exists, so it continues",
        );
    }
    if resumable.retries_failed_step {
        progress.line(&format!("retrying the failed step of run {run_id}"));
    }
    progress.line(&format!("run {run_id} of {} resumed", loaded.flow.name()));
    progress.set_run(run_id);
    let options = DriveOptions {
        redelivered: resumable.redelivered,
        stop_at_wait: no_wait,
        max_data_bytes: super::max_data_bytes(),
    };
    let stop = crate::signals::stop_requests();
    let finish = Driver::new(&loaded.flow, &mut store, &mut progress, stop)
        .with_lease(lease, ttl)
        .drive(run_id, resumable.state, options)
        .await;
    progress.finish();
    report(finish, &loaded.flow, run_id, json)
}

/// The flow a saved run goes on with: its deployment, or, for a run from before deployments,
/// its flow file as it is now.
fn load_run_flow(store: &dyn Store, record: &RunRecord) -> Result<LoadedFlow, Exit> {
    let engine = engine()?;
    let Some(id) = &record.deployment else {
        return engine.load(Path::new(&record.flow_file)).map_err(|e| {
            Exit::usage(format!(
                "run {} was started from {} (before deployments, so it goes on with that file as it is now): {}",
                record.id,
                record.flow_file,
                Exit::from(e).message
            ))
        });
    };
    let deployment = store.deployment(id)?;
    engine.load_deployment(&deployment).map_err(|e| {
        let exit = Exit::from(e);
        Exit {
            message: format!("cannot resume run {}: {}", record.id, exit.message),
            ..exit
        }
    })
}

/// Claims the run for this process, for long enough to outlast the flow's longest call.
fn claim_lease(
    store: &mut dyn Store,
    loaded: &LoadedFlow,
    run_id: &str,
) -> Result<(Lease, Duration), Exit> {
    let ttl = lease_ttl(loaded.longest_call());
    let lease = claim(store, run_id, &this_owner(), ttl, SystemClock.now_ms())?;
    Ok((lease, ttl))
}

/// How a drive ended, for the user: the outcome view, a hint, the exit code.
fn report(
    finish: Result<Finish, EngineError>,
    flow: &stepflow_model::StepFlow,
    run_id: &str,
    json: bool,
) -> Result<(), Exit> {
    match finish? {
        Finish::Completed(state) => {
            outcome::print(run_id, "completed", &state, json);
            Ok(())
        }
        Finish::Failed(state) => {
            outcome::print(run_id, "failed", &state, json);
            if !json {
                let error = state
                    .error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                eprintln!(
                    "error: {error}\nfix the cause, then run `stepflow resume {run_id}` to retry the failing step"
                );
            }
            Err(Exit::quiet(FAILED))
        }
        Finish::Stopped(state, _) => {
            outcome::print(run_id, "stopped", &state, json);
            if !json {
                crate::output::line(match flow.awaited_signal(&state) {
                    Some(signal) => format!(
                        "saved; it waits for signal `{signal}`: `stepflow signal {run_id} {signal}` sends it, and `stepflow resume {run_id}` (or a server) goes on"
                    ),
                    None => format!("saved; continue with: stepflow resume {run_id}"),
                });
            }
            Err(Exit::quiet(INTERRUPTED))
        }
        Finish::Cancelled(state) => {
            outcome::print(run_id, "cancelled", &state, json);
            Err(Exit::quiet(CANCELLED))
        }
    }
}

/// `--input`: JSON text or `@file` (`@-` reads stdin), at most `max_bytes` long.
pub(crate) fn read_input(input: &str, max_bytes: u64) -> Result<Value, Exit> {
    let value = read_json(
        "--input",
        input,
        max_bytes,
        "raise the limit with --max-input (e.g. --max-input 64MiB) if the run really needs that much data",
    )?;
    if !value.is_object() {
        // A merge patch that is not an object would replace the whole data document.
        return Err(Exit::usage(format!(
            "--input must be a JSON object, whose keys are merged into the flow's data, but it is {}; pass e.g. '{{\"version\": \"2.0\"}}'",
            json_kind(&value)
        )));
    }
    Ok(value)
}

/// The JSON value of option `flag`: JSON text or `@file` (`@-` reads stdin), at most
/// `max_bytes` long (`raise` says how to allow more).
pub(crate) fn read_json(
    flag: &str,
    input: &str,
    max_bytes: u64,
    raise: &str,
) -> Result<Value, Exit> {
    let too_big = || Exit::usage(format!("{flag} is larger than {max_bytes} bytes; {raise}"));
    let text = match input.strip_prefix('@') {
        Some("-") => read_bounded(std::io::stdin(), max_bytes)
            .map_err(|e| Exit::usage(format!("cannot read {flag} from stdin: {e}")))?
            .ok_or_else(too_big)?,
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Exit::usage(format!("cannot read {flag} file {path}: {e}")))?;
            read_bounded(file, max_bytes)
                .map_err(|e| Exit::usage(format!("cannot read {flag} file {path}: {e}")))?
                .ok_or_else(too_big)?
        }
        None if input.len() as u64 > max_bytes => return Err(too_big()),
        None => input.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| {
        Exit::usage(format!(
            "{flag} is not valid JSON ({e}); pass JSON text like '{{\"key\": 1}}' or @file.json"
        ))
    })
}

/// Reads at most `max_bytes` of UTF-8 text; `None` when there is more (so `/dev/zero` or a huge
/// file costs at most the limit).
fn read_bounded(reader: impl Read, max_bytes: u64) -> std::io::Result<Option<String>> {
    let mut text = String::new();
    reader
        .take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)?;
    Ok((text.len() as u64 <= max_bytes).then_some(text))
}

/// `an array`, `a number`, ...: what a JSON value is, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
