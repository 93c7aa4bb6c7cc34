//! Leases: claiming, renewing and releasing the right to drive a run. Each call is one
//! IMMEDIATE transaction that reads the run's lease under the write lock and then changes it,
//! so it is a compare-and-swap: of two claims at once (from any number of connections or
//! processes), exactly one wins.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::encode::{invalid, to_i64};
use super::error::{classify, not_found};
use super::queries::{held, lease_lost};
use crate::{Claim, Lease, RunStatus, StoreError};

/// A claim: new owner, expiry and fence (the old one plus one).
const CLAIM: &str =
    "UPDATE runs SET lease_owner = ?2, lease_expires_ms = ?3, lease_fence = ?4 WHERE id = ?1";

/// A renewal: a later expiry, same owner and fence.
const RENEW: &str = "UPDATE runs SET lease_expires_ms = ?2 WHERE id = ?1";

/// A release: nobody holds the run; the fence stays, so it is never reused.
const RELEASE: &str = "UPDATE runs SET lease_owner = NULL, lease_expires_ms = NULL WHERE id = ?1";

/// [`crate::Store::claim`].
pub(super) fn claim(
    conn: &mut Connection,
    path: &Path,
    claim: &Claim<'_>,
) -> Result<Lease, StoreError> {
    let id = claim.run_id;
    let expires_ms = claim.now_ms.saturating_add(claim.ttl_ms);
    let expires = to_i64(id, "lease expiry", expires_ms)?;
    let action = || format!("claiming run `{id}` for `{}`", claim.owner);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let Some(held) = held(&tx, path, id)? else {
        return Err(not_found(path, id));
    };
    if matches!(held.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::Finished {
            run: id.to_string(),
            status: held.status,
        });
    }
    if let Some(current) = &held.lease {
        let live = current.expires_ms > claim.now_ms;
        let ours = current.owner == claim.owner;
        let taken_over = claim.take_over == Some(current.owner.as_str());
        if live && !ours && !taken_over {
            return Err(StoreError::Leased {
                run: id.to_string(),
                owner: current.owner.clone(),
                expires_ms: current.expires_ms,
            });
        }
    }
    let fence = held
        .fence
        .checked_add(1)
        .ok_or_else(|| invalid(id, "its lease fence cannot be incremented any more"))?;
    let stored_fence = to_i64(id, "lease fence", fence)?;
    tx.prepare_cached(CLAIM)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![id, claim.owner, expires, stored_fence])
        })
        .map_err(|e| classify(path, action(), e))?;
    tx.commit().map_err(|e| classify(path, action(), e))?;
    Ok(Lease {
        run_id: id.to_string(),
        owner: claim.owner.to_string(),
        fence,
        expires_ms,
    })
}

/// [`crate::Store::renew`].
pub(super) fn renew(
    conn: &mut Connection,
    path: &Path,
    lease: &Lease,
    ttl_ms: u64,
    now_ms: u64,
) -> Result<Lease, StoreError> {
    let id = lease.run_id.as_str();
    let expires_ms = now_ms.saturating_add(ttl_ms);
    let expires = to_i64(id, "lease expiry", expires_ms)?;
    let action = || format!("renewing the lease of `{}` on run `{id}`", lease.owner);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let Some(held) = held(&tx, path, id)? else {
        return Err(not_found(path, id));
    };
    if !held.is_held_by(&lease.owner, lease.fence) {
        return Err(lease_lost(lease, &held));
    }
    tx.prepare_cached(RENEW)
        .and_then(|mut stmt| stmt.execute(rusqlite::params![id, expires]))
        .map_err(|e| classify(path, action(), e))?;
    tx.commit().map_err(|e| classify(path, action(), e))?;
    Ok(Lease {
        expires_ms,
        ..lease.clone()
    })
}

/// [`crate::Store::release`]: a lease that is no longer current is left alone, without error.
pub(super) fn release(conn: &mut Connection, path: &Path, lease: &Lease) -> Result<(), StoreError> {
    let id = lease.run_id.as_str();
    let action = || format!("releasing the lease of `{}` on run `{id}`", lease.owner);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let Some(held) = held(&tx, path, id)? else {
        return Err(not_found(path, id));
    };
    if !held.is_held_by(&lease.owner, lease.fence) {
        return Ok(());
    }
    tx.prepare_cached(RELEASE)
        .and_then(|mut stmt| stmt.execute([id]))
        .map_err(|e| classify(path, action(), e))?;
    tx.commit().map_err(|e| classify(path, action(), e))
}
