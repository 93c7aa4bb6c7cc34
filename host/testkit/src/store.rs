//! The store conformance suite: every behaviour of the [`Store`] trait, written once and run
//! against every backend, so SQLite and PostgreSQL keep the same contract.
//!
//! A backend's test file names how to get a new, empty database and lets
//! [`store_conformance!`](crate::store_conformance) write one `#[test]` per case:
//!
//! ```ignore
//! fn backend() -> impl stepflow_testkit::store::Backend { ... }
//! stepflow_testkit::store_conformance!(backend());
//! ```
//!
//! Each case uses only the trait and the public record types, never a backend's specifics
//! (files, SQL, pragmas), and never the clock: every time is given (`now_ms`), so a case is
//! deterministic. Errors are told apart by their [`StoreError`](stepflow_store::StoreError)
//! variant and fields, not by their text, since each backend names its location its own way.
//! One topic per file: runs, leases, batch, due, signals, pages, deployments.

mod batch;
mod deployments;
mod due;
pub mod fixtures;
mod leases;
mod pages;
mod runs;
mod signals;

pub use batch::*;
pub use deployments::*;
pub use due::*;
pub use leases::*;
pub use pages::*;
pub use runs::*;
pub use signals::*;

use stepflow_store::Store;

/// Opens stores on one database of the backend under test; each call is a new connection to the SAME database.
pub type Opener = Box<dyn Fn() -> Box<dyn Store>>;

/// A backend under test: each call gives an opener on a NEW, empty database.
pub trait Backend {
    /// A new, empty database of this backend, and how to open connections to it; `None` when
    /// the backend cannot be reached here, after saying `skipped: why` (under `CI` a backend
    /// panics instead: nothing may be skipped there).
    fn fresh(&self) -> Option<Opener>;
}

/// What every case returns: `Err` for a store call that failed where it should not have.
pub type CaseResult = Result<(), Box<dyn std::error::Error>>;

/// One conformance case, as [`CASES`] lists it.
pub type Case = fn(&Opener) -> CaseResult;

/// Every case of the suite with its name, in the order [`store_conformance!`](crate::store_conformance)
/// writes their tests: for a runner that is not `cargo test` (a benchmark harness, a REPL).
pub const CASES: &[(&str, Case)] = crate::__store_cases!(__store_case_list);

/// Calls `$then!` with every case name of the suite: the one list that
/// [`store_conformance!`](crate::store_conformance) and [`CASES`] are both made from, so
/// neither can miss a case the other has.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_cases {
    ($then:ident $(, $arg:expr)?) => {
        $crate::$then! { ($($arg)?)
            // runs
            a_run_and_its_history_round_trip,
            a_save_without_history_changes_only_the_run,
            history_entries_are_numbered_per_run,
            a_save_of_several_calls_appends_every_entry_in_order,
            entries_made_from_calls_are_saved_and_read_back,
            every_kind_and_outcome_is_saved_and_read_back,
            handler_calls_are_saved_and_read_back,
            values_that_do_not_fit_are_refused_before_writing,
            runs_are_listed_newest_first_and_filtered_by_status,
            a_cancel_sets_the_status_and_keeps_the_state,
            a_cancel_from_another_connection_is_not_overwritten_by_a_runner,
            set_status_needs_no_lease_and_works_from_another_thread,
            unknown_runs_are_not_found,
            a_taken_run_id_is_refused,
            a_new_connection_sees_everything_saved,
            the_start_state_is_the_state_a_run_was_created_with,
            // leases
            a_live_lease_refuses_another_owner_until_it_expires,
            take_over_needs_the_name_of_the_current_holder,
            every_claim_increments_the_fence_and_listings_show_the_holder,
            a_save_with_a_stale_fence_changes_nothing,
            a_refused_save_of_several_calls_writes_none_of_them,
            renew_extends_a_current_lease_and_fails_after_a_take_over,
            release_frees_the_run_and_a_lost_lease_releases_nothing,
            finished_runs_cannot_be_claimed_and_failed_ones_can,
            leases_of_unknown_runs_are_not_found,
            a_cancel_needs_no_lease_and_stops_the_holder_at_its_next_save,
            leases_of_other_runs_and_new_runs_past_their_first_claim_are_refused,
            two_connections_claiming_at_once_exactly_one_wins,
            a_run_created_with_its_first_claim_is_held_from_the_start,
            // batch
            each_refusal_is_reported_in_its_slot_and_the_other_steps_are_saved,
            an_empty_batch_saves_nothing,
            a_batch_mixing_saves_of_zero_one_and_three_calls_saves_each_in_order,
            // due
            claim_due_takes_due_runs_earliest_first_and_nothing_else,
            next_due_ms_is_the_earliest_timer_or_lease_expiry_still_ahead,
            two_connections_claiming_due_runs_claim_each_exactly_once,
            data_version_changes_when_another_connection_commits,
            // signals
            a_signal_is_stored_in_order_and_makes_its_run_due,
            a_repeated_id_is_stored_once_and_an_id_reused_for_another_signal_is_refused,
            signals_to_unknown_finished_or_misnamed_runs_are_refused_and_store_nothing,
            a_waiting_save_whose_state_missed_a_signal_leaves_the_run_due,
            // pages
            pages_list_every_run_once_newest_first_and_filters_hold_on_every_page,
            every_filter_of_a_listing_holds,
            counts_by_status_and_history_pages_with_their_total,
            // deployments
            a_deployment_round_trips_and_storing_it_again_is_a_no_op,
            deployments_sharing_plugin_bytes_read_back_whole,
            bytes_that_do_not_match_their_sha256_are_refused_and_nothing_is_stored,
            a_unique_prefix_finds_a_deployment_and_an_ambiguous_one_lists_the_matches,
            deployments_are_listed_newest_first_by_flow_with_their_run_counts,
            runs_refer_to_their_deployment_and_are_filtered_by_it,
            move_run_points_a_run_at_another_deployment_under_its_lease,
        }
    };
}

/// [`CASES`] from the case names: `(name, function)` pairs.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_case_list {
    (() $($case:ident),* $(,)?) => {
        &[$((::core::stringify!($case), $crate::store::$case as $crate::store::Case)),*]
    };
}

/// One `#[test]` per case of the suite, named after the case.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_case_tests {
    (($backend:expr) $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() -> $crate::store::CaseResult {
                match $crate::store::Backend::fresh(&$backend) {
                    Some(open) => $crate::store::$case(&open),
                    None => Ok(()),
                }
            }
        )*
    };
}

/// Writes one `#[test]` per case of the store conformance suite ([`store`](crate::store)),
/// each on a new database of `$backend` (an expression whose value implements
/// [`Backend`](crate::store::Backend), evaluated once per test), so a backend's test file
/// is one line.
#[macro_export]
macro_rules! store_conformance {
    ($backend:expr) => {
        $crate::__store_cases!(__store_case_tests, $backend);
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Every `pub fn NAME(open: &Opener)` in the suite's files is in [`super::CASES`], so a
    /// case cannot be written and then never run.
    #[test]
    fn every_case_written_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut written = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("src/store") {
            let path = entry.expect("an entry of src/store").path();
            let text = std::fs::read_to_string(&path).expect("a source file");
            for (at, found) in text.match_indices("\npub fn ") {
                let rest = &text[at + found.len()..];
                if let Some((name, args)) = rest.split_once('(')
                    && args.trim_start().starts_with("open: &Opener")
                {
                    written.insert(name.to_string());
                }
            }
        }
        let listed: BTreeSet<String> = super::CASES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed.len(), super::CASES.len(), "a case is listed twice");
        assert_eq!(written, listed, "written vs listed cases");
    }
}
