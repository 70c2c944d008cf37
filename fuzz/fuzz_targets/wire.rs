//! cargo-fuzz target `wire`: see `teredo::fuzzing::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| teredo::fuzzing::wire(data));
