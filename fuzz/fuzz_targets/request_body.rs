#![no_main]
//! See profiled::fuzzing::request_body.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::request_body(data));
