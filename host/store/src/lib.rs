//! Saves stepflow runs and their history: SQLite embedded by default.
//!
//! A runner saves a run's [`State`] after every apply, together with the history entries of the
//! calls that apply made (several when parallel branches called at once), in one transaction
//! ([`Store::save_step`]): a crash loses at most the step in flight, which then runs again on
//! resume.
//!
//! The [`Store`] trait and the record types here are the boundary every backend implements;
//! [`SqliteStore`] (one file, WAL, durable commits) is the embedded default, and a PostgreSQL
//! store for many hosts will implement the same trait. [`SqliteStore::open_read_only`] is for
//! commands that only look: it creates and writes nothing, and works on a read-only mount.
//!
//! A run is driven by one driver at a time: the driver [`Store::claim`]s it (a lease with an
//! expiry and a fencing counter), renews the lease while it works, and passes it with every
//! save, which the store refuses once another driver has claimed the run.
//!
//! A run can refer to a [`Deployment`]: the flow's source and the bytes of its plugins, stored
//! content-addressed ([`Store::put_deployment`]), so a run does not depend on files on disk.
//! A server finds work with [`Store::claim_due`] (runs whose timer is up or whose driver died,
//! through an index), sleeps until [`Store::next_due_ms`], notices other processes' commits
//! with [`Store::data_version`], and saves the steps of many runs with one commit
//! ([`Store::save_steps`]).
//!
//! A run has an inbox: [`Store::send_signal`] appends a signal and makes the run due in one
//! transaction, and a driver reads what arrived after its state's last one
//! ([`Store::signals`]) into the state, where a wait for that signal takes it.
//!
//! ```
//! use stepflow_store::{Claim, RunRecord, RunStatus, SqliteStore, StepSave, Store};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let mut store = SqliteStore::open(&dir.path().join("stepflow.db"))?;
//! let state = stepflow_model::State::default();
//! store.create_run(&RunRecord {
//!     id: "run-1".into(),
//!     flow: "quickstart.v1".into(),
//!     flow_file: "/flows/quickstart.yaml".into(),
//!     definition: "abc123".into(),
//!     deployment: None,
//!     status: RunStatus::Running,
//!     state: state.clone(),
//!     next_check_ms: None,
//!     last_error: None,
//!     created_ms: 1,
//!     updated_ms: 1,
//!     lease: None,
//! })?;
//! // Whoever drives the run claims it first; every save then checks the lease's fence.
//! let lease = store.claim(&Claim {
//!     run_id: "run-1",
//!     owner: "host-a/4242",
//!     ttl_ms: 30_000,
//!     now_ms: 1_000,
//!     take_over: None,
//! })?;
//! store.save_step(&StepSave {
//!     run_id: "run-1",
//!     status: RunStatus::Completed,
//!     state: &state,
//!     next_check_ms: None,
//!     last_error: None,
//!     history: &[],
//!     lease: Some(&lease),
//! })?;
//! store.release(&lease)?;
//! assert_eq!(store.run("run-1")?.status, RunStatus::Completed);
//! # Ok(())
//! # }
//! ```

pub mod check;
mod database;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stepflow_model::{CallKind, CallRecord, HandlerCall, Outcome, State};

pub use database::{Database, redact_url};
pub use sqlite::SqliteStore;
pub use stepflow_model::Signal;

/// Where a run stands, as the runner last saved it; stored as lower-case text so the database
/// stays readable with any SQL tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Applying now makes progress (or a runner is doing so).
    Running,
    /// Nothing is due before `next_check_ms`: a wait or a retry back-off.
    Waiting,
    /// The flow has finished.
    Completed,
    /// An error no retry took stopped the run.
    Failed,
    /// An operator stopped the run; runners leave it alone.
    Cancelled,
}

impl RunStatus {
    /// Every status, in lifecycle order, for help texts and validation.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The text stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// True when no runner will apply the run again without an operator's action.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a run status (e.g. a `--status` flag); the message lists the valid ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status `{0}`; expected one of running, waiting, completed, failed, cancelled")]
pub struct ParseStatusError(pub String);

impl FromStr for RunStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseStatusError(s.to_string()))
    }
}

/// One run as stored: what it runs, where it stands, and its saved state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id, unique in the store.
    pub id: String,
    /// The flow's name (its root scope, e.g. `deploy.v1`).
    pub flow: String,
    /// The absolute path of the flow file, so `stepflow resume` can find the flow again.
    pub flow_file: String,
    /// The hash of the definition the run started with: resuming on another definition is
    /// allowed only when every event of the saved cursor still exists in it.
    pub definition: String,
    /// The [`Deployment`] (its id) the run was started from, or moved to by
    /// [`Store::move_run`], so it can be resumed without the files it was started from; `None`
    /// for runs created before deployments. [`Store::create_run`] refuses an id the store
    /// does not have.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Where the run stands.
    pub status: RunStatus,
    /// The saved state: cursor, data document, attempts, deadlines, error.
    pub state: State,
    /// When the run is next due (Unix milliseconds), for runners looking for work.
    pub next_check_ms: Option<u64>,
    /// The error that stopped or last delayed the run, for listings.
    pub last_error: Option<String>,
    /// When the run was created (Unix milliseconds); listings are newest first by this.
    pub created_ms: u64,
    /// When the run was last saved (Unix milliseconds); the store sets it on every save.
    pub updated_ms: u64,
    /// Who drives the run now, so listings can show it: set by [`Store::claim`], cleared by
    /// [`Store::release`]; `None` when nobody holds it. Given to `create_run`, it makes the
    /// run's first claim (fence 1) in the same write, so no other driver can take a run
    /// between its creation and its first step; any other fence is refused.
    pub lease: Option<LeaseInfo>,
}

/// The lease on a run as a listing shows it: who holds it, until when, with which fence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The driver that claimed the run (an owner id of the caller's choosing).
    pub owner: String,
    /// When the lease ends unless renewed (Unix milliseconds, on the claimer's clock); from
    /// then on anyone may claim the run.
    pub expires_ms: u64,
    /// The fencing counter of the current claim.
    pub fence: u64,
}

/// A driver's proof that it may save steps of a run: returned by [`Store::claim`] and
/// [`Store::renew`], passed to every [`Store::save_step`] in [`StepSave::lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The run held.
    pub run_id: String,
    /// Who holds it.
    pub owner: String,
    /// The fencing counter of this claim: every claim of the run gets a larger one, so a
    /// driver whose lease was taken over is refused at its next save.
    pub fence: u64,
    /// When the lease ends unless renewed (Unix milliseconds).
    pub expires_ms: u64,
}

/// A request to drive a run ([`Store::claim`]); one struct so the caller names each value.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The run to claim.
    pub run_id: &'a str,
    /// Who claims it: an id unique to this driver (e.g. host, process and start time).
    pub owner: &'a str,
    /// How long the lease lasts unless renewed, in milliseconds.
    pub ttl_ms: u64,
    /// The claimer's current time (Unix milliseconds): the lease expires at `now_ms + ttl_ms`,
    /// and a lease with `expires_ms <= now_ms` counts as expired.
    pub now_ms: u64,
    /// The owner the caller has proven dead (e.g. its process is gone): its lease is taken
    /// over even before it expires, but only if that owner still holds it (compare and swap),
    /// so two takers of the same dead owner cannot both win.
    pub take_over: Option<&'a str>,
}

/// Which runs [`Store::runs_where`] lists: every filter that is set must match; one struct so
/// listings can grow filters without new methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs of this flow (its name, [`RunRecord::flow`]).
    pub flow: Option<String>,
    /// Only runs that use this deployment (its full id).
    pub deployment: Option<String>,
    /// A search box's text: the runs of the flow of exactly this name if there is one, else
    /// the runs whose id starts with it; either is one index range, never a scan.
    pub search: Option<String>,
    /// Only runs created at or after this time (Unix milliseconds).
    pub created_from: Option<u64>,
    /// Only runs created before this time (Unix milliseconds).
    pub created_until: Option<u64>,
    /// Only runs last saved at or after this time (Unix milliseconds).
    pub updated_from: Option<u64>,
    /// Only runs last saved before this time (Unix milliseconds).
    pub updated_until: Option<u64>,
    /// Only runs after this position of a previous listing ([`RunPage::next`]), so a listing
    /// is read page by page, each one index search, however many runs there are.
    pub after: Option<String>,
    /// At most this many runs, newest first.
    pub limit: usize,
}

/// One page of a listing ([`Store::runs_page`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<RunRecord>,
    /// Where the next page starts ([`RunFilter::after`]), or `None` when this is the last. An
    /// opaque text: only the store that made it reads it.
    pub next: Option<String>,
}

/// How many runs have each status ([`Store::run_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Runs being driven, or due to be.
    pub running: u64,
    /// Runs waiting for a time or a signal.
    pub waiting: u64,
    /// Finished runs.
    pub completed: u64,
    /// Runs stopped by an error no retry took.
    pub failed: u64,
    /// Runs an operator cancelled.
    pub cancelled: u64,
}

impl RunCounts {
    /// Sets the count of the status a backend stored as `status` (its text); text that is no
    /// status is left out, as a listing would leave it out.
    pub fn set(&mut self, status: &str, n: u64) {
        match status.parse::<RunStatus>() {
            Ok(RunStatus::Running) => self.running = n,
            Ok(RunStatus::Waiting) => self.waiting = n,
            Ok(RunStatus::Completed) => self.completed = n,
            Ok(RunStatus::Failed) => self.failed = n,
            Ok(RunStatus::Cancelled) => self.cancelled = n,
            Err(_) => {}
        }
    }
}

impl Default for RunFilter {
    /// Every run, at most 50: a listing that fits a terminal.
    fn default() -> Self {
        RunFilter {
            status: None,
            flow: None,
            deployment: None,
            search: None,
            created_from: None,
            created_until: None,
            updated_from: None,
            updated_until: None,
            after: None,
            limit: 50,
        }
    }
}

/// A flow as it was started, content-addressed: its source and the bytes of every plugin it
/// uses, so that its runs resume and show without the files (which may be moved, edited or
/// rebuilt since). Saved by [`Store::put_deployment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The content's SHA-256 as 64 lower-case hex digits, computed by the caller (the store
    /// only checks the form): equal content, equal id, so storing it again is a no-op.
    pub id: String,
    /// The flow's name (its root scope, e.g. `deploy.v1`), to list deployments of one flow.
    pub flow: String,
    /// The flow file's text.
    pub source: String,
    /// Where the flow file was when deployed (absolute), for messages and relative paths.
    pub source_path: String,
    /// The plugins the flow uses, in the caller's order (kept as given).
    pub plugins: Vec<DeployedPlugin>,
    /// When the deployment was first stored (Unix milliseconds); listings are newest first.
    pub created_ms: u64,
}

/// One plugin of a [`Deployment`]: the name the flow gives it and its component's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployedPlugin {
    /// The plugin's name in the flow file.
    pub name: String,
    /// The SHA-256 of `bytes` as 64 lower-case hex digits: the bytes are stored once per
    /// distinct value, however many deployments use them, and checked against it on every read.
    pub sha256: String,
    /// The component's bytes (`Arc`: shared, not copied, by whoever loads the plugin).
    pub bytes: std::sync::Arc<[u8]>,
}

/// A deployment as a listing shows it ([`Store::deployments`]): without the source or the
/// plugins' bytes, with how many runs use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// The deployment's id.
    pub id: String,
    /// The flow's name.
    pub flow: String,
    /// Where the flow file was when deployed.
    pub source_path: String,
    /// The plugins as `(name, sha256)`, in the deployment's order.
    pub plugins: Vec<(String, String)>,
    /// When the deployment was first stored (Unix milliseconds).
    pub created_ms: u64,
    /// How many runs refer to it now.
    pub runs: u64,
}

/// A flow as a listing shows it ([`Store::flows`]): its deployments and runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    /// The flow's name.
    pub name: String,
    /// How many deployments it has.
    pub deployments: u64,
    /// Its newest deployment's id.
    pub latest_deployment: String,
    /// When that one was stored (Unix milliseconds).
    pub latest_ms: u64,
    /// How many runs it has, on any deployment.
    pub runs: u64,
}

/// How a call ended, as history records it; stored as lower-case text (`done`, `true`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// An action succeeded.
    Done,
    /// A condition or an error handler answered true.
    True,
    /// A condition or an error handler answered false.
    False,
    /// The call failed and an enclosing retry group took the error.
    Retrying,
    /// The call failed and no retry took the error.
    Failed,
}

impl StepOutcome {
    /// Every outcome, for validation and listings.
    pub const ALL: [StepOutcome; 5] = [
        StepOutcome::Done,
        StepOutcome::True,
        StepOutcome::False,
        StepOutcome::Retrying,
        StepOutcome::Failed,
    ];

    /// The text stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Done => "done",
            StepOutcome::True => "true",
            StepOutcome::False => "false",
            StepOutcome::Retrying => "retrying",
            StepOutcome::Failed => "failed",
        }
    }
}

impl fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepOutcome {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StepOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome `{s}`"))
    }
}

/// One function call of a run, as shown by `stepflow show`: one entry per call an apply made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The run the call belongs to.
    pub run_id: String,
    /// The entry's number in the run, 1, 2, ...: assigned by the store (ignored when saving).
    pub seq: u64,
    /// The step path of the item whose function was called.
    pub step: String,
    /// What kind of function was called.
    pub kind: CallKind,
    /// The attempt number the call saw.
    pub attempt: u32,
    /// How it ended.
    pub outcome: StepOutcome,
    /// When the call started (Unix milliseconds).
    pub started_ms: u64,
    /// How long the call took, in milliseconds.
    pub duration_ms: u64,
    /// The error the call reported, if any.
    pub error: Option<String>,
    /// The JSON merge patch an action returned, if any.
    pub patch: Option<serde_json::Value>,
    /// Whether the call was a re-execution after a crash (at-least-once delivery).
    pub redelivered: bool,
    /// The error handlers the call's failure was offered to, innermost retry group first, with
    /// each one's answer, so a failed run shows who was asked and what each said.
    #[serde(default)]
    pub handlers: Vec<HandlerCall>,
}

impl HistoryEntry {
    /// The entry for a call the model reported ([`stepflow_model::Applied::call`]), so drivers
    /// need not translate kinds and outcomes themselves; the store assigns `seq`.
    pub fn from_call(run_id: &str, call: &CallRecord, started_ms: u64, duration_ms: u64) -> Self {
        let (outcome, error, patch) = match &call.outcome {
            Outcome::Done(patch) => (StepOutcome::Done, None, patch.clone()),
            Outcome::Answered(true) => (StepOutcome::True, None, None),
            Outcome::Answered(false) => (StepOutcome::False, None, None),
            Outcome::Retrying { error, .. } => {
                (StepOutcome::Retrying, Some(error.to_string()), None)
            }
            Outcome::Failed(error) => (StepOutcome::Failed, Some(error.to_string()), None),
        };
        HistoryEntry {
            run_id: run_id.to_string(),
            seq: 0,
            step: call.step.to_string(),
            kind: call.kind,
            attempt: call.attempt,
            outcome,
            started_ms,
            duration_ms,
            error,
            patch,
            redelivered: call.redelivered,
            handlers: call.handlers.clone(),
        }
    }
}

/// What one apply changed, saved by [`Store::save_step`] in one transaction; one struct so a
/// driver names each value instead of passing six positional arguments.
#[derive(Clone, Copy, Debug)]
pub struct StepSave<'a> {
    /// The run to update.
    pub run_id: &'a str,
    /// Where the run stands after the apply.
    pub status: RunStatus,
    /// The state after the apply.
    pub state: &'a State,
    /// When the run is next due (Unix milliseconds), if it waits.
    pub next_check_ms: Option<u64>,
    /// The error that stopped or delayed the run, for listings.
    pub last_error: Option<&'a str>,
    /// The history entries of the apply's calls, in order; empty when it called nothing. A
    /// slice because an apply of parallel branches makes several calls at once, and they must
    /// all be saved with the state they led to, numbered one after another.
    pub history: &'a [HistoryEntry],
    /// The lease the driver holds on the run: the save is refused with
    /// [`StoreError::LeaseLost`] (and nothing is written) unless it is still the run's current
    /// lease (same owner and fence). Expiry alone does not refuse a save: a lease that expired
    /// while nobody claimed the run is still current, so a driver must renew in time, since
    /// once it has expired anyone may claim the run. `None` saves without any lease check: only
    /// for tests and single-writer tools that know no driver runs, never for a driver.
    pub lease: Option<&'a Lease>,
}

/// The `next_check_ms` of a run that waits for a signal with no timeout: due by time never
/// (2^63 - 1, the largest time SQLite and PostgreSQL keep), only when [`Store::send_signal`]
/// makes it due.
pub const NEVER_DUE_MS: u64 = i64::MAX as u64;

/// A signal for [`Store::send_signal`]; one struct so the caller names each value.
#[derive(Clone, Copy, Debug)]
pub struct SignalSend<'a> {
    /// The run it is for.
    pub run_id: &'a str,
    /// The sender's id for it: sending again with the same id is the same signal, stored once.
    pub id: &'a str,
    /// Its name ([`stepflow_model::check_signal_name`]): a wait for that name takes it.
    pub name: &'a str,
    /// The data it carries.
    pub payload: &'a serde_json::Value,
    /// When it was sent (Unix milliseconds): it is stored with the signal, and the run is due
    /// from then.
    pub now_ms: u64,
}

/// What [`Store::send_signal`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalReceipt {
    /// The signal's number in the run's inbox (the earlier one's, for a repeated id).
    pub seq: u64,
    /// True when a signal with this id was stored before: nothing was written this time.
    pub duplicate: bool,
    /// The run's status when the signal was stored: a failed run keeps it for its resume.
    pub status: RunStatus,
}

/// A write in progress ([`Store::begin_save_step`], [`Store::begin_release`]): it owns what it
/// writes, so the store may be used again before it completes.
pub type Writing =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;

/// Where runs are saved: the one interface runners and the CLI use, whatever the backend.
///
/// Calls are synchronous and each is its own transaction; `Send` so a store can move to the
/// thread that drives runs.
pub trait Store: Send {
    /// Saves a new run; refuses an id that exists ([`StoreError::AlreadyExists`]).
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError>;

    /// One page of the runs that match `filter`, newest first: at most `filter.limit`, and
    /// where the next page starts.
    fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError>;

    /// How many runs have each status.
    fn run_counts(&self) -> Result<RunCounts, StoreError>;

    /// The state run `run_id` was created with, kept beside it so its history can be replayed
    /// from there (a rerun from any step); `None` for a run created before stores kept it. An
    /// unknown run is [`StoreError::NotFound`].
    fn start_state(&self, run_id: &str) -> Result<Option<State>, StoreError>;

    /// The history entries of run `run_id` numbered after `after`, oldest first, at most
    /// `limit`, and how many entries the run has in all; an unknown run is
    /// [`StoreError::NotFound`].
    fn history_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError>;

    /// Saves what one apply did: the run's new status, state, next check time and last error,
    /// and the history entries of its calls, all in ONE transaction, so a crash keeps either all
    /// or none of them. The store numbers the entries one after another, after the run's last
    /// one and in the order given (their `seq`), and sets `updated_ms`. A cancelled run
    /// is not overwritten: that gives [`StoreError::Cancelled`], so a runner learns of a cancel
    /// made while its step ran. With [`StepSave::lease`], a lease that is no longer the run's
    /// current one gives [`StoreError::LeaseLost`], checked in the same transaction as the
    /// write, so a driver that lost its run cannot save even one more step. A run whose stored
    /// row no longer matches its checksum is not overwritten ([`StoreError::Checksum`]): a
    /// damaged state is never replaced silently; an operator restores it or cancels the run.
    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError>;

    /// [`Store::save_step`] as a future: a store that commits many drivers' saves together
    /// hands the step over and lets its caller await the commit, so one thread can drive many
    /// runs while their saves wait. The default saves at once.
    fn begin_save_step(&mut self, step: &StepSave<'_>) -> Writing {
        Box::pin(std::future::ready(self.save_step(step)))
    }

    /// Saves many steps (of different runs, or several of one run, in order) in ONE
    /// transaction, so they share one commit (one fsync): the primitive of group commit. Each
    /// step is checked and written as [`Store::save_step`] does, and its own refusal
    /// ([`StoreError::Cancelled`], [`StoreError::LeaseLost`], [`StoreError::Checksum`],
    /// [`StoreError::NotFound`], [`StoreError::Invalid`], ...) is reported in its slot of the
    /// result, in the order of `steps`; such a step writes nothing (neither its state nor any of
    /// its history entries), while the others are committed. An error of the transaction
    /// itself (the database is busy, full or damaged) is the outer `Err`, and then nothing was
    /// saved.
    fn save_steps(
        &mut self,
        steps: &[StepSave<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Loads one run; an unknown id gives [`StoreError::NotFound`], a damaged row
    /// [`StoreError::Checksum`] or [`StoreError::BadRecord`].
    fn run(&self, id: &str) -> Result<RunRecord, StoreError>;

    /// Lists at most `limit` runs, newest first, optionally only those with `status`: the
    /// same as [`Store::runs_where`] with only those two set.
    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.runs_where(&RunFilter {
            status,
            limit,
            ..RunFilter::default()
        })
    }

    /// Lists the runs that match every filter set in `filter`, newest first, at most
    /// `filter.limit`.
    fn runs_where(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// The history of a run, oldest first; an unknown id gives [`StoreError::NotFound`], a
    /// damaged entry [`StoreError::Checksum`] or [`StoreError::BadRecord`] naming it.
    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Sets a run's status without touching its state: how `stepflow cancel` works. Needs no
    /// lease: the driver learns of a cancel from its next save ([`StoreError::Cancelled`]).
    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError>;

    /// Makes the caller the one driver of a run, with a lease until `now_ms + ttl_ms` and a
    /// fence larger than any before. Granted when nobody holds the run, its lease has expired,
    /// the same owner holds it (its older leases are then fenced out), or `take_over` names the
    /// current holder; otherwise [`StoreError::Leased`]. A completed or cancelled run gives
    /// [`StoreError::Finished`] (a failed one can be claimed: resuming retries its failed
    /// step); an unknown one [`StoreError::NotFound`]. One transaction, so of two claims at
    /// once exactly one wins.
    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError>;

    /// Extends a lease to `now_ms + ttl_ms` while it is still the run's current one (same
    /// fence and owner, even if it expired meanwhile and nobody claimed the run); otherwise
    /// [`StoreError::LeaseLost`] and nothing changes.
    fn renew(&mut self, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError>;

    /// Gives a run up: clears its owner and expiry if `lease` is still the current one; the
    /// fence is kept, so it is never reused. Releasing a lease that was already lost (taken
    /// over, or released) is not an error and changes nothing: the new holder keeps the run.
    /// An unknown run gives [`StoreError::NotFound`].
    fn release(&mut self, lease: &Lease) -> Result<(), StoreError>;

    /// [`Store::release`] as a future, for the same reason as [`Store::begin_save_step`]. The
    /// default releases at once.
    fn begin_release(&mut self, lease: &Lease) -> Writing {
        Box::pin(std::future::ready(self.release(lease)))
    }

    /// Claims up to `limit` due runs for `owner` (each as [`Store::claim`] would: a lease until
    /// `now_ms + ttl_ms` and a fence larger than any before), earliest due first, in one
    /// transaction, so of several callers at once each due run goes to exactly one. A run is
    /// due when it is running or waiting (not completed, failed or cancelled), nobody holds a
    /// live lease on it (none, or one that expired at or before `now_ms`: its owner died or
    /// gave up renewing), and its `next_check_ms` is unset or at or before `now_ms`. An empty
    /// result means nothing is due; [`Store::next_due_ms`] says when something will be.
    fn claim_due(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError>;

    /// When the earliest run that is not due at `now_ms` becomes due by time alone (the
    /// earliest of the waiting runs' `next_check_ms` and of the live leases' expiry, for a run
    /// that is both leased and waiting the later of the two), so a scheduler can sleep until
    /// then; `None` when no run will become due by time alone. Runs due already are not
    /// counted: [`Store::claim_due`] takes them.
    fn next_due_ms(&self, now_ms: u64) -> Result<Option<u64>, StoreError>;

    /// A number that changes whenever another connection (another process, or another store
    /// on the same database) has committed since it was last read, and stays the same
    /// otherwise; this store's own commits do not change it. Cheap (SQLite: one query;
    /// PostgreSQL: a count of notifications kept in memory, which may lag a commit by the
    /// moment the notification takes to arrive), so a server can notice a submission from
    /// another process on each wake-up without scanning runs. Only compare values from the
    /// same store.
    fn data_version(&self) -> Result<u64, StoreError>;

    /// Appends a signal to a run's inbox and, unless the run is failed, makes it due at once,
    /// in one transaction, so whoever drives the run next reads it. A signal that arrives
    /// before the run reaches its wait is kept until a wait takes it. Sending an id again
    /// stores nothing and returns the first one's number (`duplicate`); the same id with
    /// another name or payload is refused ([`StoreError::Invalid`]); a repeat is answered so even
    /// after the run has finished, so a sender that retries a delivery it is unsure of never
    /// hears an error for a signal that was taken. Refused for an unknown run
    /// ([`StoreError::NotFound`]), a completed or cancelled one ([`StoreError::NotListening`]),
    /// and a name that no wait could have ([`StoreError::Invalid`]).
    ///
    /// A save of a waiting run whose state has not read every signal stored for it
    /// ([`State::signals_read`]) makes the run due at once, whatever its `next_check_ms`
    /// said: a signal that arrived while its driver was on the way to the wait is not missed.
    fn send_signal(&mut self, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError>;

    /// The signals of run `run_id` numbered after `after`, oldest first, at most `limit`: what
    /// a driver delivers into the run's state ([`State::deliver`]). An unknown run has none.
    fn signals(&self, run_id: &str, after: u64, limit: usize) -> Result<Vec<Signal>, StoreError>;

    /// Every flow that has a deployment, by name: how many deployments and runs, and the
    /// newest deployment.
    fn flows(&self) -> Result<Vec<FlowInfo>, StoreError>;

    /// Stores a deployment and the bytes of its plugins, in one transaction: each distinct
    /// plugin content (by SHA-256) is stored once, however many deployments use it. Idempotent
    /// by id: `Ok(true)` when it was new, `Ok(false)` (and nothing written) when a deployment
    /// with that id exists. Every plugin's bytes are hashed first: a `sha256` that does not
    /// match them, or an id or hash that is not 64 lower-case hex digits, is refused with
    /// [`StoreError::Invalid`] before anything is written.
    fn put_deployment(&mut self, deployment: &Deployment) -> Result<bool, StoreError>;

    /// Loads a deployment with its plugins' bytes, by id or by a prefix of at least 8 hex
    /// digits that only one deployment's id starts with (several: [`StoreError::AmbiguousDeployment`]
    /// listing them). Unknown: [`StoreError::NoDeployment`]. Every plugin's bytes are hashed
    /// again; a mismatch (or a damaged row) is [`StoreError::DeploymentChecksum`] naming the
    /// deployment and the plugin.
    fn deployment(&self, id: &str) -> Result<Deployment, StoreError>;

    /// Lists at most `limit` deployments, newest first, optionally only those of `flow`,
    /// without their source or bytes, each with how many runs use it.
    fn deployments(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentInfo>, StoreError>;

    /// Points a run at another deployment and definition hash (`stepflow upgrade`), leaving its
    /// state as it is: the caller has checked that the new definition can go on from the
    /// run's cursor. Fenced by `lease` as [`Store::save_step`] is ([`StoreError::LeaseLost`]
    /// unless it is the run's current lease), refused for a completed or cancelled run
    /// ([`StoreError::Finished`]), for a deployment the store does not have
    /// ([`StoreError::NoDeployment`]) or of another flow ([`StoreError::Invalid`]), and for a
    /// damaged row ([`StoreError::Checksum`]); one transaction, and the row's checksum is
    /// recomputed, so it stays valid.
    fn move_run(
        &mut self,
        run_id: &str,
        deployment: &str,
        definition: &str,
        lease: &Lease,
    ) -> Result<(), StoreError>;
}

/// A boxed store is a store, so a front end can open whichever backend `--db` names and pass
/// it wherever a store goes.
impl<S: Store + ?Sized> Store for Box<S> {
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError> {
        (**self).create_run(run)
    }
    fn runs_page(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        (**self).runs_page(filter)
    }
    fn run_counts(&self) -> Result<RunCounts, StoreError> {
        (**self).run_counts()
    }
    fn start_state(&self, run_id: &str) -> Result<Option<State>, StoreError> {
        (**self).start_state(run_id)
    }
    fn history_page(
        &self,
        run_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<HistoryEntry>, u64), StoreError> {
        (**self).history_page(run_id, after, limit)
    }
    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError> {
        (**self).save_step(step)
    }
    fn begin_save_step(&mut self, step: &StepSave<'_>) -> Writing {
        (**self).begin_save_step(step)
    }
    fn save_steps(
        &mut self,
        steps: &[StepSave<'_>],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        (**self).save_steps(steps)
    }
    fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        (**self).run(id)
    }
    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        (**self).runs(status, limit)
    }
    fn runs_where(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        (**self).runs_where(filter)
    }
    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        (**self).history(run_id)
    }
    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        (**self).set_status(run_id, status)
    }
    fn claim(&mut self, claim: &Claim<'_>) -> Result<Lease, StoreError> {
        (**self).claim(claim)
    }
    fn renew(&mut self, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError> {
        (**self).renew(lease, ttl_ms, now_ms)
    }
    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        (**self).release(lease)
    }
    fn begin_release(&mut self, lease: &Lease) -> Writing {
        (**self).begin_release(lease)
    }
    fn claim_due(
        &mut self,
        owner: &str,
        ttl_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        (**self).claim_due(owner, ttl_ms, now_ms, limit)
    }
    fn next_due_ms(&self, now_ms: u64) -> Result<Option<u64>, StoreError> {
        (**self).next_due_ms(now_ms)
    }
    fn data_version(&self) -> Result<u64, StoreError> {
        (**self).data_version()
    }
    fn send_signal(&mut self, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError> {
        (**self).send_signal(signal)
    }
    fn signals(&self, run_id: &str, after: u64, limit: usize) -> Result<Vec<Signal>, StoreError> {
        (**self).signals(run_id, after, limit)
    }
    fn flows(&self) -> Result<Vec<FlowInfo>, StoreError> {
        (**self).flows()
    }
    fn put_deployment(&mut self, deployment: &Deployment) -> Result<bool, StoreError> {
        (**self).put_deployment(deployment)
    }
    fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        (**self).deployment(id)
    }
    fn deployments(
        &self,
        flow: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentInfo>, StoreError> {
        (**self).deployments(flow, limit)
    }
    fn move_run(
        &mut self,
        run_id: &str,
        deployment: &str,
        definition: &str,
        lease: &Lease,
    ) -> Result<(), StoreError> {
        (**self).move_run(run_id, deployment, definition, lease)
    }
}

/// Why a store operation failed; every message names the file or run and says, in the store's
/// own terms, what went wrong, so each caller can add its own hints (a command-line flag, say).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file or its directory could not be created, opened or read.
    #[error("cannot use the run database {path}: {source}; check the path and its permissions")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a SQLite database at all; it was not modified.
    #[error(
        "{path} is not a stepflow run database: it is not a SQLite database ({detail}); it was \
         left untouched"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What the file looks like instead.
        detail: String,
    },
    /// The file is a damaged SQLite database (e.g. truncated); it was not modified.
    #[error("{path} is a damaged SQLite database ({detail}); it was left untouched")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is another application's SQLite database; it was not modified.
    #[error(
        "{path} is a SQLite database of another application ({detail}), not a stepflow run \
         database; it was left untouched"
    )]
    Foreign {
        /// The file.
        path: PathBuf,
        /// How it differs from ours (application id, tables).
        detail: String,
    },
    /// The database was written by a newer stepflow; it was not modified.
    #[error(
        "{path} has schema version {found}, but this stepflow knows versions up to {supported}: \
         it was written by a newer stepflow; it was left untouched"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// No run has this id.
    #[error("no run `{id}` in {location}")]
    NotFound {
        /// The id asked for.
        id: String,
        /// The store (a file path for SQLite).
        location: String,
    },
    /// `create_run` with an id that is taken.
    #[error("a run `{id}` already exists in {location}")]
    AlreadyExists {
        /// The id.
        id: String,
        /// The store.
        location: String,
    },
    /// `save_step` on a run an operator cancelled; the run was not changed.
    #[error(
        "run `{id}` was cancelled, so the result of its last step was not saved; the run stays \
         cancelled"
    )]
    Cancelled {
        /// The run.
        id: String,
    },
    /// A stored run holds a value this build cannot read (edited by hand, or damaged).
    #[error("run `{id}` in {location} has an unreadable {column}: {detail}")]
    BadRecord {
        /// The run.
        id: String,
        /// The store.
        location: String,
        /// The column (and history entry) at fault.
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// A value to save does not fit the store (e.g. a time past 2^63, a history entry of
    /// another run, or plugin bytes that do not match their SHA-256); nothing was saved.
    #[error("cannot save {subject} `{id}`: {detail}")]
    Invalid {
        /// What was being saved: a run or a deployment.
        subject: Subject,
        /// Its id.
        id: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// [`RunFilter::after`] is not a position this store gave out ([`RunPage::next`]).
    #[error("`{after}` is not a page position this store gave out; list from the first page")]
    BadPage {
        /// The position given.
        after: String,
    },
    /// Another process held the database locked for longer than the busy timeout.
    #[error(
        "{location} is locked by another process (waited {waited_ms} ms) while {action}; try \
         again when that process has finished"
    )]
    Busy {
        /// The store.
        location: String,
        /// What was being done.
        action: String,
        /// How long the store waited.
        waited_ms: u64,
    },
    /// [`SqliteStore::open_read_only`] on a path where no file exists; nothing was created.
    #[error("no run database at {path}")]
    Missing {
        /// The path asked for.
        path: PathBuf,
    },
    /// A write through a store opened read-only; nothing was written.
    #[error("{action} is not possible: {path} was opened read-only; nothing was written")]
    ReadOnly {
        /// The database file.
        path: PathBuf,
        /// What was asked for.
        action: String,
    },
    /// [`Store::claim`] of a run another driver holds a live lease on; nothing changed.
    #[error(
        "run `{run}` is leased to `{owner}` until {expires_ms} (Unix milliseconds); it can be \
         claimed when that lease expires, or taken over once `{owner}` is known to be gone"
    )]
    Leased {
        /// The run.
        run: String,
        /// Who holds it.
        owner: String,
        /// When its lease expires (Unix milliseconds).
        expires_ms: u64,
    },
    /// A save or renewal made with a lease that is no longer the run's current one (another
    /// driver took the run over, or the lease was released); nothing was changed.
    #[error(
        "the lease on run `{run}` with fence {fence} was lost: {}; nothing was changed",
        lost_to(.owner.as_deref(), *.current_fence)
    )]
    LeaseLost {
        /// The run.
        run: String,
        /// The fence of the lease the caller holds.
        fence: u64,
        /// The run's current fence.
        current_fence: u64,
        /// Who holds the run now, if anyone.
        owner: Option<String>,
    },
    /// [`Store::send_signal`] to a completed or cancelled run: no wait of it will ever take a
    /// signal; nothing was stored.
    #[error(
        "run `{run}` is {status}, so no wait of it can take a signal any more; the signal was not \
         stored"
    )]
    NotListening {
        /// The run.
        run: String,
        /// Its status.
        status: RunStatus,
    },
    /// [`Store::claim`] or [`Store::move_run`] of a completed or cancelled run: nothing is
    /// left to drive; nothing changed.
    #[error(
        "run `{run}` is {status}, so there is nothing left to drive: it can be neither claimed \
         nor moved to another deployment"
    )]
    Finished {
        /// The run.
        run: String,
        /// Its status.
        status: RunStatus,
    },
    /// A stored row does not match the checksum saved with it: it was changed outside stepflow
    /// or damaged on disk, so it is not used, and not overwritten either (an operator decides:
    /// restore a backup, or cancel the run).
    #[error(
        "run `{id}` in {location}: {row} does not match the checksum saved with it (stored \
         {stored:#010x}, computed {computed:#010x}); it was changed outside stepflow or damaged, \
         and was not overwritten"
    )]
    Checksum {
        /// The run.
        id: String,
        /// The store.
        location: String,
        /// The row at fault: `the run's row` or `history entry N`.
        row: String,
        /// The checksum saved with the row.
        stored: u32,
        /// The checksum of what the row holds now.
        computed: u32,
    },
    /// No deployment has this id, or an id that starts with it.
    #[error("no deployment `{id}` in {location}")]
    NoDeployment {
        /// The id (or prefix) asked for.
        id: String,
        /// The store (a file path for SQLite).
        location: String,
    },
    /// A prefix of a deployment id that several deployments' ids start with.
    #[error(
        "deployment id prefix `{prefix}` in {location} matches {} deployments: {}",
        matches.len(),
        matches.join(", ")
    )]
    AmbiguousDeployment {
        /// The prefix asked for.
        prefix: String,
        /// The store.
        location: String,
        /// The ids that start with it (at most ten; the full list is longer when there are
        /// ten).
        matches: Vec<String>,
    },
    /// A stored deployment no longer matches what was saved with it: a plugin's bytes that do
    /// not hash to their SHA-256, or a row that does not match its checksum. It was changed
    /// outside stepflow or damaged, so it is not used.
    #[error(
        "deployment `{id}` in {location}: {part} does not match the hash saved with it (stored \
         {stored}, computed {computed}); it was changed outside stepflow or damaged"
    )]
    DeploymentChecksum {
        /// The deployment.
        id: String,
        /// The store.
        location: String,
        /// What is at fault: `plugin `name`'s bytes` or `its row`.
        part: String,
        /// The hash saved (hex).
        stored: String,
        /// The hash of what is stored now (hex).
        computed: String,
    },
    /// A stored deployment holds a value this build cannot read (edited by hand, or damaged),
    /// or lacks the bytes of one of its plugins.
    #[error("deployment `{id}` in {location} has an unreadable {column}: {detail}")]
    BadDeployment {
        /// The deployment.
        id: String,
        /// The store.
        location: String,
        /// The column (or plugin) at fault.
        column: String,
        /// What is wrong.
        detail: String,
    },
    /// Any other failure of the database engine.
    #[error("{location}: {action} failed: {source}")]
    Backend {
        /// The store.
        location: String,
        /// What was being done.
        action: String,
        /// The engine's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a [`StoreError::Invalid`] refused to save, so its message says which kind of id it
/// names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A run ([`Store::create_run`], [`Store::save_step`], ...).
    Run,
    /// A deployment ([`Store::put_deployment`]).
    Deployment,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Run => "run",
            Subject::Deployment => "deployment",
        })
    }
}

/// Who holds a run now, for [`StoreError::LeaseLost`].
fn lost_to(owner: Option<&str>, fence: u64) -> String {
    match owner {
        Some(owner) => format!("`{owner}` holds it now, with fence {fence}"),
        None => format!("nobody holds it now (its fence is {fence})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_round_trips() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::Value::from(status.as_str()))
            );
        }
        let err = "paused".parse::<RunStatus>().unwrap_err();
        assert!(err.to_string().contains("`paused`"), "{err}");
    }

    #[test]
    fn outcome_text_round_trips() {
        for outcome in StepOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<StepOutcome>(), Ok(outcome));
            assert_eq!(
                serde_json::to_value(outcome).ok(),
                Some(serde_json::Value::from(outcome.as_str()))
            );
        }
    }
}
