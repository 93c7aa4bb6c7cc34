//! What an operator does to a run: send it a signal, cancel it, resume it after a failure.
//! Each is one store write; the scheduler, which drives the run, notices it there.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use stepflow_engine::{SignalRequest, send_signal};
use stepflow_store::RunStatus;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, Path};
use crate::runs::Status;

/// A signal to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalBody {
    /// Its name, as the flow's `wait-for: {signal: NAME}` spells it.
    name: String,
    /// Its payload, merged under `signals.NAME` in the run's data (default `{}`); any JSON
    /// value but null, which would remove `signals.NAME` instead.
    #[serde(default = "empty_object")]
    payload: serde_json::Value,
    /// An id for it: sending again with the same id stores nothing more (a retry after a
    /// timeout is applied once). Default: a fresh one.
    id: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// What a signal did.
#[derive(Serialize, ToSchema)]
pub(crate) struct SignalAnswer {
    /// Its number in the run's inbox (the first delivery's, for a repeated id).
    seq: u64,
    /// True when its id was sent before: nothing was stored this time.
    duplicate: bool,
    /// The run's status when it was stored.
    status: Status,
}

/// Sends a signal to a run; a wait for its name moves on.
#[utoipa::path(post, path = "/api/v1/runs/{id}/signals", operation_id = "signal_run", tag = "actions",
    params(("id" = String, Path, description = "The run's id")),
    request_body = SignalBody,
    security(("token" = [])),
    responses((status = 202, body = SignalAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn signal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SignalBody>,
) -> Result<(StatusCode, Json<SignalAnswer>), ApiError> {
    let receipt = state
        .stores
        .with(move |_, store| {
            Ok(send_signal(
                store,
                &SignalRequest {
                    run_id: &id,
                    name: &body.name,
                    payload: &body.payload,
                    id: body.id.as_deref(),
                },
            )?)
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignalAnswer {
            seq: receipt.seq,
            duplicate: receipt.duplicate,
            status: receipt.status.into(),
        }),
    ))
}

/// A run's new status after an action.
#[derive(Serialize, ToSchema)]
pub(crate) struct ActionAnswer {
    /// The run's id.
    id: String,
    /// Its status now.
    status: Status,
}

/// Cancels a run for good: its driver stops at its next save.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "actions",
    params(("id" = String, Path, description = "The run's id")),
    security(("token" = [])),
    responses((status = 200, body = ActionAnswer), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ActionAnswer>, ApiError> {
    change_status(&state, id, RunStatus::Cancelled, |status| match status {
        RunStatus::Completed | RunStatus::Cancelled => {
            Some(format!("the run is already {status}; nothing to cancel"))
        }
        _ => None,
    })
    .await
}

/// Resumes a failed run: its failing step runs again when the scheduler next drives it.
#[utoipa::path(post, path = "/api/v1/runs/{id}/resume", operation_id = "resume_run", tag = "actions",
    params(("id" = String, Path, description = "The run's id")),
    security(("token" = [])),
    responses((status = 200, body = ActionAnswer), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ActionAnswer>, ApiError> {
    // A waiting run is due again at once; the driver clears a failed run's error and retries.
    change_status(&state, id, RunStatus::Waiting, |status| {
        (status != RunStatus::Failed)
            .then(|| format!("only a failed run can be resumed, and this one is {status}"))
    })
    .await
}

/// Sets run `id`'s status to `to`, unless `refuse` has a reason not to.
async fn change_status(
    state: &AppState,
    id: String,
    to: RunStatus,
    refuse: impl FnOnce(RunStatus) -> Option<String> + Send + 'static,
) -> Result<Json<ActionAnswer>, ApiError> {
    state
        .stores
        .with(move |_, store| {
            let run = store.run(&id)?;
            if let Some(why) = refuse(run.status) {
                return Err(ApiError::conflict(why));
            }
            store.set_status(&id, to)?;
            Ok(Json(ActionAnswer {
                id,
                status: to.into(),
            }))
        })
        .await
}

/// Where a rerun starts.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RerunBody {
    /// The history entry after which the new run starts (0: from the run's first state).
    from_seq: u64,
}

/// The run a rerun started.
#[derive(Serialize, ToSchema)]
pub(crate) struct RerunAnswer {
    /// The new run's id.
    id: String,
}

/// Starts a new run from the state this one had after history entry `from_seq` (its history
/// replayed through the flow; no plugin runs), on the same deployment.
#[utoipa::path(post, path = "/api/v1/runs/{id}/rerun", operation_id = "rerun_run", tag = "actions",
    params(("id" = String, Path, description = "The run's id")),
    request_body = RerunBody,
    security(("token" = [])),
    responses((status = 201, body = RerunAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<RerunBody>,
) -> Result<(StatusCode, Json<RerunAnswer>), ApiError> {
    let handle = tokio::runtime::Handle::current();
    let new = state
        .stores
        .with(move |_, store| {
            // The replay calls no plugin: its futures are ready at once.
            Ok(handle.block_on(stepflow_engine::rerun_from(store, &id, body.from_seq))?)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(RerunAnswer { id: new })))
}
