//! What a driver tells whoever watches a run: a progress display, a log, a test.

use stepflow_model::{CallKind, CallRecord};

/// Receives what happens while a flow is loaded and a run is driven. Every method has an empty
/// default, so an observer implements only what it shows; `()` observes nothing.
///
/// Calls come from the driving task, between steps, never while the state is unsaved: when
/// [`Observer::step_finished`] is called, the step's result is already in the store.
pub trait Observer: Send {
    /// A plugin's `build` command is about to run.
    fn building(&mut self, _plugin: &str, _command: &str) {}

    /// Call number `n` of this drive (1, 2, ...) is about to be made at `step`.
    fn step_started(&mut self, _n: u64, _step: &str, _kind: CallKind) {}

    /// Call number `n` ended as `call` says, after `duration_ms`; its result is saved.
    fn step_finished(&mut self, _n: u64, _call: &CallRecord, _duration_ms: u64) {}

    /// The run sleeps until a step is due again; called when the wait begins and then about
    /// once a second, so a countdown can stay current.
    fn waiting(&mut self, _wait: &Waiting<'_>) {}

    /// The drive stopped before the run finished.
    fn stopped(&mut self, _why: Stopped) {}
}

impl Observer for () {}

/// A wait in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting<'a> {
    /// The step that is due next (empty when the run waits on a retry back-off of a group).
    pub step: &'a str,
    /// When it is due (Unix milliseconds); for a wait for a signal, when the wait gives up
    /// ([`stepflow_store::NEVER_DUE_MS`] when it has no timeout).
    pub until_ms: u64,
    /// The signal the run waits for, when it waits for one rather than for a time.
    pub signal: Option<&'a str>,
    /// Now (Unix milliseconds).
    pub now_ms: u64,
    /// True for the first report of this wait.
    pub first: bool,
}

/// Why a drive stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// A stop was requested; the step in flight (if any) finished and was saved.
    Requested,
    /// A second stop abandoned the step in flight: its result was not saved, and it runs again
    /// (marked redelivered) when the run resumes.
    Abandoned,
    /// The run reached a wait and the drive was asked not to sleep through waits.
    AtWait,
    /// An operator cancelled the run.
    Cancelled,
}
