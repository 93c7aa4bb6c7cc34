//! The drivers: a few OS threads (four per core, at most one per run driven at once), each with
//! its own current-thread runtime and read connection, driving many claimed runs at once as
//! tasks, each with the engine's [`Driver`] through a [`GroupCommitStore`]: while one run's
//! save waits for the shared commit, the thread drives the others, so a step costs no thread
//! switch of its own. A run's flow is loaded once and cached (loading, which may compile,
//! runs off the drive threads); a run whose flow cannot be loaded is marked failed with the
//! reason; a plugin that hangs or traps ends only its run's drive (the sandbox's limits turn it
//! into a step error, and a running call yields its thread at every epoch tick).

use std::collections::HashMap;
use std::path::Path;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use stepflow_store::Database;

use stepflow_engine::{
    DriveOptions, Driver, Engine, EngineError, Finish, LoadedFlow, MIN_LEASE, Observer,
    StopRequests, Stopped, lease_ttl, prepare_resume,
};
use stepflow_model::StepFlow;
use stepflow_store::{Lease, RunRecord, RunStatus, StepSave, Store, StoreError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::ServerError;
use crate::group_store::GroupCommitStore;
use crate::writer::{WriterHandle, WriterStats};

/// Makes the observer of one run's drive (the server's default logs each step).
pub type ObserverFactory = Arc<dyn Fn(&str) -> Box<dyn Observer> + Send + Sync>;

/// How one drive ended, as the scheduler counts it.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The run completed.
    Completed,
    /// A step error no retry took failed the run.
    Failed,
    /// The run reached a wait or back-off and went back to the store until it is due.
    Parked,
    /// A stop request ended the drive (the run is resumable).
    Stopped,
    /// An operator cancelled the run.
    Cancelled,
    /// The run's flow could not be loaded (or no longer fits the run): it was marked failed.
    Unloadable,
    /// The drive failed for a reason outside the run (e.g. the store); it is driven again
    /// once its lease is free.
    Error,
}

/// A drive that ended, sent to the scheduler.
#[derive(Debug)]
pub(crate) struct Done {
    pub ended: Ended,
}

/// What every driver thread shares.
struct Shared {
    engine: Engine,
    flows: FlowCache,
    stop: StopRequests,
    observer: ObserverFactory,
    lease_ttl: Duration,
    max_data_bytes: u64,
    done: UnboundedSender<Done>,
    /// Where the runs driven now are counted, for the writer's gathering of saves.
    stats: Arc<WriterStats>,
}

/// The driver threads and the queue of claimed runs of each.
pub(crate) struct Drivers {
    queues: Vec<UnboundedSender<Lease>>,
    next: AtomicUsize,
    threads: Vec<JoinHandle<()>>,
}

/// What a driver thread is given when it starts.
pub(crate) struct DriverSetup {
    pub engine: Engine,
    pub stop: StopRequests,
    pub observer: ObserverFactory,
    pub lease_ttl: Duration,
    pub max_data_bytes: u64,
    pub done: UnboundedSender<Done>,
    pub writer: WriterHandle,
    /// The writer's statistics, where the drivers count the runs they drive.
    pub stats: Arc<WriterStats>,
    pub db: Database,
    /// The most runs driven at once: no more threads than this are started.
    pub concurrency: usize,
    /// How many threads to start (default: four per core).
    pub threads: Option<usize>,
}

impl Drivers {
    /// Starts the driver threads (four per core unless told, never more than the runs driven
    /// at once), each with its own read connection to the database.
    pub(crate) fn start(setup: DriverSetup) -> Result<Drivers, ServerError> {
        // Four per core: one thread per core drives the most steps per second, but a run that
        // comes due then waits behind the others of its thread, which more threads shorten
        // (10,000 timers: p99 lateness 28-39 ms with one per core, 3 ms with four).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let count = setup
            .threads
            .unwrap_or(cores * 4)
            .clamp(1, setup.concurrency.max(1));
        let shared = Arc::new(Shared {
            engine: setup.engine,
            flows: FlowCache::default(),
            stop: setup.stop,
            observer: setup.observer,
            lease_ttl: setup.lease_ttl,
            max_data_bytes: setup.max_data_bytes,
            done: setup.done,
            stats: setup.stats,
        });
        let mut queues = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let read = Arc::new(Mutex::new(stepflow_engine::open_store(&setup.db)?));
            let store = GroupCommitStore::new(setup.writer.clone(), read);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| ServerError::Thread {
                    what: "a driver's runtime for a",
                    source: e,
                })?;
            let (tx, rx) = unbounded_channel();
            let shared = shared.clone();
            let thread = std::thread::Builder::new()
                .name(format!("stepflow-driver-{i}"))
                .spawn(move || driver_thread(shared, &runtime, store, rx))
                .map_err(|e| ServerError::Thread {
                    what: "a driver",
                    source: e,
                })?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Drivers {
            queues,
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// Hands a claimed run to the next driver thread, in turn; false if none is left.
    pub(crate) fn submit(&self, lease: Lease) -> bool {
        if self.queues.is_empty() {
            return false;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.queues.len();
        self.queues[at].send(lease).is_ok()
    }

    /// Closes the queues and leaves the threads, still inside their calls, to end with the
    /// process (after a second stop request).
    pub(crate) fn detach(mut self) {
        self.queues.clear();
        self.threads.clear();
    }

    /// Lets the threads end once their queues are closed and their drives have ended, and
    /// waits for them.
    pub(crate) fn join(mut self) {
        self.queues.clear();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a driver thread panicked; its runs will be redelivered");
            }
        }
    }
}

/// One driver thread: drive every claimed run it is given as a task of its own, until the
/// queue closes and the last drive has ended.
fn driver_thread(
    shared: Arc<Shared>,
    runtime: &tokio::runtime::Runtime,
    store: GroupCommitStore,
    mut jobs: UnboundedReceiver<Lease>,
) {
    let local = tokio::task::LocalSet::new();
    local.block_on(runtime, async move {
        let mut drives = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                lease = jobs.recv() => {
                    let Some(lease) = lease else { break };
                    let (drive, mut store) = (shared.clone(), store.clone());
                    drives.spawn_local(async move {
                        let run = lease.run_id.clone();
                        let ended = drive_one(&drive, &mut store, lease).await;
                        tracing::debug!(run = %run, ended = ?ended, "drive ended");
                        // The scheduler may have gone (it failed); nothing else waits for this.
                        let _ = drive.done.send(Done { ended });
                    });
                }
                Some(ended) = drives.join_next(), if !drives.is_empty() => reap(&shared, ended),
            }
        }
        while let Some(ended) = drives.join_next().await {
            reap(&shared, ended);
        }
    });
}

/// A drive that panicked still frees its place: the scheduler hears of it as a drive that
/// failed for a reason outside the run (it is driven again once its lease expires).
fn reap(shared: &Shared, ended: Result<(), tokio::task::JoinError>) {
    if let Err(e) = ended {
        tracing::error!("a drive panicked ({e}); its run will be redelivered");
        let _ = shared.done.send(Done {
            ended: Ended::Error,
        });
    }
}

/// Drives one claimed run to its end, its next wait, or a stop.
async fn drive_one(shared: &Arc<Shared>, store: &mut GroupCommitStore, lease: Lease) -> Ended {
    let _counted = Driving::enter(&shared.stats);
    let run_id = lease.run_id.clone();
    let record = match store.run(&run_id) {
        Ok(record) => record,
        Err(e) => {
            // The lease is kept until it expires: a damaged row is not re-read in a hot loop.
            tracing::warn!(run = %run_id, "cannot read the run: {e}; it is retried when its lease expires");
            return Ended::Error;
        }
    };
    let loaded = match load(shared, store, &record).await {
        Ok(loaded) => loaded,
        Err(reason) => return mark_failed(store, &record, &lease, &reason).await,
    };
    let resumable = match prepare_resume(&record, &loaded.flow, Some(&lease)) {
        Ok(r) => r,
        Err(EngineError::Cancelled { .. }) => {
            release(store, &lease).await;
            return Ended::Cancelled;
        }
        Err(e) => return mark_failed(store, &record, &lease, &e.to_string()).await,
    };
    // A lease outlasts the flow's longest call; below the engine's default length (a server
    // told to take over dead servers' runs sooner) without the default's margins.
    let ttl = if shared.lease_ttl >= MIN_LEASE {
        shared.lease_ttl.max(lease_ttl(loaded.longest_call()))
    } else {
        shared.lease_ttl.max(loaded.longest_call() * 2)
    };
    let mut observer = (shared.observer)(&run_id);
    let finish = Driver::new(&loaded.flow, store, observer.as_mut(), shared.stop.clone())
        .with_lease(lease, ttl)
        .drive(
            &run_id,
            resumable.state,
            DriveOptions {
                redelivered: resumable.redelivered,
                stop_at_wait: true,
                max_data_bytes: shared.max_data_bytes,
            },
        )
        .await;
    log_end(&run_id, &loaded.flow, &finish);
    match finish {
        Ok(Finish::Completed(_)) => Ended::Completed,
        Ok(Finish::Failed(_)) => Ended::Failed,
        Ok(Finish::Stopped(_, Stopped::AtWait)) => Ended::Parked,
        Ok(Finish::Stopped(..)) => Ended::Stopped,
        Ok(Finish::Cancelled(_)) => Ended::Cancelled,
        Err(_) => Ended::Error,
    }
}

/// One line per drive's end, with the run's new status, so an operator (or a test) can follow
/// runs to their end in the log.
/// Counts a run as driven until dropped.
struct Driving<'a>(&'a WriterStats);

impl<'a> Driving<'a> {
    fn enter(stats: &'a WriterStats) -> Self {
        stats.driving.fetch_add(1, Ordering::Relaxed);
        Driving(stats)
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.0.driving.fetch_sub(1, Ordering::Relaxed);
    }
}

fn log_end(run: &str, flow: &StepFlow, finish: &Result<Finish, EngineError>) {
    match finish {
        Ok(Finish::Completed(_)) => tracing::info!(run, status = "completed", "run completed"),
        Ok(Finish::Failed(state)) => {
            let error = state.error.as_ref().map(ToString::to_string);
            tracing::warn!(
                run,
                status = "failed",
                error = error.as_deref(),
                "run failed"
            );
        }
        Ok(Finish::Stopped(state, Stopped::AtWait)) => match flow.awaited_signal(state) {
            // A person or another system has to act: worth a line at the default level.
            Some(signal) => {
                tracing::info!(run, status = "waiting", signal, "run waits for a signal")
            }
            None => tracing::debug!(run, status = "waiting", "run waiting"),
        },
        Ok(Finish::Stopped(..)) => tracing::info!(run, status = "stopped", "run stopped"),
        Ok(Finish::Cancelled(_)) => tracing::info!(run, status = "cancelled", "run cancelled"),
        Err(e) => tracing::warn!(run, "the drive failed: {e}; the run is driven again later"),
    }
}

/// The flow of `record`: from the cache when it is there, else loaded (which may compile its
/// plugins) on a thread for blocking work, so the other drives of this thread go on meanwhile.
async fn load(
    shared: &Arc<Shared>,
    store: &GroupCommitStore,
    record: &RunRecord,
) -> Result<Arc<LoadedFlow>, String> {
    if let Some(loaded) = shared.flows.cached(record) {
        return Ok(loaded);
    }
    let (shared, store, record) = (shared.clone(), store.clone(), record.clone());
    tokio::task::spawn_blocking(move || shared.flows.get(&shared.engine, &store, &record))
        .await
        .unwrap_or_else(|e| Err(format!("loading its flow failed: {e}")))
}

/// Marks a run failed with `reason` (its state unchanged, so a fixed flow can resume it) and
/// gives it up: it is not claimed again until someone resumes it.
async fn mark_failed(
    store: &mut GroupCommitStore,
    record: &RunRecord,
    lease: &Lease,
    reason: &str,
) -> Ended {
    tracing::error!(run = %record.id, "the run cannot be driven: {reason}");
    let saved = store.begin_save_step(&StepSave {
        run_id: &record.id,
        status: RunStatus::Failed,
        state: &record.state,
        next_check_ms: None,
        last_error: Some(reason),
        history: &[],
        lease: Some(lease),
    });
    match saved.await {
        Ok(()) | Err(StoreError::Cancelled { .. }) => {}
        Err(e) => tracing::warn!(run = %record.id, "cannot mark the run failed: {e}"),
    }
    release(store, lease).await;
    Ended::Unloadable
}

async fn release(store: &mut GroupCommitStore, lease: &Lease) {
    if let Err(e) = store.begin_release(lease).await {
        tracing::debug!(run = %lease.run_id, "cannot release the lease: {e}");
    }
}

/// One cached flow: empty until loaded; locked while it loads.
type Slot = Arc<Mutex<Option<Arc<LoadedFlow>>>>;

/// Loaded flows, by what they were loaded from: a flow file is loaded again only when it
/// changed (its modification time or size).
#[derive(Default)]
struct FlowCache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl FlowCache {
    /// The flow of `record` if it is loaded already; `None` when it is not, or is loading
    /// now (this never waits).
    fn cached(&self, record: &RunRecord) -> Option<Arc<LoadedFlow>> {
        let key = cache_key(record).ok()?;
        let slot = self.slots.try_lock().ok()?.get(&key)?.clone();
        slot.try_lock().ok()?.clone()
    }

    /// The flow of `record`, loaded at most once per source; the error is the reason to record.
    fn get(
        &self,
        engine: &Engine,
        store: &GroupCommitStore,
        record: &RunRecord,
    ) -> Result<Arc<LoadedFlow>, String> {
        let path = Path::new(&record.flow_file);
        let key = cache_key(record)?;
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| "the flow cache is unusable after a panic".to_string())?;
            slots.entry(key).or_default().clone()
        };
        // Other runs of the same flow wait here while it loads, instead of loading it too.
        let mut slot = slot
            .lock()
            .map_err(|_| "the flow cache is unusable after a panic".to_string())?;
        if let Some(loaded) = slot.as_ref() {
            return Ok(loaded.clone());
        }
        let loaded = match &record.deployment {
            Some(id) => {
                let deployment = store
                    .deployment(id)
                    .map_err(|e| format!("its deployment cannot be read: {e}"))?;
                engine.load_deployment(&deployment)
            }
            // Runs from before deployments: their flow file, as `stepflow resume` loads it.
            None => engine.load(path),
        };
        let loaded = Arc::new(loaded.map_err(|e| format!("its flow cannot be loaded: {e}"))?);
        *slot = Some(loaded.clone());
        Ok(loaded)
    }
}

/// What a run's flow is cached by: its deployment, or (for runs from before deployments) its
/// flow file as it is now.
fn cache_key(record: &RunRecord) -> Result<String, String> {
    match &record.deployment {
        Some(id) => Ok(format!("deployment:{id}")),
        None => file_key(Path::new(&record.flow_file)),
    }
}

/// A flow file's cache key: its path, modification time and size.
fn file_key(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("its flow file {} cannot be read: {e}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("file:{}:{modified}:{}", path.display(), meta.len()))
}
