//! The saved state of a run: a plain serde type, so any store can keep it as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::function::ErrorKind;
use crate::graph::ItemKind;

/// The state of one run of a flow, saved after every [`crate::StepFlow::apply`].
///
/// The cursor is kept in the seed's form (`start:<scope>` / `completed:<scope>`), so a state is
/// readable and survives a rebuild of the flow (see [`crate::StepFlow::check_state`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The current events, one per strand (a run that is inside a `parallel` or a `for_each`
    /// has one strand per branch or instance in progress); empty means "not started yet".
    pub cursor: Vec<Event>,
    /// The run's data document; actions patch it.
    pub data: Arc<Value>,
    /// Attempt numbers of `retry` groups that have restarted at least once, by scope path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attempts: BTreeMap<Arc<str>, u32>,
    /// When each timed `wait_for` in progress gives up (Unix milliseconds), by scope path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deadlines: BTreeMap<Arc<str>, u64>,
    /// Applying before this time (Unix milliseconds) does nothing: a wait or a back-off is due.
    /// Only for a run with one strand; with several, each has its own time in [`State::due`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// With several strands: when each strand that waits may go on (Unix milliseconds), by its
    /// cursor event. An apply before then leaves that strand alone and moves the others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub due: BTreeMap<Arc<str>, u64>,
    /// The `for_each` items in progress, by path (with instance numbers when nested in another
    /// one's instance): how many instances they run, how many have started and how many are
    /// done, so a resumed run starts each element's instance exactly once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub each: BTreeMap<Arc<str>, EachProgress>,
    /// The error that stopped the run, when no retry took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// How many step calls have completed (the next call's sequence number).
    #[serde(default)]
    pub calls: u64,
    /// The definition hash of the flow the run started on ([`crate::StepFlow::definition_hash`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub definition: String,
    /// For each cursor event, the kind of the item that decides what happens from it, by that
    /// item's scope path: `x` for `start:x`; for `completed:x` the item `x` is in (it moves on
    /// to the next sibling, or asks a `loop-until` again, ...). A run resumed on a changed flow
    /// is refused when that item changed kind ([`crate::StepFlow::check_state`]). Filled by
    /// every apply; a state saved before it existed has none and is checked by event names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<Arc<str>, ItemKind>,
    /// Signals delivered to the run that no wait has taken yet, oldest first. A runner adds
    /// what its store received ([`State::deliver`]); a wait for a signal takes the first of
    /// its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<Signal>,
    /// The store's number of the last signal delivered into [`State::inbox`]: a runner asks
    /// its store only for later ones, so a signal is delivered once however often the run
    /// stops and resumes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub signals_read: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl State {
    /// Adds signals the store received for this run to its inbox: those numbered after
    /// [`State::signals_read`], in order; earlier ones were delivered already and are skipped.
    /// True if any was added.
    pub fn deliver(&mut self, signals: impl IntoIterator<Item = Signal>) -> bool {
        let before = self.inbox.len();
        for signal in signals {
            if signal.seq > self.signals_read {
                self.signals_read = signal.seq;
                self.inbox.push(signal);
            }
        }
        self.inbox.len() > before
    }
}

/// Where a `for_each` stands: its instance count, fixed when it started (the length of its
/// array then), how many instances have started (the next one's number) and how many are done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EachProgress {
    /// How many instances there are, one per element.
    pub count: u64,
    /// How many have started: the next instance's number.
    pub started: u64,
    /// How many have completed.
    pub done: u64,
}

/// A signal sent to a run: a name that a wait can be for, and a JSON payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// Its number in the run's inbox, 1, 2, ...: assigned by the store, in arrival order.
    pub seq: u64,
    /// The sender's id for it: a second delivery with the same id is the same signal.
    pub id: String,
    /// What it is, e.g. `approve`: a wait for a signal of this name takes it.
    pub name: String,
    /// The data it carries; stored under `signals.<name>` in the data document.
    pub payload: Value,
    /// When the store received it (Unix milliseconds).
    pub received_ms: u64,
}

/// An event of the cursor: `start:<scope>` or `completed:<scope>`, where a scope inside a
/// `for_each` names its instance after the for-each's name (`start:flow/files#3/process`).
///
/// It remembers the id it has in the compiled flow that produced it, so applying does not look
/// names up; a deserialised event is looked up by name once.
#[derive(Clone)]
pub struct Event {
    pub(crate) name: Arc<str>,
    pub(crate) slot: Option<(u64, u32)>,
    /// The instance numbers, outermost `for_each` first (only meaningful with `slot`).
    pub(crate) instance: Vec<u32>,
}

impl Event {
    /// An event from its text form; it is checked against a flow when applied.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Event {
            name: name.into(),
            slot: None,
            instance: Vec::new(),
        }
    }

    /// The text form, e.g. `start:deploy.v1/prepare`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Event {}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(Event::new(name))
    }
}

/// An error that stopped a run, with where it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The step path whose function failed (or the flow name for a state problem).
    pub step: String,
    /// Whether a retry could help.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step `{}` failed: {}", self.step, self.message)?;
        if self.kind == ErrorKind::Fatal {
            f.write_str(" (fatal)")?;
        }
        Ok(())
    }
}

/// Where a run stands, derived from its state and the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The flow has finished.
    Completed,
    /// An error no retry took stopped the run; applying again retries the failing step.
    Failed(Failure),
    /// Nothing to do before this time (Unix milliseconds): a wait or a back-off.
    Waiting(u64),
    /// At a wait for a signal that the inbox does not hold: nothing to do until a signal of
    /// this name is delivered, or until the wait's deadline (then it fails).
    AwaitingSignal {
        /// The signal's name.
        signal: String,
        /// When the wait gives up (Unix milliseconds), if it has a timeout.
        until: Option<u64>,
    },
    /// Applying now makes progress.
    Ready,
}
