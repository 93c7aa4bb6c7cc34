//! Where the runs are kept, as a user names it: a SQLite file, or a PostgreSQL database by its
//! URL. Every command and the server take the same `--db` value.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;

/// A run database: an embedded SQLite file (one host), or PostgreSQL (many hosts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL URL, `postgres://USER@HOST[:PORT]/DATABASE` (password and all).
    Postgres(String),
}

impl Database {
    /// Reads a `--db` value: a `postgres://` or `postgresql://` URL, else a file path.
    pub fn from_arg(text: &OsStr) -> Database {
        match text.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Postgres(url.to_string())
            }
            _ => Database::File(PathBuf::from(text)),
        }
    }

    /// The SQLite file, if that is what this is.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Database::File(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl fmt::Display for Database {
    /// The file's path, or the URL without its password: safe to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::File(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

/// A database URL as messages show it: without its password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_the_rest_are_files() {
        assert_eq!(
            Database::from_arg(OsStr::new("postgres://a@h/db")),
            Database::Postgres("postgres://a@h/db".into())
        );
        assert_eq!(
            Database::from_arg(OsStr::new("runs.db")),
            Database::File("runs.db".into())
        );
        assert_eq!(
            Database::from_arg(OsStr::new("postgres.db")),
            Database::File("postgres.db".into())
        );
    }

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact_url("postgres://ann:s3cret@db.example:5432/runs?sslmode=disable"),
            "postgres://ann@db.example:5432/runs?sslmode=disable"
        );
        assert_eq!(
            Database::Postgres("postgresql://u:p@h/d".into()).to_string(),
            "postgresql://u@h/d"
        );
        assert_eq!(redact_url("postgresql://h/db"), "postgresql://h/db");
    }
}
