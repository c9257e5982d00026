#![no_main]
//! See profiled::fuzzing::inbox.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::inbox(data));
