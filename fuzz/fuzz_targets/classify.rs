//! Fuzz target `classify`: see stepflow_fuzz::classify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepflow_fuzz::classify::run(data));
