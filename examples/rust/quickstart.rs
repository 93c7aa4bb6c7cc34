//! The seed's quick start in Rust: `step1`, a `wait_for` on `aCondition`, then `step2`.
//!
//! The run is driven one apply at a time, and after each apply the state is printed as the JSON
//! a host would save: that is all it takes to stop here and resume later, in another process.
//!
//! Run with `cargo run --example quickstart`.

use serde_json::json;
use stepflow_model::{BuildError, RunContext, StepContext, StepFlow, StepResult, Steps};

async fn step1(_: StepContext) -> StepResult<()> {
    println!("Executing step 1");
    Ok(())
}

async fn a_condition(_: StepContext) -> StepResult<bool> {
    println!("Return true when ready to proceed.");
    Ok(true)
}

async fn step2(_: StepContext) -> StepResult<()> {
    println!("Executing step 2");
    Ok(())
}

fn quick_start_step_flow() -> Result<StepFlow, BuildError> {
    StepFlow::new(
        Steps::named("quickstart.v1")
            .step("step1", step1)
            .wait_for("aCondition", a_condition)
            .step("step2", step2),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Workflow definition.
    let flow = quick_start_step_flow()?;

    // Workflow execution.
    let ctx = RunContext::new("quickstart-1");
    let mut state = flow.new_state(json!({}));
    while !flow.is_completed(&state) {
        // Could load the state from persistent storage.

        // Apply the workflow to the old state: at most one step runs. A failure does not lose
        // the state; it is recorded in it, and applying again retries the failed step.
        state = flow.apply(&ctx, state).await;
        if let Some(error) = &state.error {
            return Err(error.to_string().into());
        }

        // Could save the state to persistent storage.
        println!("  saved: {}", serde_json::to_string(&state)?);
    }
    Ok(())
}
