//! A multi-stage data-processing flow against a simulated paged source.
//!
//! The data document drives it: `pages` is how many pages the source has, `flaky` makes every
//! page's transform fail on its first attempt. Everything is derived from the data document, so
//! a run resumed after a crash ends exactly as an uninterrupted one.

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
}

export!(DataProc);
