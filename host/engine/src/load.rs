//! From a flow file to a runnable flow: build and load its plugins, resolve every function.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stepflow_flowfile::FlowFile;
use stepflow_model::StepFlow;
use stepflow_plugin::{Plugin, Runtime, RuntimeConfig};

use crate::build::build_plugins;
use crate::error::EngineError;
use crate::functions::{LoadedPlugins, Placeholders};
use crate::grants::{check_http, options};
use crate::observer::Observer;
use crate::stop::StopRequests;

/// The process's plugin runtime and compile cache: make one and load every flow through it,
/// so each component is compiled at most once per process (and once per cache).
#[derive(Clone)]
pub struct Engine {
    pub(crate) runtime: Runtime,
    pub(crate) max_flow_bytes: u64,
    pub(crate) build_env: Vec<(String, OsString)>,
}

/// A flow file with its plugins loaded and its flow compiled: ready to start or resume runs.
pub struct LoadedFlow {
    /// The parsed file (its declarations, data and positions).
    pub file: FlowFile,
    /// The compiled flow.
    pub flow: StepFlow,
    /// The plugins, by the names the file gives them.
    pub plugins: BTreeMap<String, Plugin>,
    /// The deployment it was loaded from ([`Engine::load_deployment`]), so runs started from it
    /// refer to it and resume without the files; `None` when it was loaded from files.
    pub deployment: Option<String>,
}

impl LoadedFlow {
    /// The longest a single call of this flow's plugins may run (their `timeout` grants): what
    /// a driver's lease must outlast (see [`lease_ttl`](crate::lease_ttl)).
    pub fn longest_call(&self) -> Duration {
        let default = stepflow_plugin::Grants::default().timeout;
        self.file
            .plugins
            .values()
            .map(|decl| decl.timeout.unwrap_or(default))
            .max()
            .unwrap_or(default)
    }
}

impl Engine {
    /// Sets up the WebAssembly engine; compiled components are cached in `cache_dir` (see
    /// [`default_cache_dir`](crate::default_cache_dir)), or not at all with `None`.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        Engine::with_max_instances(cache_dir, RuntimeConfig::default().max_instances)
    }

    /// As [`Engine::new`], with room for at least `max_instances` plugin instances at once
    /// (never fewer than the default 256): a host that drives more runs at once sizes it to
    /// its concurrency, or the calls beyond the slots wait for a free one.
    pub fn with_max_instances(
        cache_dir: Option<PathBuf>,
        max_instances: u32,
    ) -> Result<Self, EngineError> {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir,
            max_instances: max_instances.max(RuntimeConfig::default().max_instances),
            ..RuntimeConfig::default()
        })?;
        Ok(Engine {
            runtime,
            max_flow_bytes: stepflow_flowfile::MAX_FLOW_FILE_BYTES,
            build_env: Vec::new(),
        })
    }

    /// Reads flow files of up to `max_bytes` (default
    /// [`MAX_FLOW_FILE_BYTES`](stepflow_flowfile::MAX_FLOW_FILE_BYTES)); a larger one is refused
    /// before it is read in full.
    pub fn with_max_flow_bytes(mut self, max_bytes: u64) -> Self {
        self.max_flow_bytes = max_bytes;
        self
    }

    /// Sets `name=value` in the environment of every `build` command, so a front end can tell
    /// the commands how to reach it (the CLI sets `STEPFLOW` to its own executable).
    pub fn with_build_env(mut self, name: impl Into<String>, value: impl Into<OsString>) -> Self {
        self.build_env.push((name.into(), value.into()));
        self
    }

    /// The plugin runtime, for callers that load a component on its own (`stepflow inspect`).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Reads the flow file at `path`, loads its plugins and compiles the flow.
    pub fn load(&self, path: &Path) -> Result<LoadedFlow, EngineError> {
        self.load_file(stepflow_flowfile::load_with_limit(
            path,
            self.max_flow_bytes,
        )?)
    }

    /// Like [`Engine::load`], but runs the plugins' `build` commands first, each for at most
    /// `timeout` (see [`DEFAULT_BUILD_TIMEOUT`](crate::DEFAULT_BUILD_TIMEOUT)); a stop request
    /// ends a build command and everything it started.
    pub async fn build_and_load(
        &self,
        path: &Path,
        timeout: Duration,
        stop: &StopRequests,
        observer: &mut dyn Observer,
    ) -> Result<LoadedFlow, EngineError> {
        let file = stepflow_flowfile::load_with_limit(path, self.max_flow_bytes)?;
        build_plugins(&file, &self.build_env, timeout, stop, observer).await?;
        self.load_file(file)
    }

    /// Loads the plugins of a parsed flow file and compiles the flow; every problem is
    /// reported at its place in the file.
    pub fn load_file(&self, file: FlowFile) -> Result<LoadedFlow, EngineError> {
        file.check_wasm_files()?;
        let mut plugins = BTreeMap::new();
        for (name, decl) in &file.plugins {
            let plugin = Plugin::load(&self.runtime, name, &decl.wasm, options(decl)?)?;
            check_http(&file, decl, &plugin)?;
            plugins.insert(name.clone(), plugin);
        }
        let steps = file.to_steps(&LoadedPlugins(&plugins))?;
        let flow = compile(&file, steps)?;
        Ok(LoadedFlow {
            file,
            flow,
            plugins,
            deployment: None,
        })
    }
}

/// Compiles a flow file without loading its plugins: enough to draw it or list its steps.
pub fn shape(file: &FlowFile) -> Result<StepFlow, EngineError> {
    let steps = file.to_steps(&Placeholders)?;
    compile(file, steps)
}

pub(crate) fn compile(
    file: &FlowFile,
    steps: stepflow_model::Steps,
) -> Result<StepFlow, EngineError> {
    StepFlow::new(steps).map_err(|e| EngineError::InvalidFlow {
        file: file.path.clone(),
        detail: e.to_string(),
    })
}
