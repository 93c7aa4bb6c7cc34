//! A new run from the state an old one had after any step: the old run's first state and its
//! history are kept, and the model is deterministic given its calls' results, so applying the
//! flow with each recorded result in place of its function rebuilds the state after step N
//! exactly (no plugin runs). The new run goes on from there, on the same deployment.
//!
//! Time comes from a clock set to each recorded call's start, so waits, deadlines and
//! back-offs fall as they did; a signal a wait took is delivered again from the patch it left.
//! A history that the flow does not reproduce (it names another step than the one the flow
//! reaches) is refused rather than guessed at.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use stepflow_flowfile::{Function, FunctionKind, Functions};
use stepflow_model::{
    Action, BoxFuture, CallKind, Clock, Condition, ErrorHandler, ManualClock, RunContext, Signal,
    State, StepContext, StepError, StepFlow, StepResult, SystemClock,
};
use stepflow_store::{HistoryEntry, RunRecord, StepOutcome, Store};

use crate::deployment::{parse_stored, shape_deployment};
use crate::error::EngineError;
use crate::load::compile;
use crate::run::{new_run_id, stored_status};

/// Starts a new run of `run_id`'s deployment from the state it had after its history entry
/// `after` (0: its first state, as it was created). Returns the new run's id. Refused for a run
/// without a deployment, a run created before its store kept first states, an `after` beyond
/// its history, and a history the flow does not reproduce.
pub async fn rerun_from(
    store: &mut dyn Store,
    run_id: &str,
    after: u64,
) -> Result<String, EngineError> {
    let run = store.run(run_id)?;
    let refused = |detail: String| EngineError::Rerun {
        run: run_id.to_string(),
        detail,
    };
    let Some(deployment_id) = run.deployment.clone() else {
        return Err(refused(
            "it was started before deployments, so its flow is not stored with it".into(),
        ));
    };
    let Some(start) = store.start_state(run_id)? else {
        return Err(refused(
            "it was created before the store kept first states".into(),
        ));
    };
    let (history, total) = store.history_page(run_id, 0, usize::try_from(after).unwrap_or(0))?;
    if after > total {
        return Err(refused(format!(
            "it has {total} history entries, so there is no state after entry {after}"
        )));
    }
    let deployment = store.deployment(&deployment_id)?;
    let state = replay(&deployment, &run, start, history)
        .await
        .map_err(refused)?;
    // Checked against the real flow's shape too: the replay flow and it must agree.
    let shape = shape_deployment(&deployment)?;
    let now = SystemClock.now_ms();
    let (status, next_check_ms) = stored_status(&shape, &state, now);
    let id = new_run_id();
    store.create_run(&RunRecord {
        id: id.clone(),
        flow: run.flow.clone(),
        flow_file: run.flow_file.clone(),
        definition: shape.definition_hash().to_string(),
        deployment: Some(deployment_id),
        status,
        last_error: state.error.as_ref().map(ToString::to_string),
        state,
        next_check_ms,
        created_ms: now,
        updated_ms: now,
        lease: None,
    })?;
    Ok(id)
}

/// The state after applying `history` to `start` with the deployment's flow.
async fn replay(
    deployment: &stepflow_store::Deployment,
    run: &RunRecord,
    start: State,
    history: Vec<HistoryEntry>,
) -> Result<State, String> {
    let script = Arc::new(Mutex::new(Script {
        entries: history.into_iter().collect(),
        handlers: VecDeque::new(),
        diverged: None,
    }));
    let file = parse_stored(deployment).map_err(|e| e.to_string())?;
    let steps = file
        .to_steps(&Recorded(script.clone()))
        .map_err(|e| e.to_string())?;
    let flow = compile(&file, steps).map_err(|e| e.to_string())?;
    let clock = Arc::new(ManualClock::new(run.created_ms));
    let ctx = RunContext::new(run.id.as_str()).with_clock(clock.clone());
    let mut state = start;
    let mut idle = 0;
    loop {
        let Some(next) = front(&script) else {
            return Ok(state);
        };
        if clock.now_ms() < next.started_ms {
            clock.set(next.started_ms);
        }
        deliver_recorded_signal(&flow, &mut state, &next, &script);
        let applied = flow.apply_with_record(&ctx, state).await;
        state = applied.state;
        if let Some(why) = script.lock().ok().and_then(|s| s.diverged.clone()) {
            return Err(why);
        }
        match applied.calls.first() {
            Some(_) => idle = 0,
            None => {
                idle += 1;
                if idle > 2 {
                    return Err(format!(
                        "its history does not fit its flow: entry {} is at `{}`, but the flow \
                         stands at {:?} and makes no call",
                        next.seq, next.step, state.cursor
                    ));
                }
            }
        }
    }
}

/// The next recorded call, if any.
fn front(script: &Mutex<Script>) -> Option<HistoryEntry> {
    script.lock().ok()?.entries.front().cloned()
}

/// A wait for a signal took one where `next` was recorded: deliver it again from the patch it
/// left (the wait itself calls nothing, so the script moves on here).
fn deliver_recorded_signal(
    flow: &StepFlow,
    state: &mut State,
    next: &HistoryEntry,
    script: &Mutex<Script>,
) {
    let Some(name) = flow.awaited_signal(state) else {
        return;
    };
    if next.kind != CallKind::WaitFor
        || next.outcome != StepOutcome::Done
        || flow.next_call(state).map(|(step, _)| step).as_deref() != Some(next.step.as_str())
    {
        return;
    }
    let payload = next
        .patch
        .as_ref()
        .and_then(|p| p.get("signals"))
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or(Value::Null);
    let seq = state.signals_read + 1;
    state.deliver([Signal {
        seq,
        id: format!("replayed-{}", next.seq),
        name: name.to_string(),
        payload,
        received_ms: next.started_ms,
    }]);
    if let Ok(mut s) = script.lock() {
        s.entries.pop_front();
    }
}

/// The recorded calls still to replay, the handler answers of the current one, and the first
/// place the flow and the history disagreed.
struct Script {
    entries: VecDeque<HistoryEntry>,
    handlers: VecDeque<stepflow_model::HandlerCall>,
    diverged: Option<String>,
}

impl Script {
    /// The next entry, which must be a call of `kind` at `step`.
    fn take(&mut self, step: &str, kind: CallKind) -> Option<HistoryEntry> {
        let entry = self.entries.pop_front();
        match &entry {
            Some(e) if e.step == step && e.kind == kind => {
                self.handlers = e.handlers.iter().cloned().collect();
                entry
            }
            Some(e) => {
                self.diverge(format!(
                    "its history does not fit its flow: entry {} is a {} at `{}`, where the \
                     flow calls a {} at `{step}`",
                    e.seq, e.kind, e.step, kind
                ));
                None
            }
            None => {
                self.diverge(format!(
                    "the flow calls `{step}` past the end of the history"
                ));
                None
            }
        }
    }

    fn diverge(&mut self, why: String) {
        self.diverged.get_or_insert(why);
    }
}

/// A recorded call's error as the step saw it.
fn recorded_error(entry: &HistoryEntry) -> StepError {
    parse_error(entry.error.as_deref().unwrap_or_default())
}

/// An error from its text: fatal when it was written so (`StepError`'s `Display`).
fn parse_error(text: &str) -> StepError {
    match text.strip_suffix(" (fatal)") {
        Some(message) => StepError::fatal(message),
        None => StepError::retryable(text),
    }
}

/// Resolves every function to its recorded results.
struct Recorded(Arc<Mutex<Script>>);

impl Functions for Recorded {
    fn resolve(
        &self,
        plugin: &str,
        function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        let f = Replayed {
            identity: format!("{plugin}.{function}"),
            script: self.0.clone(),
        };
        Ok(Function::of_kind(kind, Arc::new(f)))
    }
}

/// A function that answers what the history says it answered.
struct Replayed {
    identity: String,
    script: Arc<Mutex<Script>>,
}

impl Replayed {
    fn take(&self, step: &str, kind: CallKind) -> Result<HistoryEntry, StepError> {
        let diverged = || StepError::fatal("the replay left the recorded history");
        let mut script = self.script.lock().map_err(|_| diverged())?;
        script.take(step, kind).ok_or_else(diverged)
    }
}

impl Action for Replayed {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        let result = self
            .take(&ctx.step, CallKind::Step)
            .and_then(|e| match e.outcome {
                StepOutcome::Done => Ok(e.patch),
                _ => Err(recorded_error(&e)),
            });
        Box::pin(async move { result })
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity.clone())
    }
}

impl Condition for Replayed {
    fn check(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        // The kind of a condition's call is its item's: the step's history entry says which.
        let kind = front_kind(&self.script).unwrap_or(CallKind::WaitFor);
        let result = self.take(&ctx.step, kind).and_then(|e| match e.outcome {
            StepOutcome::True => Ok(true),
            StepOutcome::False => Ok(false),
            _ => Err(recorded_error(&e)),
        });
        Box::pin(async move { result })
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity.clone())
    }
}

impl ErrorHandler for Replayed {
    fn handle(&self, ctx: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let answer = match self.script.lock() {
            Ok(mut script) => match script.handlers.pop_front() {
                Some(call) if *call.group == *ctx.step => {
                    call.answer.map_err(|text| parse_error(&text))
                }
                _ => {
                    script.diverge(format!(
                        "its history does not fit its flow: the flow asks the error handler of \
                         `{}`, which the history does not record",
                        ctx.step
                    ));
                    Err(StepError::fatal("the replay left the recorded history"))
                }
            },
            Err(_) => Err(StepError::fatal("the replay left the recorded history")),
        };
        Box::pin(async move { answer })
    }

    fn identity(&self) -> Option<String> {
        Some(self.identity.clone())
    }
}

/// The kind of the next recorded call.
fn front_kind(script: &Mutex<Script>) -> Option<CallKind> {
    Some(script.lock().ok()?.entries.front()?.kind)
}
