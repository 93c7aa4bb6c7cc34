//! Due runs, through the `runs_by_due` index: claiming the earliest due runs and the time the
//! next one becomes due, each one index search however many runs wait.
//!
//! Claiming locks the due rows it takes with `FOR UPDATE SKIP LOCKED`: several servers
//! claiming at once each get different runs (a row another server is claiming is skipped, not
//! waited for), and a row that changed before it was locked is checked again against the
//! condition, so no run goes to two servers.

use stepflow_store::check;
use stepflow_store::{Lease, StoreError};

use crate::db::{Db, get};

macro_rules! due_at {
    () => {
        "GREATEST(COALESCE(next_check_ms, 0), COALESCE(lease_expires_ms, 0))"
    };
}

const CLAIM_DUE: &str = concat!(
    "WITH due AS (SELECT id, ",
    due_at!(),
    " AS due_ms FROM stepflow.runs WHERE status IN ('running', 'waiting') AND ",
    due_at!(),
    " <= $1 ORDER BY ",
    due_at!(),
    " LIMIT $2 FOR UPDATE SKIP LOCKED) \
     UPDATE stepflow.runs r SET lease_owner = $3, lease_expires_ms = $4, \
     lease_fence = r.lease_fence + 1 FROM due WHERE r.id = due.id \
     RETURNING r.id, r.lease_fence, due.due_ms"
);

const NEXT_DUE: &str = concat!(
    "SELECT MIN(",
    due_at!(),
    ") FROM stepflow.runs WHERE status IN ('running', 'waiting') AND ",
    due_at!(),
    " > $1 AND ",
    due_at!(),
    " < 9223372036854775807"
);

/// [`stepflow_store::Store::claim_due`]: one statement, which commits by itself.
pub(crate) fn claim_due(
    db: &Db,
    owner: &str,
    ttl_ms: u64,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<Lease>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = check::saturating_i64(now_ms);
    let expires = check::saturating_i64(now_ms.saturating_add(ttl_ms));
    let expires_ms = u64::try_from(expires).unwrap_or_default();
    let limit = check::saturating_i64(limit);
    let rows = db.rows(CLAIM_DUE, &[&now, &limit, &owner, &expires], &|| {
        format!("claiming due runs for `{owner}`")
    })?;
    let mut leases = Vec::with_capacity(rows.len());
    let mut order = Vec::with_capacity(rows.len());
    for row in rows {
        let run_id: String = get(&row, 0, &db.location, "?", "id")?;
        let fence: i64 = get(&row, 1, &db.location, &run_id, "lease_fence")?;
        order.push(get::<i64>(&row, 2, &db.location, &run_id, "due time")?);
        leases.push(Lease {
            run_id,
            owner: owner.to_string(),
            fence: u64::try_from(fence).unwrap_or_default(),
            expires_ms,
        });
    }
    // An UPDATE returns its rows in no particular order: earliest due first, as claimed.
    let mut paired: Vec<(i64, Lease)> = order.into_iter().zip(leases).collect();
    paired.sort_by_key(|(due, _)| *due);
    Ok(paired.into_iter().map(|(_, lease)| lease).collect())
}

/// [`stepflow_store::Store::next_due_ms`].
pub(crate) fn next_due_ms(db: &Db, now_ms: u64) -> Result<Option<u64>, StoreError> {
    let row = db.row(NEXT_DUE, &[&check::saturating_i64(now_ms)], &|| {
        "looking for the next due run".to_string()
    })?;
    let next: Option<i64> = match row {
        Some(row) => get(&row, 0, &db.location, "?", "next due time")?,
        None => None,
    };
    Ok(next.and_then(|ms| u64::try_from(ms).ok()))
}
