//! A plugin to copy: one action, one condition and one error handler.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "my-org:template/template",
    path: ["../../../wit", "wit"],
    generate_all,
});

use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct Template;

/// The run's data document.
fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

impl Guest for Template {
    /// An action: reads `name` and returns a merge patch that sets `greeting` and counts calls.
    fn greet(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let name = d["name"].as_str().unwrap_or("world");
        let count = d["greetings"].as_u64().unwrap_or(0) + 1;
        log(
            Level::Info,
            &format!("greeting {name}"),
            &[("attempt".into(), ctx.attempt.to_string())],
        );
        Ok(Some(
            json!({ "greeting": format!("hello, {name}"), "greetings": count }).to_string(),
        ))
    }

    /// A condition: true once `greetings` reached `times` (default 1).
    fn done(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        Ok(d["greetings"].as_u64().unwrap_or(0) >= d["times"].as_u64().unwrap_or(1))
    }

    /// An error handler: retry the group twice, then let the error stand.
    fn should_retry(ctx: StepContext, error: String) -> Result<bool, StepError> {
        log(
            Level::Warn,
            &format!("attempt {} failed: {error}", ctx.attempt),
            &[],
        );
        Ok(ctx.attempt < 3)
    }
}

export!(Template);
