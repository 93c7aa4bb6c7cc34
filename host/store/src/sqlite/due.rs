//! Due runs, through the `runs_by_due` index (migration 6): claiming the earliest due runs
//! ([`crate::Store::claim_due`]) and the time the next one becomes due
//! ([`crate::Store::next_due_ms`]), each one index search however many runs wait.
//!
//! A running or waiting run is due at [`due_at!`]: the later of its next check and its
//! lease's expiry, either missing counting as "at once" (0). So a run nobody holds is due at
//! its next check (or at once), and a run whose driver died (its lease no longer renewed) at
//! its lease's expiry, or at its next check if that is later. Completed, failed and cancelled
//! runs are not in the index at all.

use crate::check;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::error::classify;
use crate::{Lease, StoreError};

/// When a run is due (Unix milliseconds): the expression of the `runs_by_due` index, which a
/// query must repeat word for word for SQLite to use the index.
macro_rules! due_at {
    () => {
        "MAX(COALESCE(next_check_ms, 0), COALESCE(lease_expires_ms, 0))"
    };
}

/// The runs that can be due: the WHERE clause of the partial index `runs_by_due`, which a
/// query must repeat word for word for SQLite to use the index.
macro_rules! unfinished {
    () => {
        "status IN ('running', 'waiting')"
    };
}

/// The earliest due runs, with their fences. A fence that cannot be incremented (only a hand
/// edit gets one there) is left out rather than refused, so it cannot hold up the others.
const DUE: &str = concat!(
    "SELECT id, lease_fence FROM runs WHERE ",
    unfinished!(),
    " AND ",
    due_at!(),
    " <= ?1 AND lease_fence BETWEEN 0 AND 9223372036854775806 ORDER BY ",
    due_at!(),
    " LIMIT ?2"
);

/// When the earliest run that is not due yet becomes due; a run that waits for a signal alone
/// ([`crate::NEVER_DUE_MS`]) never becomes due by time.
const NEXT_DUE: &str = concat!(
    "SELECT MIN(",
    due_at!(),
    ") FROM runs WHERE ",
    unfinished!(),
    " AND ",
    due_at!(),
    " > ?1 AND ",
    due_at!(),
    " < 9223372036854775807"
);

/// A claim: new owner, expiry and fence (the old one plus one), as `lease.rs` claims.
const CLAIM: &str =
    "UPDATE runs SET lease_owner = ?2, lease_expires_ms = ?3, lease_fence = ?4 WHERE id = ?1";

/// [`crate::Store::claim_due`]: one IMMEDIATE transaction that picks the due runs under the
/// write lock and claims each, so two callers never get the same run. A lease's expiry past
/// 2^63 ms saturates there.
pub(super) fn claim_due(
    conn: &mut Connection,
    path: &Path,
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
    let action = || format!("claiming due runs for `{owner}`");
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| classify(path, action(), e))?;
    let due: Vec<(String, i64)> = tx
        .prepare_cached(DUE)
        .and_then(|mut stmt| {
            let limit = check::saturating_i64(limit);
            stmt.query_map(rusqlite::params![now, limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })
        .map_err(|e| classify(path, action(), e))?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let mut leases = Vec::with_capacity(due.len());
    {
        let mut claim = tx
            .prepare_cached(CLAIM)
            .map_err(|e| classify(path, action(), e))?;
        for (run_id, fence) in due {
            // The query keeps fences in 0..i64::MAX, so neither step can fail.
            let fence = fence.saturating_add(1);
            claim
                .execute(rusqlite::params![run_id, owner, expires, fence])
                .map_err(|e| classify(path, action(), e))?;
            leases.push(Lease {
                run_id,
                owner: owner.to_string(),
                fence: u64::try_from(fence).unwrap_or_default(),
                expires_ms,
            });
        }
    }
    tx.commit().map_err(|e| classify(path, action(), e))?;
    Ok(leases)
}

/// [`crate::Store::next_due_ms`]: the smallest due time after `now_ms`, one index search.
pub(super) fn next_due_ms(
    conn: &Connection,
    path: &Path,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let next: Option<i64> = conn
        .prepare_cached(NEXT_DUE)
        .and_then(|mut stmt| stmt.query_row([check::saturating_i64(now_ms)], |r| r.get(0)))
        .map_err(|e| classify(path, "looking for the next due run", e))?;
    // Due times after `now_ms` are positive; a negative one (a hand edit) is not a time.
    Ok(next.and_then(|ms| u64::try_from(ms).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queries_repeat_the_index_word_for_word() {
        let index = super::super::schema::due_index_sql();
        assert!(index.contains(concat!("(", due_at!(), ")")), "{index}");
        assert!(
            index.contains(concat!("WHERE ", unfinished!(), ";")),
            "{index}"
        );
    }

    /// The plan of `sql` (EXPLAIN QUERY PLAN), one detail per line.
    fn plan(conn: &Connection, sql: &str) -> rusqlite::Result<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let params = [1_000_000i64, 10];
        let count = stmt.parameter_count();
        let details = stmt.query_map(rusqlite::params_from_iter(&params[..count]), |r| {
            r.get::<_, String>(3)
        })?;
        Ok(details.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
    }

    #[test]
    fn with_ten_thousand_waiting_runs_the_due_queries_search_the_index()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.db");
        drop(crate::SqliteStore::open(&path)?);
        let mut conn = Connection::open(&path)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO runs (id, flow, flow_file, definition, status, state, \
                 next_check_ms, created_ms, updated_ms) \
                 VALUES (?1, 'f.v1', '/f.yaml', 'd', ?2, '{}', ?3, 1, 1)",
            )?;
            for i in 0..12_000i64 {
                // 10,000 waiting on timers, the rest finished (not in the index).
                let status = if i < 10_000 { "waiting" } else { "completed" };
                insert.execute(rusqlite::params![format!("r{i}"), status, 1_000 + i * 60])?;
            }
        }
        tx.commit()?;
        conn.execute_batch("ANALYZE")?;
        for (name, sql) in [("claim_due", DUE), ("next_due_ms", NEXT_DUE)] {
            let plan = plan(&conn, sql)?;
            assert!(
                plan.contains("USING INDEX runs_by_due")
                    || plan.contains("USING COVERING INDEX runs_by_due"),
                "{name}: {plan}"
            );
            assert!(
                plan.contains("SEARCH"),
                "{name} searches, not scans: {plan}"
            );
            assert!(!plan.contains("SCAN runs"), "{name}: {plan}");
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{name} needs no sort: {plan}"
            );
        }
        // And through the store: the earliest timers, in order.
        use crate::Store;
        let mut store = crate::SqliteStore::open(&path)?;
        assert_eq!(store.next_due_ms(0)?, Some(1_000));
        assert_eq!(store.next_due_ms(1_000)?, Some(1_060));
        let claimed = store.claim_due("host-a", 30_000, 1_000 + 4 * 60, 100)?;
        let ids: Vec<&str> = claimed.iter().map(|l| l.run_id.as_str()).collect();
        assert_eq!(ids, ["r0", "r1", "r2", "r3", "r4"]);
        Ok(())
    }
}
