//! Sending a signal to a run: what `stepflow signal` and the HTTP API share. The run's flow
//! must have a wait for it; the store then appends it to the run's inbox and makes the run
//! due, in one transaction.

use serde_json::Value;
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{RunStatus, SignalReceipt, SignalSend, Store, StoreError};

use crate::deployment::shape_deployment;
use crate::error::EngineError;

/// A signal to send ([`send_signal`]).
#[derive(Clone, Copy, Debug)]
pub struct SignalRequest<'a> {
    /// The run it is for.
    pub run_id: &'a str,
    /// Its name: the run's flow must have a wait for it.
    pub name: &'a str,
    /// The data it carries, merged under `signals.<name>` when a wait takes it.
    pub payload: &'a Value,
    /// The sender's id for it, so a delivery repeated after a timeout is applied once; `None`
    /// makes a fresh one (each call is then a new signal).
    pub id: Option<&'a str>,
}

/// Sends a signal to a run. Refused, with nothing stored, for an unknown run, a completed or
/// cancelled one, and a name that no wait of the run's flow is for
/// ([`EngineError::UnknownSignal`]; a run saved before deployments is not checked).
pub fn send_signal(
    store: &mut dyn Store,
    request: &SignalRequest<'_>,
) -> Result<SignalReceipt, EngineError> {
    let run = store.run(request.run_id)?;
    if matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::NotListening {
            run: run.id,
            status: run.status,
        }
        .into());
    }
    if let Some(deployment) = &run.deployment {
        let flow = shape_deployment(&store.deployment(deployment)?)?;
        let awaited = flow.signal_names();
        if !awaited.contains(&request.name) {
            return Err(EngineError::UnknownSignal {
                run: run.id,
                flow: run.flow,
                signal: request.name.to_string(),
                awaited: awaited.into_iter().map(str::to_string).collect(),
            });
        }
    }
    let fresh;
    let id = match request.id {
        Some(id) => id,
        None => {
            fresh = new_signal_id();
            &fresh
        }
    };
    Ok(store.send_signal(&SignalSend {
        run_id: request.run_id,
        id,
        name: request.name,
        payload: request.payload,
        now_ms: SystemClock.now_ms(),
    })?)
}

/// A fresh signal id: the time and 64 random bits, so two senders never share one.
fn new_signal_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemClock.now_ms();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(u128::from(now) ^ (u128::from(std::process::id()) << 64));
    format!("{now}-{:016x}", h.finish())
}
