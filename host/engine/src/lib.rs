//! The stepflow engine: from a flow file to a runnable flow, and one run driven to its end.
//!
//! This crate is what every front end of stepflow shares — the `stepflow` command today, a
//! server and an HTTP API later — and what a Rust program embeds to run flow files itself:
//!
//! - [`Engine::load`] reads a flow file, runs its plugins' `build` commands when asked, maps the
//!   file's grants to sandbox [`Grants`](stepflow_plugin::Grants), loads each plugin once and
//!   resolves every `plugin.function` use, reporting each mistake at its place in the file;
//! - [`Engine::deploy`] takes a flow file's source and its plugins' bytes into a content-addressed
//!   [`Deployment`] to keep in the store, and [`Engine::load_deployment`] loads one back without
//!   reading any file, so a run resumes after its files were moved, edited or rebuilt;
//!   [`upgrade_run`] moves a run onto another deployment of its flow when its state fits;
//! - [`start_run`] and [`prepare_resume`] create a run in a [`Store`](stepflow_store::Store) or
//!   check that a saved one can go on;
//! - [`claim`] makes this process the run's one driver (a lease in the store that every save
//!   checks; a dead local owner is taken over at once);
//! - [`rerun_from`] starts a new run from the state an old one had after any step (its history
//!   replayed through the flow from its first state, no plugin called);
//! - [`send_signal`] sends a signal to a run whose flow waits for it (the run's inbox, read by
//!   its driver);
//! - [`Driver::drive`] moves a run forward: apply, save the new state and its history entry in
//!   one store call, sleep through waits, stop when asked ([`Stop`]). It reports what happens
//!   to an [`Observer`].
//!
//! The engine knows nothing of terminals, command lines, HTTP or exit codes: it returns
//! [`EngineError`] and [`Finish`], and front ends decide what to show.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use stepflow_engine::{
//!     DriveOptions, Driver, Engine, Finish, Stop, claim, lease_ttl, start_run, this_owner,
//! };
//! use stepflow_model::{Clock, SystemClock};
//! use stepflow_store::SqliteStore;
//!
//! let engine = Engine::new(stepflow_engine::default_cache_dir())?;
//! let loaded = engine.load("examples/quickstart.yaml".as_ref())?;
//! let mut store = SqliteStore::open("runs.db".as_ref())?;
//! let (run_id, state) = start_run(&mut store, &loaded, None)?;
//! // One driver per run: claim it, so a second process cannot drive it too.
//! let ttl = lease_ttl(loaded.longest_call());
//! let lease = claim(&mut store, &run_id, &this_owner(), ttl, SystemClock.now_ms())?;
//! let (_stop, requests) = Stop::new();
//! let finish = Driver::new(&loaded.flow, &mut store, &mut (), requests)
//!     .with_lease(lease, ttl)
//!     .drive(&run_id, state, DriveOptions::default())
//!     .await?;
//! assert!(matches!(finish, Finish::Completed(_)));
//! # Ok(())
//! # }
//! ```

mod build;
mod database;
mod deployment;
mod driver;
mod error;
mod functions;
mod grants;
mod lease;
mod load;
mod observer;
mod paths;
mod rerun;
mod run;
mod signal;
mod stop;
mod submission;
mod time;
mod upgrade;

pub use build::DEFAULT_BUILD_TIMEOUT;
pub use database::{open_store, open_store_read_only};
pub use deployment::{SHORT_ID_LEN, deployment_id, shape_deployment, short_id};
pub use driver::{DEFAULT_MAX_DATA_BYTES, DriveOptions, Driver, Finish};
pub use error::EngineError;
pub use lease::{MIN_LEASE, claim, lease_ttl, owner_is_dead, this_owner};
pub use load::{Engine, LoadedFlow, shape};
pub use observer::{Observer, Stopped, Waiting};
pub use paths::{default_cache_dir, default_data_dir, default_db_path, default_tools_dir};
pub use rerun::rerun_from;
pub use run::{Resumable, new_run_id, prepare_resume, start_claimed_run, start_run, stored_status};
pub use signal::{SignalRequest, send_signal};
pub use stepflow_store::Database;
pub use stepflow_store::{DeployedPlugin, Deployment};
pub use stop::{Stop, StopRequests};
pub use submission::{AllowedDir, SUBMITTED_FLOW_PATH, SubmitPolicy, deploy_submission};
pub use time::utc_time;
pub use upgrade::{Upgrade, UpgradeRefusal, check_upgrade, upgrade_run};
