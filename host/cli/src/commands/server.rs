//! `stepflow server`: drive every due run of the database until Ctrl-C or SIGTERM, and serve
//! the HTTP API and the web page beside it. The two share nothing but the database.

use std::net::SocketAddr;
use stepflow_store::Database;

use stepflow_api::{ApiConfig, TokenFile};
use stepflow_engine::StopRequests;
use stepflow_server::{Server, ServerConfig};
use tokio::task::JoinHandle;

use super::server_engine;
use crate::error::Exit;
use crate::views::summary;

/// How the HTTP API is served.
pub struct Api {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Whether reads need the token too.
    pub reads_need_token: bool,
    /// What flows submitted over HTTP may be granted.
    pub policy: stepflow_engine::SubmitPolicy,
}

/// The policy of `--allow-dir DIR[:rw]` and `--allow-env NAME`.
pub fn policy(dirs: &[String], env: Vec<String>) -> stepflow_engine::SubmitPolicy {
    stepflow_engine::SubmitPolicy {
        dirs: dirs
            .iter()
            .map(|d| match d.strip_suffix(":rw") {
                Some(path) => stepflow_engine::AllowedDir {
                    path: path.into(),
                    writable: true,
                },
                None => stepflow_engine::AllowedDir {
                    path: d.into(),
                    writable: false,
                },
            })
            .collect(),
        env,
    }
}

/// How many runs a server drives at once, and on how many threads (`None`: four per core).
pub struct Drives {
    /// The most runs driven at once.
    pub concurrency: usize,
    /// The threads that drive them.
    pub threads: Option<usize>,
}

/// `stepflow server`.
pub async fn server(
    db: &Database,
    drives: Drives,
    lease: std::time::Duration,
    api: Option<Api>,
    json: bool,
) -> Result<(), Exit> {
    if lease < std::time::Duration::from_secs(1) {
        return Err(Exit::usage(format!(
            "--lease {lease:?} is too short: a server renews its claims at half the lease, so \
             give at least 1s (the default is 60s)"
        )));
    }
    // Listening before anything else, so an early SIGTERM is a clean stop, not a kill.
    let stop = crate::signals::stop_requests();
    let Drives {
        concurrency,
        threads,
    } = drives;
    let engine = server_engine(concurrency)?;
    let config = ServerConfig {
        concurrency,
        drive_threads: threads,
        lease_ttl: lease,
        max_data_bytes: super::max_data_bytes(),
        ..ServerConfig::new(db.clone())
    };
    // The store first, so the API's token file lands next to a database that exists.
    drop(super::open_store(db)?);
    let api = match api {
        Some(api) => Some(start_api(db, api, stop.clone()).await?),
        None => None,
    };
    tracing::info!(
        db = %db,
        concurrency,
        owner = %config.owner,
        "server started; Ctrl-C or SIGTERM stops it after the steps in flight"
    );
    let summary = Server::new(config).run(engine, stop).await;
    // Open event streams would hold a graceful shutdown forever: the scheduler has stopped,
    // so the API goes too.
    if let Some(api) = api {
        api.abort();
    }
    summary::print(&summary?, json);
    Ok(())
}

/// Binds the API and serves it on a task until `stop`; the token file is created (and the
/// token printed, once) on the first start.
async fn start_api(db: &Database, api: Api, stop: StopRequests) -> Result<JoinHandle<()>, Exit> {
    let db = match db {
        Database::File(path) => {
            Database::File(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
        }
        other => other.clone(),
    };
    let token = match &db {
        Database::File(path) => TokenFile::for_database(path),
        // No file to sit beside: the token lives with this user's default database, one
        // per URL (servers on other hosts are given a copy of it).
        Database::Postgres(_) => TokenFile::at(postgres_token_path(&db)),
    }
    .map_err(|e| Exit::storage(e.to_string()))?;
    let created = token
        .created
        .then(|| (token.path.clone(), token.token.clone()));
    let config = ApiConfig {
        listen: api.listen,
        db,
        token: token.token,
        reads_need_token: api.reads_need_token,
        submissions: Some(stepflow_api::Submissions {
            engine: std::sync::Arc::new(super::server_engine(4)?),
            policy: api.policy,
        }),
    };
    let (bound_tx, bound) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let shutdown = async move { stop.reached(1).await };
        let served = stepflow_api::serve(
            config,
            move |addr| {
                let _ = bound_tx.send(addr);
            },
            shutdown,
        )
        .await;
        served.map_err(|e| e.to_string())
    });
    match bound.await {
        Ok(addr) => {
            if let Some((path, token)) = created {
                eprintln!(
                    "created the API token in {} (readable only by you); HTTP writes need it:\n  \
                     curl -H 'Authorization: Bearer {}' -X POST http://{addr}/api/v1/runs/RUN/cancel\n  \
                     the web page at http://{addr}/ asks for it once",
                    path.display(),
                    token.as_str(),
                );
            }
            tracing::info!(addr = %addr, "api listening: http://{addr}/ (the web page), http://{addr}/openapi.json");
            Ok(tokio::spawn(async move {
                if let Ok(Err(e)) = task.await {
                    tracing::error!("{e}");
                }
            }))
        }
        Err(_) => {
            let why = match task.await {
                Ok(Err(e)) => e,
                _ => "the HTTP API could not start".to_string(),
            };
            Err(Exit::usage(why))
        }
    }
}

/// Where the API token of a PostgreSQL database is kept: in this user's stepflow data directory
/// (where the default database is), named after the URL (without its password).
fn postgres_token_path(db: &Database) -> std::path::PathBuf {
    let name: String = db
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let path = stepflow_engine::default_data_dir().join(format!("{name}.api-token"));
    if let Some(dir) = path.parent() {
        // A failure shows when the token is written, with the path.
        let _ = std::fs::create_dir_all(dir);
    }
    path
}
