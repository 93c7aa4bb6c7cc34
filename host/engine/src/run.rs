//! Runs in a store: starting a new one, and checking that a saved one can go on.

use std::time::Duration;

use serde_json::Value;
use stepflow_model::{Clock, State, Status, StepFlow, SystemClock};
use stepflow_store::{Lease, LeaseInfo, RunRecord, RunStatus, Store, StoreError};

use crate::error::EngineError;
use crate::load::LoadedFlow;

/// Creates a run of `loaded` in `store`: the flow file's data with `input` merged over it
/// (RFC 7386). A flow loaded from a deployment ([`Engine::load_deployment`](crate::Engine))
/// makes a run that refers to it, so store the deployment first
/// ([`Store::put_deployment`]). Returns the new run's id and first state, ready for a
/// [`Driver`](crate::Driver) after a [`claim`](crate::claim). The run is due at once: a
/// server sharing the store may claim it first (use [`start_claimed_run`] to drive it here).
pub fn start_run(
    store: &mut dyn Store,
    loaded: &LoadedFlow,
    input: Option<&Value>,
) -> Result<(String, State), EngineError> {
    let now = SystemClock.now_ms();
    with_free_id(new_run_id, |run_id| {
        create(store, loaded, input, run_id, None, now)
    })
}

/// Creates a run as [`start_run`] does, already claimed by `owner` for `ttl` in the same
/// write, so nobody else (a server sharing the store) can take it between its creation and
/// its first step. Returns the lease to drive it with.
pub fn start_claimed_run(
    store: &mut dyn Store,
    loaded: &LoadedFlow,
    input: Option<&Value>,
    owner: &str,
    ttl: Duration,
) -> Result<(String, State, Lease), EngineError> {
    let now = SystemClock.now_ms();
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let (run_id, (state, lease)) = with_free_id(new_run_id, |run_id| {
        let lease = Lease {
            run_id: run_id.to_string(),
            owner: owner.to_string(),
            fence: 1,
            expires_ms: now.saturating_add(ttl_ms),
        };
        let state = create(store, loaded, input, run_id, Some(&lease), now)?;
        Ok((state, lease))
    })?;
    Ok((run_id, state, lease))
}

/// How many ids a new run tries before its creation fails.
const ID_ATTEMPTS: usize = 8;

/// Runs `create` with new ids from `ids` until one is free. Runs started in the same second
/// share the time part of their ids, and 24 random bits collide now and then (a server that
/// takes a thousand submissions a second meets one within a minute).
fn with_free_id<T>(
    mut ids: impl FnMut() -> String,
    mut create: impl FnMut(&str) -> Result<T, StoreError>,
) -> Result<(String, T), EngineError> {
    let mut attempt = 1;
    loop {
        let id = ids();
        match create(&id) {
            Ok(created) => return Ok((id, created)),
            Err(StoreError::AlreadyExists { .. }) if attempt < ID_ATTEMPTS => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes the row of new run `run_id`, held by `lease` when given.
fn create(
    store: &mut dyn Store,
    loaded: &LoadedFlow,
    input: Option<&Value>,
    run_id: &str,
    lease: Option<&Lease>,
    now: u64,
) -> Result<State, StoreError> {
    let mut data = loaded.file.data.clone();
    if let Some(input) = input {
        json_patch::merge(&mut data, input);
    }
    let state = loaded.flow.new_state(data);
    let flow_file =
        std::fs::canonicalize(&loaded.file.path).unwrap_or_else(|_| loaded.file.path.clone());
    store.create_run(&RunRecord {
        id: run_id.to_string(),
        flow: loaded.flow.name().to_string(),
        flow_file: flow_file.display().to_string(),
        definition: loaded.flow.definition_hash().to_string(),
        status: RunStatus::Running,
        state: state.clone(),
        next_check_ms: None,
        last_error: None,
        created_ms: now,
        updated_ms: now,
        lease: lease.map(|l| LeaseInfo {
            owner: l.owner.clone(),
            expires_ms: l.expires_ms,
            fence: l.fence,
        }),
        deployment: loaded.deployment.clone(),
    })?;
    Ok(state)
}

/// A saved run checked against the flow it will go on with.
#[derive(Clone, Debug)]
pub struct Resumable {
    /// The state to drive from (a failed run's error is cleared, so its failing step runs
    /// again).
    pub state: State,
    /// The run's last driver died without a clean stop, so its first call may have run
    /// already: the driver marks it redelivered.
    pub redelivered: bool,
    /// The flow changed since the run started, but every step the run is at still exists.
    pub definition_changed: bool,
    /// The run had failed; its failing step is retried.
    pub retries_failed_step: bool,
}

/// Checks that `record` can go on with `flow`: not cancelled, and every event of its cursor
/// exists in the flow (a step at the cursor that was removed or renamed is refused by name).
///
/// `lease` is the claim the caller drives under, read before `record`: a run left `running`
/// is redelivered only if someone claimed it before that lease (its fence is above 1), so a
/// submitted run that nobody has driven yet is not. Without a lease, `running` alone counts.
pub fn prepare_resume(
    record: &RunRecord,
    flow: &StepFlow,
    lease: Option<&Lease>,
) -> Result<Resumable, EngineError> {
    if record.status == RunStatus::Cancelled {
        return Err(EngineError::Cancelled {
            run: record.id.clone(),
        });
    }
    let mut state = record.state.clone();
    flow.check_state(&state).map_err(|e| EngineError::Resume {
        run: record.id.clone(),
        detail: e.to_string(),
    })?;
    let retries_failed_step = state.error.take().is_some();
    Ok(Resumable {
        state,
        redelivered: record.status == RunStatus::Running && lease.is_none_or(|l| l.fence > 1),
        definition_changed: record.definition != flow.definition_hash(),
        retries_failed_step,
    })
}

/// The status and next due time a store keeps for `state`.
pub fn stored_status(flow: &StepFlow, state: &State, now_ms: u64) -> (RunStatus, Option<u64>) {
    match flow.status(state, now_ms) {
        Status::Completed => (RunStatus::Completed, None),
        Status::Failed(_) => (RunStatus::Failed, None),
        Status::Waiting(t) => (RunStatus::Waiting, Some(t)),
        Status::AwaitingSignal { until, .. } => (
            RunStatus::Waiting,
            Some(until.unwrap_or(stepflow_store::NEVER_DUE_MS)),
        ),
        Status::Ready => (RunStatus::Running, None),
    }
}

/// A sortable, readable run id: UTC date and time plus 24 random bits
/// (`20261128-055118-bfc4a3`).
pub fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemClock.now_ms();
    let ((y, m, d), (hh, mm, ss)) = crate::time::civil(now);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(u128::from(now) ^ u128::from(std::process::id()));
    format!(
        "{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{:06x}",
        h.finish() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A taken id is not an error while fresh ones remain: the run gets the next free one.
    #[test]
    fn a_run_whose_id_is_taken_gets_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store =
            stepflow_store::SqliteStore::open(&dir.path().join("runs.db")).expect("store");
        let record = |id: &str| RunRecord {
            id: id.to_string(),
            flow: "f.v1".into(),
            flow_file: "f.yaml".into(),
            definition: "0".into(),
            status: RunStatus::Running,
            state: State::default(),
            next_check_ms: None,
            last_error: None,
            created_ms: 1,
            updated_ms: 1,
            lease: None,
            deployment: None,
        };
        store.create_run(&record("taken")).expect("create");
        let mut ids = ["taken", "taken", "free"].into_iter().map(String::from);
        let (id, ()) = with_free_id(
            || ids.next().unwrap_or_default(),
            |id| store.create_run(&record(id)),
        )
        .expect("a free id");
        assert_eq!(id, "free");
        // Only taken ids: after ID_ATTEMPTS tries, the store's own error.
        let err = with_free_id(|| "taken".to_string(), |id| store.create_run(&record(id)));
        assert!(
            matches!(
                &err,
                Err(EngineError::Store(StoreError::AlreadyExists { .. }))
            ),
            "{err:?}"
        );
    }

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 22, "{a}");
        assert_ne!(a, b);
    }
}
