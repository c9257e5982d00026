#![no_main]
//! See profiled::fuzzing::credentials.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::credentials(data));
