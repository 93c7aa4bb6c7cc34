//! Who drives a run: a lease in the store (owner, expiry, fencing counter) that every save
//! checks, so two drivers never both save steps of one run, whatever path led them to the
//! database. An owner is `host:pid:start`; a claimant on the same host can tell that an owner
//! process died and take its run over at once instead of waiting for the lease to expire.

use std::time::Duration;

use stepflow_store::{Claim, Lease, Store, StoreError};

use crate::error::EngineError;

/// The shortest lease a driver takes; longer when a plugin may run longer (see [`lease_ttl`]).
pub const MIN_LEASE: Duration = Duration::from_secs(60);

/// This process as a lease owner: `host:pid:start`, where `start` is the process's start time
/// in clock ticks since boot, so a reused pid is not mistaken for a live owner.
pub fn this_owner() -> String {
    let pid = std::process::id();
    format!("{}:{pid}:{}", host_name(), start_time(pid).unwrap_or(0))
}

/// A lease long enough that a driver renewing it between steps never loses it while a step runs:
/// twice the longest time a call may take, and at least [`MIN_LEASE`].
pub fn lease_ttl(longest_call: Duration) -> Duration {
    (longest_call * 2 + Duration::from_secs(10)).max(MIN_LEASE)
}

/// Claims `run_id` for `owner`. A live holder is refused ([`EngineError::Busy`] naming it); a
/// holder on this host whose process is gone is taken over at once.
pub fn claim(
    store: &mut dyn Store,
    run_id: &str,
    owner: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Lease, EngineError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let mut claim = Claim {
        run_id,
        owner,
        ttl_ms,
        now_ms,
        take_over: None,
    };
    match store.claim(&claim) {
        Ok(lease) => Ok(lease),
        Err(StoreError::Leased { owner: holder, .. }) if owner_is_dead(&holder) => {
            claim.take_over = Some(&holder);
            store.claim(&claim).map_err(|e| busy(run_id, e))
        }
        Err(e) => Err(busy(run_id, e)),
    }
}

/// A store's "someone holds it" as the engine's [`EngineError::Busy`]; other errors as they are.
fn busy(run_id: &str, e: StoreError) -> EngineError {
    match e {
        StoreError::Leased {
            owner, expires_ms, ..
        } => EngineError::Busy {
            run: run_id.to_string(),
            owner,
            expires_ms,
        },
        other => other.into(),
    }
}

/// True when `owner` names a process on this host that no longer runs (or whose pid now
/// belongs to another process). An owner on another host is never declared dead here: only its
/// lease's expiry frees the run.
pub fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != host_name() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    match start_time(pid) {
        None => true,
        Some(now) => start != 0 && now != start,
    }
}

/// This machine's name, as the kernel knows it.
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// When process `pid` started (field 22 of `/proc/PID/stat`); `None` if there is no such
/// process, or it is a zombie (it has exited and only waits to be reaped).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let me = this_owner();
        assert!(!owner_is_dead(&me), "{me}");
        // pid_max is at most 2^22 on Linux: this pid cannot exist.
        let gone = format!("{}:{}:1", host_name(), 4_194_305);
        assert!(owner_is_dead(&gone));
        // The same pid with another start time is another process.
        let reused = format!("{}:{}:1", host_name(), std::process::id());
        assert!(owner_is_dead(&reused));
    }

    #[test]
    fn an_owner_elsewhere_or_unreadable_is_never_declared_dead() {
        assert!(!owner_is_dead("another-host:1:1"));
        assert!(!owner_is_dead("garbage"));
        assert!(!owner_is_dead(""));
    }

    #[test]
    fn leases_outlast_the_longest_call() {
        assert_eq!(lease_ttl(Duration::from_secs(1)), MIN_LEASE);
        assert_eq!(
            lease_ttl(Duration::from_secs(300)),
            Duration::from_secs(610)
        );
    }
}
