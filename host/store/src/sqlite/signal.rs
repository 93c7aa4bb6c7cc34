//! Each run's inbox (migration 8): sending a signal ([`crate::Store::send_signal`]: append it
//! and make the run due, one transaction; a repeated id is the signal already stored) and
//! reading the signals after a position ([`crate::Store::signals`]).

use crate::check;
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::checksum;
use super::decode::{self, SIGNAL_COLUMNS, at};
use super::encode::{invalid, to_i64};
use super::error::{classify, not_found};
use super::queries::{held, held_for_save};
use crate::{RunStatus, SignalReceipt, SignalSend, StoreError};
use stepflow_model::Signal;

/// The signal a sender's id names already, if any.
const BY_ID: &str = "SELECT seq, name, payload FROM signals WHERE run_id = ?1 AND id = ?2";

/// The next number in a run's inbox (an index lookup).
const NEXT_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) + 1 FROM signals WHERE run_id = ?1";

const INSERT: &str = "INSERT INTO signals (run_id, seq, id, name, payload, received_ms, checksum) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Makes a run due now: its next check, and the checksum that covers it.
const WAKE: &str = "UPDATE runs SET next_check_ms = ?2, checksum = ?3 WHERE id = ?1";

/// Whether a run has signals after a position: a waiting run saved without them is due now.
pub(super) const UNREAD: &str =
    "SELECT EXISTS (SELECT 1 FROM signals WHERE run_id = ?1 AND seq > ?2)";

/// [`crate::Store::send_signal`].
pub(super) fn send(
    conn: &mut Connection,
    path: &Path,
    signal: &SignalSend<'_>,
    checksums: bool,
) -> Result<SignalReceipt, StoreError> {
    let run_id = signal.run_id;
    crate::check::signal(signal)?;
    let payload = serde_json::to_string(signal.payload).map_err(|e| invalid(run_id, e))?;
    let now = to_i64(run_id, "received_ms", signal.now_ms)?;
    let action = || format!("sending signal `{}` to run `{run_id}`", signal.name);
    let fail = |e| classify(path, action(), e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    // One read of the run: its status, and the checksum its row gets when the signal makes it
    // due (the row's own checksum error, if it is damaged, stops the wake only).
    let found = if checksums {
        let replaced = [(at::NEXT_CHECK_MS, ValueRef::Integer(now))];
        held_for_save(&tx, path, run_id, &replaced)?.map(|(held, sum)| (held, Some(sum)))
    } else {
        held(&tx, path, run_id)?.map(|held| (held, None))
    };
    let Some((run, woken_sum)) = found else {
        return Err(not_found(path, run_id));
    };
    let earlier: Option<(i64, String, String)> = tx
        .prepare_cached(BY_ID)
        .and_then(|mut stmt| {
            stmt.query_row([run_id, signal.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(fail)?;
    if let Some((seq, name, stored)) = earlier {
        let same_payload = serde_json::from_str::<serde_json::Value>(&stored)
            .is_ok_and(|stored| stored == *signal.payload);
        if name != signal.name || !same_payload {
            return Err(crate::check::signal_reused(signal, seq, &name));
        }
        return Ok(SignalReceipt {
            seq: u64::try_from(seq).unwrap_or_default(),
            duplicate: true,
            status: run.status,
        });
    }
    // Refused only for a new signal: a sender repeating one already stored hears it was.
    if matches!(run.status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::NotListening {
            run: run_id.to_string(),
            status: run.status,
        });
    }
    let seq: i64 = tx
        .prepare_cached(NEXT_SEQ)
        .and_then(|mut stmt| stmt.query_row([run_id], |r| r.get(0)))
        .map_err(fail)?;
    let sum = checksums.then(|| {
        checksum::to_stored(checksum::of(&[
            checksum::text(run_id),
            ValueRef::Integer(seq),
            checksum::text(signal.id),
            checksum::text(signal.name),
            checksum::text(&payload),
            ValueRef::Integer(now),
        ]))
    });
    tx.prepare_cached(INSERT)
        .and_then(|mut stmt| {
            stmt.execute(rusqlite::params![
                run_id,
                seq,
                signal.id,
                signal.name,
                payload,
                now,
                sum
            ])
        })
        .map_err(fail)?;
    if matches!(run.status, RunStatus::Running | RunStatus::Waiting) {
        let sum = woken_sum.transpose()?.map(checksum::to_stored);
        tx.prepare_cached(WAKE)
            .and_then(|mut stmt| stmt.execute(rusqlite::params![run_id, now, sum]))
            .map_err(|e| classify(path, format!("making run `{run_id}` due"), e))?;
    }
    tx.commit().map_err(fail)?;
    Ok(SignalReceipt {
        seq: u64::try_from(seq).unwrap_or_default(),
        duplicate: false,
        status: run.status,
    })
}

/// [`crate::Store::signals`].
pub(super) fn after(
    conn: &Connection,
    path: &Path,
    run_id: &str,
    after: u64,
    limit: usize,
    verify: bool,
) -> Result<Vec<Signal>, StoreError> {
    let sql = format!(
        "SELECT {SIGNAL_COLUMNS} FROM signals WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    );
    let action = || format!("reading the signals of run `{run_id}`");
    let after = check::saturating_i64(after);
    let limit = check::saturating_i64(limit);
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt
        .query(rusqlite::params![run_id, after, limit])
        .map_err(|e| classify(path, action(), e))?;
    let mut signals = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        signals.push(decode::signal(row, path, run_id, verify)?);
    }
    Ok(signals)
}

/// Whether run `run_id` has signals numbered after `read`.
pub(super) fn unread(
    conn: &Connection,
    path: &Path,
    run_id: &str,
    read: u64,
) -> Result<bool, StoreError> {
    let read = check::saturating_i64(read);
    conn.prepare_cached(UNREAD)
        .and_then(|mut stmt| stmt.query_row(rusqlite::params![run_id, read], |r| r.get(0)))
        .map_err(|e| classify(path, format!("reading the signals of run `{run_id}`"), e))
}
