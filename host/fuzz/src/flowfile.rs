//! Target `flowfile`: arbitrary UTF-8 text as a flow file, through [`stepflow_flowfile::parse`],
//! the checks, [`stepflow_flowfile::FlowFile::to_steps`] (every function resolved to a native
//! no-op of the kind the use needs) and [`StepFlow::new`], then the diagrams of what was built.

use std::path::Path;
use std::sync::Arc;

use stepflow_flowfile::{Function, FunctionKind, Functions, parse};
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepFlow, StepResult,
};

/// Resolves every `plugin.function` to itself: a native function of any kind, doing nothing.
struct Noop;

impl Action for Noop {
    fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<serde_json::Value>>> {
        Box::pin(async { Ok(None) })
    }
}

impl Condition for Noop {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
}

impl ErrorHandler for Noop {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(false) })
    }
}

impl Functions for Noop {
    fn resolve(
        &self,
        _plugin: &str,
        _function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        Ok(match kind {
            FunctionKind::Action => Function::Action(Arc::new(Noop)),
            FunctionKind::Condition => Function::Condition(Arc::new(Noop)),
            FunctionKind::ErrorHandler => Function::ErrorHandler(Arc::new(Noop)),
        })
    }
}

/// The fuzz body; input that is not UTF-8 is ignored (flow files are text).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("flows/fuzz.yaml");
    match parse(text, path) {
        Ok(file) => {
            let _ = file.references();
            if let Ok(steps) = file.to_steps(&Noop)
                && let Ok(flow) = StepFlow::new(steps)
            {
                let _ = flow.transitions();
                let _ = flow.to_mermaid();
                let _ = flow.to_dot();
                let state = flow.new_state(file.data.clone());
                assert!(
                    flow.check_state(&state).is_ok(),
                    "a new state fits its flow"
                );
            }
        }
        Err(d) => {
            assert_eq!(d.file, path, "a diagnostic names the file it is about");
            assert!(!d.message.is_empty(), "a diagnostic says something");
            // YAML breaks lines at `\n`, `\r\n` and a lone `\r`.
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
            assert!(d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
            let _ = d.to_string();
        }
    }
}
