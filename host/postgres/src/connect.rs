//! Connections: the database URL (and how it is shown without its password), the one
//! background runtime that runs every connection's IO, and waiting for an answer on the
//! caller's thread.
//!
//! The `Store` trait is synchronous and is called from plain threads and from inside tokio
//! tasks alike. A tokio runtime cannot be entered from inside another, so the connections run
//! on a runtime of this crate's own (one thread), and a call waits for its answer with a plain
//! executor that knows nothing of tokio: the query's future only exchanges messages with the
//! connection task.

use std::future::Future;
use std::sync::OnceLock;

use stepflow_store::StoreError;
use tokio_postgres::{Client, NoTls};

/// The runtime every connection of the process runs on.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("stepflow-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::Backend {
            location: "PostgreSQL".into(),
            action: "starting the thread that runs its connections".into(),
            source: e.clone().into(),
        })
}

/// Waits for `future` on the calling thread, inside a tokio runtime or not.
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// The URL as messages show it: without its password.
pub(crate) use stepflow_store::redact_url as redact;

/// Opens a connection to `url` and runs its IO on the background runtime; `location` is the
/// redacted URL for messages.
/// How long a session may sit in an open transaction waiting for its client: a store's
/// transactions never wait for anything but the database, so a longer wait means the client is
/// paused or cut off, and PostgreSQL ends its session, releasing the rows it locked, so a server
/// stopped in the middle of a batch holds up no other server's runs for longer than this.
const IDLE_IN_TRANSACTION: &str = "5s";

/// Opens a connection to `url` (read-only sessions when `read_only`) and runs its IO on the
/// background runtime; `location` is the redacted URL for messages.
pub(crate) fn connect(url: &str, location: &str, read_only: bool) -> Result<Client, StoreError> {
    let client = connect_raw(url, location)?;
    let mut settings = format!("SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'");
    if read_only {
        settings.push_str("; SET default_transaction_read_only = on");
    }
    wait(client.batch_execute(&settings))
        .map_err(|e| crate::error::classify(location, "setting up the session", e))?;
    Ok(client)
}

fn connect_raw(url: &str, location: &str) -> Result<Client, StoreError> {
    let runtime = runtime()?;
    let config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Backend {
        location: location.to_string(),
        action: "reading the database URL".into(),
        source: format!(
            "{e}; write it as postgres://USER@HOST[:PORT]/DATABASE (see \
             https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING)"
        )
        .into(),
    })?;
    // Connecting does IO, so it runs on the background runtime too; the caller may be inside a
    // runtime of its own, where it cannot block on another.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(config.connect(NoTls).await);
    });
    let connected = rx.recv().map_err(|_| StoreError::Backend {
        location: location.to_string(),
        action: "connecting".into(),
        source: "the thread that runs PostgreSQL connections has stopped".into(),
    })?;
    let (client, connection) = connected.map_err(|e| StoreError::Backend {
        location: location.to_string(),
        action: "connecting".into(),
        source: format!(
            "{}; check that PostgreSQL runs there and that the URL's user and database exist",
            crate::error::describe(&e)
        )
        .into(),
    })?;
    runtime.spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}
