//! What `stepflow upgrade` did or would do.

use serde_json::{Value, json};
use stepflow_engine::{Upgrade, UpgradeRefusal, short_id};
use stepflow_store::RunRecord;

use crate::output;

/// A deployment for people: its short id, or what a run without one goes on with.
fn on(deployment: Option<&str>) -> String {
    match deployment {
        Some(id) => format!("deployment {}", short_id(id)),
        None => "its flow file (no deployment)".to_string(),
    }
}

/// A run was moved.
pub fn moved(upgrade: &Upgrade, json: bool) {
    if json {
        output::line(json!({
            "run": upgrade.run, "moved": true, "from": upgrade.from, "to": upgrade.to,
            "definition_changed": upgrade.definition_changed,
        }));
        return;
    }
    output::line(format!(
        "run {} moved from {} onto deployment {}",
        upgrade.run,
        on(upgrade.from.as_deref()),
        short_id(&upgrade.to)
    ));
    if upgrade.definition_changed {
        output::line("the flow changed; every step the run is at is in the new flow");
    }
    output::line(format!("continue it with: stepflow resume {}", upgrade.run));
}

/// A run could be moved (`--dry-run`); nothing was changed.
pub fn would_move(upgrade: &Upgrade, json: bool) {
    if json {
        output::line(json!({
            "run": upgrade.run, "dry_run": true, "movable": true, "from": upgrade.from,
            "to": upgrade.to, "definition_changed": upgrade.definition_changed,
        }));
        return;
    }
    output::line(format!(
        "dry run: run {} can move from {} onto deployment {}; nothing was changed",
        upgrade.run,
        on(upgrade.from.as_deref()),
        short_id(&upgrade.to)
    ));
    output::line(format!(
        "move it with: stepflow upgrade {} --to {}",
        upgrade.run,
        short_id(&upgrade.to)
    ));
}

/// A run is on the deployment already.
pub fn already_on(run: &str, to: &str, json: bool) {
    if json {
        output::line(json!({
            "run": run, "moved": false, "to": to, "reason": UpgradeRefusal::AlreadyOn.to_string(),
        }));
    } else {
        output::line(format!(
            "run {run} is on deployment {} already; nothing to do",
            short_id(to)
        ));
    }
}

/// The waiting and failed runs of a flow, each with whether it could move onto `to`.
pub fn list(
    flow: &str,
    to: &str,
    newest: bool,
    runs: &[(&RunRecord, Result<Upgrade, UpgradeRefusal>)],
    json: bool,
) {
    if json {
        let list: Vec<Value> = runs
            .iter()
            .map(|(r, check)| {
                json!({
                    "run": r.id, "status": r.status, "deployment": r.deployment,
                    "movable": check.is_ok(),
                    "reason": check.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        output::line(json!({ "flow": flow, "to": to, "dry_run": true, "runs": list }));
        return;
    }
    let which = if newest {
        "the newest deployment"
    } else {
        "deployment"
    };
    output::line(format!(
        "dry run: waiting and failed runs of flow {flow} against {which} {}; nothing was changed",
        short_id(to)
    ));
    if runs.is_empty() {
        output::line("no waiting or failed runs");
        return;
    }
    output::line(format!(
        "{:<24} {:<8} {:<12} {:<4} WHY NOT",
        "RUN", "STATUS", "DEPLOYMENT", "MOVE"
    ));
    for (r, check) in runs {
        output::line(format!(
            "{:<24} {:<8} {:<12} {:<4} {}",
            r.id,
            r.status.as_str(),
            r.deployment.as_deref().map_or("-", short_id),
            if check.is_ok() { "yes" } else { "no" },
            check
                .as_ref()
                .err()
                .map(ToString::to_string)
                .unwrap_or_default()
        ));
    }
    if runs.iter().any(|(_, check)| check.is_ok()) {
        output::line(format!(
            "\nmove a run with: stepflow upgrade RUN --to {}",
            short_id(to)
        ));
    }
}
