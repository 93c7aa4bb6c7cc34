//! Errors that end a command, each with the exit code it maps to.

use std::fmt;

/// A command's failure: what to print and which exit code to use.
#[derive(Debug)]
pub struct Exit {
    /// The process exit code (see `cli::EXIT_CODES`).
    pub code: i32,
    /// What to tell the user; empty when everything was already printed.
    pub message: String,
}

/// Exit code: the run failed.
pub const FAILED: i32 = 1;
/// Exit code: a usage or validation error.
pub const USAGE: i32 = 2;
/// Exit code: interrupted or waiting; resumable.
pub const INTERRUPTED: i32 = 3;
/// Exit code: the run database failed.
pub const STORAGE: i32 = 4;
/// Exit code: the run was cancelled.
pub const CANCELLED: i32 = 5;

impl Exit {
    /// A usage or validation error.
    pub fn usage(message: impl fmt::Display) -> Self {
        Exit {
            code: USAGE,
            message: message.to_string(),
        }
    }

    /// A storage error.
    pub fn storage(message: impl fmt::Display) -> Self {
        Exit {
            code: STORAGE,
            message: message.to_string(),
        }
    }

    /// An exit with nothing more to say.
    pub fn quiet(code: i32) -> Self {
        Exit {
            code,
            message: String::new(),
        }
    }
}

impl From<stepflow_store::StoreError> for Exit {
    fn from(e: stepflow_store::StoreError) -> Self {
        Exit::storage(e)
    }
}

impl From<stepflow_flowfile::Diagnostic> for Exit {
    fn from(d: stepflow_flowfile::Diagnostic) -> Self {
        Exit::usage(d)
    }
}
