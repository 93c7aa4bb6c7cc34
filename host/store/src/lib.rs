//! Saves stepflow runs and their history: SQLite embedded by default.
//!
//! A runner saves a run's [`State`] after every apply, together with the history entry of the
//! call that apply made, in one transaction ([`Store::save_step`]): a crash loses at most the
//! step in flight, which then runs again on resume (design.md, section 5).
//!
//! The [`Store`] trait and the record types here are the boundary every backend implements;
//! [`SqliteStore`] (one file, WAL, durable commits) is the embedded default, and a PostgreSQL
//! store for many hosts will implement the same trait.
//!
//! ```
//! use stepflow_store::{RunRecord, RunStatus, SqliteStore, Store};
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
//! store.save_step("run-1", RunStatus::Completed, &state, None, None, None)?;
//! assert_eq!(store.run("run-1")?.status, RunStatus::Completed);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod sqlite;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
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
    /// The hash of the definition the run started with (design.md, section 3).
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

/// One function call of a run, as shown by `stepflow show`: one entry per apply that called.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The run the call belongs to.
    pub run_id: String,
    /// The entry's number in the run, 1, 2, ...: assigned by the store (ignored when saving).
    pub seq: u64,
    /// The step path of the item whose function was called.
    pub step: String,
    /// What kind of function: one of [`HistoryEntry::KINDS`].
    pub kind: String,
    /// The attempt number the call saw.
    pub attempt: u32,
    /// How it ended: one of [`HistoryEntry::OUTCOMES`].
    pub outcome: String,
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
    /// The valid `kind` values (the model's [`CallKind`] in kebab case); the store refuses others.
    pub const KINDS: [&'static str; 5] =
        ["step", "wait-for", "case", "loop-until", "error-handler"];

    /// The valid `outcome` values; the store refuses others.
    pub const OUTCOMES: [&'static str; 5] = ["done", "true", "false", "retrying", "failed"];

    /// The entry for a call the model reported ([`stepflow_model::Applied::call`]), so runners
    /// need not spell kinds and outcomes themselves; the store assigns `seq`.
    pub fn from_call(run_id: &str, call: &CallRecord, started_ms: u64, duration_ms: u64) -> Self {
        let kind = match call.kind {
            CallKind::Step => "step",
            CallKind::WaitFor => "wait-for",
            CallKind::Case => "case",
            CallKind::LoopUntil => "loop-until",
            CallKind::ErrorHandler => "error-handler",
        };
        let (outcome, error, patch) = match &call.outcome {
            Outcome::Done(patch) => ("done", None, patch.clone()),
            Outcome::Answered(true) => ("true", None, None),
            Outcome::Answered(false) => ("false", None, None),
            Outcome::Retrying { error, .. } => ("retrying", Some(error.to_string()), None),
            Outcome::Failed(error) => ("failed", Some(error.to_string()), None),
        };
        HistoryEntry {
            run_id: run_id.to_string(),
            seq: 0,
            step: call.step.to_string(),
            kind: kind.to_string(),
            attempt: call.attempt,
            outcome: outcome.to_string(),
            started_ms,
            duration_ms,
            error,
            patch,
            redelivered: call.redelivered,
        }
    }
}

/// Where runs are saved: the one interface runners and the CLI use, whatever the backend.
///
/// Calls are synchronous and each is its own transaction; `Send` so a store can move to the
/// thread that drives runs.
pub trait Store: Send {
    /// Saves a new run; refuses an id that exists ([`StoreError::AlreadyExists`]).
    fn create_run(&mut self, run: &RunRecord) -> Result<(), StoreError>;

    /// Saves what one apply did: the run's new status, state, next check time and last error,
    /// and the history entry of its call, all in ONE transaction (design.md, section 5), so a
    /// crash keeps either both or neither. The store assigns the entry's `seq` and sets
    /// `updated_ms`. A cancelled run is not overwritten: that gives [`StoreError::Cancelled`],
    /// so a runner learns of a cancel made while its step ran.
    fn save_step(
        &mut self,
        run_id: &str,
        status: RunStatus,
        state: &State,
        next_check_ms: Option<u64>,
        last_error: Option<&str>,
        history: Option<&HistoryEntry>,
    ) -> Result<(), StoreError>;

    /// Loads one run; an unknown id gives [`StoreError::NotFound`].
    fn run(&self, id: &str) -> Result<RunRecord, StoreError>;

    /// Lists at most `limit` runs, newest first, optionally only those with `status`.
    fn runs(&self, status: Option<RunStatus>, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// The history of a run, oldest first; an unknown id gives [`StoreError::NotFound`].
    fn history(&self, run_id: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Sets a run's status without touching its state: how `stepflow cancel` works.
    fn set_status(&mut self, run_id: &str, status: RunStatus) -> Result<(), StoreError>;
}

/// Why a store operation failed; every message says which file or run and what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file or its directory could not be created, opened or read.
    #[error(
        "cannot use the run database {path}: {source}; check the path and its permissions, or \
         choose another file with `--db` or STEPFLOW_DB"
    )]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is not a SQLite database at all; it was not modified.
    #[error(
        "{path} is not a stepflow run database: it is not a SQLite database ({detail}); it was \
         left untouched. Use `--db` (or STEPFLOW_DB) to point stepflow at another file, or move \
         this one away"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What the file looks like instead.
        detail: String,
    },
    /// The file is a damaged SQLite database (e.g. truncated); it was not modified.
    #[error(
        "{path} is a damaged SQLite database ({detail}); it was left untouched. Restore it from \
         a backup, or use `--db` (or STEPFLOW_DB) to point stepflow at another file"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is another application's SQLite database; it was not modified.
    #[error(
        "{path} is a SQLite database of another application ({detail}), not a stepflow run \
         database; it was left untouched. Use `--db` (or STEPFLOW_DB) to point stepflow at \
         another file"
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
         it was written by a newer stepflow. Upgrade stepflow, or use `--db` (or STEPFLOW_DB) to \
         point this one at another file; the database was left untouched"
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
    #[error("no run `{id}` in {location}; `stepflow runs` lists the runs")]
    NotFound {
        /// The id asked for.
        id: String,
        /// The store (a file path for SQLite).
        location: String,
    },
    /// `create_run` with an id that is taken.
    #[error("a run `{id}` already exists in {location}; choose another run id")]
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
    #[error(
        "run `{id}` in {location} has an unreadable {column}: {detail}; fix or cancel the run, \
         or restore the database from a backup"
    )]
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
    /// A value to save does not fit the store (e.g. an unknown history kind, a time past 2^63).
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
         again when the other stepflow command has finished"
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

/// The database file used when none is given: `$STEPFLOW_DB` if set, else
/// `$XDG_DATA_HOME/stepflow/stepflow.db`, else `~/.local/share/stepflow/stepflow.db` (and
/// `stepflow.db` in the current directory when not even `HOME` is set).
pub fn default_path() -> PathBuf {
    default_path_from(|name| std::env::var_os(name))
}

/// [`default_path`] over any environment, so it is testable without touching the process's.
fn default_path_from(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(db) = set("STEPFLOW_DB") {
        return PathBuf::from(db);
    }
    // The XDG spec says relative values are invalid and must be ignored.
    let base = match set("XDG_DATA_HOME").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => match set("HOME") {
            Some(home) => Path::new(&home).join(".local").join("share"),
            None => return PathBuf::from("stepflow.db"),
        },
    };
    base.join("stepflow").join("stepflow.db")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn path_with(vars: &[(&str, &str)]) -> PathBuf {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        default_path_from(|name| vars.get(name).cloned())
    }

    #[test]
    fn default_path_prefers_stepflow_db_then_xdg_then_home() {
        let all = [
            ("STEPFLOW_DB", "/tmp/x.db"),
            ("XDG_DATA_HOME", "/data"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(path_with(&all), PathBuf::from("/tmp/x.db"));
        assert_eq!(
            path_with(&all[1..]),
            PathBuf::from("/data/stepflow/stepflow.db")
        );
        assert_eq!(
            path_with(&all[2..]),
            PathBuf::from("/home/u/.local/share/stepflow/stepflow.db")
        );
        // Empty and relative values are ignored.
        assert_eq!(
            path_with(&[
                ("STEPFLOW_DB", ""),
                ("XDG_DATA_HOME", "rel"),
                ("HOME", "/h")
            ]),
            PathBuf::from("/h/.local/share/stepflow/stepflow.db")
        );
        assert_eq!(path_with(&[]), PathBuf::from("stepflow.db"));
    }

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
    fn history_kinds_match_the_model_call_kinds() {
        for kind in [
            CallKind::Step,
            CallKind::WaitFor,
            CallKind::Case,
            CallKind::LoopUntil,
            CallKind::ErrorHandler,
        ] {
            let text = serde_json::to_value(kind).ok();
            let call = CallRecord {
                step: "f/a".into(),
                kind,
                attempt: 1,
                sequence: 0,
                redelivered: false,
                outcome: Outcome::Answered(true),
            };
            let entry = HistoryEntry::from_call("r", &call, 0, 0);
            assert_eq!(text, Some(serde_json::Value::from(entry.kind.clone())));
            assert!(HistoryEntry::KINDS.contains(&entry.kind.as_str()));
        }
    }
}
