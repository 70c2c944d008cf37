//! cargo-fuzz target `server`: see `teredo::fuzzing::server_datagram`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| teredo::fuzzing::server_datagram(data));
