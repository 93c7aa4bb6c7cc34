//! Errors that end a command: the message, the hint a person needs next, and the exit code.
//! The libraries say what went wrong in their own terms; the command-line hints (`--db`,
//! `stepflow runs`) are added here, where the command line is known.

use std::fmt;

use stepflow_engine::{EngineError, UpgradeRefusal};
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

    /// A file next to the database could not be read or written.
    pub fn storage(message: impl fmt::Display) -> Self {
        Exit {
            code: STORAGE,
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
            StoreError::NoDeployment { .. } => Exit::usage(format!(
                "{e}\n  hint: `stepflow deployments` lists the deployments (any 8 or more leading hex digits of an id name it)"
            )),
            StoreError::AmbiguousDeployment { .. } => Exit::usage(format!(
                "{e}\n  hint: give more digits of the id (`stepflow deployments --json` shows full ids)"
            )),
            StoreError::Cancelled { .. } => Exit {
                code: CANCELLED,
                message: e.to_string(),
            },
            StoreError::Leased { .. }
            | StoreError::Finished { .. }
            | StoreError::NotListening { .. } => Exit::usage(e),
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
            StoreError::Busy { .. }
            | StoreError::BadRecord { .. }
            | StoreError::Backend { .. }
            | StoreError::DeploymentChecksum { .. }
            | StoreError::BadDeployment { .. } => Exit {
                code: STORAGE,
                message: e.to_string(),
            },
            _ => Exit {
                code: STORAGE,
                message: format!("{e}\n  hint: {DB_HINT}"),
            },
        }
    }
}

impl From<EngineError> for Exit {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        match e {
            // The code of what went wrong inside; the message names the deployment.
            EngineError::Deployment { source, .. } => Exit {
                code: Exit::from(*source).code,
                message,
            },
            EngineError::DamagedDeployment { .. } => Exit {
                code: STORAGE,
                message,
            },
            EngineError::Upgrade {
                ref run,
                ref refusal,
                ..
            } => Exit::usage(format!("{message}\n  hint: {}", upgrade_hint(run, refusal))),
            EngineError::Store(e) => e.into(),
            EngineError::Cancelled { .. } => Exit {
                code: CANCELLED,
                message: e.to_string(),
            },
            EngineError::Busy { ref owner, .. } => Exit::usage(format!(
                "{e}\n  hint: {owner} (host:pid:start) is a `stepflow server` or another `run`/`resume`; stop it (Ctrl-C, or SIGTERM for a server) or wait for it to finish, then try again"
            )),
            EngineError::UnknownSignal { ref run, .. } => Exit::usage(format!(
                "{message}\n  hint: `stepflow show {run}` shows where the run waits"
            )),
            EngineError::BuildStopped { .. } => Exit {
                code: INTERRUPTED,
                message: format!("{e}; no run was started"),
            },
            _ => Exit::usage(e),
        }
    }
}

impl From<stepflow_server::ServerError> for Exit {
    fn from(e: stepflow_server::ServerError) -> Self {
        use stepflow_server::ServerError;
        match e {
            ServerError::Store(e) => e.into(),
            ServerError::Engine(e) => e.into(),
            ServerError::Config(_) => Exit::usage(e),
            other => Exit {
                code: STORAGE,
                message: format!("{other}; restart the server"),
            },
        }
    }
}

/// What to do about a run that cannot move onto a deployment.
pub fn upgrade_hint(run: &str, refusal: &UpgradeRefusal) -> String {
    match refusal {
        UpgradeRefusal::Finished { .. } => {
            "nothing is left to run; start a new run with `stepflow run FLOW`".to_string()
        }
        UpgradeRefusal::OtherFlow { run_flow, .. } => format!(
            "`stepflow deployments --flow {run_flow}` lists the deployments this run can move onto"
        ),
        UpgradeRefusal::Driven { .. } => {
            "wait for it to stop (or stop it with Ctrl-C), then upgrade it".to_string()
        }
        UpgradeRefusal::AlreadyOn => "nothing to do".to_string(),
        _ => format!(
            "finish the run on its current deployment (`stepflow resume {run}`) or cancel it (`stepflow cancel {run}`), or deploy a flow that keeps those steps"
        ),
    }
}

impl From<stepflow_flowfile::Diagnostic> for Exit {
    fn from(d: stepflow_flowfile::Diagnostic) -> Self {
        Exit::usage(d)
    }
}
