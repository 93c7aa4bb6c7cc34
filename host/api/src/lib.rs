//! The HTTP API and the web page of a stepflow server, for the people and systems that operate
//! runs: list and read runs and their histories, send signals, cancel, resume, read deployments,
//! follow a run live (server-sent events), and an OpenAPI 3.1 document of all of it at
//! `/openapi.json`.
//!
//! This is the only crate that knows HTTP. It never calls the scheduler (`stepflow-server`):
//! both open the same store, and meet there. A signal sent here is a row in the run's inbox
//! that also makes the run due; the scheduler notices the commit and drives the run.
//!
//! - [`serve`] binds the address in [`ApiConfig`] (127.0.0.1 unless told otherwise) and serves
//!   until its shutdown future completes;
//! - [`router`] is the same service without a socket, and [`openapi`] the document;
//! - writes need the bearer token of [`Token`] (created on first start in a file next to the
//!   database, readable only by its user); reads may be made to need it too.
//!
//! Modules, one job each: `auth` (the token and the check of every request), `error` (the one
//! JSON shape of every error), `extract` (request extractors whose refusals use that shape),
//! `stores` (the store connections requests share), `runs` (listing and reading runs),
//! `actions` (signal, cancel, resume, rerun from a step), `submit` (new runs, and the policy their grants
//! meet), `deployments`, `events` (live updates), `web` (the
//! page), `doc` (the OpenAPI document).

mod actions;
mod auth;
mod deployments;
mod doc;
mod error;
mod events;
mod extract;
mod runs;
mod stores;
mod submit;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use auth::{Token, TokenFile};
pub use doc::openapi;
pub use error::ApiError;
pub use submit::Submissions;

/// The largest submission body: a flow with its components, base64-encoded.
pub const MAX_SUBMISSION: usize = 256 << 20;

/// What the API serves and how.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where to listen; port 0 picks a free one (the bound address is logged).
    pub listen: SocketAddr,
    /// The run database.
    pub db: stepflow_store::Database,
    /// The bearer token writes need.
    pub token: Token,
    /// Whether reads need the token too (by default only writes do).
    pub reads_need_token: bool,
    /// How submissions are checked; `None` refuses them.
    pub submissions: Option<Submissions>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound (in use, or not this host's).
    #[error("cannot listen on {addr}: {source}; choose another address with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error while serving.
    #[error("the HTTP API stopped: {0}")]
    Serve(std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub stores: Arc<stores::Stores>,
    pub auth: Arc<auth::Auth>,
    pub changes: events::Changes,
    pub submissions: Option<Submissions>,
}

/// The API and the page as a service, on the database at `config.db` (the address is not
/// used): for tests and for embedding in another server.
pub fn router(config: &ApiConfig) -> Router {
    let stores = Arc::new(stores::Stores::new(config.db.clone()));
    let state = AppState {
        changes: events::Changes::watch(config.db.clone()),
        stores,
        auth: Arc::new(auth::Auth::new(
            config.token.clone(),
            config.reads_need_token,
        )),
        submissions: config.submissions.clone(),
    };
    let api = Router::new()
        .route(
            "/runs",
            get(runs::list)
                .post(submit::submit)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_SUBMISSION)),
        )
        .route("/runs/counts", get(runs::counts))
        .route("/runs/{id}", get(runs::one))
        .route("/runs/{id}/history", get(runs::history))
        .route("/runs/{id}/events", get(events::stream))
        .route("/runs/{id}/signals", post(actions::signal))
        .route("/runs/{id}/cancel", post(actions::cancel))
        .route("/runs/{id}/resume", post(actions::resume))
        .route("/runs/{id}/rerun", post(actions::rerun))
        .route("/flows", get(deployments::flows))
        .route("/deployments", get(deployments::list))
        .route("/deployments/{id}", get(deployments::one))
        .route("/deployments/{id}/diagram", get(deployments::diagram))
        .route("/deployments/{id}/plugins", get(deployments::plugins));
    Router::new()
        .nest("/api/v1", api)
        .route("/openapi.json", get(doc::serve))
        .merge(web::routes())
        .fallback(error::no_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::check,
        ))
        .with_state(state)
}

/// Serves the API on `config.listen` until `shutdown` completes; `bound` hears the address
/// actually bound (useful with port 0) before the first request is accepted.
pub async fn serve(
    config: ApiConfig,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    bound(addr);
    axum::serve(listener, router(&config))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}
