//! Leases: claiming, renewing and releasing the right to drive a run. Each is one conditional
//! statement on the run's row (a compare-and-swap: of two claims at once, from any number of
//! servers, exactly one changes the row); only a refused one reads the row again, to say why.

use stepflow_store::check::to_i64;
use stepflow_store::{Claim, Lease, RunStatus, StoreError};

use crate::db::{Db, get};
use crate::error::not_found;

const CLAIM: &str = "UPDATE stepflow.runs SET lease_owner = $2, lease_expires_ms = $3, \
     lease_fence = lease_fence + 1 \
     WHERE id = $1 AND status NOT IN ('completed', 'cancelled') \
     AND (lease_owner IS NULL OR lease_expires_ms <= $4 OR lease_owner = $2 \
     OR lease_owner = $5::text) \
     RETURNING lease_fence";

const RENEW: &str = "UPDATE stepflow.runs SET lease_expires_ms = $2 \
     WHERE id = $1 AND lease_owner = $3 AND lease_fence = $4 RETURNING 1";

/// A release is a change other servers should hear of: the run may be due for them now.
const RELEASE: &str = concat!(
    "WITH released AS (UPDATE stepflow.runs SET lease_owner = NULL, lease_expires_ms = NULL \
     WHERE id = $1 AND lease_owner = $2 AND lease_fence = $3 RETURNING 1) \
     SELECT (SELECT count(*) FROM released), EXISTS (SELECT 1 FROM stepflow.runs WHERE id = $1), ",
    notify!()
);

const HELD: &str = "SELECT status, lease_owner, lease_expires_ms, lease_fence \
     FROM stepflow.runs WHERE id = $1";

/// Where run `id` stands: status, owner, expiry, fence.
struct Held {
    status: RunStatus,
    owner: Option<String>,
    expires_ms: u64,
    fence: u64,
}

fn held(db: &Db, id: &str) -> Result<Option<Held>, StoreError> {
    let Some(row) = db.row(HELD, &[&id], &|| format!("looking up run `{id}`"))? else {
        return Ok(None);
    };
    let loc = db.location.as_str();
    let status: String = get(&row, 0, loc, id, "status")?;
    let expires: Option<i64> = get(&row, 2, loc, id, "lease_expires_ms")?;
    let fence: i64 = get(&row, 3, loc, id, "lease_fence")?;
    Ok(Some(Held {
        status: crate::decode::status(loc, id, &status)?,
        owner: get(&row, 1, loc, id, "lease_owner")?,
        expires_ms: u64::try_from(expires.unwrap_or(0)).unwrap_or_default(),
        fence: u64::try_from(fence).unwrap_or_default(),
    }))
}

fn lost(lease: &Lease, held: Held) -> StoreError {
    StoreError::LeaseLost {
        run: lease.run_id.clone(),
        fence: lease.fence,
        current_fence: held.fence,
        owner: held.owner,
    }
}

/// [`stepflow_store::Store::claim`].
pub(crate) fn claim(db: &Db, claim: &Claim<'_>) -> Result<Lease, StoreError> {
    let id = claim.run_id;
    let expires_ms = claim.now_ms.saturating_add(claim.ttl_ms);
    let expires = to_i64(id, "lease expiry", expires_ms)?;
    let now = to_i64(id, "now_ms", claim.now_ms)?;
    let action = || format!("claiming run `{id}` for `{}`", claim.owner);
    let row = db.row(
        CLAIM,
        &[&id, &claim.owner, &expires, &now, &claim.take_over],
        &action,
    )?;
    if let Some(row) = row {
        let fence: i64 = get(&row, 0, &db.location, id, "lease_fence")?;
        return Ok(Lease {
            run_id: id.to_string(),
            owner: claim.owner.to_string(),
            fence: u64::try_from(fence).unwrap_or_default(),
            expires_ms,
        });
    }
    let Some(held) = held(db, id)? else {
        return Err(not_found(&db.location, id));
    };
    if matches!(held.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::Finished {
            run: id.to_string(),
            status: held.status,
        });
    }
    Err(StoreError::Leased {
        run: id.to_string(),
        owner: held.owner.unwrap_or_default(),
        expires_ms: held.expires_ms,
    })
}

/// [`stepflow_store::Store::renew`].
pub(crate) fn renew(db: &Db, lease: &Lease, ttl_ms: u64, now_ms: u64) -> Result<Lease, StoreError> {
    let id = lease.run_id.as_str();
    let expires_ms = now_ms.saturating_add(ttl_ms);
    let expires = to_i64(id, "lease expiry", expires_ms)?;
    let fence = to_i64(id, "lease fence", lease.fence)?;
    let action = || format!("renewing the lease of `{}` on run `{id}`", lease.owner);
    if db
        .row(RENEW, &[&id, &expires, &lease.owner, &fence], &action)?
        .is_some()
    {
        return Ok(Lease {
            expires_ms,
            ..lease.clone()
        });
    }
    match held(db, id)? {
        None => Err(not_found(&db.location, id)),
        Some(held) => Err(lost(lease, held)),
    }
}

/// [`stepflow_store::Store::release`]: a lease already lost is not an error.
pub(crate) fn release(db: &Db, lease: &Lease) -> Result<(), StoreError> {
    let id = lease.run_id.as_str();
    let fence = to_i64(id, "lease fence", lease.fence)?;
    let action = || format!("releasing the lease of `{}` on run `{id}`", lease.owner);
    let row = db.row(RELEASE, &[&id, &lease.owner, &fence], &action)?;
    let exists = row.is_some_and(|r| r.get::<_, bool>(1));
    if !exists {
        return Err(not_found(&db.location, id));
    }
    Ok(())
}
