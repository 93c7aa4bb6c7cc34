//! What can stop a server: the store, the engine, or a thread it could not start.

use stepflow_engine::EngineError;
use stepflow_store::StoreError;

/// Why [`Server::run`](crate::Server::run) ended with an error; runs are left resumable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The run database refused or failed an operation the scheduler needs.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed outside any one run.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The configuration cannot work.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The operating system would not start a thread.
    #[error("cannot start {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The writer thread ended unexpectedly, so nothing more can be saved.
    #[error("the server's writer thread stopped unexpectedly; runs in flight will be redelivered")]
    WriterGone,
}
