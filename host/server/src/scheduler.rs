//! The scheduler: claims due runs up to the concurrency limit, hands them to the drivers, and
//! sleeps until the next due time, a drive ending, the idle poll or a stop request. One store
//! query per wake-up, never one per waiting run.

use std::time::{Duration, Instant};

use stepflow_engine::StopRequests;
use stepflow_model::{Clock, SystemClock};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::drivers::{Done, Drivers, Ended};
use crate::error::ServerError;
use crate::server::Summary;
use crate::writer::{Request, WriterHandle};

/// However quiet the database looks, an idle scheduler looks for due runs this often: a
/// bounded fallback should a change go unnoticed (PostgreSQL's notifications are delivered
/// only to connections that are up).
const FALLBACK_LOOK: Duration = Duration::from_secs(30);

/// How long the scheduler waits before it looks again after the database could not be reached.
const RETRY: Duration = Duration::from_secs(1);

/// How the drain after a stop request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every drive in flight ended and saved its step.
    Finished,
    /// A second request came first: drives are still in flight, their steps unsaved.
    Abandoned,
}

/// What the scheduler works with.
pub(crate) struct Scheduler<'a> {
    pub writer: &'a WriterHandle,
    pub drivers: &'a Drivers,
    pub done: &'a mut UnboundedReceiver<Done>,
    pub stop: &'a StopRequests,
    pub owner: &'a str,
    pub ttl_ms: u64,
    pub concurrency: usize,
    pub idle_poll: Duration,
}

impl Scheduler<'_> {
    /// Runs until a stop request, then waits for every drive in flight to end (or, after a
    /// second request, for none).
    pub(crate) async fn run(self, summary: &mut Summary) -> Result<Drained, ServerError> {
        let mut in_flight = 0usize;
        let mut version = self.data_version().await?;
        let mut look = true;
        let mut looked_at: Instant;
        while self.stop.count() == 0 {
            let now = SystemClock.now_ms();
            if look && in_flight < self.concurrency {
                let (owner, ttl_ms, limit) = (
                    self.owner.to_string(),
                    self.ttl_ms,
                    self.concurrency - in_flight,
                );
                let claimed = self
                    .writer
                    .ask("claiming due runs", |reply| Request::ClaimDue {
                        owner,
                        ttl_ms,
                        now_ms: now,
                        limit,
                        reply,
                    })
                    .await;
                let Some(leases) = self.unless_unreachable(claimed).await? else {
                    continue;
                };
                for lease in leases {
                    if !self.drivers.submit(lease) {
                        return Err(ServerError::Config("every driver thread has ended".into()));
                    }
                    in_flight += 1;
                    summary.drives += 1;
                }
            }
            look = false;
            looked_at = Instant::now();
            // When every driver is busy, only a drive ending can make room.
            let next_due = if in_flight < self.concurrency {
                let asked = self
                    .writer
                    .ask("finding the next due run", |reply| {
                        Request::NextDue(now, reply)
                    })
                    .await;
                let Some(next_due) = self.unless_unreachable(asked).await? else {
                    look = true;
                    continue;
                };
                next_due
            } else {
                None
            };
            let due_at =
                next_due.map(|t| Instant::now() + Duration::from_millis(t.saturating_sub(now)));
            let mut poll_at = Instant::now() + self.idle_poll;
            while !look && self.stop.count() == 0 {
                let wake = due_at.map_or(poll_at, |d| d.min(poll_at));
                tokio::select! {
                    done = self.done.recv() => {
                        let Some(done) = done else { return Err(ServerError::Config("every driver thread has ended".into())) };
                        in_flight -= 1;
                        summary.count(&done.ended);
                        look = true;
                    }
                    () = tokio::time::sleep_until(wake.into()) => {
                        if due_at.is_some_and(|d| d <= Instant::now()) {
                            look = true;
                        } else if poll_at <= Instant::now() {
                            let v = self.data_version().await?;
                            look = v != version || looked_at.elapsed() >= FALLBACK_LOOK;
                            version = v;
                            poll_at = Instant::now() + self.idle_poll;
                        }
                    }
                    () = self.stop.reached(1) => {}
                }
            }
        }
        // Draining: the drivers saw the same stop request and end after their step in flight.
        // A second request abandons the steps still running: a plugin call cannot be cut
        // short from outside, so the server leaves without them (their results are not saved,
        // and the next start redelivers them).
        tracing::info!(in_flight, "stopping: waiting for the steps in flight");
        while in_flight > 0 {
            tokio::select! {
                done = self.done.recv() => match done {
                    Some(done) => {
                        in_flight -= 1;
                        summary.count(&done.ended);
                    }
                    None => break,
                },
                () = self.stop.reached(2) => {
                    tracing::warn!(in_flight, "abandoning the steps in flight; they run again, redelivered, on the next start");
                    summary.abandoned = in_flight as u64;
                    return Ok(Drained::Abandoned);
                }
            }
        }
        Ok(Drained::Finished)
    }

    /// `result`, or `None` after a pause of [`RETRY`] when the database could not be reached
    /// (a lost connection, a restart): the scheduler looks again then instead of stopping the
    /// server, while its drives fail and redeliver as they must.
    async fn unless_unreachable<T>(
        &self,
        result: Result<T, stepflow_store::StoreError>,
    ) -> Result<Option<T>, ServerError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(
                e @ (stepflow_store::StoreError::Backend { .. }
                | stepflow_store::StoreError::Busy { .. }),
            ) => {
                tracing::warn!("cannot reach the run database: {e}; looking again in {RETRY:?}");
                tokio::select! {
                    () = tokio::time::sleep(RETRY) => {}
                    () = self.stop.reached(1) => {}
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn data_version(&self) -> Result<u64, ServerError> {
        Ok(self
            .writer
            .ask("checking for new runs", Request::DataVersion)
            .await?)
    }
}

impl Summary {
    fn count(&mut self, ended: &Ended) {
        match ended {
            Ended::Completed => self.completed += 1,
            Ended::Failed => self.failed += 1,
            Ended::Parked => self.parked += 1,
            Ended::Stopped => self.stopped += 1,
            Ended::Cancelled => self.cancelled += 1,
            Ended::Unloadable => self.unloadable += 1,
            Ended::Error => self.errors += 1,
        }
    }
}
