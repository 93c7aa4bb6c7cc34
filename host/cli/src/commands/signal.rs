//! `stepflow signal`: send a signal to a run that waits (or will wait) for it.

use stepflow_store::Database;

use serde_json::Value;
use stepflow_engine::{SignalRequest, send_signal};

use super::open_store;
use super::run::read_json;
use crate::error::Exit;
use crate::views;

/// The largest `--data` accepted: a signal's payload lands in the run's data document.
const MAX_SIGNAL_DATA: u64 = 1 << 20;

/// `stepflow signal RUN NAME [--data JSON|@file] [--id ID]`.
pub fn signal(
    db: &Database,
    run_id: &str,
    name: &str,
    data: Option<&str>,
    id: Option<&str>,
    json: bool,
) -> Result<(), Exit> {
    let payload = match data {
        Some(data) => read_json(
            "--data",
            data,
            MAX_SIGNAL_DATA,
            "a signal carries at most 1 MiB; put larger data where a step can fetch it",
        )?,
        None => Value::Object(Default::default()),
    };
    let mut store = open_store(db)?;
    let receipt = send_signal(
        &mut store,
        &SignalRequest {
            run_id,
            name,
            payload: &payload,
            id,
        },
    )?;
    views::outcome::signalled(run_id, name, &receipt, json);
    Ok(())
}
