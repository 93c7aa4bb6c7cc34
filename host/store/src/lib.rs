//! Saves stepflow runs and their history: SQLite embedded by default.
//!
//! A runner saves a run's [`State`] after every apply, together with the history entry of the
//! call that apply made, in one transaction ([`Store::save_step`]): a crash loses at most the
//! step in flight, which then runs again on resume.
//!
//! The [`Store`] trait and the record types here are the boundary every backend implements;
//! [`SqliteStore`] (one file, WAL, durable commits) is the embedded default, and a PostgreSQL
//! store for many hosts will implement the same trait.
//!
//! ```
//! use stepflow_store::{RunRecord, RunStatus, SqliteStore, StepSave, Store};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let mut store = SqliteStore::open(&dir.path().join("stepflow.db"))?;
//! let state = stepflow_model::State::default();
//! store.create_run(&RunRecord {
//!     id: "run-1".into(),
//!     flow: "quickstart.v1".into(),
//!     flow_file: "/flows/quickstart.yaml".into(),
//!     definition: "abc123".into(),
//!     status: RunStatus::Running,
//!     state: state.clone(),
//!     next_check_ms: None,
//!     last_error: None,
//!     created_ms: 1,
//!     updated_ms: 1,
//! })?;
//! store.save_step(&StepSave {
//!     run_id: "run-1",
//!     status: RunStatus::Completed,
//!     state: &state,
//!     next_check_ms: None,
//!     last_error: None,
//!     history: None,
//! })?;
//! assert_eq!(store.run("run-1")?.status, RunStatus::Completed);
//! # Ok(())
//! # }
//! ```

mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stepflow_model::{CallKind, CallRecord, Outcome, State};

pub use sqlite::SqliteStore;

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

/// One function call of a run, as shown by `stepflow show`: one entry per apply that called.
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
    /// The history entry of the apply's call; `None` when the apply called nothing.
    pub history: Option<&'a HistoryEntry>,
}

/// Where runs are saved: the one interface runners and the CLI use, whatever the backend.
///
/// Calls are synchronous and each is its own transaction; `Send` so a store can move to the
/// thread that drives runs.
pub trait Store: Send {
    /// Saves a new run; refuses an id that exists ([`StoreError::AlreadyExists`]).
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError>;

    /// Saves what one apply did: the run's new status, state, next check time and last error,
    /// and the history entry of its call, all in ONE transaction, so a crash keeps either both
    /// or neither. The store assigns the entry's `seq` and sets `updated_ms`. A cancelled run
    /// is not overwritten: that gives [`StoreError::Cancelled`], so a runner learns of a cancel
    /// made while its step ran.
    fn save_step(&mut self, step: &StepSave<'_>) -> Result<(), StoreError>;

    /// Loads one run; an unknown id gives [`StoreError::NotFound`].
    fn run(&self, id: &str) -> Result<RunRecord, StoreError>;

    /// Lists at most `limit` runs, newest first, optionally only those with `status`.
    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// The history of a run, oldest first; an unknown id gives [`StoreError::NotFound`].
    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Sets a run's status without touching its state: how `stepflow cancel` works.
    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError>;
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
    /// A value to save does not fit the store (e.g. a time past 2^63, or a history entry of
    /// another run); nothing was saved.
    #[error("cannot save run `{id}`: {detail}")]
    Invalid {
        /// The run.
        id: String,
        /// What is wrong and what is allowed.
        detail: String,
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
