//! `stepflow upgrade`: move a waiting or failed run onto another deployment of its flow, or
//! (`--flow NAME --dry-run`) list which runs of a flow could move and why the others cannot.

use stepflow_store::Database;

use stepflow_engine::{
    EngineError, UpgradeRefusal, check_upgrade, shape_deployment, short_id, this_owner, upgrade_run,
};
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{Deployment, RunFilter, RunStatus, Store};

use super::{open_store, read_store};
use crate::error::Exit;
use crate::views;

/// `stepflow upgrade RUN [--to DEPLOYMENT] [--dry-run]` and
/// `stepflow upgrade --flow NAME --dry-run [--to DEPLOYMENT]`.
pub fn upgrade(
    db: &Database,
    run: Option<&str>,
    flow: Option<&str>,
    to: Option<&str>,
    dry_run: bool,
    json: bool,
) -> Result<(), Exit> {
    match (run, flow) {
        (Some(run), _) if dry_run => check_one(db, run, to, json),
        (Some(run), _) => move_one(db, run, to, json),
        (None, Some(flow)) => list(db, flow, to, json),
        (None, None) => Err(Exit::usage(
            "give a RUN to move, or --flow NAME --dry-run to list the runs of a flow",
        )),
    }
}

/// Moves one run, under its lease.
fn move_one(db: &Database, run_id: &str, to: Option<&str>, json: bool) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let record = store.run(run_id)?;
    let to = target(&store, &record.flow, to)?;
    let flow = shape_deployment(&to)?;
    match upgrade_run(&mut store, run_id, &to, &flow, &this_owner()) {
        Ok(upgrade) => {
            views::upgrade::moved(&upgrade, json);
            Ok(())
        }
        Err(EngineError::Upgrade {
            refusal: UpgradeRefusal::AlreadyOn,
            ..
        }) => {
            views::upgrade::already_on(run_id, &to.id, json);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// What moving one run would do, changing nothing.
fn check_one(db: &Database, run_id: &str, to: Option<&str>, json: bool) -> Result<(), Exit> {
    let store = read_store(db)?;
    let record = store.run(run_id)?;
    let to = target(&store, &record.flow, to)?;
    let flow = shape_deployment(&to)?;
    match check_upgrade(&record, &to, &flow, SystemClock.now_ms()) {
        Ok(upgrade) => {
            views::upgrade::would_move(&upgrade, json);
            Ok(())
        }
        Err(UpgradeRefusal::AlreadyOn) => {
            views::upgrade::already_on(run_id, &to.id, json);
            Ok(())
        }
        Err(refusal) => Err(EngineError::Upgrade {
            run: run_id.to_string(),
            deployment: short_id(&to.id).to_string(),
            refusal,
        }
        .into()),
    }
}

/// Every waiting or failed run of `flow`, and whether it could move onto the target.
fn list(db: &Database, flow: &str, to: Option<&str>, json: bool) -> Result<(), Exit> {
    let store = read_store(db)?;
    let target = target(&store, flow, to)?;
    if target.flow != flow {
        return Err(Exit::usage(format!(
            "deployment {} is of flow `{}`, not `{flow}`\n  hint: `stepflow deployments --flow {flow}` lists this flow's deployments",
            short_id(&target.id),
            target.flow
        )));
    }
    let shape = shape_deployment(&target)?;
    let mut runs = Vec::new();
    for status in [RunStatus::Waiting, RunStatus::Failed] {
        runs.extend(store.runs_where(&RunFilter {
            status: Some(status),
            flow: Some(flow.to_string()),
            limit: usize::MAX >> 1,
            ..RunFilter::default()
        })?);
    }
    runs.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
    let now = SystemClock.now_ms();
    let checked: Vec<_> = runs
        .iter()
        .map(|r| (r, check_upgrade(r, &target, &shape, now)))
        .collect();
    views::upgrade::list(flow, &target.id, to.is_none(), &checked, json);
    Ok(())
}

/// The deployment `--to` names, or the newest deployment of `flow`.
fn target(store: &dyn Store, flow: &str, to: Option<&str>) -> Result<Deployment, Exit> {
    if let Some(id) = to {
        return Ok(store.deployment(id)?);
    }
    let newest = store.deployments(Some(flow), 1)?;
    let Some(info) = newest.first() else {
        return Err(Exit::usage(format!(
            "flow `{flow}` has no deployment in this run database\n  hint: `stepflow run FLOW-FILE` makes one; `stepflow deployments` lists them"
        )));
    };
    Ok(store.deployment(&info.id)?)
}
