//! The records the cases build: runs, states, history entries, saves, claims and deployments,
//! with fixed values, so every case reads as what it changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use stepflow_model::{CallKind, ErrorKind, Event, Failure, State};
use stepflow_store::{
    Claim, DeployedPlugin, Deployment, HistoryEntry, Lease, RunRecord, RunStatus, StepOutcome,
    StepSave,
};

/// A state at step `step` of flow `f.v1` with `data`, and every other field set, so a round
/// trip that drops one is seen.
pub(super) fn state(step: &str, data: serde_json::Value) -> State {
    State {
        cursor: vec![Event::new(format!("start:f.v1/{step}"))],
        data: Arc::new(data),
        attempts: BTreeMap::from([("f.v1/retry".into(), 2)]),
        deadlines: BTreeMap::from([("f.v1/wait".into(), 1_700_000_000_123)]),
        not_before: Some(1_700_000_000_000),
        error: Some(Failure {
            step: format!("f.v1/{step}"),
            kind: ErrorKind::Retryable,
            message: "connection refused".into(),
        }),
        calls: 3,
        definition: "def-hash".into(),
        ..State::default()
    }
}

/// A run `id` of flow `f.v1` created at `created_ms`, with `status`, held by nobody.
pub(super) fn record(id: &str, created_ms: u64, status: RunStatus) -> RunRecord {
    RunRecord {
        id: id.into(),
        flow: "f.v1".into(),
        flow_file: "/flows/f.yaml".into(),
        definition: "def-hash".into(),
        deployment: None,
        status,
        state: state("a", json!({ "n": 0 })),
        next_check_ms: None,
        last_error: None,
        created_ms,
        updated_ms: created_ms,
        lease: None,
    }
}

/// A run `id` with `status` and `next_check_ms`, created at 1.
pub(super) fn run_at(id: &str, status: RunStatus, next_check_ms: Option<u64>) -> RunRecord {
    RunRecord {
        next_check_ms,
        ..record(id, 1, status)
    }
}

/// A successful call of step `step` of run `run_id` (the store numbers it: `seq` 0).
pub(super) fn entry(run_id: &str, step: &str) -> HistoryEntry {
    HistoryEntry {
        run_id: run_id.into(),
        seq: 0,
        step: format!("f.v1/{step}"),
        kind: CallKind::Step,
        attempt: 1,
        outcome: StepOutcome::Done,
        started_ms: 1_700_000_000_000,
        duration_ms: 12,
        error: None,
        patch: Some(json!({ "n": 1, "gone": null })),
        redelivered: false,
        handlers: Vec::new(),
    }
}

/// A save of `state` with no next check, no error, no history entry and no lease; cases add
/// what they need with `StepSave { history: Some(..), ..step(..) }`.
pub(super) fn step<'a>(run_id: &'a str, status: RunStatus, state: &'a State) -> StepSave<'a> {
    StepSave {
        run_id,
        status,
        state,
        next_check_ms: None,
        last_error: None,
        history: None,
        lease: None,
    }
}

/// A claim of `run_id` by `owner` at `now_ms` for `ttl_ms`, without take-over.
pub(super) fn claim<'a>(run_id: &'a str, owner: &'a str, now_ms: u64, ttl_ms: u64) -> Claim<'a> {
    Claim {
        run_id,
        owner,
        ttl_ms,
        now_ms,
        take_over: None,
    }
}

/// The run ids of `leases`, in their order.
pub(super) fn leased_ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.run_id.as_str()).collect()
}

/// The ids of `runs`, in their order.
pub(super) fn run_ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// Store errors say what went wrong in the store's terms; the command line adds its own hints.
pub(super) fn assert_store_terms(message: &str) {
    for hint in ["--db", "STEPFLOW_DB", "stepflow runs"] {
        assert!(!message.contains(hint), "`{hint}` in: {message}");
    }
}

/// The SHA-256 of `bytes` as 64 lower-case hex digits, the form the store wants.
pub(super) fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin `name` with `bytes` and their true hash.
pub(super) fn plugin(name: &str, bytes: &[u8]) -> DeployedPlugin {
    DeployedPlugin {
        name: name.into(),
        sha256: sha256(bytes),
        bytes: Arc::from(bytes),
    }
}

/// A deployment of flow `flow` whose id is the SHA-256 of `source` (the store only checks the
/// form of an id; the caller decides what it hashes).
pub(super) fn deployment(flow: &str, source: &str, plugins: Vec<DeployedPlugin>) -> Deployment {
    Deployment {
        id: sha256(source.as_bytes()),
        flow: flow.into(),
        source: source.into(),
        source_path: format!("/flows/{flow}.yaml"),
        plugins,
        created_ms: 1_700_000_000_000,
    }
}

/// A waiting run `id` of flow `f.v1` that uses deployment `deployment_id`.
pub(super) fn run_of(id: &str, created_ms: u64, deployment_id: &str) -> RunRecord {
    RunRecord {
        deployment: Some(deployment_id.into()),
        ..record(id, created_ms, RunStatus::Waiting)
    }
}
