//! SQLite's errors as the [`StoreError`] a caller can act on: busy, damaged, or any other
//! failure, each naming the database file and what was being done.

use std::path::Path;
use std::time::Duration;

use rusqlite::ErrorCode;

use super::BUSY_TIMEOUT;
use crate::StoreError;

/// `SQLITE_CONSTRAINT_PRIMARYKEY`: a duplicate key.
pub(super) const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
/// `SQLITE_CONSTRAINT_CHECK`: a CHECK constraint refused a value.
pub(super) const SQLITE_CONSTRAINT_CHECK: i32 = 275;
/// `SQLITE_CONSTRAINT_FOREIGNKEY`: a reference to a row that does not exist.
pub(super) const SQLITE_CONSTRAINT_FOREIGNKEY: i32 = 787;

/// Maps an engine error, met while doing `action` on the database at `path`: a lock held too
/// long is [`StoreError::Busy`], SQLite's "not a database" and "malformed" are
/// [`StoreError::Corrupt`], anything else is [`StoreError::Backend`].
pub(super) fn classify(path: &Path, action: impl Into<String>, e: rusqlite::Error) -> StoreError {
    let action = action.into();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            location: path.display().to_string(),
            action,
            waited_ms: millis(BUSY_TIMEOUT),
        },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("{e}, while {action}"),
        },
        _ => StoreError::Backend {
            location: path.display().to_string(),
            action,
            source: Box::new(e),
        },
    }
}

/// Whether another connection holds the lock that `e` waited for.
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A duration in whole milliseconds, saturating, for messages.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The error for a run id that the database at `path` does not have.
pub(super) fn not_found(path: &Path, id: &str) -> StoreError {
    StoreError::NotFound {
        id: id.to_string(),
        location: path.display().to_string(),
    }
}

/// The error for a deployment id (or prefix) that the database at `path` does not have.
pub(super) fn no_deployment(path: &Path, id: &str) -> StoreError {
    StoreError::NoDeployment {
        id: id.to_string(),
        location: path.display().to_string(),
    }
}

/// Whether `e` is a failure of the database or the transaction itself (busy, damaged, any
/// engine error), rather than one record's refusal: a batch gives up on the first one.
pub(super) fn is_fatal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Io { .. }
            | StoreError::Busy { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Backend { .. }
            | StoreError::ReadOnly { .. }
    )
}
