//! Drives one run: apply, save the new state and its history entry in one store call, repeat;
//! sleeps through waits; stops when asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stepflow_model::{
    Applied, CallRecord, Clock, ErrorKind, Failure, Outcome, RunContext, State, Status, StepError,
    StepFlow, SystemClock,
};
use stepflow_store::{HistoryEntry, Lease, RunStatus, StepSave, Store, StoreError};

use crate::error::EngineError;
use crate::observer::{Observer, Stopped, Waiting};
use crate::run::stored_status;
use crate::stop::StopRequests;

/// How a drive ended; the run's state is saved in every case.
#[derive(Debug)]
pub enum Finish {
    /// The flow completed.
    Completed(State),
    /// A step error that no retry took stopped the run.
    Failed(State),
    /// Stopped by a request or at a wait ([`DriveOptions::stop_at_wait`]); resumable.
    Stopped(State, Stopped),
    /// An operator cancelled the run while it was driven.
    Cancelled(State),
}

/// Choices for one drive.
#[derive(Clone, Copy, Debug)]
pub struct DriveOptions {
    /// The run's previous driver died without a clean stop: its first call may have run
    /// already, so it is marked redelivered (same idempotency key).
    pub redelivered: bool,
    /// Save and stop at the first wait instead of sleeping through it.
    pub stop_at_wait: bool,
    /// The largest the data document may grow to, as JSON text: a step whose patch would make it
    /// larger fails instead (its patch is not applied), so memory and the store stay bounded.
    pub max_data_bytes: u64,
}

/// The default [`DriveOptions::max_data_bytes`]: 64 MiB.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 64 << 20;

impl Default for DriveOptions {
    fn default() -> Self {
        DriveOptions {
            redelivered: false,
            stop_at_wait: false,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
        }
    }
}

/// Moves one run forward against a store, reporting to an observer.
pub struct Driver<'a> {
    flow: &'a StepFlow,
    store: &'a mut dyn Store,
    observer: &'a mut dyn Observer,
    stop: StopRequests,
    clock: Arc<dyn Clock>,
    lease: Option<(Lease, Duration)>,
}

/// How often a wait reports to the observer (its countdown's resolution).
const WAIT_REPORT: Duration = Duration::from_secs(1);

/// How often a drive that sleeps at a wait for a signal reads the store for it. A server does
/// not sleep there: it gives the run back, and the signal makes it due.
const SIGNAL_POLL: Duration = Duration::from_millis(500);

/// How many signals one read delivers; a longer inbox is read in several.
const SIGNALS_PER_READ: usize = 256;

impl<'a> Driver<'a> {
    /// A driver of runs of `flow` in `store`.
    pub fn new(
        flow: &'a StepFlow,
        store: &'a mut dyn Store,
        observer: &'a mut dyn Observer,
        stop: StopRequests,
    ) -> Self {
        Driver {
            flow,
            store,
            observer,
            stop,
            clock: Arc::new(SystemClock),
            lease: None,
        }
    }

    /// Drives under `lease` (see [`claim`](crate::claim)): every save is fenced by it, the
    /// driver renews it for `ttl` whenever less than half of that is left, and releases it when
    /// the drive ends. A driver that lost its lease saves nothing more: the drive ends with
    /// [`StoreError::LeaseLost`].
    pub fn with_lease(mut self, lease: Lease, ttl: Duration) -> Self {
        self.lease = Some((lease, ttl));
        self
    }

    /// Drives run `run_id` from `state` until it completes, fails, is stopped or cancelled.
    ///
    /// The state is saved after every apply, before the observer hears of it; a stop request
    /// lets the call in flight finish and saves it, a second one abandons it (it runs again on
    /// resume). A cancel made while a step runs is noticed when its result is saved: the store
    /// refuses to overwrite a cancelled run.
    pub async fn drive(
        self,
        run_id: &str,
        state: State,
        options: DriveOptions,
    ) -> Result<Finish, EngineError> {
        let mut run = Drive {
            driver: self,
            run_id,
            calls: 0,
        };
        let finish = run.from(state, options).await;
        run.release().await;
        let finish = finish?;
        if let Some(why) = match &finish {
            Finish::Stopped(_, why) => Some(*why),
            Finish::Cancelled(_) => Some(Stopped::Cancelled),
            _ => None,
        } {
            run.driver.observer.stopped(why);
        }
        Ok(finish)
    }
}

/// One drive in progress.
struct Drive<'d, 'a> {
    driver: Driver<'a>,
    run_id: &'d str,
    calls: u64,
}

impl Drive<'_, '_> {
    async fn from(
        &mut self,
        mut state: State,
        options: DriveOptions,
    ) -> Result<Finish, EngineError> {
        let d = &mut self.driver;
        let mut ctx = RunContext::new(self.run_id).with_clock(d.clock.clone());
        ctx.redelivered = options.redelivered;
        // The store is read on entry and after each wait; while steps run, a cancel shows up as
        // the store's refusal to save.
        let mut check_cancel = true;
        // Signals that arrived while nobody drove the run join its inbox at once, so a save
        // of the run as waiting has read them all (the store makes a run due that has not).
        self.deliver_signals(&mut state)?;
        loop {
            let d = &mut self.driver;
            if std::mem::take(&mut check_cancel)
                && d.store.run(self.run_id)?.status == RunStatus::Cancelled
            {
                return Ok(Finish::Cancelled(state));
            }
            match d.flow.status(&state, d.clock.now_ms()) {
                Status::Completed => return Ok(Finish::Completed(state)),
                Status::Failed(_) => return Ok(Finish::Failed(state)),
                Status::Waiting(until) => {
                    if options.stop_at_wait {
                        self.save_stopped(&state).await?;
                        return Ok(Finish::Stopped(state, Stopped::AtWait));
                    }
                    if !self.sleep_until(&mut state, until, None).await? {
                        self.save_stopped(&state).await?;
                        return Ok(Finish::Stopped(state, Stopped::Requested));
                    }
                    check_cancel = true;
                    continue;
                }
                Status::AwaitingSignal { signal, until } => {
                    if self.deliver_signals(&mut state)? {
                        continue;
                    }
                    if options.stop_at_wait {
                        self.save_stopped(&state).await?;
                        return Ok(Finish::Stopped(state, Stopped::AtWait));
                    }
                    let until = until.unwrap_or(stepflow_store::NEVER_DUE_MS);
                    if !self.sleep_until(&mut state, until, Some(&signal)).await? {
                        self.save_stopped(&state).await?;
                        return Ok(Finish::Stopped(state, Stopped::Requested));
                    }
                    check_cancel = true;
                    continue;
                }
                Status::Ready => {}
            }
            if self.driver.stop.count() >= 1 {
                self.save_stopped(&state).await?;
                return Ok(Finish::Stopped(state, Stopped::Requested));
            }
            self.renew()?;
            let d = &mut self.driver;
            if let Some((path, kind)) = d.flow.next_call(&state) {
                d.observer.step_started(self.calls + 1, &path, kind);
            }
            let started_ms = d.clock.now_ms();
            let started = Instant::now();
            let applied = tokio::select! {
                applied = d.flow.apply_with_record(&ctx, state.clone()) => applied,
                // The abandoned call's result is not saved: the run stays as its last save
                // left it (`running`), so a resume marks the call redelivered.
                _ = d.stop.reached(2) => return Ok(Finish::Stopped(state, Stopped::Abandoned)),
            };
            ctx.redelivered = false;
            let applied = bound_data(applied, &state, options.max_data_bytes);
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match self.save(&applied, started_ms, duration_ms).await {
                Ok(()) => {}
                Err(StoreError::Cancelled { .. }) => return Ok(Finish::Cancelled(state)),
                Err(e) => return Err(e.into()),
            }
            for call in &applied.calls {
                self.calls += 1;
                self.driver
                    .observer
                    .step_finished(self.calls, call, duration_ms);
            }
            state = applied.state;
        }
    }

    /// Sleeps until `until` (Unix ms) or, at a wait for `signal`, until that signal reaches
    /// the run's inbox (the store is read every [`SIGNAL_POLL`], so a signal sent from another
    /// process is seen), reporting the wait and keeping the lease; false if a stop was
    /// requested.
    async fn sleep_until(
        &mut self,
        state: &mut State,
        until: u64,
        signal: Option<&str>,
    ) -> Result<bool, StoreError> {
        let step = self
            .driver
            .flow
            .next_call(state)
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
        let longest = if signal.is_some() {
            SIGNAL_POLL
        } else {
            WAIT_REPORT
        };
        let mut first = true;
        loop {
            let d = &mut self.driver;
            let now = d.clock.now_ms();
            d.observer.waiting(&Waiting {
                step: &step,
                until_ms: until,
                now_ms: now,
                first: std::mem::take(&mut first),
                signal,
            });
            let left = until.saturating_sub(now);
            if left == 0 {
                return Ok(true);
            }
            let slice = Duration::from_millis(left).min(longest);
            tokio::select! {
                _ = tokio::time::sleep(slice) => {}
                _ = d.stop.reached(1) => return Ok(false),
            }
            self.renew()?;
            // Any signal a strand waits for moves the run on, not only the one reported.
            if signal.is_some()
                && self.deliver_signals(state)?
                && !matches!(
                    self.driver.flow.status(state, self.driver.clock.now_ms()),
                    Status::AwaitingSignal { .. }
                )
            {
                return Ok(true);
            }
        }
    }

    /// Reads the signals the store received for the run after the last one its state has read
    /// into its inbox; true if any arrived.
    fn deliver_signals(&mut self, state: &mut State) -> Result<bool, StoreError> {
        let mut delivered = false;
        loop {
            let signals =
                self.driver
                    .store
                    .signals(self.run_id, state.signals_read, SIGNALS_PER_READ)?;
            let full = signals.len() == SIGNALS_PER_READ;
            delivered |= state.deliver(signals);
            if !full {
                return Ok(delivered);
            }
        }
    }

    /// Extends the lease when less than half of its time is left.
    fn renew(&mut self) -> Result<(), StoreError> {
        let d = &mut self.driver;
        let Some((lease, ttl)) = &mut d.lease else {
            return Ok(());
        };
        let now = d.clock.now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if lease.expires_ms.saturating_sub(now) < ttl_ms / 2 {
            *lease = d.store.renew(lease, ttl_ms, now)?;
        }
        Ok(())
    }

    /// Gives the lease back, so the next driver need not wait for it to expire. A lease that
    /// was lost meanwhile is someone else's now: nothing to give back.
    async fn release(&mut self) {
        let d = &mut self.driver;
        let Some((lease, _)) = d.lease.take() else {
            return;
        };
        if let Err(e) = d.store.begin_release(&lease).await {
            tracing::debug!(run = self.run_id, "could not release the lease: {e}");
        }
    }

    /// The new state and its history entry, in one store call.
    async fn save(
        &mut self,
        applied: &Applied,
        started_ms: u64,
        duration_ms: u64,
    ) -> Result<(), StoreError> {
        let d = &mut self.driver;
        let (status, next_check_ms) = stored_status(d.flow, &applied.state, d.clock.now_ms());
        let history: Vec<HistoryEntry> = applied
            .calls
            .iter()
            .map(|call| HistoryEntry::from_call(self.run_id, call, started_ms, duration_ms))
            .collect();
        let last_error = applied.state.error.as_ref().map(|f| f.to_string());
        let saving = d.store.begin_save_step(&StepSave {
            run_id: self.run_id,
            status,
            state: &applied.state,
            next_check_ms,
            last_error: last_error.as_deref(),
            history: &history,
            lease: d.lease.as_ref().map(|(lease, _)| lease),
        });
        saving.await
    }

    /// A clean stop: the run is saved as waiting (for its next due time, or for a resume).
    async fn save_stopped(&mut self, state: &State) -> Result<(), EngineError> {
        let d = &mut self.driver;
        let (status, next_check_ms) = stored_status(d.flow, state, d.clock.now_ms());
        let status = match status {
            RunStatus::Running => RunStatus::Waiting,
            other => other,
        };
        let saving = d.store.begin_save_step(&StepSave {
            run_id: self.run_id,
            status,
            state,
            next_check_ms,
            last_error: None,
            history: &[],
            lease: d.lease.as_ref().map(|(lease, _)| lease),
        });
        match saving.await {
            Ok(()) | Err(StoreError::Cancelled { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// An apply whose patches made the data document larger than `max_bytes` becomes a failure of
/// the steps that patched it: the run keeps the state from before the apply, with the error
/// recorded, so the data document never exceeds the limit and a resume (with a larger limit, or
/// a fixed plugin) runs those steps again. Only a patch can grow the document, so other applies
/// are not measured.
fn bound_data(mut applied: Applied, before: &State, max_bytes: u64) -> Applied {
    let patched = |call: &CallRecord| matches!(call.outcome, Outcome::Done(Some(_)));
    let Some(first) = applied.calls.iter().position(patched) else {
        return applied;
    };
    let size = json_size(&applied.state.data);
    if size <= max_bytes {
        return applied;
    }
    let error = StepError::fatal(format!(
        "its patch would make the data document {size} bytes, over the limit of {max_bytes} \
         bytes; the patch was not applied (raise the limit if the run needs that much data)"
    ));
    let mut state = before.clone();
    state.error = Some(Failure {
        step: applied.calls[first].step.to_string(),
        kind: ErrorKind::Fatal,
        message: error.to_string(),
    });
    for call in applied.calls.iter_mut().filter(|c| patched(c)) {
        call.outcome = Outcome::Failed(error.clone());
    }
    Applied {
        state,
        calls: applied.calls,
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_size(value: &serde_json::Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => u64::MAX,
    }
}
