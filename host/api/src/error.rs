//! The one shape of every error the API answers: `{"error": {"code", "message"}}` with a
//! status that says whose fault it is. Store and engine errors are mapped here, and only here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stepflow_engine::EngineError;
use stepflow_store::StoreError;
use utoipa::ToSchema;

/// An error answer: its HTTP status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable code to branch on: `not_found`, `bad_request`, `unauthorized`, `forbidden`,
    /// `not_allowed`, `conflict`, `unknown_signal`, `busy`, `internal`.
    code: String,
    /// What went wrong and what to do, for people.
    message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request the client must change.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A request that conflicts with where the run stands.
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A request without the token it needs.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs the API token: send `Authorization: Bearer <token>`; the token \
             is in the file `<database>.api-token` that `stepflow server` created",
        )
    }

    /// A failure of the server itself.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            // Said without the database's path: that is the server's business, not a client's.
            StoreError::NotFound { id, .. } => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no run `{id}`; GET /api/v1/runs lists the runs"),
            ),
            StoreError::NoDeployment { id, .. } => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no deployment `{id}`; GET /api/v1/deployments lists them"),
            ),
            StoreError::Invalid { .. }
            | StoreError::BadPage { .. }
            | StoreError::AmbiguousDeployment { .. } => Self::bad_request(message),
            StoreError::NotListening { .. }
            | StoreError::Finished { .. }
            | StoreError::Cancelled { .. }
            | StoreError::Leased { .. }
            | StoreError::LeaseLost { .. } => Self::conflict(message),
            StoreError::Busy { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message),
            _ => Self::internal(message),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::UnknownSignal { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_signal", message)
            }
            EngineError::NotAllowed { .. } => {
                Self::new(StatusCode::FORBIDDEN, "not_allowed", message)
            }
            EngineError::Cancelled { .. } | EngineError::Rerun { .. } => Self::conflict(message),
            // What the client sent does not make a runnable flow: the flow file, a component.
            EngineError::Flow(_)
            | EngineError::InvalidFlow { .. }
            | EngineError::Plugin(_)
            | EngineError::Grant { .. }
            | EngineError::Submission { .. } => Self::bad_request(message),
            // Loading a deployment names it; the status is that of what went wrong inside.
            EngineError::Deployment { source, .. } => {
                let inner = ApiError::from(*source);
                Self::new(inner.status, inner.code, message)
            }
            _ => Self::internal(message),
        }
    }
}

/// The answer to a path no route has.
pub(crate) async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such resource: {}; /openapi.json lists what there is",
            uri.path()
        ),
    )
}
