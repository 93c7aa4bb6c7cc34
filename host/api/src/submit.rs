//! Submitting runs over HTTP: a flow file with its built components (checked against the
//! operator's policy, deployed, loaded once to check every component), or a run of a stored
//! deployment. No `build` command of a submitted flow ever runs here.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use stepflow_engine::{SubmitPolicy, deploy_submission, start_run};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Body;

/// What a server takes submissions with: the engine that checks their components, and what
/// their grants may be.
#[derive(Clone)]
pub struct Submissions {
    /// Loads each submitted deployment once, so a component that does not fit its flow is
    /// refused at submission.
    pub engine: std::sync::Arc<stepflow_engine::Engine>,
    /// What a submitted flow may be granted.
    pub policy: SubmitPolicy,
}

impl std::fmt::Debug for Submissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submissions")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A run to start: either `flow` with its `plugins`, or `deployment` alone.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitBody {
    /// The flow file's text (YAML); its plugins' components go in `plugins`.
    flow: Option<String>,
    /// Each plugin's built component (`.wasm`), base64-encoded, by the flow's plugin name.
    #[serde(default)]
    plugins: BTreeMap<String, String>,
    /// Instead of `flow`: the id of a stored deployment to start a run of.
    deployment: Option<String>,
    /// Data merged into the flow's initial data.
    #[schema(value_type = Option<Object>)]
    input: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The run started.
#[derive(Serialize, ToSchema)]
pub(crate) struct Submitted {
    /// The new run's id.
    id: String,
    /// The deployment it runs.
    deployment: String,
}

/// Starts a run; the scheduler drives it.
#[utoipa::path(post, path = "/api/v1/runs", operation_id = "submit_run", tag = "actions", request_body = SubmitBody,
    security(("token" = [])),
    responses((status = 201, body = Submitted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Body(body): Body<SubmitBody>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let Some(submissions) = state.submissions.clone() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this server takes no submissions over HTTP",
        ));
    };
    let (id, deployment) = state
        .stores
        .with(move |_, store| {
            let deployment = match (body.flow, body.deployment) {
                (Some(flow), None) => {
                    let plugins = decode(body.plugins)?;
                    deploy_submission(flow, plugins, &submissions.policy)?
                }
                (None, Some(id)) if body.plugins.is_empty() => store.deployment(&id)?,
                _ => {
                    return Err(ApiError::bad_request(
                        "send either `flow` (with its `plugins`) or `deployment`, not both",
                    ));
                }
            };
            let loaded = submissions.engine.load_deployment(&deployment)?;
            store.put_deployment(&deployment)?;
            let input = body.input.map(serde_json::Value::Object);
            let (id, _) = start_run(store, &loaded, input.as_ref())?;
            Ok((id, deployment.id))
        })
        .await?;
    Ok((StatusCode::CREATED, Json(Submitted { id, deployment })))
}

/// The components' bytes from their base64 text.
fn decode(plugins: BTreeMap<String, String>) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    plugins
        .into_iter()
        .map(|(name, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(|bytes| (name.clone(), bytes))
                .map_err(|e| ApiError::bad_request(format!("plugins.{name} is not base64: {e}")))
        })
        .collect()
}
