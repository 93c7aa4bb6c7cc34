//! The records the cases build: runs, states, history entries, saves, claims, signals, calls
//! and deployments, with fixed values, so every case reads as what it changes; public, so a
//! backend's own tests build the same ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use stepflow_model::{
    CallKind, CallRecord, ErrorKind, Event, Failure, HandlerCall, Outcome, State, StepError,
};
use stepflow_store::{
    Claim, DeployedPlugin, Deployment, HistoryEntry, Lease, NEVER_DUE_MS, RunRecord, RunStatus,
    SignalSend, StepOutcome, StepSave, Store, StoreError,
};

/// A state at step `step` of flow `f.v1` with `data`, and every other field set, so a round
/// trip that drops one is seen.
pub fn state(step: &str, data: serde_json::Value) -> State {
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
pub fn record(id: &str, created_ms: u64, status: RunStatus) -> RunRecord {
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
pub fn run_at(id: &str, status: RunStatus, next_check_ms: Option<u64>) -> RunRecord {
    RunRecord {
        next_check_ms,
        ..record(id, 1, status)
    }
}

/// A successful call of step `step` of run `run_id` (the store numbers it: `seq` 0).
pub fn entry(run_id: &str, step: &str) -> HistoryEntry {
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

/// The entries of the calls one apply of parallel branches made, one per step of `steps`, in
/// order, each with another kind, outcome, attempt, time and patch (and `seq` 99, which the
/// store ignores), so entries saved out of order or mixed up are seen.
pub fn calls(run_id: &str, steps: &[&str]) -> Vec<HistoryEntry> {
    steps
        .iter()
        .zip(0u32..)
        .map(|(step, n)| {
            let done = HistoryEntry {
                seq: 99,
                attempt: n,
                started_ms: 1_700_000_000_000 + u64::from(n),
                duration_ms: 10 + u64::from(n),
                patch: Some(json!({ "call": n })),
                ..entry(run_id, step)
            };
            match n % 3 {
                0 => done,
                1 => HistoryEntry {
                    kind: CallKind::WaitFor,
                    outcome: StepOutcome::Retrying,
                    error: Some(format!("call {n} not ready (retryable)")),
                    patch: None,
                    ..done
                },
                _ => HistoryEntry {
                    kind: CallKind::Case,
                    outcome: StepOutcome::True,
                    patch: None,
                    ..done
                },
            }
        })
        .collect()
}

/// `entries` as the store numbers them when they are saved after the run's first `before`
/// entries: `before + 1`, `before + 2`, ...
pub fn numbered(entries: &[HistoryEntry], before: u64) -> Vec<HistoryEntry> {
    entries
        .iter()
        .zip(before + 1..)
        .map(|(e, seq)| HistoryEntry { seq, ..e.clone() })
        .collect()
}

/// A save of `state` with no next check, no error, no history entry and no lease; cases add
/// what they need with `StepSave { history: &[..], ..step(..) }`.
pub fn step<'a>(run_id: &'a str, status: RunStatus, state: &'a State) -> StepSave<'a> {
    StepSave {
        run_id,
        status,
        state,
        next_check_ms: None,
        last_error: None,
        history: &[],
        lease: None,
    }
}

/// A claim of `run_id` by `owner` at `now_ms` for `ttl_ms`, without take-over.
pub fn claim<'a>(run_id: &'a str, owner: &'a str, now_ms: u64, ttl_ms: u64) -> Claim<'a> {
    Claim {
        run_id,
        owner,
        ttl_ms,
        now_ms,
        take_over: None,
    }
}

/// The run ids of `leases`, in their order.
pub fn leased_ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.run_id.as_str()).collect()
}

/// The ids of `runs`, in their order.
pub fn run_ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// Store errors say what went wrong in the store's terms; the command line adds its own hints.
pub fn assert_store_terms(message: &str) {
    for hint in ["--db", "STEPFLOW_DB", "stepflow runs"] {
        assert!(!message.contains(hint), "`{hint}` in: {message}");
    }
}

/// The SHA-256 of `bytes` as 64 lower-case hex digits, the form the store wants.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin `name` with `bytes` and their true hash.
pub fn plugin(name: &str, bytes: &[u8]) -> DeployedPlugin {
    DeployedPlugin {
        name: name.into(),
        sha256: sha256(bytes),
        bytes: Arc::from(bytes),
    }
}

/// A deployment of flow `flow` whose id is the SHA-256 of `source` (the store only checks the
/// form of an id; the caller decides what it hashes).
pub fn deployment(flow: &str, source: &str, plugins: Vec<DeployedPlugin>) -> Deployment {
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
pub fn run_of(id: &str, created_ms: u64, deployment_id: &str) -> RunRecord {
    RunRecord {
        deployment: Some(deployment_id.into()),
        ..record(id, created_ms, RunStatus::Waiting)
    }
}

/// A signal for `run_id`, sent at 1,000.
pub fn send<'a>(
    run_id: &'a str,
    id: &'a str,
    name: &'a str,
    payload: &'a serde_json::Value,
) -> SignalSend<'a> {
    SignalSend {
        run_id,
        id,
        name,
        payload,
        now_ms: 1_000,
    }
}

/// A run that waits for a signal and nothing else: due by time never.
pub fn awaiting(id: &str) -> RunRecord {
    RunRecord {
        next_check_ms: Some(NEVER_DUE_MS),
        ..record(id, 1, RunStatus::Waiting)
    }
}

/// A failed call that a nested retry offered to two handlers: the inner one failed itself, the
/// outer one declined.
pub fn failed_call() -> CallRecord {
    CallRecord {
        step: "f.v1/deploy".into(),
        kind: CallKind::Step,
        attempt: 2,
        sequence: 4,
        redelivered: false,
        outcome: Outcome::Failed(StepError::fatal("inner handler broke")),
        handlers: vec![
            HandlerCall {
                group: "f.v1/inner".into(),
                error: "connection refused (retryable)".into(),
                answer: Err("inner handler broke (fatal)".into()),
            },
            HandlerCall {
                group: "f.v1/outer".into(),
                error: "inner handler broke (fatal)".into(),
                answer: Ok(false),
            },
        ],
    }
}

/// Runs `r0`..`r{n-1}`, each claimed by `host-a`.
pub fn claimed_runs(store: &mut dyn Store, n: usize) -> Result<Vec<Lease>, StoreError> {
    (0..n)
        .map(|i| {
            let id = format!("r{i}");
            store.create_run(&record(&id, 1, RunStatus::Running))?;
            store.claim(&claim(&id, "host-a", 1_000, 60_000))
        })
        .collect()
}
