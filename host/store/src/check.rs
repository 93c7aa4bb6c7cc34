//! The checks every backend makes before it writes, so that SQLite and PostgreSQL refuse the
//! same values with the same words: times that do not fit a signed 64-bit column, a lease or a
//! history entry of another run, a deployment whose hashes do not match its bytes, a signal
//! that no wait could take.

use stepflow_model::{Clock, SystemClock};

use crate::{Deployment, HistoryEntry, RunRecord, SignalSend, StepSave, StoreError, Subject};

/// The shortest prefix of a deployment id that [`crate::Store::deployment`] looks up (8 hex
/// digits: 32 bits), so a short typo never picks one deployment of thousands.
pub const MIN_DEPLOYMENT_PREFIX: usize = 8;

/// At most this many ids are listed in [`StoreError::AmbiguousDeployment`].
pub const MAX_AMBIGUOUS_LISTED: usize = 10;

/// Databases keep signed 64-bit integers; a larger time is refused rather than wrapped.
pub fn to_i64(id: &str, what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| invalid(id, format!("{what} {value} is too large (over 2^63)")))
}

/// `value` as a database integer, saturating at 2^63 - 1: for bounds that only compare (a limit,
/// a cursor, a claim's expiry), where a larger value means the same as the largest.
pub fn saturating_i64(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A page position as both backends write it, `<created_ms>.<n>` of the last run listed
/// (`n` orders runs created in the same millisecond); anything else is [`StoreError::BadPage`].
pub fn parse_page(after: &str) -> Result<(i64, i64), StoreError> {
    let bad = || StoreError::BadPage {
        after: after.to_string(),
    };
    let (created, n) = after.split_once('.').ok_or_else(bad)?;
    Ok((
        created.parse().map_err(|_| bad())?,
        n.parse().map_err(|_| bad())?,
    ))
}

/// [`to_i64`] for a value that may be absent.
pub fn opt_i64(id: &str, what: &str, value: Option<u64>) -> Result<Option<i64>, StoreError> {
    value.map(|v| to_i64(id, what, v)).transpose()
}

/// The current time as stored in `updated_ms` of run `id`.
pub fn now(id: &str) -> Result<i64, StoreError> {
    to_i64(id, "updated_ms", SystemClock.now_ms())
}

/// The error for a value of run `id` that the store cannot save.
pub fn invalid(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Invalid {
        subject: Subject::Run,
        id: id.to_string(),
        detail: detail.to_string(),
    }
}

/// The error for a deployment `id` that the store cannot save.
pub fn invalid_deployment(id: &str, detail: impl ToString) -> StoreError {
    StoreError::Invalid {
        subject: Subject::Deployment,
        id: id.to_string(),
        detail: detail.to_string(),
    }
}

/// The first claim a new run is created with, as owner and expiry: only fence 1 is allowed.
pub fn first_lease(run: &RunRecord) -> Result<Option<(&str, i64)>, StoreError> {
    let id = run.id.as_str();
    match &run.lease {
        None => Ok(None),
        Some(lease) if lease.fence == 1 => Ok(Some((
            lease.owner.as_str(),
            to_i64(id, "lease expiry", lease.expires_ms)?,
        ))),
        Some(lease) => Err(invalid(
            id,
            format!(
                "a new run can only hold its first claim (fence 1), not fence {}",
                lease.fence
            ),
        )),
    }
}

/// Refuses a save whose lease is for another run.
pub fn step_lease(step: &StepSave<'_>) -> Result<(), StoreError> {
    match step.lease {
        Some(lease) if lease.run_id != step.run_id => Err(invalid(
            step.run_id,
            format!("the lease given is for run `{}`", lease.run_id),
        )),
        _ => Ok(()),
    }
}

/// Refuses a history entry that names another run than `run_id`.
pub fn history_run(run_id: &str, entry: &HistoryEntry) -> Result<(), StoreError> {
    if !entry.run_id.is_empty() && entry.run_id != run_id {
        return Err(invalid(
            run_id,
            format!("the history entry given is for run `{}`", entry.run_id),
        ));
    }
    Ok(())
}

/// Refuses a signal no wait could take: a bad name or id, or a null payload.
pub fn signal(signal: &SignalSend<'_>) -> Result<(), StoreError> {
    let run_id = signal.run_id;
    if let Err(problem) = stepflow_model::check_signal_name(signal.name) {
        return Err(invalid(
            run_id,
            format!("the signal name {:?} {problem}", signal.name),
        ));
    }
    if signal.id.is_empty() || signal.id.len() > 200 || signal.id.chars().any(char::is_control) {
        return Err(invalid(
            run_id,
            format!(
                "the signal id {:?} is not usable: give 1 to 200 characters, none of them control \
                 characters",
                signal.id
            ),
        ));
    }
    if signal.payload.is_null() {
        // As a merge patch, null would remove `signals.NAME` instead of setting it.
        return Err(invalid(
            run_id,
            format!(
                "the payload of signal `{}` is null, which would remove `signals.{}` from the \
                 run's data instead of setting it; send `{{}}` or a value",
                signal.name, signal.name
            ),
        ));
    }
    Ok(())
}

/// The refusal of a signal id sent again with another name or payload than signal `seq`.
pub fn signal_reused(signal: &SignalSend<'_>, seq: i64, name: &str) -> StoreError {
    invalid(
        signal.run_id,
        format!(
            "signal id `{}` was used already, for signal {seq} (`{name}`) with another payload; a \
             repeated id must repeat the same signal, so give this one its own id",
            signal.id
        ),
    )
}

/// The SHA-256 of `bytes` as 64 lower-case hex digits, the form of deployment ids and plugin
/// hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// Whether `text` is a SHA-256 as the store keeps them: 64 lower-case hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `prefix` can name a deployment: at least [`MIN_DEPLOYMENT_PREFIX`] hex digits.
pub fn is_deployment_prefix(prefix: &str) -> bool {
    prefix.len() >= MIN_DEPLOYMENT_PREFIX && prefix.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks `deployment` (hashing every plugin's bytes) before any transaction starts; gives its
/// creation time as stored.
pub fn deployment(deployment: &Deployment) -> Result<i64, StoreError> {
    let id = deployment.id.as_str();
    if !is_sha256_hex(id) {
        return Err(invalid_deployment(
            id,
            "its id must be a SHA-256 of its content: 64 lower-case hex digits",
        ));
    }
    for plugin in &deployment.plugins {
        if !is_sha256_hex(&plugin.sha256) {
            return Err(invalid_deployment(
                id,
                format!(
                    "the sha256 of plugin `{}` must be 64 lower-case hex digits, not `{}`",
                    plugin.name, plugin.sha256
                ),
            ));
        }
        let computed = sha256_hex(&plugin.bytes);
        if computed != plugin.sha256 {
            return Err(invalid_deployment(
                id,
                format!(
                    "the {} bytes of plugin `{}` have SHA-256 {computed}, not the {} given; \
                     nothing was saved",
                    plugin.bytes.len(),
                    plugin.name,
                    plugin.sha256
                ),
            ));
        }
    }
    i64::try_from(deployment.created_ms).map_err(|_| {
        invalid_deployment(
            id,
            format!(
                "created_ms {} is too large (over 2^63)",
                deployment.created_ms
            ),
        )
    })
}
