//! Wake-ups: every write that another server should hear of (a new run, a signal, a status
//! changed, a run saved or given back) sends `NOTIFY stepflow_changes` with the writer's
//! connection id, delivered when its transaction commits. One listening connection per process
//! and database counts them, so [`crate::PostgresStore`]'s `data_version` is a read of memory,
//! not a query: an idle server asks the database nothing until something changes.
//!
//! A notification arrives a moment after its commit, so the version may lag a commit by that
//! moment. Notifications are not trusted blindly: while the listening connection is down (lost
//! and reconnecting every second) the version changes on every read, so a caller that looks
//! only on a change looks on every read then. A new store waits (a few seconds at most) for
//! the listener to be up before it is used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};

/// The channel every store notifies and listens on.
pub(crate) const CHANNEL: &str = "stepflow_changes";

/// The fragment of a statement that notifies listeners, as text.
pub(crate) const NOTIFY: &str = notify!();

/// How long a new store waits for the listener to be up.
const STARTUP: Duration = Duration::from_secs(5);

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// What the listening connection has heard.
pub(crate) struct Changes {
    /// Notifications heard, in all and from each watched connection (a store's own writes),
    /// under one lock so a reader never sees one counted without the other.
    heard: Mutex<Heard>,
    /// Whether the listening connection is up now (and a condition to wait for it).
    up: Mutex<bool>,
    became_up: Condvar,
    /// Bumped on every (re)connection and on every read while down.
    generation: AtomicU64,
    /// Set when the last store of the database is gone: the listener then disconnects.
    closed: tokio::sync::Notify,
    is_closed: AtomicBool,
}

/// The counts of notifications heard.
#[derive(Default)]
struct Heard {
    total: u64,
    own: HashMap<i32, u64>,
}

impl Changes {
    fn heard(&self, payload: &str) {
        if let Ok(mut heard) = self.heard.lock() {
            heard.total += 1;
            if let Ok(pid) = payload.parse::<i32>()
                && let Some(count) = heard.own.get_mut(&pid)
            {
                *count += 1;
            }
        }
    }

    fn set_up(&self, up: bool) {
        if let Ok(mut now) = self.up.lock() {
            *now = up;
        }
        if up {
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.became_up.notify_all();
        }
    }

    fn is_up(&self) -> bool {
        self.up.lock().is_ok_and(|up| *up)
    }

    /// Waits until the listener is up, at most [`STARTUP`]; a store opened then sees every
    /// later commit.
    pub(crate) fn wait_until_up(&self) {
        if let Ok(up) = self.up.lock() {
            let _ = self.became_up.wait_timeout_while(up, STARTUP, |up| !*up);
        }
    }

    /// Counts the notifications of connection `pid` apart from the others.
    pub(crate) fn watch(&self, pid: i32) {
        if let Ok(mut heard) = self.heard.lock() {
            heard.own.insert(pid, 0);
        }
    }

    /// Stops counting connection `pid`'s notifications; whether no store watches any more.
    fn forget(&self, pid: i32) -> bool {
        match self.heard.lock() {
            Ok(mut heard) => {
                heard.own.remove(&pid);
                heard.own.is_empty()
            }
            Err(_) => false,
        }
    }

    /// A number that changes when a connection other than `pid` has committed a change since
    /// the last read (and on every read while the listener is down).
    pub(crate) fn version(&self, pid: i32) -> u64 {
        if !self.is_up() {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        let others = self
            .heard
            .lock()
            .map(|heard| {
                let own = heard.own.get(&pid).copied().unwrap_or(0);
                heard.total.wrapping_sub(own)
            })
            .unwrap_or(0);
        others.wrapping_add(self.generation.load(Ordering::SeqCst) << 40)
    }
}

type Registry = Mutex<HashMap<String, Arc<Changes>>>;

fn registry() -> &'static Registry {
    static LISTENERS: OnceLock<Registry> = OnceLock::new();
    LISTENERS.get_or_init(Default::default)
}

/// Connection `pid` to database `url` is closed: when it was the last, the listener stops.
pub(crate) fn forget(url: &str, changes: &Changes, pid: i32) {
    let Ok(mut listeners) = registry().lock() else {
        return;
    };
    if changes.forget(pid) {
        listeners.remove(url);
        changes.is_closed.store(true, Ordering::SeqCst);
        changes.closed.notify_one();
    }
}

/// The listener of database `url`, started on first use; `pid` is the connection that
/// watches it (see [`Changes::version`]).
pub(crate) fn listener(url: &str, location: &str, pid: i32) -> Arc<Changes> {
    let Ok(mut listeners) = registry().lock() else {
        // A poisoned registry: a listener that is never up, so versions always change.
        return Arc::new(new_changes());
    };
    if let Some(changes) = listeners.get(url) {
        changes.watch(pid);
        return changes.clone();
    }
    let changes = Arc::new(new_changes());
    changes.watch(pid);
    listeners.insert(url.to_string(), changes.clone());
    match crate::connect::runtime() {
        Ok(runtime) => {
            runtime.spawn(listen(
                url.to_string(),
                location.to_string(),
                changes.clone(),
            ));
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for changes; polling instead"),
    }
    changes
}

fn new_changes() -> Changes {
    Changes {
        heard: Mutex::new(Heard::default()),
        up: Mutex::new(false),
        became_up: Condvar::new(),
        generation: AtomicU64::new(0),
        closed: tokio::sync::Notify::new(),
        is_closed: AtomicBool::new(false),
    }
}

/// Keeps one connection listening on [`CHANNEL`], connecting again when it is lost.
async fn listen(url: String, location: String, changes: Arc<Changes>) {
    while !changes.is_closed.load(Ordering::SeqCst) {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, mut connection)) => {
                let heard = changes.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                        match message {
                            Some(Ok(AsyncMessage::Notification(n))) => heard.heard(n.payload()),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the connection listening for changes failed");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        changes.set_up(true);
                        tokio::select! {
                            _ = driver => {}
                            () = changes.closed.notified() => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%location, error = %e, "cannot listen for changes");
                        driver.abort();
                    }
                }
                changes.set_up(false);
                drop(client);
            }
            Err(e) => {
                tracing::debug!(%location, error = %e, "cannot connect to listen for changes");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RECONNECT) => {}
            () = changes.closed.notified() => {}
        }
    }
}
