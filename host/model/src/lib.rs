//! The stepflow workflow model: flows, steps, transitions and resumable run state.
//!
//! A flow is a tree of steps built with a fluent API ([`Steps`]) and compiled once into a table
//! of transitions ([`StepFlow`]). [`StepFlow::apply`] moves a run's [`State`] forward by at most
//! one function call (per strand), so the caller can save the state after every step and resume
//! it later, in another process, even on a rebuilt flow.
//!
//! Six item kinds are the seed's (go-stepflow): a step (`Do`), [`Steps::wait_for`], nested
//! [`Steps::steps`], [`Steps::case`], [`Steps::loop_until`] and [`Steps::retry`]. Two fan out:
//! [`Steps::parallel`] runs named branches side by side and [`Steps::for_each`] runs a body once
//! per element of an array in the data document, a few at a time ([`ForEach`]). A run inside
//! them has several strands, one cursor event each; an apply makes at most one call per strand
//! and runs those calls concurrently. Step functions
//! are async and implement [`Action`], [`Condition`] or [`ErrorHandler`]; a native async function
//! or closure does, and so does a WebAssembly plugin function (in `stepflow-plugin`).
//!
//! This crate does no IO and knows nothing of WebAssembly or databases: time comes from an
//! injectable [`Clock`], and the state is a plain serde type.
//!
//! ```
//! use stepflow_model::{RunContext, StepContext, StepFlow, StepResult, Steps};
//! use serde_json::{json, Value};
//!
//! async fn fetch(ctx: StepContext) -> StepResult<Value> {
//!     Ok(json!({ "fetched": ctx.data["page"].as_u64().unwrap_or(0) + 1 }))
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let flow = StepFlow::new(Steps::named("fetch.v1").step("fetch", fetch))?;
//! let ctx = RunContext::new("run-1");
//! let mut state = flow.new_state(json!({ "page": 1 }));
//! while !flow.is_completed(&state) {
//!     state = flow.apply(&ctx, state).await;
//! }
//! assert_eq!(state.data["fetched"], 2);
//! # Ok::<(), stepflow_model::BuildError>(())
//! # }).unwrap();
//! ```

mod builder;
mod clock;
mod definition;
mod diagram;
mod flow;
mod function;
mod graph;
mod state;
mod strands;

pub use builder::{Backoff, ForEach, RetryPolicy, Steps, Wait};
pub use clock::{Clock, ManualClock, SystemClock};
pub use diagram::{Destination, TransitionInfo};
pub use flow::{Applied, CallRecord, HandlerCall, Outcome, RunContext, StateError, StepFlow};
pub use function::{
    Action, BoxFuture, Condition, ErrorHandler, ErrorKind, FunctionKind, IntoPatch, StepContext,
    StepError, StepResult,
};
pub use graph::{
    BuildError, CallKind, ItemKind, MAX_SIGNAL_NAME, PointerError, check_signal_name,
    pointer_tokens, split_instance,
};
pub use state::{EachProgress, Event, Failure, Signal, State, Status};
