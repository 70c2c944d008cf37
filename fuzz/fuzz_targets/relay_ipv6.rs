//! cargo-fuzz target `relay_ipv6`: see `teredo::fuzzing::relay_ipv6`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| teredo::fuzzing::relay_ipv6(data));
