//! cargo-fuzz target `client`: see `teredo::fuzzing::client_udp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| teredo::fuzzing::client_udp(data));
