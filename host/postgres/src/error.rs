//! PostgreSQL's errors in store terms: a taken run id, a missing deployment, a read-only
//! session, and everything else as [`StoreError::Backend`] with the server's own message.

use std::path::PathBuf;

use stepflow_store::StoreError;
use tokio_postgres::error::SqlState;

/// The text of `e` with the server's message and SQLSTATE, or the client's reason.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str("; ");
            text.push_str(detail);
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `e`, met while doing `action` on the database at `location`.
pub(crate) fn classify(
    location: &str,
    action: impl Into<String>,
    e: tokio_postgres::Error,
) -> StoreError {
    let action = action.into();
    if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
        return StoreError::ReadOnly {
            path: PathBuf::from(location),
            action,
        };
    }
    StoreError::Backend {
        location: location.to_string(),
        action,
        source: describe(&e).into(),
    }
}

/// Whether `e` is a unique or primary-key violation.
pub(crate) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Whether `e` is a foreign-key violation.
pub(crate) fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

/// No run `id` in the database at `location`.
pub(crate) fn not_found(location: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        id: id.to_string(),
        location: location.to_string(),
    }
}

/// No deployment `id` in the database at `location`.
pub(crate) fn no_deployment(location: &str, id: &str) -> StoreError {
    StoreError::NoDeployment {
        id: id.to_string(),
        location: location.to_string(),
    }
}

/// A stored value of run `id` this build cannot read.
pub(crate) fn bad_record(
    location: &str,
    id: &str,
    column: &str,
    detail: impl ToString,
) -> StoreError {
    StoreError::BadRecord {
        id: id.to_string(),
        location: location.to_string(),
        column: column.to_string(),
        detail: detail.to_string(),
    }
}
