//! The seed's deployment workflow against a simulated target.
//!
//! The target lives in the run's data document: `version` is what to deploy, `current` what runs
//! now, `rollout_ms` how long a rollout takes, and `flaky_validations` how many validation
//! attempts fail before one passes (to show a retry).

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:deploy/deploy",
    path: ["../../../wit", "wit"],
    generate_all,
});

use std::time::{SystemTime, UNIX_EPOCH};

use exports::stepflow_examples::deploy::checks;
use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct Deploy;

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

fn patch(value: Value) -> Result<Option<String>, StepError> {
    Ok(Some(value.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A log line; the host tags it with the plugin, run and step.
fn info(message: &str) {
    log(Level::Info, message, &[]);
}

impl Guest for Deploy {
    fn prepare(_ctx: StepContext) -> Result<Option<String>, StepError> {
        info("preparing the environment");
        patch(json!({ "environment": { "prepared": true } }))
    }

    fn deploy(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let version = d["version"].as_str().unwrap_or("unknown");
        info(&format!(
            "deploying {version} (key {})",
            ctx.idempotency_key
        ));
        patch(json!({ "rollout": { "version": version, "started_ms": now_ms() } }))
    }

    fn validate(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let flaky = d["flaky_validations"].as_u64().unwrap_or(0);
        if u64::from(ctx.attempt) <= flaky {
            return Err(StepError::Retryable(format!(
                "health check failed on attempt {}",
                ctx.attempt
            )));
        }
        info("the new version is healthy");
        patch(json!({ "current": d["rollout"]["version"], "validated_on_attempt": ctx.attempt }))
    }

    fn cleanup(_ctx: StepContext) -> Result<Option<String>, StepError> {
        info("cleaning up");
        patch(json!({ "environment": null, "rollout": null, "cleaned": true }))
    }

    fn should_retry(ctx: StepContext, error: String) -> Result<bool, StepError> {
        let again = ctx.attempt < 3;
        log(
            Level::Warn,
            &format!("attempt {} failed: {error}; retry: {again}", ctx.attempt),
            &[],
        );
        Ok(again)
    }
}

impl checks::Guest for Deploy {
    fn ready(ctx: StepContext) -> Result<bool, StepError> {
        Ok(data(&ctx)?["environment"]["prepared"] == true)
    }

    fn should_deploy(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        Ok(d["version"] != d["current"])
    }

    fn deployed(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        let started = d["rollout"]["started_ms"].as_u64().unwrap_or(0);
        let takes = d["rollout_ms"].as_u64().unwrap_or(0);
        Ok(now_ms() >= started.saturating_add(takes))
    }
}

export!(Deploy);
