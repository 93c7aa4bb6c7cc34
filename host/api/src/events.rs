//! Live updates: one watcher per API notices every commit to the database (SQLite's
//! `data_version`, read every 5 ms on one connection: a read of the WAL index in shared
//! memory, no I/O, however many clients), and each client's stream of a run re-reads that run only after a commit and
//! sends an event when the run moved.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use stepflow_store::Store;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Path;
use crate::runs::Status;

/// How often the watcher asks whether anything was committed.
const POLL: Duration = Duration::from_millis(5);

/// A counter that moves on every commit anyone makes to the database.
#[derive(Clone)]
pub(crate) struct Changes(watch::Receiver<u64>);

impl Changes {
    /// Starts the watcher: a thread with its own connection (counters of different
    /// connections cannot be compared), which ends once nobody listens.
    pub(crate) fn watch(db: stepflow_store::Database) -> Self {
        let (tx, rx) = watch::channel(0u64);
        let spawned = std::thread::Builder::new()
            .name("stepflow-api-changes".into())
            .spawn(move || {
                let store = match stepflow_engine::open_store(&db) {
                    Ok(store) => store,
                    Err(e) => {
                        tracing::warn!("live updates are off: {e}");
                        return;
                    }
                };
                let mut seen = None;
                while !tx.is_closed() {
                    let version = store.data_version().ok();
                    if version.is_some() && version != seen {
                        seen = version;
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    std::thread::sleep(POLL);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("live updates are off: cannot start their thread: {e}");
        }
        Changes(rx)
    }
}

/// A run's position, sent as the data of each `run` event.
#[derive(Clone, PartialEq, Serialize, ToSchema)]
pub(crate) struct RunEvent {
    /// The run's id.
    id: String,
    /// Its status.
    status: Status,
    /// When it was last saved (Unix milliseconds).
    updated_ms: u64,
    /// How many history entries it has.
    history_count: u64,
}

fn position(store: &dyn Store, id: &str) -> Result<RunEvent, ApiError> {
    let run = store.run(id)?;
    let (_, history_count) = store.history_page(id, u64::MAX, 0)?;
    Ok(RunEvent {
        id: run.id,
        status: run.status.into(),
        updated_ms: run.updated_ms,
        history_count,
    })
}

/// Follows a run: a `run` event now and after every save that moved it (server-sent events).
#[utoipa::path(get, path = "/api/v1/runs/{id}/events", operation_id = "follow_run", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, content_type = "text/event-stream", body = RunEvent,
        description = "A stream of `run` events"), (status = 404, body = ErrorBody)))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let first = {
        let id = id.clone();
        state.stores.with(move |_, s| position(s, &id)).await?
    };
    let mut changes = state.changes.0.clone();
    changes.borrow_and_update();
    let stores = state.stores.clone();
    let events = futures_util::stream::unfold(
        (Some(first), None::<RunEvent>, changes),
        move |(pending, last, mut changes)| {
            let (stores, id) = (stores.clone(), id.clone());
            async move {
                if let Some(event) = pending {
                    return Some((sse(&event), (None, Some(event), changes)));
                }
                loop {
                    changes.changed().await.ok()?;
                    let id = id.clone();
                    let now = stores.with(move |_, s| position(s, &id)).await.ok()?;
                    if last.as_ref() != Some(&now) {
                        return Some((sse(&now), (None, Some(now), changes)));
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn sse(event: &RunEvent) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event("run")
        .json_data(event)
        .unwrap_or_else(|_| Event::default().event("run")))
}
