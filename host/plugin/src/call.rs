//! Calls into a plugin: a fresh (or, when the plugin opts in, reused) sandboxed instance per
//! call, and every failure (a trap, a time-out, running out of memory or fuel, bad output)
//! turned into a [`StepError`] that names the plugin, the function and the step.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, FunctionKind, StepContext, StepError, StepResult,
};
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Instance, Lift, Lower, ResourceTable,
};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::stepflow::plugin::types as wit;
use crate::load::PluginInner;
use crate::sandbox::{CapturedOutput, Grants, HostState, HttpPolicy, LogTag, MemoryCap};
use crate::worker::on_worker;

/// A plugin function checked for one use; implements the model's step traits, so a plugin step
/// is just another step.
#[derive(Clone)]
pub struct PluginFunction {
    plugin: Arc<PluginInner>,
    function: Arc<str>,
    index: ComponentExportIndex,
    kind: FunctionKind,
}

/// A store and its instance, between checkout and the end of one call.
struct Warm {
    store: Store<HostState>,
    instance: Instance,
    output: CapturedOutput,
}

/// The instances a plugin that opted into reuse keeps between calls; only healthy ones.
#[derive(Default)]
pub(crate) struct IdleInstances(Mutex<Vec<Warm>>);

impl IdleInstances {
    fn take(&self) -> Option<Warm> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put(&self, warm: Warm) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(warm);
    }
}

impl PluginFunction {
    /// A function that lookup found at `index` with the shape `kind`.
    pub(crate) fn new(
        plugin: Arc<PluginInner>,
        function: &str,
        index: ComponentExportIndex,
        kind: FunctionKind,
    ) -> Self {
        PluginFunction {
            plugin,
            function: function.into(),
            index,
            kind,
        }
    }

    /// `plugin.function`, as flows write it, for labels and messages.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.plugin.name, self.function)
    }

    /// What shape the function has, so a caller can wrap it as the right step kind.
    pub fn kind(&self) -> FunctionKind {
        self.kind
    }

    /// A failure of this function at `ctx`'s step, in words that name all three.
    fn error(&self, ctx: &StepContext, what: String, retryable: bool) -> StepError {
        let what = self.plugin.options.grants.secrets.redact(&what);
        let message = format!(
            "plugin `{}` function `{}` at step `{}`: {what}",
            self.plugin.name, self.function, ctx.step
        );
        if retryable {
            StepError::retryable(message)
        } else {
            StepError::fatal(message)
        }
    }

    /// Calls the function in a sandboxed instance; every failure names plugin, function and step.
    async fn call<P, R>(
        &self,
        ctx: &StepContext,
        params: impl FnOnce(wit::StepContext) -> P,
    ) -> StepResult<R>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        (Result<R, wit::StepError>,): ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let inner = &self.plugin.runtime.inner;
        // More calls than instance slots wait here for one, rather than fail to instantiate.
        let _slot = inner
            .slots
            .acquire()
            .await
            .map_err(|_| self.error(ctx, "the plugin runtime is shutting down".into(), true))?;
        // Guest code runs from instantiation on: the time limit's clock ticks until the end.
        let _ticking = inner.clock.ticking();
        let mut warm = self
            .checkout(ctx)
            .await
            .map_err(|e| self.error(ctx, e, false))?;
        // The epoch stops guest code that computes too long; this stops a call that waits too
        // long in the host (an HTTP request, a sleep). The instance is dropped either way.
        let limit = self.plugin.options.grants.timeout;
        let result =
            tokio::time::timeout(limit, invoke(&mut warm, &self.index, params(to_wit(ctx))))
                .await
                .unwrap_or_else(|_| Err(wasmtime::Error::new(Trap::Interrupt)));
        let dropped = warm.output.end_call();
        if dropped > 0 {
            let plugin = &*self.plugin.name;
            tracing::warn!(
                plugin,
                step = &*ctx.step,
                "{dropped} more bytes of output dropped"
            );
        }
        match result {
            Ok(Ok(value)) => {
                self.checkin(warm);
                Ok(value)
            }
            Ok(Err(wit::StepError::Retryable(m))) => {
                self.checkin(warm);
                Err(self.error(ctx, m, true))
            }
            Ok(Err(wit::StepError::Fatal(m))) => {
                self.checkin(warm);
                Err(self.error(ctx, m, false))
            }
            Err(e) => {
                // A trapped instance is dead: it is dropped, never called again.
                let (why, retryable) = self.explain(&warm, &e);
                Err(self.error(ctx, why, retryable))
            }
        }
    }

    /// Turns a trap into words; says whether trying again could help.
    fn explain(&self, warm: &Warm, e: &wasmtime::Error) -> (String, bool) {
        let grants = &self.plugin.options.grants;
        if warm.store.data().limits.hit {
            return (
                format!(
                    "ran out of memory: it tried to grow past its cap of {} MiB",
                    grants.memory_bytes >> 20
                ),
                false,
            );
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => (
                format!("timed out: still running after {:?}", grants.timeout),
                true,
            ),
            Some(Trap::OutOfFuel) => (
                format!("ran out of fuel ({} units)", grants.fuel.unwrap_or(0)),
                false,
            ),
            Some(Trap::StackOverflow) => ("overflowed its stack".into(), false),
            Some(Trap::MemoryOutOfBounds) => (
                "trapped: out-of-bounds memory access (a stack overflow or a bad pointer in the plugin)"
                    .into(),
                false,
            ),
            Some(Trap::UnreachableCodeReached) => {
                // The wasm backtrace helps the plugin's author, not the reader of a run's error.
                tracing::debug!(plugin = &*self.plugin.name, "trap: {e:?}");
                let said = warm.output.first_line();
                match said.as_deref().and_then(wrong_type) {
                    Some(detail) => (
                        format!(
                            "returned a value of the wrong type ({detail}); {} `{}` must be \
                             `{}`",
                            self.kind.with_article(),
                            self.function,
                            self.kind.signature()
                        ),
                        false,
                    ),
                    None => (
                        "trapped: it panicked or aborted (its output above may say why)".into(),
                        false,
                    ),
                }
            }
            Some(trap) => (format!("trapped: {trap}"), false),
            None => (format!("failed: {e:#}"), false),
        }
    }

    /// An instance ready for one call at `ctx`: reused if the plugin allows it and one is idle,
    /// else fresh; its output tagged with the step and its limits set for this call.
    async fn checkout(&self, ctx: &StepContext) -> Result<Warm, String> {
        let p = &self.plugin;
        let reused = if p.options.reuse_instances {
            p.idle.take()
        } else {
            None
        };
        let mut warm = match reused {
            Some(warm) => warm,
            None => self.fresh().await?,
        };
        let tag = LogTag {
            plugin: p.name.clone(),
            run: ctx.run_id.clone(),
            step: ctx.step.clone(),
            secrets: p.options.grants.secrets.clone(),
        };
        warm.output.start_call(tag.clone());
        warm.store.data_mut().http.start_call(tag.clone());
        warm.store.data_mut().tag = tag;
        set_limits(&mut warm.store, &p.options.grants)?;
        Ok(warm)
    }

    /// Keeps a healthy instance for the next call, if the plugin opted into reuse.
    fn checkin(&self, warm: Warm) {
        if self.plugin.options.reuse_instances {
            self.plugin.idle.put(warm);
        }
    }

    /// A new store and instance: nothing carried over from any other call.
    async fn fresh(&self) -> Result<Warm, String> {
        let p = &self.plugin;
        let grants = &p.options.grants;
        let output = CapturedOutput::new(grants.max_log_bytes);
        let wasi = grants
            .wasi(&output)
            .map_err(|e| format!("cannot grant a directory: {e}"))?;
        let mut store = Store::new(
            &p.runtime.inner.engine,
            HostState {
                wasi,
                table: ResourceTable::new(),
                limits: MemoryCap {
                    max_bytes: grants.memory_bytes,
                    hit: false,
                },
                tag: LogTag::default(),
                started: Instant::now(),
                time_limit: grants.timeout,
                http_ctx: wasmtime_wasi_http::WasiHttpCtx::new(),
                http: HttpPolicy::new(p.http_grants.clone(), grants.http_limits),
            },
        );
        store.limiter(|s| &mut s.limits);
        // At every tick a running call yields to the executor (a thread may drive many runs,
        // and a busy plugin must not hold up the others), until its time limit is used up;
        // then it is stopped as an interrupt, which `explain` reports as a time-out.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            Ok(if state.started.elapsed() >= state.time_limit {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        // Instantiation runs guest code (start functions): it gets the same limits as a call.
        set_limits(&mut store, grants)?;
        let instance = p
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("could not be instantiated: {e:#}"))?;
        Ok(Warm {
            store,
            instance,
            output,
        })
    }

    /// Refuses a patch or answer larger than the grants allow.
    fn check_size(&self, len: usize) -> Result<(), String> {
        let max = self.plugin.options.grants.max_output_bytes;
        if len > max {
            Err(format!(
                "returned {len} bytes, more than the {max} bytes it may return"
            ))
        } else {
            Ok(())
        }
    }
}

/// Gives the guest code that runs next in `store` the grants' time limit (from now, checked
/// at every epoch tick) and, when granted, its fuel.
fn set_limits(store: &mut Store<HostState>, grants: &Grants) -> Result<(), String> {
    let state = store.data_mut();
    (state.started, state.time_limit) = (Instant::now(), grants.timeout);
    store.set_epoch_deadline(1);
    if let Some(fuel) = grants.fuel {
        store
            .set_fuel(fuel)
            .map_err(|e| format!("cannot set fuel: {e}"))?;
    }
    Ok(())
}

/// The context as the plugin sees it.
fn to_wit(ctx: &StepContext) -> wit::StepContext {
    wit::StepContext {
        run_id: ctx.run_id.to_string(),
        flow: ctx.flow.to_string(),
        step: ctx.step.to_string(),
        attempt: ctx.attempt,
        idempotency_key: ctx.idempotency_key(),
        redelivered: ctx.redelivered,
        data: ctx.data.to_string(),
    }
}

/// Calls a typed export with `params`; the export returns `result<R, step-error>`.
async fn invoke<P, R>(
    warm: &mut Warm,
    index: &ComponentExportIndex,
    params: P,
) -> wasmtime::Result<Result<R, wit::StepError>>
where
    P: ComponentNamedList + Lower + Send + Sync,
    (Result<R, wit::StepError>,): ComponentNamedList + Lift + Send + Sync + 'static,
{
    let f = warm
        .instance
        .get_typed_func::<P, (Result<R, wit::StepError>,)>(&mut warm.store, index)?;
    Ok(f.call_async(&mut warm.store, params).await?.0)
}

impl Action for PluginFunction {
    fn run(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
        let me = self.clone();
        on_worker(async move {
            let Some(text) = me.call::<_, Option<String>>(&ctx, |c| (c,)).await? else {
                return Ok(None);
            };
            let bad = |what: String| me.error(&ctx, what, false);
            me.check_size(text.len()).map_err(bad)?;
            let mut patch: Value = serde_json::from_str(&text)
                .map_err(|e| bad(format!("returned a patch that is not JSON ({e})")))?;
            // A secret never reaches the data document, the history or the store.
            me.plugin.options.grants.secrets.redact_value(&mut patch);
            Ok(Some(patch))
        })
    }

    fn identity(&self) -> Option<String> {
        Some(self.reference())
    }
}

impl Condition for PluginFunction {
    fn check(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let me = self.clone();
        on_worker(async move { me.call(&ctx, |c| (c,)).await })
    }

    fn identity(&self) -> Option<String> {
        Some(self.reference())
    }
}

impl ErrorHandler for PluginFunction {
    fn handle(&self, ctx: StepContext, error: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let me = self.clone();
        on_worker(async move { me.call(&ctx, |c| (c, error.message)).await })
    }

    fn identity(&self) -> Option<String> {
        Some(self.reference())
    }
}

/// The type error a guest runtime prints before it aborts when a function returned the wrong
/// type, e.g. componentize-js's "expected a string, received [object]".
fn wrong_type(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("expected ")?;
    rest.contains(", received ").then_some(line)
}

#[cfg(test)]
mod tests {
    use super::wrong_type;

    #[test]
    fn a_runtime_type_error_is_recognised_and_nothing_else() {
        let line = "expected a string, received [object]";
        assert_eq!(wrong_type(line), Some(line));
        assert_eq!(wrong_type("thread panicked at src/lib.rs:3:5:"), None);
        assert_eq!(wrong_type("expected the unexpected"), None);
    }
}
