#![no_main]
//! See profiled::fuzzing::record.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::record(data));
