//! Listing and reading runs: the runs list (filters, newest first, a page at a time), the
//! counts by status, one run with its data document and diagram, and its history by pages.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use stepflow_model::{StepFlow, TransitionInfo};
use stepflow_store::{HistoryEntry, RunCounts, RunFilter, RunRecord, RunStatus, Store};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Path, Query};
use crate::stores::Stores;

/// The most runs or history entries one page holds.
pub(crate) const MAX_PAGE: usize = 500;

/// A run status, as the store spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
}

impl From<RunStatus> for Status {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Running => Status::Running,
            RunStatus::Waiting => Status::Waiting,
            RunStatus::Completed => Status::Completed,
            RunStatus::Failed => Status::Failed,
            RunStatus::Cancelled => Status::Cancelled,
        }
    }
}

impl From<Status> for RunStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Running => RunStatus::Running,
            Status::Waiting => RunStatus::Waiting,
            Status::Completed => RunStatus::Completed,
            Status::Failed => RunStatus::Failed,
            Status::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// A run as a listing shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunSummary {
    /// The run's id.
    id: String,
    /// Its flow's name.
    flow: String,
    /// Where it stands.
    status: Status,
    /// When it was created (Unix milliseconds).
    created_ms: u64,
    /// When it was last saved (Unix milliseconds).
    updated_ms: u64,
    /// When it is next due (Unix milliseconds); null unless it waits for a time.
    next_check_ms: Option<u64>,
    /// The error that stopped or last delayed it.
    error: Option<String>,
    /// Who drives it now.
    owner: Option<String>,
    /// The deployment it runs.
    deployment: Option<String>,
}

impl From<&RunRecord> for RunSummary {
    fn from(run: &RunRecord) -> Self {
        RunSummary {
            id: run.id.clone(),
            flow: run.flow.clone(),
            status: run.status.into(),
            created_ms: run.created_ms,
            updated_ms: run.updated_ms,
            next_check_ms: run
                .next_check_ms
                .filter(|&t| t != stepflow_store::NEVER_DUE_MS)
                .filter(|_| run.status == RunStatus::Waiting),
            error: run.last_error.clone(),
            owner: run.lease.as_ref().map(|l| l.owner.clone()),
            deployment: run.deployment.clone(),
        }
    }
}

/// Which runs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only runs with this status.
    status: Option<Status>,
    /// Only runs of this flow.
    flow: Option<String>,
    /// Only runs of this deployment (its full id).
    deployment: Option<String>,
    /// The runs of the flow of exactly this name, or else those whose id starts with this.
    q: Option<String>,
    /// Only runs created at or after this time (Unix milliseconds).
    created_from: Option<u64>,
    /// Only runs created before this time (Unix milliseconds).
    created_until: Option<u64>,
    /// Only runs saved at or after this time (Unix milliseconds).
    updated_from: Option<u64>,
    /// Only runs saved before this time (Unix milliseconds).
    updated_until: Option<u64>,
    /// At most this many runs (1 to 500; default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// Where to go on: the `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of runs, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunList {
    /// The runs.
    runs: Vec<RunSummary>,
    /// The `cursor` of the next page; null on the last.
    next_cursor: Option<String>,
}

/// A page size within bounds.
pub(crate) fn page_size(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_PAGE => Err(ApiError::bad_request(format!(
            "limit is at most {MAX_PAGE}; follow `next_cursor` for more"
        ))),
        n => Ok(n),
    }
}

/// Lists runs, newest first.
#[utoipa::path(get, path = "/api/v1/runs", operation_id = "list_runs", params(ListQuery), tag = "runs",
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<RunList>, ApiError> {
    let filter = RunFilter {
        status: query.status.map(Into::into),
        flow: query.flow,
        deployment: query.deployment,
        search: query.q,
        created_from: query.created_from,
        created_until: query.created_until,
        updated_from: query.updated_from,
        updated_until: query.updated_until,
        after: query.cursor,
        limit: page_size(query.limit, 50)?,
    };
    let page = state
        .stores
        .with(move |_, store| Ok(store.runs_page(&filter)?))
        .await?;
    Ok(Json(RunList {
        runs: page.runs.iter().map(RunSummary::from).collect(),
        next_cursor: page.next,
    }))
}

/// How many runs have each status.
#[derive(Serialize, ToSchema)]
pub(crate) struct Counts {
    running: u64,
    waiting: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
}

impl From<RunCounts> for Counts {
    fn from(c: RunCounts) -> Self {
        Counts {
            running: c.running,
            waiting: c.waiting,
            completed: c.completed,
            failed: c.failed,
            cancelled: c.cancelled,
        }
    }
}

/// Counts the runs by status.
#[utoipa::path(get, path = "/api/v1/runs/counts", operation_id = "count_runs", tag = "runs",
    responses((status = 200, body = Counts)))]
pub(crate) async fn counts(State(state): State<AppState>) -> Result<Json<Counts>, ApiError> {
    let counts = state
        .stores
        .with(|_, store| Ok(store.run_counts()?))
        .await?;
    Ok(Json(counts.into()))
}

/// A transition of the flow, for its diagram.
#[derive(Serialize, ToSchema)]
pub(crate) struct Transition {
    /// The event it leaves from, e.g. `start:deploy.v1/prepare`.
    source: String,
    /// The function it calls, if any.
    call: Option<Call>,
    /// Where it can go.
    destinations: Vec<Destination>,
}

/// A transition's function.
#[derive(Serialize, ToSchema)]
pub(crate) struct Call {
    /// `step`, `wait-for`, `case`, `loop-until` or `error-handler`.
    kind: String,
    /// `plugin.function`, or `signal NAME`.
    label: String,
}

/// A possible destination.
#[derive(Serialize, ToSchema)]
pub(crate) struct Destination {
    /// The event.
    event: String,
    /// Why it goes there (`done`, `true`, `not yet`, `error: retry …`).
    reason: String,
}

/// The transitions of `flow`, for diagrams.
pub(crate) fn transitions(flow: &StepFlow) -> Vec<Transition> {
    flow.transitions()
        .into_iter()
        .map(|t: TransitionInfo| Transition {
            source: t.source,
            call: t.call.map(|(kind, label)| Call {
                kind: kind.as_str().to_string(),
                label,
            }),
            destinations: t
                .destinations
                .into_iter()
                .map(|d| Destination {
                    event: d.event,
                    reason: d.reason,
                })
                .collect(),
        })
        .collect()
}

/// One run in full.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunDetail {
    #[serde(flatten)]
    summary: RunSummary,
    /// The data document.
    data: serde_json::Value,
    /// The current events, e.g. `start:deploy.v1/approval`.
    cursor: Vec<String>,
    /// The signal it waits for now, if it does.
    awaits_signal: Option<String>,
    /// Every signal name its flow waits for somewhere.
    signals: Vec<String>,
    /// How many history entries it has.
    history_count: u64,
    /// Its flow's transitions, for a diagram (empty for a run from before deployments).
    transitions: Vec<Transition>,
}

/// `id`'s run in full, read with `store`.
fn detail(stores: &Stores, store: &dyn Store, id: &str) -> Result<RunDetail, ApiError> {
    let run = store.run(id)?;
    let (_, history_count) = store.history_page(id, u64::MAX, 0)?;
    let flow = match &run.deployment {
        Some(deployment) => Some(stores.flow(store, deployment)?),
        None => None,
    };
    let awaits_signal = flow
        .as_ref()
        .filter(|_| !run.status.is_finished())
        .and_then(|f| f.awaited_signal(&run.state).map(str::to_string));
    Ok(RunDetail {
        summary: RunSummary::from(&run),
        data: (*run.state.data).clone(),
        cursor: run.state.cursor.iter().map(|e| e.to_string()).collect(),
        awaits_signal,
        signals: flow
            .as_ref()
            .map(|f| f.signal_names().into_iter().map(str::to_string).collect())
            .unwrap_or_default(),
        history_count,
        transitions: flow.as_deref().map(transitions).unwrap_or_default(),
    })
}

/// Reads one run: where it stands, its data document and its flow's diagram.
#[utoipa::path(get, path = "/api/v1/runs/{id}", operation_id = "get_run", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunDetail), (status = 404, body = ErrorBody)))]
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run = state
        .stores
        .with(move |stores, store| detail(stores, store, &id))
        .await?;
    Ok(Json(run))
}

/// Which history entries to read.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// Only entries numbered after this (default 0: from the first).
    after: Option<u64>,
    /// At most this many (1 to 500; default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// One entry of a run's history: one function call.
#[derive(Serialize, ToSchema)]
pub(crate) struct Entry {
    /// Its number, 1, 2, ...
    seq: u64,
    /// The step whose function was called.
    step: String,
    /// `step`, `wait-for`, `case`, `loop-until` or `error-handler`.
    kind: String,
    /// The attempt number the call saw.
    attempt: u32,
    /// `done`, `true`, `false`, `retrying` or `failed`.
    outcome: String,
    /// When the call started (Unix milliseconds).
    started_ms: u64,
    /// How long it took.
    duration_ms: u64,
    /// The error it reported.
    error: Option<String>,
    /// The JSON merge patch it returned.
    patch: Option<serde_json::Value>,
    /// Whether it ran again after a crash.
    redelivered: bool,
    /// The error handlers its failure was offered to.
    handlers: Vec<Handler>,
}

/// An error handler asked about a failed call.
#[derive(Serialize, ToSchema)]
pub(crate) struct Handler {
    /// The retry group.
    group: String,
    /// The error it was given.
    error: String,
    /// Its answer (true: retry); null when it failed.
    answer: Option<bool>,
    /// Its own error, when it failed.
    answer_error: Option<String>,
}

impl From<HistoryEntry> for Entry {
    fn from(h: HistoryEntry) -> Self {
        Entry {
            seq: h.seq,
            step: h.step,
            kind: h.kind.as_str().to_string(),
            attempt: h.attempt,
            outcome: h.outcome.as_str().to_string(),
            started_ms: h.started_ms,
            duration_ms: h.duration_ms,
            error: h.error,
            patch: h.patch,
            redelivered: h.redelivered,
            handlers: h
                .handlers
                .into_iter()
                .map(|c| Handler {
                    group: c.group.to_string(),
                    error: c.error,
                    answer: c.answer.as_ref().ok().copied(),
                    answer_error: c.answer.err(),
                })
                .collect(),
        }
    }
}

/// A page of a run's history, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryPage {
    /// The entries.
    entries: Vec<Entry>,
    /// The `after` of the next page; null on the last.
    next_after: Option<u64>,
    /// How many entries the run has in all.
    total: u64,
}

/// Reads a run's history, a page at a time.
#[utoipa::path(get, path = "/api/v1/runs/{id}/history", operation_id = "get_run_history", tag = "runs",
    params(("id" = String, Path, description = "The run's id"), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<HistoryPage>, ApiError> {
    let limit = page_size(query.limit, 100)?;
    let after = query.after.unwrap_or(0);
    let (entries, total) = state
        .stores
        .with(move |_, store| Ok(store.history_page(&id, after, limit)?))
        .await?;
    let next_after = match entries.last() {
        Some(last) if last.seq < total => Some(last.seq),
        _ => None,
    };
    Ok(Json(HistoryPage {
        entries: entries.into_iter().map(Entry::from).collect(),
        next_after,
        total,
    }))
}
