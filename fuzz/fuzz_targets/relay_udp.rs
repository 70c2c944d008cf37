//! cargo-fuzz target `relay_udp`: see `teredo::fuzzing::relay_udp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| teredo::fuzzing::relay_udp(data));
