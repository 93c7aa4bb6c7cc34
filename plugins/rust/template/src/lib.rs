//! A stepflow plugin in Rust: one action, one condition, one error handler.
//!
//! `wit_bindgen::generate!` reads wit/world.wit (and the `stepflow:plugin` package vendored in
//! wit/deps) and declares a `Guest` trait with one method per export (`should-retry` is
//! `should_retry`). Return `Ok(value)`, or `Err(StepError::Retryable(..) | StepError::Fatal(..))`
//! for a step error. A panic traps the instance: the step fails with a fatal error.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "my-org:template/template",
    path: "wit",
    generate_all,
});

use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct Plugin;

/// The run's data document.
fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

impl Guest for Plugin {
    /// An action: greets `name` and counts the greetings in a JSON merge patch (RFC 7386: keys
    /// it sets are set, nested objects merge, null deletes). `None` leaves the data alone.
    fn greet(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let name = match &d["name"] {
            Value::Null => "world",
            Value::String(name) => name,
            // Fatal: no retry can fix the input, so the run fails here (no handler is asked).
            _ => return Err(StepError::Fatal("`name` must be a string".into())),
        };
        let greetings = d["greetings"].as_u64().unwrap_or(0) + 1;
        if d["fail_first"] == json!(true) && greetings == 1 && ctx.attempt == 1 {
            // Retryable: an enclosing `retry` may run the group again (its handler decides).
            return Err(StepError::Retryable("the greeter is not ready yet".into()));
        }
        log(Level::Info, "greeting", &[("name".into(), name.into())]);
        let patch = json!({ "greeting": format!("hello, {name}"), "greetings": greetings });
        Ok(Some(patch.to_string()))
    }

    /// A condition: true once there are `want` greetings (1 when not set).
    fn ready(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        Ok(d["greetings"].as_u64().unwrap_or(0) >= d["want"].as_u64().unwrap_or(1))
    }

    /// An error handler: asked only about retryable errors; retries while fewer than 3
    /// attempts were made.
    fn should_retry(ctx: StepContext, error: String) -> Result<bool, StepError> {
        let fields = [
            ("error".into(), error),
            ("attempt".into(), ctx.attempt.to_string()),
        ];
        log(Level::Warn, "the step failed", &fields);
        Ok(ctx.attempt < 3)
    }
}

export!(Plugin);
