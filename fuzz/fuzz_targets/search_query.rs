#![no_main]
//! See profiled::fuzzing::search_query.

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiled::fuzzing::search_query(data));
