//! The stepflow server: one process that holds every run of a store and drives each when it
//! is due, so a `wait-for` with `every: 1h` or a ten-minute retry back-off needs nobody to
//! come back and type `resume`.
//!
//! [`Server::run`] ties four parts together, one file each:
//!
//! - the **scheduler** (`scheduler.rs`) claims due runs up to the concurrency limit (a lease
//!   per run, so no other driver saves its steps), hands them to the drivers, and sleeps until
//!   the earliest of: the next due time, a drive ending, the idle poll (one cheap query to
//!   notice runs submitted by another process) or a stop request. Idle, it does no work per
//!   waiting run;
//! - the **drivers** (`drivers.rs`): a bounded pool of OS threads, each driving one run at a
//!   time with the engine's own [`Driver`](stepflow_engine::Driver); a drive ends at the run's
//!   next wait, which goes back to the store until it is due. A run's flow is loaded once and
//!   cached; a run whose flow cannot be loaded is marked failed with the reason;
//! - **group commit** (`writer.rs`): one writer thread owns the write connection; drivers hand
//!   it their saves through a channel, and it commits all that have arrived in one
//!   transaction (one fsync) before it acknowledges each. Drivers see it as a
//!   [`GroupCommitStore`], an ordinary [`Store`](stepflow_store::Store);
//! - **logs** (`log.rs`): [`LogObserver`] writes one `tracing` line per finished step.
//!
//! A first stop request stops claiming and lets every step in flight finish and be saved; a
//! second abandons them (they are redelivered on the next start). On start, runs whose owner
//! died are picked up and their in-flight step is redelivered.
//!
//! The server knows no terminal, command line, signal or HTTP: the front end turns signals
//! into [`Stop`](stepflow_engine::Stop) requests, installs the `tracing` subscriber and
//! renders the [`Summary`] or [`ServerError`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use stepflow_engine::{Engine, Stop};
//! use stepflow_server::{Server, ServerConfig};
//!
//! let engine = Engine::new(stepflow_engine::default_cache_dir())?;
//! let (stop, requests) = Stop::new();
//! // Front ends call `stop.request()` on SIGTERM or Ctrl-C.
//! let summary = Server::new(ServerConfig::new(stepflow_store::Database::File("runs.db".into())))
//!     .run(engine, requests)
//!     .await?;
//! println!("{} runs completed", summary.completed);
//! # drop(stop);
//! # Ok(())
//! # }
//! ```

mod drivers;
mod due;
mod error;
mod group_store;
mod log;
mod scheduler;
mod server;
mod writer;

pub use drivers::ObserverFactory;
pub use error::ServerError;
pub use group_store::GroupCommitStore;
pub use log::LogObserver;
pub use server::{Server, ServerConfig, Summary};
pub use writer::WriterStats;
