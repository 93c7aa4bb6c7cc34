//! The seed's quickstart as a plugin: `step1`, `a-condition`, `step2`.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:quickstart/quickstart",
    path: ["../../../wit", "wit"],
    generate_all,
});

use stepflow::plugin::host::{Level, log};

struct Quickstart;

impl Guest for Quickstart {
    fn step1(_ctx: StepContext) -> Result<Option<String>, StepError> {
        // The host tags every log line with the plugin, run and step.
        log(Level::Info, "Executing step 1", &[]);
        Ok(Some(r#"{"step1":"done"}"#.to_string()))
    }

    fn a_condition(ctx: StepContext) -> Result<bool, StepError> {
        log(Level::Info, "Return true when ready to proceed.", &[]);
        let data: serde_json::Value = serde_json::from_str(&ctx.data)
            .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))?;
        Ok(data["step1"] == "done")
    }

    fn step2(_ctx: StepContext) -> Result<Option<String>, StepError> {
        println!("Executing step 2");
        Ok(Some(r#"{"step2":"done"}"#.to_string()))
    }
}

export!(Quickstart);
