//! PostgreSQL for tests: the server's URL comes from `STEPFLOW_TEST_POSTGRES` (which `.ci/run`
//! sets), and every test makes a scratch database of its own there, dropped when it is done.

use std::sync::atomic::{AtomicU64, Ordering};

use stepflow_postgres::PostgresStore;

/// The environment variable with the URL of a PostgreSQL server tests may create databases on.
pub const URL_VAR: &str = "STEPFLOW_TEST_POSTGRES";

/// The server's URL, or `None` after saying `skipped: why` (under `CI` a missing URL panics).
pub fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if crate::in_ci() => panic!(
            "{test}: {URL_VAR} is not set; under CI every PostgreSQL test must run (.ci/run sets \
             it to postgres://postgres@127.0.0.1:5432/test)"
        ),
        _ => {
            eprintln!(
                "skipped: {test}: {URL_VAR} is not set (e.g. \
                 {URL_VAR}=postgres://postgres@127.0.0.1:5432/test cargo test)"
            );
            None
        }
    }
}

/// A database made for one test, dropped (its connections closed) when this is dropped.
pub struct ScratchDatabase {
    /// The URL of the scratch database.
    pub url: String,
    server: String,
    name: String,
}

impl ScratchDatabase {
    /// Gives the database a setting its new sessions start with (see
    /// [`PostgresStore::configure_database`]).
    pub fn configure(&self, setting: &str, value: &str) -> Result<(), String> {
        PostgresStore::configure_database(&self.server, &self.name, setting, value)
            .map_err(|e| e.to_string())
    }

    /// A new, empty database on the server at `server` (a URL of any database there).
    pub fn create(server: &str, tag: &str) -> Result<Self, String> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(20)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "sf_{tag}_{}_{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        // A database left by an earlier process with the same pid (killed before dropping it).
        let _ = PostgresStore::drop_database(server, &name);
        let url = PostgresStore::create_database(server, &name).map_err(|e| e.to_string())?;
        Ok(ScratchDatabase {
            url,
            server: server.to_string(),
            name,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Err(e) = PostgresStore::drop_database(&self.server, &self.name) {
            eprintln!("could not drop the scratch database {}: {e}", self.name);
        }
    }
}
