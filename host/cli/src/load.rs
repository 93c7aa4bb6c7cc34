//! From a flow file to a runnable flow: build and load its plugins, resolve every function.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use stepflow_flowfile::{FlowFile, Function, FunctionKind, Functions, PluginDecl};
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepFlow, StepResult,
};
use stepflow_plugin::{DirGrant, Grants, Plugin, PluginOptions, Runtime, RuntimeConfig};

use crate::error::Exit;

/// A flow file with its plugins loaded and its flow compiled.
pub struct Loaded {
    /// The parsed file.
    pub file: FlowFile,
    /// The compiled flow.
    pub flow: StepFlow,
}

/// Reads a flow file (with located errors).
pub fn read(path: &Path) -> Result<FlowFile, Exit> {
    Ok(stepflow_flowfile::load(path)?)
}

/// The process's one plugin runtime.
pub fn runtime() -> Result<Runtime, Exit> {
    Runtime::new(RuntimeConfig::default()).map_err(Exit::usage)
}

/// Loads every plugin of `file` (running build commands first when `build` is set) and
/// compiles the flow; every problem is reported at its place in the file.
pub fn load(file: FlowFile, runtime: &Runtime, build: bool) -> Result<Loaded, Exit> {
    if build {
        build_plugins(&file)?;
    }
    file.check_wasm_files()?;
    let mut plugins = BTreeMap::new();
    for (name, decl) in &file.plugins {
        let plugin =
            Plugin::load(runtime, name, &decl.wasm, options(decl)?).map_err(Exit::usage)?;
        plugins.insert(name.clone(), plugin);
    }
    let steps = file.to_steps(&LoadedPlugins(&plugins))?;
    let flow =
        StepFlow::new(steps).map_err(|e| Exit::usage(format!("{}: {e}", file.path.display())))?;
    Ok(Loaded { file, flow })
}

/// Compiles the flow without loading plugins, for diagrams.
pub fn shape(file: &FlowFile) -> Result<StepFlow, Exit> {
    let steps = file.to_steps(&Placeholders)?;
    StepFlow::new(steps).map_err(|e| Exit::usage(format!("{}: {e}", file.path.display())))
}

/// Runs each distinct `build` command once, in the flow file's directory.
fn build_plugins(file: &FlowFile) -> Result<(), Exit> {
    let dir = file.path.parent().unwrap_or(Path::new("."));
    let mut done = Vec::new();
    for decl in file.plugins.values() {
        let Some(command) = &decl.build else { continue };
        if done.contains(command) {
            continue;
        }
        eprintln!("building plugins: {command}");
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .status()
            .map_err(|e| Exit::usage(format!("cannot run `{command}`: {e}")))?;
        if !status.success() {
            return Err(Exit::usage(format!(
                "the build command of plugin `{}` failed ({status}): {command}",
                decl.name
            )));
        }
        done.push(command.clone());
    }
    Ok(())
}

/// The sandbox grants a flow file gives a plugin.
fn options(decl: &PluginDecl) -> Result<PluginOptions, Exit> {
    let mut grants = Grants::default();
    for var in &decl.env {
        match std::env::var(var) {
            Ok(value) => {
                grants.env.insert(var.clone(), value);
            }
            Err(_) => {
                return Err(Exit::usage(format!(
                    "plugin `{}` is granted the environment variable `{var}`, but it is not set; set it or remove it from `env`",
                    decl.name
                )));
            }
        }
    }
    grants.dirs = decl
        .dirs
        .iter()
        .map(|d| DirGrant {
            host: d.host.clone(),
            guest: d.guest.clone(),
            writable: d.writable,
        })
        .collect();
    if let Some(m) = decl.memory_bytes {
        grants.memory_bytes = usize::try_from(m).unwrap_or(usize::MAX);
    }
    if let Some(t) = decl.timeout {
        grants.timeout = t;
    }
    grants.fuel = decl.fuel;
    if let Some(m) = decl.max_output_bytes {
        grants.max_output_bytes = usize::try_from(m).unwrap_or(usize::MAX);
    }
    Ok(PluginOptions {
        grants,
        reuse_instances: decl.reuse_instances,
    })
}

/// Resolves `plugin.function` against loaded plugins, checking the kind.
struct LoadedPlugins<'a>(&'a BTreeMap<String, Plugin>);

impl Functions for LoadedPlugins<'_> {
    fn resolve(
        &self,
        plugin: &str,
        function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        let p = self
            .0
            .get(plugin)
            .ok_or_else(|| format!("no plugin named `{plugin}` is declared"))?;
        let f = p.function(function, kind).map_err(|e| e.to_string())?;
        Ok(Function::of_kind(kind, Arc::new(f)))
    }
}

/// Stands in for every function, so a flow's shape can be drawn without its plugins.
struct Placeholders;

#[derive(Clone)]
struct Placeholder(String);

impl Functions for Placeholders {
    fn resolve(
        &self,
        plugin: &str,
        function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        let p = Placeholder(format!("{plugin}.{function}"));
        Ok(Function::of_kind(kind, Arc::new(p)))
    }
}

impl Placeholder {
    fn fail(&self) -> StepError {
        StepError::fatal(format!(
            "`{}` is a placeholder: the plugin is not loaded",
            self.0
        ))
    }
}

impl Action for Placeholder {
    fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<serde_json::Value>>> {
        let e = self.fail();
        Box::pin(async move { Err(e) })
    }
    fn label(&self) -> String {
        self.0.clone()
    }
}

impl Condition for Placeholder {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let e = self.fail();
        Box::pin(async move { Err(e) })
    }
    fn label(&self) -> String {
        self.0.clone()
    }
}

impl ErrorHandler for Placeholder {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let e = self.fail();
        Box::pin(async move { Err(e) })
    }
    fn label(&self) -> String {
        self.0.clone()
    }
}
