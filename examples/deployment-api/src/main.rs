//! A small local deployment API, the target of `examples/deploy.yaml` (its `deployer` plugin
//! calls it over HTTP):
//!
//! ```text
//! cargo run -p deployment-api                      # in one terminal: listens on 127.0.0.1:8700
//! cargo stepflow run --build examples/deploy.yaml  # in another
//! ```
//!
//! Every request needs `authorization: Bearer <token>`, the token being the contents of
//! `examples/deployment-api.token` (a demo value, committed on purpose: not a secret) or of
//! `--token-file`. The endpoints, all JSON:
//!
//! - `GET /v1/health`: `{"ok": true}`;
//! - `GET /v1/current`: `{"version": ...}`, what runs now (`1.0` at start);
//! - `POST /v1/deployments` with `{"version": ...}` and an `x-idempotency-key` header: 202 and
//!   `{"id", "version", "status": "rolling-out"}`; the same key again answers the same
//!   deployment;
//! - `GET /v1/deployments/{id}`: its `status` turns `live` after `--rollout-ms` (and `current`
//!   becomes its version);
//! - `GET /v1/deployments/{id}/health`: 503 for the first `--flaky-checks` asks once it is live,
//!   then 200.
//!
//! It prints one line per request it serves (method, path, status). State lives in memory only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The command line.
#[derive(Parser)]
#[command(about = "A small local deployment API for examples/deploy.yaml")]
struct Options {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// The bearer token every request needs (default: examples/deployment-api.token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// How long a rollout takes before it is live, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    rollout_ms: u64,
    /// How many health checks of each deployment fail first.
    #[arg(long, default_value_t = 1)]
    flaky_checks: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = Options::parse();
    // The demo token beside deploy.yaml, wherever this runs from.
    let token_file = options.token_file.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("deployment-api.token")
    });
    let file = token_file.display();
    // Read as stepflow reads a secret file: a trailing newline is dropped.
    let token = match std::fs::read_to_string(&token_file) {
        Ok(text) if !text.trim().is_empty() => text.trim_end_matches(['\n', '\r']).to_string(),
        Ok(_) => {
            eprintln!("deployment-api: the token file {file} is empty");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("deployment-api: cannot read the token file {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("deployment-api: cannot listen on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "deployment API on http://{} (token from {file}; a rollout takes {} ms; health checks failing first: {})",
        options.listen, options.rollout_ms, options.flaky_checks
    );
    let app = deployment_api::router(deployment_api::Config {
        token,
        rollout: Duration::from_millis(options.rollout_ms),
        flaky_checks: options.flaky_checks,
    });
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deployment-api: {e}");
            ExitCode::FAILURE
        }
    }
}
