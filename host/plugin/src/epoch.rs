//! The epoch clock behind call time limits: a thread that advances the engine's epoch every
//! tick while at least one call is in flight, and parks otherwise, so a process that holds
//! many waiting runs and calls nothing does no work at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while calls run: the resolution of call time limits.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many calls are in flight, and the clock thread to wake when the first one starts.
#[derive(Default)]
pub(crate) struct EpochClock {
    calls: AtomicUsize,
    thread: OnceLock<Thread>,
}

/// Held while guest code may run; the clock ticks while any is held.
pub(crate) struct Ticking<'a>(&'a EpochClock);

impl EpochClock {
    /// Starts the clock thread for `engine`; it ends once the returned clock is dropped or the
    /// engine is gone.
    pub(crate) fn start(engine: &Engine) -> Arc<EpochClock> {
        let clock = Arc::new(EpochClock::default());
        let (engine, weak) = (engine.weak(), Arc::downgrade(&clock));
        let spawned = std::thread::Builder::new()
            .name("stepflow-epoch".into())
            .spawn(move || tick(&engine, &weak));
        match spawned {
            Ok(handle) => {
                let _ = clock.thread.set(handle.thread().clone());
            }
            Err(e) => tracing::error!(
                "could not start the epoch clock; call time limits will not hold: {e}"
            ),
        }
        clock
    }

    /// Marks a call in flight until the guard is dropped.
    pub(crate) fn ticking(&self) -> Ticking<'_> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        Ticking(self)
    }
}

impl Drop for EpochClock {
    /// Wakes the thread so that it sees the clock is gone and ends.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The clock thread: tick while calls run, park while none does, end with the clock.
fn tick(engine: &wasmtime::EngineWeak, clock: &Weak<EpochClock>) {
    loop {
        let Some(state) = clock.upgrade() else { return };
        let busy = state.calls.load(Ordering::SeqCst) > 0;
        drop(state);
        if busy {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        } else {
            // A call that starts between the check and here unparks first: park returns.
            std::thread::park();
        }
    }
}
