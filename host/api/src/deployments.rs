//! Flows and their deployments: which exist, a deployment's flow source, its flow's diagram,
//! and its plugins' exports.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Path, Query};
use crate::runs::{Transition, page_size, transitions};

/// A deployment as a listing shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeploymentSummary {
    /// Its id: the SHA-256 of its content.
    id: String,
    /// Its flow's name.
    flow: String,
    /// Where its flow file was when deployed.
    source_path: String,
    /// When it was first stored (Unix milliseconds).
    created_ms: u64,
    /// How many runs use it.
    runs: u64,
    /// Its plugins.
    plugins: Vec<PluginRef>,
}

/// A plugin of a deployment.
#[derive(Serialize, ToSchema)]
pub(crate) struct PluginRef {
    /// Its name in the flow.
    name: String,
    /// The SHA-256 of its component.
    sha256: String,
}

/// Which deployments to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeploymentQuery {
    /// Only deployments of this flow.
    flow: Option<String>,
    /// At most this many (1 to 500; default 50), newest first.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// Lists deployments, newest first.
#[utoipa::path(get, path = "/api/v1/deployments", operation_id = "list_deployments", params(DeploymentQuery), tag = "deployments",
    responses((status = 200, body = Vec<DeploymentSummary>), (status = 400, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(query): Query<DeploymentQuery>,
) -> Result<Json<Vec<DeploymentSummary>>, ApiError> {
    let limit = page_size(query.limit, 50)?;
    let infos = state
        .stores
        .with(move |_, store| Ok(store.deployments(query.flow.as_deref(), limit)?))
        .await?;
    Ok(Json(
        infos
            .into_iter()
            .map(|d| DeploymentSummary {
                id: d.id,
                flow: d.flow,
                source_path: d.source_path,
                created_ms: d.created_ms,
                runs: d.runs,
                plugins: d
                    .plugins
                    .into_iter()
                    .map(|(name, sha256)| PluginRef { name, sha256 })
                    .collect(),
            })
            .collect(),
    ))
}

/// A deployment's flow source.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeploymentSource {
    /// Its id.
    id: String,
    /// Its flow's name.
    flow: String,
    /// The flow file's text.
    source: String,
    /// Where the flow file was when deployed.
    source_path: String,
    /// When it was first stored (Unix milliseconds).
    created_ms: u64,
    /// Its plugins, with the size of each component.
    plugins: Vec<PluginSize>,
}

/// A plugin of a deployment, with its size.
#[derive(Serialize, ToSchema)]
pub(crate) struct PluginSize {
    /// Its name in the flow.
    name: String,
    /// The SHA-256 of its component.
    sha256: String,
    /// The component's size in bytes.
    bytes: u64,
}

/// Reads a deployment: its flow source and plugins (any 8 or more leading hex digits of its id
/// name it).
#[utoipa::path(get, path = "/api/v1/deployments/{id}", operation_id = "get_deployment", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id, or 8+ leading hex digits")),
    responses((status = 200, body = DeploymentSource), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeploymentSource>, ApiError> {
    let d = state
        .stores
        .with(move |_, store| Ok(store.deployment(&id)?))
        .await?;
    Ok(Json(DeploymentSource {
        plugins: d
            .plugins
            .iter()
            .map(|p| PluginSize {
                name: p.name.clone(),
                sha256: p.sha256.clone(),
                bytes: p.bytes.len() as u64,
            })
            .collect(),
        id: d.id,
        flow: d.flow,
        source: d.source,
        source_path: d.source_path,
        created_ms: d.created_ms,
    }))
}

/// A flow's diagram, three ways.
#[derive(Serialize, ToSchema)]
pub(crate) struct Diagram {
    /// Mermaid `stateDiagram-v2` text.
    mermaid: String,
    /// Graphviz DOT text.
    dot: String,
    /// The transitions, to draw it yourself.
    transitions: Vec<Transition>,
}

/// Draws a deployment's flow.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/diagram", operation_id = "get_deployment_diagram", tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id, or 8+ leading hex digits")),
    responses((status = 200, body = Diagram), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn diagram(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Diagram>, ApiError> {
    let flow = state
        .stores
        .with(move |stores, store| stores.flow(store, &id))
        .await?;
    Ok(Json(Diagram {
        mermaid: flow.to_mermaid(),
        dot: flow.to_dot(),
        transitions: transitions(&flow),
    }))
}

/// A plugin of a deployment, inspected: what its component exports.
#[derive(Serialize, ToSchema)]
pub(crate) struct PluginExports {
    /// Its name in the flow.
    name: String,
    /// The SHA-256 of its component.
    sha256: String,
    /// The component's size in bytes.
    bytes: u64,
    /// Every exported function: a step function's kind, or why it is not one.
    exports: Vec<ExportInfo>,
}

/// One exported function of a plugin.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExportInfo {
    /// How a flow names it: `fn`, or `interface/fn`.
    name: String,
    /// `action`, `condition` or `error-handler`; null when it is not a step function.
    kind: Option<String>,
    /// Why it is not a step function; null when it is one.
    why_not: Option<String>,
}

/// Inspects a deployment's plugins: each component's exported functions and their kinds, as
/// `stepflow inspect` shows them (the components are compiled, or read from the cache).
#[utoipa::path(get, path = "/api/v1/deployments/{id}/plugins", operation_id = "inspect_plugins",
    tag = "deployments",
    params(("id" = String, Path, description = "The deployment's id, or 8+ leading hex digits")),
    responses((status = 200, body = Vec<PluginExports>), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(crate) async fn plugins(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<PluginExports>>, ApiError> {
    let Some(submissions) = state.submissions.clone() else {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this server loads no plugins for the API",
        ));
    };
    let plugins = state
        .stores
        .with(move |_, store| {
            let deployment = store.deployment(&id)?;
            let loaded = submissions.engine.load_deployment(&deployment)?;
            Ok(deployment
                .plugins
                .iter()
                .map(|p| PluginExports {
                    name: p.name.clone(),
                    sha256: p.sha256.clone(),
                    bytes: p.bytes.len() as u64,
                    exports: loaded
                        .plugins
                        .get(&p.name)
                        .map(|plugin| plugin.exports())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| ExportInfo {
                            name: e.name,
                            kind: e.kind.as_ref().ok().map(|k| kind_name(*k).to_string()),
                            why_not: e.kind.err(),
                        })
                        .collect(),
                })
                .collect())
        })
        .await?;
    Ok(Json(plugins))
}

/// A function kind as flow files and the WIT package spell it.
fn kind_name(kind: stepflow_model::FunctionKind) -> &'static str {
    match kind {
        stepflow_model::FunctionKind::Action => "action",
        stepflow_model::FunctionKind::Condition => "condition",
        stepflow_model::FunctionKind::ErrorHandler => "error-handler",
    }
}

/// A flow: its deployments and runs.
#[derive(Serialize, ToSchema)]
pub(crate) struct Flow {
    /// The flow's name.
    name: String,
    /// How many deployments it has.
    deployments: u64,
    /// Its newest deployment: its source and diagram are the flow's now.
    latest_deployment: String,
    /// When that one was stored (Unix milliseconds).
    latest_ms: u64,
    /// How many runs it has, on any deployment.
    runs: u64,
}

/// Lists the flows that have deployments, by name.
#[utoipa::path(get, path = "/api/v1/flows", operation_id = "list_flows", tag = "deployments",
    responses((status = 200, body = Vec<Flow>)))]
pub(crate) async fn flows(State(state): State<AppState>) -> Result<Json<Vec<Flow>>, ApiError> {
    let flows = state.stores.with(|_, store| Ok(store.flows()?)).await?;
    Ok(Json(
        flows
            .into_iter()
            .map(|f| Flow {
                name: f.name,
                deployments: f.deployments,
                latest_deployment: f.latest_deployment,
                latest_ms: f.latest_ms,
                runs: f.runs,
            })
            .collect(),
    ))
}
