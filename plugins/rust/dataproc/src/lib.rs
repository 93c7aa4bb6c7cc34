//! A multi-stage data-processing flow against a simulated paged source.
//!
//! The data document drives it: `pages` is how many pages the source has, `flaky` makes every
//! page's transform fail on its first attempt. Everything is derived from the data document, so
//! a run resumed after a crash ends exactly as an uninterrupted one. Two functions serve the
//! fan-out examples: `deploy-region` (its region is the segment of its step path that is one of
//! `regions`, so each `parallel` branch is named after one; the regions in `flaky_regions` fail
//! their first attempt) and `square` (one per `for-each`
//! element, from its `item`).

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:dataproc/dataproc",
    path: ["../../../wit", "wit"],
    generate_all,
});

use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct DataProc;

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

fn patch(value: Value) -> Result<Option<String>, StepError> {
    Ok(Some(value.to_string()))
}

impl Guest for DataProc {
    /// Fetches the next page: ten records whose values depend only on the page number.
    fn fetch_page(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let page = d["page"].as_u64().unwrap_or(0) + 1;
        let records: Vec<u64> = (0..10).map(|i| page * 100 + i).collect();
        log(Level::Info, &format!("fetched page {page}"), &[]);
        patch(json!({ "page": page, "records": records }))
    }

    /// Transforms the current page's records and adds them to the running total; with `flaky`
    /// set, the first attempt on every page fails.
    fn transform(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        if d["flaky"] == true && ctx.attempt == 1 {
            return Err(StepError::Retryable(format!(
                "the transform service timed out on page {}",
                d["page"]
            )));
        }
        let sum: u64 = d["records"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_u64).map(|v| v * 2).sum())
            .unwrap_or(0);
        let total = d["total"].as_u64().unwrap_or(0) + sum;
        let done = d["transformed_pages"].as_u64().unwrap_or(0) + 1;
        patch(json!({ "total": total, "transformed_pages": done, "records": null }))
    }

    fn last_page(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        Ok(d["page"].as_u64().unwrap_or(0) >= d["pages"].as_u64().unwrap_or(1))
    }

    fn summarize(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let summary = format!(
            "{} pages, total {}",
            d["transformed_pages"].as_u64().unwrap_or(0),
            d["total"].as_u64().unwrap_or(0)
        );
        log(Level::Info, &summary, &[]);
        patch(json!({ "summary": summary }))
    }

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
        patch(
            json!({ "deployed": { region: { "version": d["version"], "attempt": ctx.attempt } } }),
        )
    }

    fn square(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let item = d["item"].as_i64().ok_or_else(|| {
            StepError::Fatal(format!("`item` is {}, not a whole number", d["item"]))
        })?;
        patch(json!({ "square": item.saturating_mul(item) }))
    }
}

export!(DataProc);
