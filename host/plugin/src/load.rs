//! Loading a plugin: reading and compiling (or taking from the cache) a component, checking its
//! grants against the runtime, and pre-linking it so each call only has to instantiate.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use crate::PluginError;
use crate::cache::LoadedFrom;
use crate::call::IdleInstances;
use crate::exports::{Export, read_exports};
use crate::runtime::Runtime;
use crate::sandbox::{Grants, HostState, HttpGrant};

/// How a plugin is run, beyond its grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginOptions {
    /// What the plugin may touch.
    pub grants: Grants,
    /// Keep instances between calls (faster; state then leaks between steps and runs, so only
    /// for plugins known to keep none). An instance that failed is never reused.
    pub reuse_instances: bool,
}

/// A compiled plugin, ready to be called; cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

/// What every [`Plugin`] clone and every function looked up from it share.
pub(crate) struct PluginInner {
    pub(crate) name: Arc<str>,
    pub(crate) runtime: Runtime,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) exports: Vec<(Export, Option<ComponentExportIndex>)>,
    pub(crate) options: PluginOptions,
    pub(crate) loaded_from: LoadedFrom,
    pub(crate) imports_http: bool,
    /// The grants' HTTP allowlist, shared by the policy of every instance.
    pub(crate) http_grants: Arc<[HttpGrant]>,
    pub(crate) idle: IdleInstances,
}

impl Plugin {
    /// Loads the component at `path` under the name flows use for it; a bad file or grant fails
    /// here, before any run starts.
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

    /// Loads a component from bytes, for embedders that do not keep it in a file; `origin` names
    /// it in messages.
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
        let compile = || compile_announced(&rt.engine, name, wasm);
        let (component, loaded_from) = match &rt.cache {
            Some(cache) => cache.load(&rt.engine, wasm, compile),
            None => compile().map(|c| (c, LoadedFrom::Compiled)),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = rt.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "{e:#} (a plugin may import only WASI and stepflow:plugin interfaces)"
            ))
        })?;
        let exports = read_exports(&rt.engine, &component);
        let http_grants = options.grants.http.as_slice().into();
        let imports_http = component
            .component_type()
            .imports(&rt.engine)
            .any(|(name, _)| name.starts_with("wasi:http/"));
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                name: name.into(),
                runtime: runtime.clone(),
                pre,
                exports,
                options,
                loaded_from,
                imports_http,
                http_grants,
                idle: IdleInstances::default(),
            }),
        })
    }

    /// The name flows use for the plugin.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the component imports `wasi:http`, so a flow that gives it no `http` grant can
    /// be told before its requests are refused at run time.
    pub fn imports_http(&self) -> bool {
        self.inner.imports_http
    }

    /// Whether loading compiled the component or took it from the cache, for reporting load
    /// times.
    pub fn loaded_from(&self) -> LoadedFrom {
        self.inner.loaded_from
    }
}

/// Refuses, at load time, grants the runtime cannot enforce or the host cannot provide.
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

/// Components at least this large take seconds to compile (an embedded interpreter): their
/// compile is announced, so a first load does not look like a hang.
const ANNOUNCED_COMPILE_BYTES: usize = 1 << 20;

/// Compiles `wasm`; a large component's compile is logged before and after, with its time.
fn compile_announced(
    engine: &wasmtime::Engine,
    plugin: &str,
    wasm: &[u8],
) -> wasmtime::Result<Component> {
    if wasm.len() < ANNOUNCED_COMPILE_BYTES {
        return Component::new(engine, wasm);
    }
    let mib = format!("{:.1}", wasm.len() as f64 / f64::from(1 << 20));
    tracing::info!(
        plugin,
        "compiling the plugin ({mib} MiB): the first load of a new build of a large component \
         takes 5 to 30 s; it is cached afterwards"
    );
    let started = std::time::Instant::now();
    let component = Component::new(engine, wasm)?;
    let seconds = format!("{:.1}", started.elapsed().as_secs_f64());
    tracing::info!(plugin, "compiled the plugin in {seconds} s");
    Ok(component)
}
