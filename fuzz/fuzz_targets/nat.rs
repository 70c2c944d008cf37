//! cargo-fuzz target `nat`: see `client_sim::fuzzing::nat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| client_sim::fuzzing::nat(data));
