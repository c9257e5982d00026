//! [`Secret`]: a provider key held in memory that is wiped when dropped and
//! never shown by `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Longest secret accepted, in bytes. Provider keys are a few hundred bytes
/// at most; the bound keeps a credentials file small.
pub const MAX_SECRET_BYTES: usize = 8192;

/// A secret string. Its buffer is zeroed on drop (`zeroize`), `Debug` prints
/// a placeholder, and there is no `Display`: the only way to the text is
/// [`Secret::expose`], which makes every use visible in review.
///
/// Copies made on the way in and out (an HTTP body, a TOML or JSON buffer)
/// are outside its reach; the module wraps the buffers it owns (decrypted
/// plaintext, serialized TOML) in `Zeroizing` as well.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks that the secret can be stored and sent in an HTTP header:
    /// not empty, at most [`MAX_SECRET_BYTES`], no control characters, no
    /// surrounding white space. The reason never quotes the secret.
    pub fn check(&self) -> Result<(), String> {
        let s = self.expose();
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        if s.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes, over the {MAX_SECRET_BYTES}-byte limit",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(
                "the secret contains a control character (a line break?); send the key alone"
                    .into(),
            );
        }
        if s.trim() != s {
            return Err("the secret starts or ends with white space; send the key alone".into());
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_text() {
        let s = Secret::new("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert_eq!(s.expose(), "sk-very-secret");
    }

    #[test]
    fn check_refuses_without_quoting() {
        for bad in ["", " sk-x", "sk-x\n", "sk\u{7}x"] {
            let err = Secret::new(bad.into()).check().err().unwrap_or_default();
            assert!(!err.is_empty(), "{bad:?} accepted");
            assert!(bad.trim().is_empty() || !err.contains(bad.trim()), "{err}");
        }
        assert!(Secret::new("sk-proj-abc_123".into()).check().is_ok());
    }
}
