//! Fuzz target `store_rows`: see stepflow_fuzz::store_rows.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepflow_fuzz::store_rows::run(data));
