//! The seed's example workflow: prepare an environment, wait until it is ready, and only when a
//! new version is wanted deploy it, wait until it is live and validate it; then clean up.
//!
//! The target is simulated in memory: the environment is ready on the second check and a rollout
//! is live on the third. Steps pass what they learn through the run's data document, and the
//! waits are paced with `Wait::every`: the state says when the next check is due, and the driver
//! sleeps until then. The flow runs twice; the second run finds the version already live, so
//! `shouldDeploy` skips its body.
//!
//! Run with `cargo run --example deployment`; add `-- --mermaid` to print the flow's diagram.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use stepflow_model::{
    BuildError, Clock, RunContext, Status, StepContext, StepError, StepFlow, StepResult, Steps,
    SystemClock, Wait,
};

/// The simulated deployment target.
struct Target {
    /// The version that is live.
    live: Mutex<String>,
    /// The version being rolled out, if any.
    rolling_out: Mutex<Option<String>>,
    ready_checks: AtomicU32,
    rollout_checks: AtomicU32,
}

/// The version a run deploys, from its data document.
fn wanted(ctx: &StepContext) -> StepResult<String> {
    ctx.data["version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StepError::fatal("the run's data has no `version` to deploy"))
}

impl Target {
    fn live(&self) -> String {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn prepare(self: Arc<Self>, ctx: StepContext) -> StepResult<Value> {
        let environment = format!("staging-{}", ctx.run_id);
        println!("prepare: creating {environment}");
        self.ready_checks.store(0, Ordering::SeqCst);
        Ok(json!({ "environment": environment }))
    }

    async fn is_ready(self: Arc<Self>, _: StepContext) -> StepResult<bool> {
        let ready = self.ready_checks.fetch_add(1, Ordering::SeqCst) + 1 >= 2;
        println!("ready: {}", if ready { "yes" } else { "not yet" });
        Ok(ready)
    }

    async fn should_deploy(self: Arc<Self>, ctx: StepContext) -> StepResult<bool> {
        let (live, wanted) = (self.live(), wanted(&ctx)?);
        println!("shouldDeploy: {live} is live, {wanted} is wanted");
        Ok(live != wanted)
    }

    async fn deploy(self: Arc<Self>, ctx: StepContext) -> StepResult<()> {
        let version = wanted(&ctx)?;
        println!("deploy: rolling out {version}");
        self.rollout_checks.store(0, Ordering::SeqCst);
        *self
            .rolling_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(version);
        Ok(())
    }

    async fn is_deployed(self: Arc<Self>, _: StepContext) -> StepResult<bool> {
        let done = self.rollout_checks.fetch_add(1, Ordering::SeqCst) + 1 >= 3;
        if done {
            let mut rolling = self
                .rolling_out
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(version) = rolling.take() {
                *self.live.lock().unwrap_or_else(PoisonError::into_inner) = version;
            }
        }
        println!("deployed: {}", if done { "yes" } else { "rolling out" });
        Ok(done)
    }

    async fn validate(self: Arc<Self>, ctx: StepContext) -> StepResult<Value> {
        let (live, wanted) = (self.live(), wanted(&ctx)?);
        println!("validate: {live} is live");
        if live != wanted {
            return Err(StepError::fatal(format!(
                "{wanted} was deployed but {live} is live"
            )));
        }
        Ok(json!({ "validated": live }))
    }

    async fn cleanup(self: Arc<Self>, ctx: StepContext) -> StepResult<Value> {
        println!("cleanup: removing {}", ctx.data["environment"]);
        // A null in a merge patch removes the key from the data document.
        Ok(json!({ "environment": null }))
    }
}

/// Makes a step function of a target method.
fn on<F, Fut>(
    target: &Arc<Target>,
    method: F,
) -> impl Fn(StepContext) -> Fut + Send + Sync + use<F, Fut>
where
    F: Fn(Arc<Target>, StepContext) -> Fut + Send + Sync,
{
    let target = target.clone();
    move |ctx| method(target.clone(), ctx)
}

fn deployment_flow(target: &Arc<Target>) -> Result<StepFlow, BuildError> {
    let pace = Wait::every(Duration::from_millis(200));
    StepFlow::new(
        Steps::named("deployment.v1")
            .step("prepare", on(target, Target::prepare))
            .wait_for_with("ready", on(target, Target::is_ready), pace)
            .case(
                "shouldDeploy",
                on(target, Target::should_deploy),
                Steps::new()
                    .step("deploy", on(target, Target::deploy))
                    .wait_for_with("deployed", on(target, Target::is_deployed), pace)
                    .step("validate", on(target, Target::validate)),
            )
            .step("cleanup", on(target, Target::cleanup)),
    )
}

/// Applies until the run completes, sleeping while the state says a check is not yet due.
async fn run(flow: &StepFlow, run_id: &str, version: &str) -> Result<(), String> {
    println!("--- run {run_id}: deploy {version}");
    let ctx = RunContext::new(run_id);
    let clock = SystemClock;
    let mut state = flow.new_state(json!({ "version": version }));
    loop {
        match flow.status(&state, clock.now_ms()) {
            Status::Completed => break,
            Status::Failed(failure) => return Err(failure.to_string()),
            Status::Waiting(due) => {
                let wait = due.saturating_sub(clock.now_ms());
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            Status::AwaitingSignal { signal, .. } => {
                return Err(format!(
                    "waits for signal `{signal}`, which this example never sends"
                ));
            }
            Status::Ready => state = flow.apply(&ctx, state).await,
        }
    }
    println!("--- run {run_id} completed; data: {}", state.data);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = Arc::new(Target {
        live: Mutex::new("1.4.2".into()),
        rolling_out: Mutex::new(None),
        ready_checks: AtomicU32::new(0),
        rollout_checks: AtomicU32::new(0),
    });
    let flow = deployment_flow(&target)?;
    run(&flow, "run-1", "1.5.0").await?;
    run(&flow, "run-2", "1.5.0").await?;

    if std::env::args().any(|arg| arg == "--mermaid") {
        println!("\n{}", flow.to_mermaid());
    } else {
        println!("\n(add `-- --mermaid` to see the flow as a Mermaid diagram)");
    }
    Ok(())
}
