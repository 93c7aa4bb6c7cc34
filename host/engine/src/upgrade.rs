//! Moving a run onto another deployment of its flow (`stepflow upgrade`): explicit, checked by
//! the rule for changed definitions (every cursor event must exist in the new graph, with the
//! same kind), and made under the run's lease so no driver saves a step meanwhile.

use stepflow_model::{Clock, StateError, StepFlow, SystemClock};
use stepflow_store::{Deployment, RunRecord, RunStatus, Store, StoreError};

use crate::deployment::short_id;
use crate::error::EngineError;
use crate::lease::{MIN_LEASE, claim, owner_is_dead};

/// Why a run cannot move onto a deployment; each says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeRefusal {
    /// The run is completed or cancelled: nothing is left to run on any deployment.
    #[error("it is {status}; only a waiting or failed run can move")]
    Finished {
        /// Its status.
        status: RunStatus,
    },
    /// The deployment is of another flow than the run.
    #[error("the run is of flow `{run_flow}`, but the deployment is of flow `{flow}`")]
    OtherFlow {
        /// The run's flow.
        run_flow: String,
        /// The deployment's flow.
        flow: String,
    },
    /// The run is on that deployment already.
    #[error("it is on that deployment already")]
    AlreadyOn,
    /// A live driver holds the run's lease.
    #[error("it is being driven by {owner}; stop that process first")]
    Driven {
        /// The lease holder.
        owner: String,
    },
    /// Steps the run is at do not exist in the deployment's flow.
    #[error(
        "it is at {}, which the new flow does not have",
        .steps.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    )]
    MissingSteps {
        /// The step paths of the missing cursor events.
        steps: Vec<String>,
    },
    /// A step the run is at has another kind in the deployment's flow.
    #[error("it is at `{step}`, which {detail}")]
    ChangedKind {
        /// The step path.
        step: String,
        /// What it was and is now.
        detail: String,
    },
}

/// What moving a run onto a deployment does (or did).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The run.
    pub run: String,
    /// The deployment it was on; `None` for a run from before deployments (started from its
    /// flow file).
    pub from: Option<String>,
    /// The deployment it moves onto (the full id).
    pub to: String,
    /// Whether the flow's definition differs (else only plugin bytes or comments changed).
    pub definition_changed: bool,
}

/// Checks, without writing anything, whether `record` can move onto `to`, whose flow compiled
/// is `flow` (see [`shape_deployment`](crate::shape_deployment)): a waiting or failed run of
/// the same flow, not on `to` already, that no live driver holds at `now_ms`, and every cursor
/// event of which exists in `flow` with the same kind.
pub fn check_upgrade(
    record: &RunRecord,
    to: &Deployment,
    flow: &StepFlow,
    now_ms: u64,
) -> Result<Upgrade, UpgradeRefusal> {
    if let Some(lease) = &record.lease
        && lease.expires_ms > now_ms
        && !owner_is_dead(&lease.owner)
    {
        return Err(UpgradeRefusal::Driven {
            owner: lease.owner.clone(),
        });
    }
    check_content(record, to, flow)
}

/// Moves run `run_id` onto deployment `to` (whose compiled flow is `flow`): claims the run's
/// lease as `owner`, checks it under the lease ([`check_upgrade`]), records the new
/// deployment and definition hash, and gives the lease back. The next resume continues on
/// `to`. Refusals are [`EngineError::Upgrade`]; a run a live driver holds is
/// [`EngineError::Busy`].
pub fn upgrade_run(
    store: &mut dyn Store,
    run_id: &str,
    to: &Deployment,
    flow: &StepFlow,
    owner: &str,
) -> Result<Upgrade, EngineError> {
    let refused = |refusal| EngineError::Upgrade {
        run: run_id.to_string(),
        deployment: short_id(&to.id).to_string(),
        refusal,
    };
    // Checked before claiming, so a finished run or another flow is refused in those terms.
    let record = store.run(run_id)?;
    check_content(&record, to, flow).map_err(refused)?;
    let lease = match claim(store, run_id, owner, MIN_LEASE, SystemClock.now_ms()) {
        Ok(lease) => lease,
        Err(EngineError::Store(StoreError::Finished { status, .. })) => {
            return Err(refused(UpgradeRefusal::Finished { status }));
        }
        Err(e) => return Err(e),
    };
    let moved = (|| {
        // Read again under the lease: the last driver's last save is what moves.
        let record = store.run(run_id)?;
        let upgrade = check_content(&record, to, flow).map_err(refused)?;
        store.move_run(run_id, &to.id, flow.definition_hash(), &lease)?;
        Ok(upgrade)
    })();
    if let Err(e) = store.release(&lease) {
        tracing::debug!(run = run_id, "could not release the lease: {e}");
    }
    moved
}

/// The checks of [`check_upgrade`] other than the lease.
fn check_content(
    record: &RunRecord,
    to: &Deployment,
    flow: &StepFlow,
) -> Result<Upgrade, UpgradeRefusal> {
    if matches!(record.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(UpgradeRefusal::Finished {
            status: record.status,
        });
    }
    if record.flow != to.flow {
        return Err(UpgradeRefusal::OtherFlow {
            run_flow: record.flow.clone(),
            flow: to.flow.clone(),
        });
    }
    if record.deployment.as_deref() == Some(to.id.as_str()) {
        return Err(UpgradeRefusal::AlreadyOn);
    }
    flow.check_state(&record.state).map_err(|e| match e {
        StateError::UnknownEvents { missing, .. } => UpgradeRefusal::MissingSteps {
            steps: missing.iter().map(|e| step_of(e).to_string()).collect(),
        },
        StateError::ChangedKind { step, was, now, .. } => UpgradeRefusal::ChangedKind {
            step,
            detail: format!(
                "was {} and is {} in the new flow",
                was.with_article(),
                now.with_article()
            ),
        },
    })?;
    Ok(Upgrade {
        run: record.id.clone(),
        from: record.deployment.clone(),
        to: to.id.clone(),
        definition_changed: record.definition != flow.definition_hash(),
    })
}

/// The step path of a cursor event (`start:f/a` and `completed:f/a` are both at `f/a`).
fn step_of(event: &str) -> &str {
    event
        .strip_prefix("start:")
        .or_else(|| event.strip_prefix("completed:"))
        .unwrap_or(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_steps() {
        assert_eq!(step_of("start:f/a"), "f/a");
        assert_eq!(step_of("completed:f/a/b"), "f/a/b");
        assert_eq!(step_of("odd"), "odd");
    }
}
