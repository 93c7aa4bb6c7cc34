//! How a flow file's `plugin.function` uses become step functions: against loaded plugins, or
//! placeholders that only give a flow its shape (for diagrams).

use std::collections::BTreeMap;
use std::sync::Arc;

use stepflow_flowfile::{Function, FunctionKind, Functions};
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepResult,
};
use stepflow_plugin::Plugin;

/// Resolves `plugin.function` against loaded plugins, checking the kind the use needs.
pub(crate) struct LoadedPlugins<'a>(pub(crate) &'a BTreeMap<String, Plugin>);

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

/// Stands in for every function, so a flow's shape can be compiled without its plugins.
pub(crate) struct Placeholders;

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

/// A function that only has a name; calling it is a fatal step error.
#[derive(Clone)]
struct Placeholder(String);

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
    fn identity(&self) -> Option<String> {
        Some(self.0.clone())
    }
}

impl Condition for Placeholder {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        let e = self.fail();
        Box::pin(async move { Err(e) })
    }
    fn identity(&self) -> Option<String> {
        Some(self.0.clone())
    }
}

impl ErrorHandler for Placeholder {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        let e = self.fail();
        Box::pin(async move { Err(e) })
    }
    fn identity(&self) -> Option<String> {
        Some(self.0.clone())
    }
}
