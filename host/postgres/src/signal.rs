//! Each run's inbox: sending a signal (append it and make the run due, in one transaction
//! under the run's row lock; a repeated id is the signal already stored) and reading the
//! signals after a position.

use stepflow_model::Signal;
use stepflow_store::check::{self, invalid, to_i64};
use stepflow_store::{RunStatus, SignalReceipt, SignalSend, StoreError};

use crate::connect::wait;
use crate::db::{self, Db, get};
use crate::error::{bad_record, classify, not_found};

const LOCK_RUN: &str = "SELECT status, signals_sent FROM stepflow.runs WHERE id = $1 FOR UPDATE";

const BY_ID: &str =
    "SELECT seq, name, payload::text FROM stepflow.signals WHERE run_id = $1 AND id = $2";

/// The signal, the run's count of signals, and (unless the run failed: it keeps the signal
/// for its resume) the run due now.
const STORE: &str = concat!(
    "WITH stored AS (INSERT INTO stepflow.signals (run_id, seq, id, name, payload, received_ms) \
     VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) RETURNING 1), \
     woken AS (UPDATE stepflow.runs SET signals_sent = $2, next_check_ms = CASE \
     WHEN status IN ('running', 'waiting') THEN $6::bigint ELSE next_check_ms END WHERE id = $1 \
     RETURNING 1) SELECT ",
    notify!()
);

/// [`stepflow_store::Store::send_signal`].
pub(crate) fn send(db: &mut Db, signal: &SignalSend<'_>) -> Result<SignalReceipt, StoreError> {
    db.ensure()?;
    let run_id = signal.run_id;
    check::signal(signal)?;
    let payload = serde_json::to_string(signal.payload).map_err(|e| invalid(run_id, e))?;
    let now = to_i64(run_id, "received_ms", signal.now_ms)?;
    let action = || format!("sending signal `{}` to run `{run_id}`", signal.name);
    let location = db.location.clone();
    let loc = location.as_str();
    let tx = {
        crate::db::count();
        wait(db.client.get_mut().transaction())
    }
    .map_err(|e| classify(loc, action(), e))?;
    let Some(run) = db::row(&tx, &db.statements, loc, LOCK_RUN, &[&run_id], &action)? else {
        return Err(not_found(loc, run_id));
    };
    let status: String = get(&run, 0, loc, run_id, "status")?;
    let status = crate::decode::status(loc, run_id, &status)?;
    let sent: i64 = get(&run, 1, loc, run_id, "signals_sent")?;
    if let Some(earlier) = db::row(
        &tx,
        &db.statements,
        loc,
        BY_ID,
        &[&run_id, &signal.id],
        &action,
    )? {
        let seq: i64 = get(&earlier, 0, loc, run_id, "signals.seq")?;
        let name: String = get(&earlier, 1, loc, run_id, "signals.name")?;
        let stored: String = get(&earlier, 2, loc, run_id, "signals.payload")?;
        let same_payload = serde_json::from_str::<serde_json::Value>(&stored)
            .is_ok_and(|stored| stored == *signal.payload);
        if name != signal.name || !same_payload {
            return Err(check::signal_reused(signal, seq, &name));
        }
        return Ok(SignalReceipt {
            seq: u64::try_from(seq).unwrap_or_default(),
            duplicate: true,
            status,
        });
    }
    // Refused only for a new signal: a sender repeating one already stored hears it was.
    if matches!(status, RunStatus::Completed | RunStatus::Cancelled) {
        return Err(StoreError::NotListening {
            run: run_id.to_string(),
            status,
        });
    }
    let seq = sent.saturating_add(1);
    db::rows(
        &tx,
        &db.statements,
        loc,
        STORE,
        &[&run_id, &seq, &signal.id, &signal.name, &payload, &now],
        &action,
    )?;
    {
        crate::db::count();
        wait(tx.commit())
    }
    .map_err(|e| classify(loc, action(), e))?;
    Ok(SignalReceipt {
        seq: u64::try_from(seq).unwrap_or_default(),
        duplicate: false,
        status,
    })
}

/// [`stepflow_store::Store::signals`].
pub(crate) fn after(
    db: &Db,
    run_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Signal>, StoreError> {
    let after = check::saturating_i64(after);
    let limit = check::saturating_i64(limit);
    let rows = db.rows(
        "SELECT seq, id, name, payload::text, received_ms FROM stepflow.signals \
         WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&run_id, &after, &limit],
        &|| format!("reading the signals of run `{run_id}`"),
    )?;
    let loc = db.location.as_str();
    rows.iter()
        .map(|row| {
            let seq: i64 = get(row, 0, loc, run_id, "signals.seq")?;
            let payload: String = get(row, 3, loc, run_id, "signals.payload")?;
            let received: i64 = get(row, 4, loc, run_id, "signals.received_ms")?;
            Ok(Signal {
                seq: u64::try_from(seq).unwrap_or_default(),
                id: get(row, 1, loc, run_id, "signals.id")?,
                name: get(row, 2, loc, run_id, "signals.name")?,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| bad_record(loc, run_id, "signals.payload", e))?,
                received_ms: u64::try_from(received).unwrap_or_default(),
            })
        })
        .collect()
}
