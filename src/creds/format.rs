//! The credentials file: its plaintext (TOML) and its age envelope.
//!
//! Inside the age envelope:
//!
//! ```toml
//! version = 1
//! recipients = ["age1…", "ssh-ed25519 AAAA…"]   # the owner's own keys
//!
//! [providers.openai]
//! secret = "sk-…"
//! label = "work"
//! created = 2026-11-22T05:41:54Z
//! last_used = 2026-11-22T06:00:00Z
//! expires = 2027-01-01T00:00:00Z
//! ```
//!
//! The envelope is encrypted to the owner's daemon identity (X25519) and to
//! every recipient listed, so the owner can open it with the age CLI.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::value::Datetime;
use zeroize::Zeroizing;

use super::error::{Error, Result};
use super::keys::Identities;
use super::secret::Secret;

/// The version written; a file with a higher one is not rewritten.
pub(crate) const VERSION: u32 = 1;

/// At most this many recipients of the owner's own.
pub const MAX_RECIPIENTS: usize = 16;

/// The decrypted content of a credentials file.
#[derive(Serialize, Deserialize)]
pub(crate) struct Plain {
    /// The format version, [`VERSION`].
    pub version: u32,
    /// The owner's own recipients (canonical public keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Provider name to key.
    #[serde(default)]
    pub providers: BTreeMap<String, Entry>,
}

impl Default for Plain {
    fn default() -> Plain {
        Plain {
            version: VERSION,
            recipients: Vec::new(),
            providers: BTreeMap::new(),
        }
    }
}

/// One provider's key and its metadata.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The key itself.
    pub secret: Secret,
    /// A person's note: which account, which project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When it was set.
    pub created: Datetime,
    /// When an agent last used it (to the minute, see `resolve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Datetime>,
    /// From when it is no longer used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Datetime>,
}

impl Entry {
    /// Whether the key has expired at `now`. An expiry that cannot be read
    /// counts as expired: a key is never used past a date its owner set.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires
            .as_ref()
            .is_some_and(|e| to_time(e).is_none_or(|t| t <= now))
    }

    /// The metadata shown in listings: everything but the secret.
    pub fn info(&self, provider: &str, now: OffsetDateTime) -> EntryInfo {
        EntryInfo {
            provider: provider.to_owned(),
            label: self.label.clone(),
            created: self.created.to_string(),
            last_used: self.last_used.as_ref().map(ToString::to_string),
            expires: self.expires.as_ref().map(ToString::to_string),
            expired: self.expired(now),
        }
    }
}

/// A key's metadata as the API lists it; never the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryInfo {
    /// The provider name.
    pub provider: String,
    /// The owner's label.
    pub label: Option<String>,
    /// When it was set, RFC 3339 UTC.
    pub created: String,
    /// When an agent last used it (accurate to a minute).
    pub last_used: Option<String>,
    /// When it expires.
    pub expires: Option<String>,
    /// Whether it has expired (and is no longer used).
    pub expired: bool,
}

/// Names that are API routes under `/v1/credentials/`, not providers.
pub const RESERVED_PROVIDERS: [&str; 2] = ["recipients", "reset"];

/// Checks a provider name: 1 to 64 of `A–Z a–z 0–9 . _ -`, starting with a
/// letter or digit, and not one of [`RESERVED_PROVIDERS`].
pub fn check_provider(name: &str) -> Result<()> {
    let why = if name.is_empty() || name.len() > 64 {
        Some("use 1 to 64 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Some("use only letters, digits, '.', '_' and '-'")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("start it with a letter or a digit")
    } else if RESERVED_PROVIDERS.contains(&name) {
        Some("it is reserved by the API; pick another name")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::InvalidProvider {
            name: name.chars().take(80).collect(),
            why,
        }),
    }
}

/// A TOML datetime as a point in time: an offset datetime, or a bare date
/// (midnight UTC). `None` for a local time without a date or offset.
pub(crate) fn to_time(dt: &Datetime) -> Option<OffsetDateTime> {
    let text = dt.to_string();
    if let Ok(t) = OffsetDateTime::parse(&text, &Rfc3339) {
        return Some(t);
    }
    let date = dt.date.as_ref()?;
    if dt.time.is_some() {
        return None;
    }
    let month = time::Month::try_from(date.month).ok()?;
    let date = time::Date::from_calendar_date(i32::from(date.year), month, date.day).ok()?;
    Some(date.midnight().assume_utc())
}

/// A recipient of the owner's own: an age X25519 key or an SSH key.
pub(crate) enum UserRecipient {
    /// `age1…`
    Age(age::x25519::Recipient),
    /// `ssh-ed25519 …` or `ssh-rsa …`
    Ssh(age::ssh::Recipient),
}

impl UserRecipient {
    /// Parses a public key; the `Ok` string is its canonical form (an SSH
    /// key without its comment).
    pub fn parse(s: &str) -> std::result::Result<(String, UserRecipient), String> {
        let s = s.trim();
        if UserRecipient::looks_secret(s) {
            return Err(
                "that is a secret key, not a public one: keep it to yourself and give \
                 its public key (age-keygen -y FILE, or the .pub of an SSH key)"
                    .to_owned(),
            );
        }
        if s.starts_with("age1") {
            let r = age::x25519::Recipient::from_str(s).map_err(|_| {
                "not a valid age X25519 public key (age1…; age-keygen -y IDENTITY prints it)"
                    .to_owned()
            })?;
            return Ok((r.to_string(), UserRecipient::Age(r)));
        }
        if s.starts_with("ssh-") {
            return match age::ssh::Recipient::from_str(s) {
                Ok(r) => Ok((r.to_string(), UserRecipient::Ssh(r))),
                Err(age::ssh::ParseRecipientKeyError::Unsupported(kind)) => Err(format!(
                    "{kind} keys cannot be age recipients; use an ssh-ed25519 (or ssh-rsa) key or an age key"
                )),
                Err(_) => Err("not a valid ssh-ed25519 or ssh-rsa public key".to_owned()),
            };
        }
        Err(
            "not a public key: give an age key (age1…) or an SSH public key (ssh-ed25519 AAAA…)"
                .to_owned(),
        )
    }

    /// Whether `s` looks like a private key pasted where a public one
    /// belongs (an age identity or an OpenSSH private key).
    pub fn looks_secret(s: &str) -> bool {
        let s = s.trim_start();
        s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || s.starts_with("-----BEGIN")
    }

    fn as_dyn(&self) -> &dyn age::Recipient {
        match self {
            UserRecipient::Age(r) => r,
            UserRecipient::Ssh(r) => r,
        }
    }
}

/// Why a credentials file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// None of the identities opens it: encrypted for someone else, or
    /// its identity was lost or replaced.
    NoMatchingKey,
    /// Not an age file, or cut short, or altered.
    Damaged(String),
    /// It decrypts, but the content is not a credentials file we read.
    Unreadable(String),
}

/// Serializes `plain` and encrypts it to `daemon` and the owner's own
/// recipients in `plain.recipients`. `file` names the file in errors.
pub(crate) fn seal(
    plain: &Plain,
    daemon: &[age::x25519::Recipient],
    file: &str,
) -> Result<Vec<u8>> {
    let encrypt_error = |reason: String| Error::Encrypt {
        file: file.to_owned(),
        reason,
    };
    let own = plain
        .recipients
        .iter()
        .map(|r| UserRecipient::parse(r).map(|(_, r)| r))
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(encrypt_error)?;
    let text = Zeroizing::new(toml::to_string(plain).map_err(|e| encrypt_error(e.to_string()))?);
    let recipients = daemon
        .iter()
        .map(|r| r as &dyn age::Recipient)
        .chain(own.iter().map(UserRecipient::as_dyn));
    let encryptor =
        age::Encryptor::with_recipients(recipients).map_err(|e| encrypt_error(e.to_string()))?;
    let mut out = Vec::with_capacity(text.len() + 512);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| encrypt_error(e.to_string()))?;
    writer
        .write_all(text.as_bytes())
        .and_then(|()| writer.finish().map(drop))
        .map_err(|e| encrypt_error(e.to_string()))?;
    Ok(out)
}

/// Decrypts `bytes` with any of `ids` and parses the content.
pub(crate) fn open(bytes: &[u8], ids: &Identities) -> std::result::Result<Plain, OpenError> {
    use age::DecryptError as D;
    let damaged = |e: D| match e {
        D::NoMatchingKeys => OpenError::NoMatchingKey,
        D::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            OpenError::Damaged("it is cut short (truncated)".into())
        }
        D::InvalidHeader | D::UnknownFormat => {
            OpenError::Damaged("it is not an age file, or its header was altered".into())
        }
        D::InvalidMac | D::DecryptionFailed => OpenError::Damaged(
            "its content fails age's integrity check (altered or truncated)".into(),
        ),
        e => OpenError::Damaged(format!("age cannot decrypt it ({e})")),
    };
    let decryptor = age::Decryptor::new_buffered(bytes).map_err(damaged)?;
    if decryptor.is_scrypt() {
        return Err(OpenError::NoMatchingKey);
    }
    let mut reader = decryptor
        .decrypt(ids.all().map(|i| i as &dyn age::Identity))
        .map_err(damaged)?;
    let mut text = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader.read_to_end(&mut text).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            OpenError::Damaged("it is cut short (truncated)".into())
        } else {
            OpenError::Damaged(
                "its content fails age's integrity check (altered or truncated)".into(),
            )
        }
    })?;
    parse(&text)
}

/// Parses decrypted content. Errors name a line, never quote the text: it
/// holds secrets.
fn parse(text: &[u8]) -> std::result::Result<Plain, OpenError> {
    let text = std::str::from_utf8(text)
        .map_err(|_| OpenError::Unreadable("its content is not UTF-8 text".into()))?;
    let plain: Plain = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start.min(text.len()));
        let line = text[..at].matches('\n').count() + 1;
        OpenError::Unreadable(format!(
            "its content is not a credentials file profiled reads (line {line})"
        ))
    })?;
    if plain.version > VERSION {
        return Err(OpenError::Unreadable(format!(
            "it was written by a newer profiled (format version {}, this one reads {VERSION})",
            plain.version
        )));
    }
    Ok(plain)
}

/// Fuzz target `credentials`: `data` as a credentials file's decrypted
/// content, as a whole age file (its header and stanzas are parsed before
/// the identity is found not to match: the content is reached through
/// `parse` directly), and as a recipient a user gives.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz(data: &[u8]) {
    static IDENTITIES: std::sync::OnceLock<Identities> = std::sync::OnceLock::new();
    let ids = IDENTITIES.get_or_init(|| Identities {
        current: age::x25519::Identity::generate(),
        next: None,
    });
    let _ = parse(data);
    let _ = open(data, ids);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = UserRecipient::parse(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::x25519::Identity;

    fn ids(current: Identity) -> Identities {
        Identities {
            current,
            next: None,
        }
    }

    fn sample() -> Plain {
        let mut p = Plain::default();
        p.providers.insert(
            "openai".into(),
            Entry {
                secret: Secret::new("sk-test-123".into()),
                label: Some("work".into()),
                created: crate::timefmt::now_toml(),
                last_used: None,
                expires: None,
            },
        );
        p
    }

    #[test]
    fn round_trip_and_no_plaintext_on_disk() -> std::result::Result<(), String> {
        let id = Identity::generate();
        let sealed =
            seal(&sample(), &[id.to_public()], "credentials.age").map_err(|e| e.to_string())?;
        assert!(!sealed.windows(11).any(|w| w == b"sk-test-123"));
        let back = open(&sealed, &ids(id)).map_err(|e| format!("{e:?}"))?;
        let e = back.providers.get("openai").ok_or("no openai")?;
        assert_eq!(e.secret.expose(), "sk-test-123");
        assert_eq!(e.label.as_deref(), Some("work"));
        Ok(())
    }

    #[test]
    fn foreign_truncated_and_tampered_files_are_told_apart() -> std::result::Result<(), String> {
        let id = Identity::generate();
        let sealed = seal(&sample(), &[id.to_public()], "c").map_err(|e| e.to_string())?;
        let other = ids(Identity::generate());
        assert!(matches!(
            open(&sealed, &other),
            Err(OpenError::NoMatchingKey)
        ));
        let mine = ids(id);
        let cut = &sealed[..sealed.len() - 20];
        assert!(matches!(open(cut, &mine), Err(OpenError::Damaged(_))));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x40;
        assert!(matches!(open(&flipped, &mine), Err(OpenError::Damaged(_))));
        assert!(matches!(open(b"hello", &mine), Err(OpenError::Damaged(_))));
        Ok(())
    }

    #[test]
    fn parse_errors_never_quote_the_content() {
        let text = b"version = 1\n[providers.openai]\nsecret = 42\nnote = \"sk-leak\"\n";
        match parse(text) {
            Err(OpenError::Unreadable(msg)) => assert!(!msg.contains("sk-leak"), "{msg}"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn provider_names() {
        for ok in ["openai", "anthropic", "open-router", "ollama.local", "x_1"] {
            assert!(check_provider(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "recipients",
            "reset",
            &"x".repeat(65),
        ] {
            assert!(check_provider(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry_and_recipients() {
        let now = OffsetDateTime::now_utc();
        let mut e = sample().providers.remove("openai").expect("sample entry");
        assert!(!e.expired(now));
        e.expires = Some(crate::timefmt::toml_datetime(
            now - time::Duration::seconds(1),
        ));
        assert!(e.expired(now));
        e.expires = Some(crate::timefmt::toml_datetime(
            now + time::Duration::hours(1),
        ));
        assert!(!e.expired(now));
        let info = e.info("openai", now);
        assert_eq!(info.provider, "openai");

        let pk = Identity::generate().to_public().to_string();
        assert!(UserRecipient::parse(&pk).is_ok());
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        let (canon, _) = UserRecipient::parse(ssh).expect("ssh key parses");
        assert!(!canon.contains("alice@rust"));
        let err = UserRecipient::parse("AGE-SECRET-KEY-1XYZ")
            .err()
            .unwrap_or_default();
        assert!(err.contains("secret key") && !err.contains("1XYZ"), "{err}");
        assert!(UserRecipient::parse("age1nope").is_err());
    }
}
