//! `stepflow server`: drive every due run of the database until Ctrl-C or SIGTERM.

use std::path::Path;

use stepflow_server::{Server, ServerConfig};

use super::server_engine;
use crate::error::Exit;
use crate::views::summary;

/// `stepflow server`.
pub async fn server(db: &Path, concurrency: usize, json: bool) -> Result<(), Exit> {
    // Listening before anything else, so an early SIGTERM is a clean stop, not a kill.
    let stop = crate::signals::stop_requests();
    let engine = server_engine(concurrency)?;
    let config = ServerConfig {
        concurrency,
        max_data_bytes: super::max_data_bytes(),
        ..ServerConfig::new(db.to_path_buf())
    };
    tracing::info!(
        db = %db.display(),
        concurrency,
        owner = %config.owner,
        "server started; Ctrl-C or SIGTERM stops it after the steps in flight"
    );
    let summary = Server::new(config).run(engine, stop).await?;
    summary::print(&summary, json);
    Ok(())
}
