//! Errors that end a command: the message, the hint a person needs next, and the exit code.
//! The libraries say what went wrong in their own terms; the command-line hints (`--db`,
//! `stepflow runs`) are added here, where the command line is known.

use std::fmt;

use stepflow_engine::EngineError;
use stepflow_store::StoreError;

/// Exit code: the run failed.
pub const FAILED: u8 = 1;
/// Exit code: a usage or validation error.
pub const USAGE: u8 = 2;
/// Exit code: interrupted or waiting; resumable.
pub const INTERRUPTED: u8 = 3;
/// Exit code: the run database failed.
pub const STORAGE: u8 = 4;
/// Exit code: the run was cancelled.
pub const CANCELLED: u8 = 5;

/// A command's failure: what to print and which exit code to use.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code (see `cli::EXIT_CODES`).
    pub code: u8,
    /// What to tell the user; empty when everything was already printed.
    pub message: String,
}

impl Exit {
    /// A usage or validation error.
    pub fn usage(message: impl fmt::Display) -> Self {
        Exit {
            code: USAGE,
            message: message.to_string(),
        }
    }

    /// An exit with nothing more to say.
    pub fn quiet(code: u8) -> Self {
        Exit {
            code,
            message: String::new(),
        }
    }

    /// Prints the message, if any, to stderr; with `--json` also a JSON error object on stdout
    /// (`{"error": ..., "exit_code": ...}`), so a script that reads stdout learns what failed.
    pub fn print(&self, json: bool) {
        if self.message.is_empty() {
            return;
        }
        eprintln!("error: {}", self.message);
        if json {
            crate::output::line(serde_json::json!({
                "error": self.message,
                "exit_code": self.code,
            }));
        }
    }
}

const DB_HINT: &str = "use `--db FILE` (or STEPFLOW_DB) to choose another run database";

impl From<StoreError> for Exit {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::NotFound { .. } => {
                Exit::usage(format!("{e}; `stepflow runs` lists the runs"))
            }
            StoreError::AlreadyExists { .. } | StoreError::Invalid { .. } => Exit::usage(e),
            StoreError::Cancelled { .. } => Exit {
                code: CANCELLED,
                message: e.to_string(),
            },
            StoreError::Leased { .. } | StoreError::Finished { .. } => Exit::usage(e),
            StoreError::Missing { .. } => Exit {
                code: STORAGE,
                message: format!(
                    "{e}\n  hint: check the path, or use `--db FILE` (or STEPFLOW_DB); `stepflow run` creates a database"
                ),
            },
            StoreError::LeaseLost { .. } => Exit {
                code: INTERRUPTED,
                message: format!(
                    "{e}\n  hint: another stepflow process took this run over; it goes on there (`stepflow runs` shows who holds it)"
                ),
            },
            StoreError::Busy { .. } | StoreError::BadRecord { .. } | StoreError::Backend { .. } => {
                Exit {
                    code: STORAGE,
                    message: e.to_string(),
                }
            }
            _ => Exit {
                code: STORAGE,
                message: format!("{e}\n  hint: {DB_HINT}"),
            },
        }
    }
}

impl From<EngineError> for Exit {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::Cancelled { .. } => Exit {
                code: CANCELLED,
                message: e.to_string(),
            },
            EngineError::Busy { .. } => {
                Exit::usage(format!("{e}; wait for it to stop, or stop it with Ctrl-C"))
            }
            EngineError::BuildStopped { .. } => Exit {
                code: INTERRUPTED,
                message: format!("{e}; no run was started"),
            },
            _ => Exit::usage(e),
        }
    }
}

impl From<stepflow_flowfile::Diagnostic> for Exit {
    fn from(d: stepflow_flowfile::Diagnostic) -> Self {
        Exit::usage(d)
    }
}
