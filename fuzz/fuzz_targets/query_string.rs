#![no_main]
//! See profiled::fuzzing::query_string.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::query_string(data));
