//! cargo-fuzz target `nat`: see `netsim::fuzzing::nat`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netsim::fuzzing::nat(data));
