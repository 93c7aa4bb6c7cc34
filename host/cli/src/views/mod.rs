//! What each command prints, as text for people and as JSON for scripts: one view per file, so
//! the two renderings of a view can never drift apart.

pub mod deployments;
pub mod exports;
pub mod outcome;
pub mod runs;
pub mod submitted;
pub mod summary;
pub mod timeline;
pub mod upgrade;
pub mod validated;

/// Pretty JSON for people; an unprintable value (which serde_json cannot produce from a
/// `Value`) prints as nothing rather than failing the command.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// When a waiting run is next due, for people: `in 3m 20s`, `due now`; `None` for a run that is
/// not waiting on a time.
fn due(run: &stepflow_store::RunRecord, now_ms: u64) -> Option<String> {
    if run.status != stepflow_store::RunStatus::Waiting {
        return None;
    }
    let next = run.next_check_ms?;
    Some(if next <= now_ms {
        "due now".to_string()
    } else {
        format!("in {}", crate::progress::human_ms(next - now_ms))
    })
}

/// A Unix time in milliseconds as UTC date and time, `2026-11-28 10:15:00`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_times_are_civil() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(
            super::utc(951_782_400_000 + 3_723_000),
            "2000-02-29 01:02:03"
        );
    }
}
