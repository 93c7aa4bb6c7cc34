//! Fuzz target `flowfile`: see stepflow_fuzz::flowfile.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stepflow_fuzz::flowfile::run(data));
