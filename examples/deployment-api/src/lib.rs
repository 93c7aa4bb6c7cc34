//! A small local deployment API, the target of `examples/deploy.yaml`: the endpoints, the
//! bearer-token check, the request log and the in-memory state. `main.rs` serves it on
//! 127.0.0.1:8700; tests serve [`router`] on a port of their own.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// How the API behaves.
pub struct Config {
    /// The bearer token every request needs.
    pub token: String,
    /// How long a rollout takes before the deployment is live.
    pub rollout: Duration,
    /// How many health checks of each live deployment fail before one passes.
    pub flaky_checks: u32,
}

/// One deployment.
struct Deployment {
    id: String,
    version: String,
    /// The `x-idempotency-key` it was created with.
    key: String,
    started: Instant,
    live: bool,
    /// The health checks asked of it once live.
    checks: u32,
}

impl Deployment {
    fn json(&self) -> Value {
        let status = if self.live { "live" } else { "rolling-out" };
        json!({ "id": self.id, "version": self.version, "status": status })
    }
}

/// What runs now and every deployment made, oldest first.
struct Target {
    current: String,
    deployments: Vec<Deployment>,
}

struct Shared {
    config: Config,
    target: Mutex<Target>,
}

type App = Arc<Shared>;

impl Shared {
    /// The target, with every rollout whose time is up made live (in order, so the newest
    /// live one is `current`).
    fn target(&self) -> MutexGuard<'_, Target> {
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let Target {
            current,
            deployments,
        } = &mut *target;
        for d in deployments.iter_mut().filter(|d| !d.live) {
            if d.started.elapsed() >= self.config.rollout {
                d.live = true;
                current.clone_from(&d.version);
            }
        }
        target
    }
}

/// The service: every route behind the token check, every request logged.
pub fn router(config: Config) -> Router {
    let app: App = Arc::new(Shared {
        config,
        target: Mutex::new(Target {
            current: "1.0".into(),
            deployments: Vec::new(),
        }),
    });
    Router::new()
        .route("/v1/health", get(|| async { Json(json!({ "ok": true })) }))
        .route("/v1/current", get(current))
        .route("/v1/deployments", post(create))
        .route("/v1/deployments/{id}", get(deployment))
        .route("/v1/deployments/{id}/health", get(health))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn(log))
        .with_state(app)
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unknown(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no deployment {id}"))
}

/// Prints `METHOD PATH STATUS` for every request served.
async fn log(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    println!("{method} {path} {}", response.status().as_u16());
    response
}

/// Answers 401 unless the request carries `authorization: Bearer <token>`.
async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if same(token.as_bytes(), app.config.token.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            let challenge = header::HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            response
        }
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn current(State(app): State<App>) -> Json<Value> {
    Json(json!({ "version": app.target().current }))
}

#[derive(Deserialize)]
struct NewDeployment {
    version: String,
}

/// Starts a rollout, or answers the one already started with this idempotency key.
async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Json<NewDeployment>, JsonRejection>,
) -> Response {
    let Json(new) = match body {
        Ok(body) => body,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let Some(key) = headers
        .get("x-idempotency-key")
        .and_then(|v| v.to_str().ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "the x-idempotency-key header is missing",
        );
    };
    let mut target = app.target();
    if let Some(d) = target.deployments.iter().find(|d| d.key == key) {
        if d.version != new.version {
            let message = format!(
                "key {key} already deployed {}, not {}",
                d.version, new.version
            );
            return error(StatusCode::CONFLICT, message);
        }
        return (StatusCode::ACCEPTED, Json(d.json())).into_response();
    }
    let d = Deployment {
        id: format!("dep-{}", target.deployments.len() + 1),
        version: new.version,
        key: key.to_string(),
        started: Instant::now(),
        live: false,
        checks: 0,
    };
    let answer = (StatusCode::ACCEPTED, Json(d.json())).into_response();
    target.deployments.push(d);
    answer
}

async fn deployment(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.target().deployments.iter().find(|d| d.id == id) {
        Some(d) => Json(d.json()).into_response(),
        None => unknown(&id),
    }
}

/// 503 while rolling out and for the first `flaky_checks` asks once live, then 200.
async fn health(State(app): State<App>, Path(id): Path<String>) -> Response {
    let flaky = app.config.flaky_checks;
    let mut target = app.target();
    let Some(d) = target.deployments.iter_mut().find(|d| d.id == id) else {
        return unknown(&id);
    };
    if !d.live {
        return error(StatusCode::SERVICE_UNAVAILABLE, "still rolling out");
    }
    if d.checks < flaky {
        d.checks += 1;
        let message = format!(
            "health check {} of {id} failed (flaky on purpose)",
            d.checks
        );
        return error(StatusCode::SERVICE_UNAVAILABLE, message);
    }
    Json(json!({ "ok": true, "id": d.id, "version": d.version })).into_response()
}
