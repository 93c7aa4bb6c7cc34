//! Steps for flows that fan out: `deploy-region`, one per branch of a `parallel` named after
//! its region (the regions in `flaky_regions` fail their first attempt, to show a retry inside
//! a branch), and `square`, one per element of a `for-each` over numbers. Everything is derived
//! from the data document and the step's context, so a run resumed after a crash ends exactly
//! as an uninterrupted one.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:fanout/fanout",
    path: ["../../../wit", "wit"],
    generate_all,
});

use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct FanOut;

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

impl Guest for FanOut {
    fn deploy_region(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let regions = d["regions"].as_array().cloned().unwrap_or_default();
        let Some(region) = ctx.step.split('/').find(|s| regions.iter().any(|r| r == s)) else {
            return Err(StepError::Fatal(format!(
                "no segment of the step path `{}` is one of `regions` ({})",
                ctx.step, d["regions"]
            )));
        };
        let flaky = d["flaky_regions"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r == region));
        if flaky && ctx.attempt == 1 {
            return Err(StepError::Retryable(format!(
                "region {region} did not answer on attempt 1"
            )));
        }
        log(Level::Info, &format!("deployed to {region}"), &[]);
        let patch =
            json!({ "deployed": { region: { "version": d["version"], "attempt": ctx.attempt } } });
        Ok(Some(patch.to_string()))
    }

    fn square(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let item = d["item"].as_i64().ok_or_else(|| {
            StepError::Fatal(format!("`item` is {}, not a whole number", d["item"]))
        })?;
        Ok(Some(
            json!({ "square": item.saturating_mul(item) }).to_string(),
        ))
    }
}

export!(FanOut);
