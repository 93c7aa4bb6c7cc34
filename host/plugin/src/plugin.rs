//! A loaded plugin: its exports, and calls into it in a fresh (or reused) sandboxed instance.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepResult,
};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, InstancePre, Lift, Lower,
    ResourceTable,
};
use wasmtime::{Store, Trap};

use crate::PluginError;
use crate::bindings::stepflow::plugin::types as wit;
use crate::cache::LoadedFrom;
use crate::classify::{FunctionKind, classify};
use crate::runtime::{EPOCH_TICK, Runtime};
use crate::sandbox::{CapturedOutput, Grants, HostState, LogTag, MemoryCap};

/// How a plugin is run, beyond its grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginOptions {
    /// What the plugin may touch.
    pub grants: Grants,
    /// Keep instances between calls (faster; state then leaks between steps and runs, so only
    /// for plugins known to keep none). An instance that failed is never reused.
    pub reuse_instances: bool,
}

/// One exported function and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// How a flow names it: `fn` at the top level, `interface/fn` inside an exported interface.
    pub name: String,
    /// Its shape, or why it is not a step function.
    pub kind: Result<FunctionKind, String>,
}

/// A compiled plugin, ready to be called; cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    name: Arc<str>,
    runtime: Runtime,
    pre: InstancePre<HostState>,
    exports: Vec<(Export, Option<ComponentExportIndex>)>,
    options: PluginOptions,
    loaded_from: LoadedFrom,
    idle: Mutex<Vec<Warm>>,
}

/// A reusable instance and its store.
struct Warm {
    store: Store<HostState>,
    instance: Instance,
    output: CapturedOutput,
}

impl Plugin {
    /// Loads the component at `path` under the name flows use for it.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        path: &Path,
        options: PluginOptions,
    ) -> Result<Self, PluginError> {
        let wasm = std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: name.to_string(),
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(runtime, name, &wasm, &path.display().to_string(), options)
    }

    /// Loads a component from bytes; `origin` names it in messages.
    pub fn from_bytes(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        origin: &str,
        options: PluginOptions,
    ) -> Result<Self, PluginError> {
        let rt = &runtime.inner;
        let invalid = |reason: String| PluginError::Invalid {
            plugin: name.to_string(),
            path: origin.to_string(),
            reason,
        };
        check_grants(runtime, name, &options.grants)?;
        let (component, loaded_from) = match &rt.cache {
            Some(cache) => cache.load(&rt.engine, wasm),
            None => Component::new(&rt.engine, wasm).map(|c| (c, LoadedFrom::Compiled)),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = rt.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "{e:#} (a plugin may import only WASI and stepflow:plugin interfaces)"
            ))
        })?;
        let exports = read_exports(&rt.engine, &component);
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                name: name.into(),
                runtime: runtime.clone(),
                pre,
                exports,
                options,
                loaded_from,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The name flows use for the plugin.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether loading compiled the component or took it from the cache.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.inner.loaded_from
    }

    /// Every exported function, step function or not.
    pub fn exports(&self) -> Vec<Export> {
        self.inner.exports.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The function `name` as an action, if it is one.
    pub fn action(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::Action)
    }

    /// The function `name` as a condition, if it is one.
    pub fn condition(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::Condition)
    }

    /// The function `name` as an error handler, if it is one.
    pub fn error_handler(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::ErrorHandler)
    }

    /// Looks `name` up (`fn`, or `interface/fn`; a bare `fn` finds an interface function when it
    /// is the only one by that name) and checks it has the shape `wanted`.
    pub fn function(
        &self,
        name: &str,
        wanted: FunctionKind,
    ) -> Result<PluginFunction, PluginError> {
        let found: Vec<_> = self
            .inner
            .exports
            .iter()
            .filter(|(e, _)| e.name == name || e.name.rsplit('/').next() == Some(name))
            .collect();
        let exact = found.iter().find(|(e, _)| e.name == name);
        let (export, index) = match (exact, found.as_slice()) {
            (Some(hit), _) | (None, [hit]) => *hit,
            (None, []) => {
                return Err(PluginError::NoSuchFunction {
                    plugin: self.name().to_string(),
                    function: name.to_string(),
                    hint: self.hint(name),
                });
            }
            (None, many) => {
                let names: Vec<_> = many.iter().map(|(e, _)| e.name.as_str()).collect();
                return Err(PluginError::NoSuchFunction {
                    plugin: self.name().to_string(),
                    function: name.to_string(),
                    hint: format!(
                        "; several interfaces export it, say which: {}",
                        names.join(", ")
                    ),
                });
            }
        };
        match (&export.kind, index) {
            (Ok(kind), Some(index)) if *kind == wanted => Ok(PluginFunction {
                plugin: self.inner.clone(),
                function: export.name.as_str().into(),
                index: *index,
                kind: wanted,
            }),
            (Ok(kind), _) => Err(PluginError::WrongKind {
                plugin: self.name().to_string(),
                function: export.name.clone(),
                wanted,
                actual: kind.with_article().to_string(),
                signature: wanted.signature(),
            }),
            (Err(why), _) => Err(PluginError::WrongKind {
                plugin: self.name().to_string(),
                function: export.name.clone(),
                wanted,
                actual: format!("not a step function ({why})"),
                signature: wanted.signature(),
            }),
        }
    }

    fn hint(&self, name: &str) -> String {
        let steps: Vec<String> = self
            .inner
            .exports
            .iter()
            .filter_map(|(e, _)| {
                e.kind
                    .as_ref()
                    .ok()
                    .map(|k| format!("{} ({})", e.name, k.with_article()))
            })
            .collect();
        if steps.is_empty() {
            return "; it exports no step functions".into();
        }
        let close = steps
            .iter()
            .find(|s| s.starts_with(name) || name.starts_with(s.split(' ').next().unwrap_or("")));
        match close {
            Some(c) => format!("; did you mean {c}?"),
            None => format!("; it has: {}", steps.join(", ")),
        }
    }
}

fn check_grants(runtime: &Runtime, plugin: &str, grants: &Grants) -> Result<(), PluginError> {
    let config = &runtime.inner.config;
    let fail = |reason: String| {
        Err(PluginError::Grant {
            plugin: plugin.to_string(),
            reason,
        })
    };
    if grants.fuel.is_some() && !config.fuel {
        return fail("a fuel grant needs a runtime created with fuel metering on".into());
    }
    if config.pooling && grants.memory_bytes > config.max_memory_bytes {
        return fail(format!(
            "the memory grant of {} MiB exceeds the runtime's limit of {} MiB",
            grants.memory_bytes >> 20,
            config.max_memory_bytes >> 20
        ));
    }
    for dir in &grants.dirs {
        if !dir.host.is_dir() {
            return fail(format!(
                "the granted directory {} does not exist",
                dir.host.display()
            ));
        }
    }
    Ok(())
}

fn read_exports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Vec<(Export, Option<ComponentExportIndex>)> {
    let mut out = Vec::new();
    for (name, ext) in component.component_type().exports(engine) {
        match ext.ty {
            ComponentItem::ComponentFunc(func) => {
                let index = component.get_export_index(None, name);
                out.push((
                    Export {
                        name: name.to_string(),
                        kind: classify(&func),
                    },
                    index,
                ));
            }
            ComponentItem::ComponentInstance(instance) => {
                let iface = component.get_export_index(None, name);
                let short = name
                    .rsplit('/')
                    .next()
                    .unwrap_or(name)
                    .split('@')
                    .next()
                    .unwrap_or(name);
                for (fname, fext) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = fext.ty {
                        let index = iface
                            .as_ref()
                            .and_then(|i| component.get_export_index(Some(i), fname));
                        out.push((
                            Export {
                                name: format!("{short}/{fname}"),
                                kind: classify(&func),
                            },
                            index,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A plugin function checked for one use; implements the model's step traits.
#[derive(Clone)]
pub struct PluginFunction {
    plugin: Arc<PluginInner>,
    function: Arc<str>,
    index: ComponentExportIndex,
    kind: FunctionKind,
}

impl PluginFunction {
    /// `plugin.function`, as flows write it.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.plugin.name, self.function)
    }

    /// What shape the function has.
    pub fn kind(&self) -> FunctionKind {
        self.kind
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
        let fail = |what: String, retryable: bool| {
            let message = format!(
                "plugin `{}` function `{}` at step `{}`: {what}",
                self.plugin.name, self.function, ctx.step
            );
            if retryable {
                StepError::retryable(message)
            } else {
                StepError::fatal(message)
            }
        };
        let mut warm = self.checkout(ctx).await.map_err(|e| fail(e, false))?;
        let wit_ctx = to_wit(ctx);
        let result = invoke(&mut warm, &self.index, params(wit_ctx)).await;
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
                Err(fail(m, true))
            }
            Ok(Err(wit::StepError::Fatal(m))) => {
                self.checkin(warm);
                Err(fail(m, false))
            }
            Err(e) => {
                // A trapped instance is dead: it is dropped, never called again.
                let why = self.explain(&warm, &e);
                Err(fail(why.0, why.1))
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
                (
                    "trapped: it panicked or aborted (its output above may say why)".into(),
                    false,
                )
            }
            Some(trap) => (format!("trapped: {trap}"), false),
            None => (format!("failed: {e:#}"), false),
        }
    }

    async fn checkout(&self, ctx: &StepContext) -> Result<Warm, String> {
        let p = &self.plugin;
        let reused = if p.options.reuse_instances {
            p.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
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
        };
        warm.output.start_call(tag.clone());
        let store = &mut warm.store;
        store.data_mut().tag = tag;
        let ticks = p.options.grants.timeout.as_millis() / EPOCH_TICK.as_millis().max(1) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        if let Some(fuel) = p.options.grants.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| format!("cannot set fuel: {e}"))?;
        }
        Ok(warm)
    }

    /// A new store and instance: nothing carried over from any other call.
    async fn fresh(&self) -> Result<Warm, String> {
        let (mut store, output) = self.new_store()?;
        let instance = self.instantiate(&mut store).await?;
        Ok(Warm {
            store,
            instance,
            output,
        })
    }

    /// A store with the plugin's sandbox: WASI context, limits, deadline, fuel.
    fn new_store(&self) -> Result<(Store<HostState>, CapturedOutput), String> {
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
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        // Instantiation runs guest code (start functions): give it a deadline too.
        store.set_epoch_deadline(
            u64::try_from(grants.timeout.as_millis() / EPOCH_TICK.as_millis().max(1) + 1)
                .unwrap_or(u64::MAX),
        );
        if let Some(fuel) = grants.fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| format!("cannot set fuel: {e}"))?;
        }
        Ok((store, output))
    }

    async fn instantiate(&self, store: &mut Store<HostState>) -> Result<Instance, String> {
        self.plugin
            .pre
            .instantiate_async(store)
            .await
            .map_err(|e| format!("could not be instantiated: {e:#}"))
    }

    /// Where the time of a fresh-instance call goes, averaged over `n` calls of this action:
    /// for the benchmark's breakdown, not for production use.
    #[doc(hidden)]
    pub async fn profile_fresh_calls(
        &self,
        ctx: &StepContext,
        n: u32,
    ) -> Result<FreshProfile, String> {
        use std::time::{Duration, Instant};
        let mut p = [Duration::ZERO; 5];
        for _ in 0..n {
            let t0 = Instant::now();
            let output = CapturedOutput::new(self.plugin.options.grants.max_log_bytes);
            drop(self.plugin.options.grants.wasi(&output));
            let t1 = Instant::now();
            let (mut store, output) = self.new_store()?;
            let t2 = Instant::now();
            let instance = self.instantiate(&mut store).await?;
            let t3 = Instant::now();
            let mut warm = Warm {
                store,
                instance,
                output,
            };
            let wit_ctx = to_wit(ctx);
            invoke::<_, Option<String>>(&mut warm, &self.index, (wit_ctx,))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{e:?}"))?;
            let t4 = Instant::now();
            drop(warm);
            let t5 = Instant::now();
            for (slot, d) in p
                .iter_mut()
                .zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4])
            {
                *slot += d;
            }
        }
        let avg = |d: Duration| d / n.max(1);
        Ok(FreshProfile {
            wasi_context: avg(p[0]),
            store: avg(p[1]).saturating_sub(avg(p[0])),
            instantiate: avg(p[2]),
            call: avg(p[3]),
            drop: avg(p[4]),
        })
    }

    fn checkin(&self, warm: Warm) {
        if self.plugin.options.reuse_instances {
            self.plugin
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(warm);
        }
    }

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

/// Average time of each phase of a fresh-instance call.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct FreshProfile {
    /// Building the WASI context (grants, captured stdio).
    pub wasi_context: std::time::Duration,
    /// Creating the store (without the WASI context).
    pub store: std::time::Duration,
    /// Instantiating from the pre-linked `InstancePre`.
    pub instantiate: std::time::Duration,
    /// Looking the function up and calling it (lifting and lowering included).
    pub call: std::time::Duration,
    /// Dropping the store and instance (returning memory to the pool).
    pub drop: std::time::Duration,
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
        Box::pin(async move {
            let Some(text) = me.call::<_, Option<String>>(&ctx, |c| (c,)).await? else {
                return Ok(None);
            };
            let bad = |what: String| {
                StepError::fatal(format!(
                    "plugin `{}` function `{}` at step `{}`: {what}",
                    me.plugin.name, me.function, ctx.step
                ))
            };
            me.check_size(text.len()).map_err(bad)?;
            let patch: Value = serde_json::from_str(&text)
                .map_err(|e| bad(format!("returned a patch that is not JSON ({e})")))?;
            Ok(Some(patch))
        })
    }

    fn label(&self) -> String {
        self.reference()
    }
}

impl Condition for PluginFunction {
    fn check(&self, ctx: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let me = self.clone();
        Box::pin(async move { me.call(&ctx, |c| (c,)).await })
    }

    fn label(&self) -> String {
        self.reference()
    }
}

impl ErrorHandler for PluginFunction {
    fn handle(&self, ctx: StepContext, error: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let me = self.clone();
        Box::pin(async move { me.call(&ctx, |c| (c, error.message)).await })
    }

    fn label(&self) -> String {
        self.reference()
    }
}
