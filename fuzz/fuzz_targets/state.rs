//! Fuzz target `state`: see stepflow_fuzz::state.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepflow_fuzz::state::run(data));
