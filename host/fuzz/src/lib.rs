//! The bodies of stepflow's fuzz targets, as plain functions.
//!
//! `fuzz/` (a cargo-fuzz project outside the workspace) calls each of them from a
//! `fuzz_target!`, and `tests/replay.rs` runs every committed corpus and crash input through the
//! same functions in an ordinary `cargo test`, so CI checks them on stable Rust without a fuzzing
//! build. Each function takes the raw fuzzer input and must never panic; an `Err` from the code
//! under test is a fine outcome.
//!
//! - [`flowfile::run`]: flow file text through parsing, the checks, `to_steps` and the build.
//! - [`state::run`]: a saved state (JSON) loaded into small flows, checked and applied.
//! - [`store_rows::run`]: arbitrary values in the `runs` and `history` rows of a real database,
//!   read back through the store (feature `store`).
//! - [`classify::run`]: generated or mutated components loaded as plugins and their exports
//!   classified (feature `plugin`).

pub mod flowfile;
pub mod state;

#[cfg(feature = "plugin")]
pub mod classify;
#[cfg(feature = "store")]
pub mod store_rows;

/// Runs `future` to completion on a current-thread runtime kept per thread.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread tokio runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}
