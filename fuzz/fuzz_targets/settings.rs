#![no_main]
//! See profiled::fuzzing::settings.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::settings(data));
