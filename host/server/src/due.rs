//! Freeing the runs of owners that died: on start, a run whose lease holder is a process on
//! this host that is gone is released at once instead of when its lease expires, so the
//! scheduler claims it with the other due runs; its in-flight step is redelivered (its stored
//! status is still `running`).

use stepflow_engine::owner_is_dead;
use stepflow_store::{Claim, RunFilter, RunStatus, Store, StoreError};

/// Frees the runs of dead local owners; returns how many. A scan of the open runs, done once
/// at start (not per wake-up).
pub(crate) fn free_dead_owners(
    store: &mut dyn Store,
    owner: &str,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let mut open = Vec::new();
    for status in [RunStatus::Running, RunStatus::Waiting] {
        open.extend(store.runs_where(&RunFilter {
            status: Some(status),
            limit: usize::MAX >> 1,
            ..RunFilter::default()
        })?);
    }
    let mut freed = 0;
    for run in open {
        let Some(held) = &run.lease else { continue };
        if held.expires_ms <= now_ms || held.owner == owner || !owner_is_dead(&held.owner) {
            continue;
        }
        match store.claim(&Claim {
            run_id: &run.id,
            owner,
            ttl_ms,
            now_ms,
            take_over: Some(&held.owner),
        }) {
            Ok(lease) => {
                store.release(&lease)?;
                freed += 1;
            }
            Err(StoreError::Leased { .. } | StoreError::Finished { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(freed)
}
