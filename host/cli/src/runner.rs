//! Drives a run: apply, save the new state and its history row in one transaction, repeat;
//! sleeps through waits; stops cleanly on Ctrl-C.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use stepflow_model::{Applied, CallKind, Clock, RunContext, State, Status, StepFlow, SystemClock};
use stepflow_store::{HistoryEntry, RunStatus, Store, StoreError};
use tokio::sync::watch;

use crate::error::Exit;
use crate::progress::Progress;

/// How a drive ended.
#[derive(Debug)]
pub enum Finish {
    /// The flow completed.
    Completed(State),
    /// A step error no retry took.
    Failed(State),
    /// Stopped by Ctrl-C, or at a wait with `--no-wait`; resumable.
    Stopped(State),
    /// Cancelled by `stepflow cancel` while it ran.
    Cancelled(State),
}

/// Counts Ctrl-C presses: the first asks to stop after the step in flight, the second abandons
/// it (its result is not saved; the step runs again on resume).
#[derive(Clone)]
pub struct Interrupts(watch::Receiver<u32>);

impl Interrupts {
    /// Starts listening for Ctrl-C.
    ///
    /// The handler is installed before this returns, so a Ctrl-C that comes before the first
    /// `.await` is counted rather than killing the process.
    pub fn listen() -> Self {
        let (tx, rx) = watch::channel(0u32);
        let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        match signals {
            Ok(mut signals) => {
                tokio::spawn(async move {
                    let mut n = 0;
                    while signals.recv().await.is_some() {
                        n += 1;
                        if tx.send(n).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for Ctrl-C ({e}); it will stop at once"),
        }
        Interrupts(rx)
    }

    fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Resolves once the count reaches `n`.
    async fn reached(&self, n: u32) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

/// Holds the run's lock file, so two processes never drive the same run.
pub struct RunLock(#[allow(dead_code)] File);

impl RunLock {
    /// Takes the lock of `run_id` next to the database, or says who has it.
    pub fn take(db: &Path, run_id: &str) -> Result<Self, Exit> {
        let dir = PathBuf::from(format!("{}.locks", db.display()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Exit::storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join(run_id);
        let file =
            File::create(&path).map_err(|e| Exit::storage(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock(file)),
            Err(_) => Err(Exit::usage(format!(
                "run {run_id} is being driven by another stepflow process; wait for it to stop, or stop it with Ctrl-C"
            ))),
        }
    }
}

/// Everything a drive needs.
pub struct Driver<'a> {
    /// The compiled flow.
    pub flow: &'a StepFlow,
    /// Where runs are saved.
    pub store: &'a mut dyn Store,
    /// The run.
    pub run_id: String,
    /// Set when the previous driver of this run died without a clean stop.
    pub redelivered: bool,
    /// Stop at the first wait instead of sleeping.
    pub no_wait: bool,
    /// What the user sees.
    pub progress: Progress,
    /// Ctrl-C.
    pub interrupts: Interrupts,
}

impl Driver<'_> {
    /// Drives the run from `state` until it completes, fails, is stopped or cancelled.
    pub async fn drive(mut self, state: State) -> Result<Finish, Exit> {
        let result = self.drive_from(state).await;
        self.progress.finish();
        result
    }

    async fn drive_from(&mut self, mut state: State) -> Result<Finish, Exit> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut ctx = RunContext::new(self.run_id.as_str()).with_clock(clock.clone());
        ctx.redelivered = self.redelivered;
        let mut steps = 0u64;
        // A cancel while steps run is caught by `save_step`, which refuses a cancelled run; the
        // database is read only on entry and after a wait, not at every step.
        let mut check_cancel = true;
        loop {
            if std::mem::take(&mut check_cancel)
                && self.store.run(&self.run_id)?.status == RunStatus::Cancelled
            {
                return Ok(Finish::Cancelled(state));
            }
            match self.flow.status(&state, clock.now_ms()) {
                Status::Completed => return Ok(Finish::Completed(state)),
                Status::Failed(_) => return Ok(Finish::Failed(state)),
                Status::Waiting(until) => {
                    let path = self.flow.next_call(&state).map(|(p, _)| p.to_string());
                    if self.no_wait {
                        return Ok(Finish::Stopped(state));
                    }
                    // Sleep in slices of at most a second so the countdown stays current.
                    let path = path.as_deref().unwrap_or("");
                    self.progress.waiting(path, until, clock.now_ms(), true);
                    loop {
                        let left = until.saturating_sub(clock.now_ms());
                        if left == 0 {
                            break;
                        }
                        let slice = std::time::Duration::from_millis(left.min(1000));
                        tokio::select! {
                            _ = tokio::time::sleep(slice) => {}
                            _ = self.interrupts.reached(1) => return Ok(Finish::Stopped(state)),
                        }
                        self.progress.waiting(path, until, clock.now_ms(), false);
                    }
                    check_cancel = true;
                    continue;
                }
                Status::Ready => {}
            }
            if self.interrupts.count() >= 1 {
                return Ok(Finish::Stopped(state));
            }
            let next = self.flow.next_call(&state).map(|(p, k)| (p.to_string(), k));
            if let Some((path, kind)) = &next {
                self.progress.started(steps + 1, path, *kind);
            }
            let started_ms = clock.now_ms();
            let started = Instant::now();
            let applied = tokio::select! {
                applied = self.flow.apply_with_record(&ctx, state.clone()) => applied,
                _ = self.interrupts.reached(2) => {
                    self.progress.abandoned();
                    return Ok(Finish::Stopped(state));
                }
            };
            ctx.redelivered = false;
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let now = clock.now_ms();
            match self.save(&applied, started_ms, duration_ms, now) {
                Ok(()) => {}
                Err(StoreError::Cancelled { .. }) => return Ok(Finish::Cancelled(state)),
                Err(e) => return Err(e.into()),
            }
            if let Some(call) = &applied.call {
                steps += 1;
                self.progress.finished(steps, call, duration_ms);
            }
            state = applied.state;
        }
    }

    /// The new state and its history row, in one transaction.
    fn save(
        &mut self,
        applied: &Applied,
        started_ms: u64,
        duration_ms: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        let (status, next_check) = store_status(self.flow, &applied.state, now);
        let history = applied
            .call
            .as_ref()
            .map(|call| HistoryEntry::from_call(&self.run_id, call, started_ms, duration_ms));
        let last_error = applied.state.error.as_ref().map(|f| f.to_string());
        self.store.save_step(
            &self.run_id,
            status,
            &applied.state,
            next_check,
            last_error.as_deref(),
            history.as_ref(),
        )
    }
}

/// The stored status of a state.
pub fn store_status(flow: &StepFlow, state: &State, now: u64) -> (RunStatus, Option<u64>) {
    match flow.status(state, now) {
        Status::Completed => (RunStatus::Completed, None),
        Status::Failed(_) => (RunStatus::Failed, None),
        Status::Waiting(t) => (RunStatus::Waiting, Some(t)),
        Status::Ready => (RunStatus::Running, None),
    }
}

/// How history names a call kind.
pub fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Step => "step",
        CallKind::WaitFor => "wait-for",
        CallKind::Case => "case",
        CallKind::LoopUntil => "loop-until",
        CallKind::ErrorHandler => "error-handler",
    }
}
