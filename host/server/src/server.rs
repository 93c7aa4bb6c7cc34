//! [`Server`]: its configuration, and the run that ties the writer, the drivers and the
//! scheduler together.

use std::sync::Arc;
use std::time::Duration;
use stepflow_store::Database;

use stepflow_engine::{Engine, MIN_LEASE, StopRequests, this_owner};
use stepflow_model::{Clock, SystemClock};

use crate::drivers::{DriverSetup, Drivers, ObserverFactory};
use crate::error::ServerError;
use crate::log::LogObserver;
use crate::scheduler::{Drained, Scheduler};
use crate::writer::{Request, Writer, WriterStats};

/// What a server drives and how: one database, a bound on runs driven at once, who it is.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The run database (a SQLite file, created if missing, or PostgreSQL).
    pub db: Database,
    /// The most runs driven at once.
    pub concurrency: usize,
    /// How many OS threads drive them (each drives many runs at once, switching while saves
    /// wait): four per core by default; never more than `concurrency`.
    pub drive_threads: Option<usize>,
    /// The lease owner id this server claims runs as (`host:pid:start` by default).
    pub owner: String,
    /// How long a claim lasts unless renewed; drivers renew it, and a flow whose calls may
    /// run longer gets a longer one.
    pub lease_ttl: Duration,
    /// How often an idle server asks whether another process added runs (one cheap query).
    pub idle_poll: Duration,
    /// The largest a run's data document may grow (as JSON); a step that would pass it fails.
    pub max_data_bytes: u64,
}

impl ServerConfig {
    /// A configuration for `db` with the defaults: 16 runs at once, this process as owner,
    /// the engine's shortest lease, the engine's data limit, and an idle poll of 1 s on SQLite
    /// (one cheap query) or 100 ms on PostgreSQL (where it reads the count of notifications in
    /// memory and queries nothing, so new work is picked up sooner for free).
    pub fn new(db: Database) -> Self {
        let idle_poll = match db {
            Database::File(_) => Duration::from_secs(1),
            Database::Postgres(_) => Duration::from_millis(100),
        };
        ServerConfig {
            db,
            concurrency: 16,
            drive_threads: None,
            owner: this_owner(),
            lease_ttl: MIN_LEASE,
            idle_poll,
            max_data_bytes: stepflow_engine::DEFAULT_MAX_DATA_BYTES,
        }
    }
}

/// What a server did before it stopped, for its front end to report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Drives started (a run that waits is driven once per stretch between waits).
    pub drives: u64,
    /// Runs that completed.
    pub completed: u64,
    /// Runs that failed (a step error no retry took).
    pub failed: u64,
    /// Drives that ended at a wait or back-off, the run back in the store until due.
    pub parked: u64,
    /// Drives a stop request ended; those runs are resumable.
    pub stopped: u64,
    /// Runs cancelled by an operator while driven.
    pub cancelled: u64,
    /// Runs marked failed because their flow could not be loaded.
    pub unloadable: u64,
    /// Drives that failed for a reason outside the run (logged); retried later.
    pub errors: u64,
    /// Runs of owners found dead at start, freed to be driven (and redelivered).
    pub taken_over: u64,
    /// Steps in flight left unsaved by a second stop request (redelivered on the next start).
    pub abandoned: u64,
    /// Step-save transactions the writer committed (one fsync each).
    pub save_transactions: u64,
    /// Step saves in them.
    pub saves: u64,
}

/// Drives every due run of one store until stopped: the durable workflow engine as a
/// long-running process (the front end adds signals, logging and a command line).
pub struct Server {
    config: ServerConfig,
    observer: ObserverFactory,
    stats: Arc<WriterStats>,
}

impl Server {
    /// A server with `config` that logs every finished step ([`LogObserver`]).
    pub fn new(config: ServerConfig) -> Self {
        Server {
            config,
            observer: Arc::new(|run| Box::new(LogObserver::new(run))),
            stats: Arc::default(),
        }
    }

    /// Replaces the per-run observer (e.g. to count or record steps in tests).
    pub fn with_observer(mut self, observer: ObserverFactory) -> Self {
        self.observer = observer;
        self
    }

    /// The writer's live counters (transactions, saves), readable while the server runs.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Drives due runs until `stop` gets a request, then drains: steps in flight finish and
    /// are saved, leases are released (a second request abandons the steps in flight; they
    /// are redelivered on the next start). Runs whose owner died are picked up at start.
    pub async fn run(self, engine: Engine, stop: StopRequests) -> Result<Summary, ServerError> {
        let config = self.config;
        if config.concurrency == 0 {
            return Err(ServerError::Config("concurrency must be at least 1".into()));
        }
        if config.idle_poll.is_zero() {
            return Err(ServerError::Config(
                "the idle poll must be longer than zero".into(),
            ));
        }
        let ttl_ms = u64::try_from(config.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let (writer, handle) = Writer::start(&config.db, self.stats.clone())?;
        let mut summary = Summary::default();
        let (owner, now_ms) = (config.owner.clone(), SystemClock.now_ms());
        let freed = handle
            .ask("taking over runs of dead owners", |reply| {
                Request::FreeDead {
                    owner,
                    ttl_ms,
                    now_ms,
                    reply,
                }
            })
            .await?;
        summary.taken_over = freed as u64;
        if freed > 0 {
            tracing::info!(runs = freed, "picking up runs whose owner died");
        }
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let drivers = Drivers::start(DriverSetup {
            engine,
            stop: stop.clone(),
            observer: self.observer,
            lease_ttl: config.lease_ttl,
            max_data_bytes: config.max_data_bytes,
            done: done_tx,
            writer: handle.clone(),
            stats: self.stats.clone(),
            db: config.db.clone(),
            concurrency: config.concurrency,
            threads: config.drive_threads,
        })?;
        let result = Scheduler {
            writer: &handle,
            drivers: &drivers,
            done: &mut done_rx,
            stop: &stop,
            owner: &config.owner,
            ttl_ms,
            concurrency: config.concurrency,
            idle_poll: config.idle_poll,
        }
        .run(&mut summary)
        .await;
        if result.as_ref().is_ok_and(|d| *d == Drained::Abandoned) {
            // The driver threads are inside plugin calls that cannot be interrupted; they end
            // with the process. Their runs keep this server's leases, which the next start
            // (or anyone, once they expire) takes over as a dead owner's.
            drivers.detach();
            writer.detach();
        } else {
            drivers.join();
            drop(handle);
            writer.join()?;
        }
        let (save_transactions, saves, _) = self.stats.snapshot();
        summary.save_transactions = save_transactions;
        summary.saves = saves;
        result.map(|_| summary)
    }
}
