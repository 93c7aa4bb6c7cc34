//! Group commit: one thread owns the write connection. Drivers and the scheduler hand it their
//! writes through a channel; it takes everything that has arrived, commits all step saves in
//! one transaction (one fsync), and only then answers each sender, so a driver goes on only
//! after its save is durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stepflow_store::Database;

use stepflow_model::State;
use stepflow_store::{
    Claim, Deployment, HistoryEntry, Lease, RunRecord, RunStatus, SignalReceipt, SignalSend,
    StepSave, Store, StoreError, Subject,
};
use tokio::sync::oneshot;

use crate::due;
use crate::error::ServerError;

/// A step save that owns its values, so it can cross to the writer thread.
#[derive(Debug)]
/// A [`SignalSend`] that owns its values, to cross to the writer thread.
pub(crate) struct OwnedSignal {
    pub run_id: String,
    pub id: String,
    pub name: String,
    pub payload: serde_json::Value,
    pub now_ms: u64,
}

pub(crate) struct OwnedSave {
    pub run_id: String,
    pub status: RunStatus,
    pub state: State,
    pub next_check_ms: Option<u64>,
    pub last_error: Option<String>,
    pub history: Vec<HistoryEntry>,
    pub lease: Option<Lease>,
}

impl OwnedSave {
    /// A copy of `save` that owns its values.
    pub(crate) fn of(save: &StepSave<'_>) -> Self {
        OwnedSave {
            run_id: save.run_id.to_string(),
            status: save.status,
            state: save.state.clone(),
            next_check_ms: save.next_check_ms,
            last_error: save.last_error.map(str::to_string),
            history: save.history.to_vec(),
            lease: save.lease.cloned(),
        }
    }

    fn borrow(&self) -> StepSave<'_> {
        StepSave {
            run_id: &self.run_id,
            status: self.status,
            state: &self.state,
            next_check_ms: self.next_check_ms,
            last_error: self.last_error.as_deref(),
            history: &self.history,
            lease: self.lease.as_ref(),
        }
    }
}

/// Where the writer sends an answer: a caller that may block waits on a std channel; a drive's
/// save or release and the scheduler await a oneshot.
pub(crate) enum Reply<T> {
    Blocking(mpsc::SyncSender<T>),
    Async(oneshot::Sender<T>),
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        // A sender that stopped waiting (its thread ended) needs no answer.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(value);
            }
            Reply::Async(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

type Answer<T> = Reply<Result<T, StoreError>>;

/// One request to the writer.
pub(crate) enum Request {
    Save(Box<OwnedSave>, Answer<()>),
    Create(Box<RunRecord>, Answer<()>),
    SetStatus(String, RunStatus, Answer<()>),
    Claim {
        run_id: String,
        owner: String,
        ttl_ms: u64,
        now_ms: u64,
        reply: Answer<Lease>,
    },
    Renew(Lease, u64, u64, Answer<Lease>),
    Release(Lease, Answer<()>),
    ClaimDue {
        owner: String,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
        reply: Answer<Vec<Lease>>,
    },
    NextDue(u64, Answer<Option<u64>>),
    DataVersion(Answer<u64>),
    PutDeployment(Box<Deployment>, Answer<bool>),
    Signal(Box<OwnedSignal>, Answer<SignalReceipt>),
    MoveRun {
        run_id: String,
        deployment: String,
        definition: String,
        lease: Lease,
        reply: Answer<()>,
    },
    FreeDead {
        owner: String,
        ttl_ms: u64,
        now_ms: u64,
        reply: Answer<usize>,
    },
}

/// What the writer has done, for tests, benchmarks and the server's summary.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Step-save transactions committed (each one fsync of the WAL).
    pub save_transactions: AtomicU64,
    /// Step saves committed in them.
    pub saves: AtomicU64,
    /// Other write transactions (claims, renewals, releases, status changes).
    pub other_transactions: AtomicU64,
    /// Runs this server's drivers are driving now: the writer gathers saves until each of them
    /// has one in the batch (or a short while has passed), so one commit serves them all.
    pub driving: AtomicU64,
}

impl WriterStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot: (save transactions, saves, other transactions).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.save_transactions.load(Ordering::Relaxed),
            self.saves.load(Ordering::Relaxed),
            self.other_transactions.load(Ordering::Relaxed),
        )
    }
}

/// The sending side of the writer, cheap to clone: one per driver and one for the scheduler.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

/// The writer thread.
pub(crate) struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Opens the write connection to `db` and starts the writer thread.
    pub(crate) fn start(
        db: &Database,
        stats: Arc<WriterStats>,
    ) -> Result<(Writer, WriterHandle), ServerError> {
        let store = stepflow_engine::open_store(db)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stepflow-writer".into())
            .spawn(move || serve(store, rx, &stats))
            .map_err(|e| ServerError::Thread {
                what: "the writer",
                source: e,
            })?;
        Ok((Writer { thread }, WriterHandle { tx }))
    }

    /// Waits for the writer to end (once every handle is dropped).
    pub(crate) fn join(self) -> Result<(), ServerError> {
        self.thread.join().map_err(|_| ServerError::WriterGone)
    }

    /// Leaves the thread to end with the process (after a second stop request): a save that
    /// reaches it before then is still committed whole, or not at all.
    pub(crate) fn detach(self) {
        drop(self.thread);
    }
}

/// The longest a batch of saves waits for the saves of the other runs in progress.
const MOST_GATHERING: Duration = Duration::from_millis(2);

/// The writer's loop: block for one request, take all that have arrived, and while fewer runs
/// have a save in the batch than are being driven, wait a little for theirs (no longer than
/// the last commit took, at most [`MOST_GATHERING`]); commit the saves together, answer.
///
/// The wait is the server's own group commit: without it, several servers on one PostgreSQL
/// each commit small batches, and the database syncs its log once per batch; with it, a
/// server's drivers step in lock-step and share each sync (`commit_delay` does the same across
/// servers, inside PostgreSQL).
fn serve(mut store: Box<dyn Store>, rx: mpsc::Receiver<Request>, stats: &WriterStats) {
    let mut last_commit = Duration::ZERO;
    while let Ok(first) = rx.recv() {
        let mut saves = Vec::new();
        let mut others = Vec::new();
        for request in std::iter::once(first).chain(rx.try_iter()) {
            sort(request, &mut saves, &mut others);
        }
        if !saves.is_empty() {
            let until = Instant::now() + last_commit.min(MOST_GATHERING);
            while (saves.len() as u64) < stats.driving.load(Ordering::Relaxed) {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(request) => sort(request, &mut saves, &mut others),
                    Err(_) => break,
                }
            }
        }
        if !saves.is_empty() {
            let started = Instant::now();
            commit_saves(&mut store, saves, stats);
            last_commit = started.elapsed();
        }
        for request in others {
            WriterStats::add(&stats.other_transactions, 1);
            handle(&mut store, request);
        }
    }
}

/// A save joins the batch; anything else waits for it.
fn sort(
    request: Request,
    saves: &mut Vec<(Box<OwnedSave>, Answer<()>)>,
    others: &mut Vec<Request>,
) {
    match request {
        Request::Save(save, reply) => saves.push((save, reply)),
        other => others.push(other),
    }
}

/// One transaction for every save that arrived; each sender hears its own result.
fn commit_saves(
    store: &mut dyn Store,
    saves: Vec<(Box<OwnedSave>, Answer<()>)>,
    stats: &WriterStats,
) {
    let borrowed: Vec<StepSave<'_>> = saves.iter().map(|(s, _)| s.borrow()).collect();
    let results = store.save_steps(&borrowed);
    drop(borrowed);
    WriterStats::add(&stats.save_transactions, 1);
    WriterStats::add(&stats.saves, saves.len() as u64);
    match results {
        Ok(results) if results.len() == saves.len() => {
            for ((_, reply), result) in saves.into_iter().zip(results) {
                reply.send(result);
            }
        }
        Ok(results) => {
            let detail = format!(
                "the store answered {} of {} saves",
                results.len(),
                saves.len()
            );
            for (save, reply) in saves {
                reply.send(Err(StoreError::Invalid {
                    subject: Subject::Run,
                    id: save.run_id.clone(),
                    detail: detail.clone(),
                }));
            }
        }
        Err(e) => {
            // The whole transaction failed: nothing was saved; every sender hears why.
            let detail = e.to_string();
            for (save, reply) in saves {
                reply.send(Err(StoreError::Backend {
                    location: "the run database".into(),
                    action: format!("saving a step of run `{}`", save.run_id),
                    source: detail.clone().into(),
                }));
            }
        }
    }
}

fn handle(store: &mut dyn Store, request: Request) {
    match request {
        Request::Save(save, reply) => reply.send(store.save_step(&save.borrow())),
        Request::Create(run, reply) => reply.send(store.create_run(&run)),
        Request::SetStatus(id, status, reply) => reply.send(store.set_status(&id, status)),
        Request::Claim {
            run_id,
            owner,
            ttl_ms,
            now_ms,
            reply,
        } => reply.send(store.claim(&Claim {
            run_id: &run_id,
            owner: &owner,
            ttl_ms,
            now_ms,
            take_over: None,
        })),
        Request::Renew(lease, ttl_ms, now_ms, reply) => {
            reply.send(store.renew(&lease, ttl_ms, now_ms));
        }
        Request::Release(lease, reply) => reply.send(store.release(&lease)),
        Request::ClaimDue {
            owner,
            ttl_ms,
            now_ms,
            limit,
            reply,
        } => reply.send(store.claim_due(&owner, ttl_ms, now_ms, limit)),
        Request::NextDue(now_ms, reply) => reply.send(store.next_due_ms(now_ms)),
        Request::DataVersion(reply) => reply.send(store.data_version()),
        Request::PutDeployment(deployment, reply) => reply.send(store.put_deployment(&deployment)),
        Request::Signal(signal, reply) => reply.send(store.send_signal(&SignalSend {
            run_id: &signal.run_id,
            id: &signal.id,
            name: &signal.name,
            payload: &signal.payload,
            now_ms: signal.now_ms,
        })),
        Request::MoveRun {
            run_id,
            deployment,
            definition,
            lease,
            reply,
        } => reply.send(store.move_run(&run_id, &deployment, &definition, &lease)),
        Request::FreeDead {
            owner,
            ttl_ms,
            now_ms,
            reply,
        } => reply.send(due::free_dead_owners(store, &owner, ttl_ms, now_ms)),
    }
}

impl WriterHandle {
    /// Sends a request built around a blocking reply and waits for the answer: for driver
    /// threads, which may block.
    pub(crate) fn call<T>(
        &self,
        what: &str,
        make: impl FnOnce(Answer<T>) -> Request,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(make(Reply::Blocking(tx)))
            .map_err(|_| gone(what))?;
        rx.recv().map_err(|_| gone(what))?
    }

    /// Sends a request without waiting: [`Pending::wait`] gets the answer.
    pub(crate) fn send<T>(
        &self,
        what: &str,
        make: impl FnOnce(Answer<T>) -> Request,
    ) -> Result<Pending<T>, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(make(Reply::Blocking(tx)))
            .map_err(|_| gone(what))?;
        Ok(Pending {
            rx,
            what: what.to_string(),
        })
    }

    /// A write of a drive, as a store's future: see [`WriterHandle::ask`].
    pub(crate) fn begin(
        &self,
        what: &'static str,
        make: impl FnOnce(Answer<()>) -> Request,
    ) -> stepflow_store::Writing {
        Box::pin(self.ask(what, make))
    }

    /// Sends a request and returns a future of its answer that owns everything it needs, for
    /// async callers (the scheduler, and drives, which await their saves while the other
    /// drives of their thread go on): the caller's thread never blocks.
    pub(crate) fn ask<T: Send + 'static>(
        &self,
        what: &'static str,
        make: impl FnOnce(Answer<T>) -> Request,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(make(Reply::Async(tx)));
        async move {
            sent.map_err(|_| gone(what))?;
            rx.await.map_err(|_| gone(what))?
        }
    }
}

/// A request sent and not yet answered.
pub(crate) struct Pending<T> {
    rx: mpsc::Receiver<Result<T, StoreError>>,
    what: String,
}

impl<T> Pending<T> {
    /// Blocks until the writer answers.
    pub(crate) fn wait(self) -> Result<T, StoreError> {
        self.rx.recv().map_err(|_| gone(&self.what))?
    }
}

/// The writer thread is gone (it ended or panicked): nothing more can be saved.
fn gone(what: &str) -> StoreError {
    StoreError::Backend {
        location: "the run database".into(),
        action: what.to_string(),
        source: "the server's writer thread has stopped".into(),
    }
}
