//! The entry points of the fuzz targets in `fuzz/` (feature `fuzzing`, off
//! in every normal build; `scripts/fuzz` runs them). Each feeds bytes to
//! one parser of user-controlled input exactly as the daemon calls it, with
//! the daemon's limits. A panic, a stack overflow or a timeout in any of
//! them is a bug; each one found becomes a test in the normal suite.

/// A memory and a task file (TOML front matter between `+++` lines).
pub fn record(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::store::fuzz_record(text);
    }
}

/// `profile.toml` (with the user's agent declarations) and the persona.
pub fn settings(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        crate::store::fuzz_settings(text);
    }
}

/// An inbox file: JSON, Markdown with front matter, or text.
pub fn inbox(data: &[u8]) {
    crate::builtin::ingest::fuzz(data);
}

/// The JSON body of every API request type.
pub fn request_body(data: &[u8]) {
    crate::api::fuzz::request(data);
}

/// The query string of every API route.
pub fn query_string(data: &[u8]) {
    crate::api::fuzz::query_string(data);
}

/// A search query: the limits, then tantivy's parser.
pub fn search_query(data: &[u8]) {
    crate::search::fuzz_query(data);
}

/// The credentials file: the age envelope and its TOML content.
pub fn credentials(data: &[u8]) {
    crate::creds::fuzz_credentials(data);
}
