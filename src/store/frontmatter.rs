//! Markdown with TOML front matter between `+++` lines (the Zola/Hugo
//! convention): the format of every record a person edits.
//!
//! ```text
//! +++
//! id = "evt-01JD3M8Q7Z8W2N5V4K1B6X9C0A"
//! created = 2026-11-22T05:41:54Z
//! +++
//! Met Bob about the migration plan.
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

const DELIM: &str = "+++";

/// The first control character in `s` (C0, DEL, C1), if any. Titles, tags
/// and sources are shown on one line to other programs and people, some in
/// a terminal, which would act on them (OSC 52 writes the clipboard, others
/// retitle the window or erase lines): they are refused wherever such a
/// field is read or written.
pub fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

fn no_control<E: serde::de::Error>(s: String) -> Result<String, E> {
    match control_char(&s) {
        None => Ok(s),
        Some(c) => Err(E::custom(format!(
            "contains the control character U+{:04X}, which a terminal would act on; \
             remove it",
            u32::from(c)
        ))),
    }
}

/// `#[serde(deserialize_with)]` for a one-line text field: refused (and
/// the record reported at this line, not served) when it holds a control
/// character.
pub fn plain<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    no_control(String::deserialize(d)?)
}

/// [`plain`] for an optional field.
pub fn plain_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(no_control)
        .transpose()
}

/// [`plain`] for every item of a list (tags).
pub fn plain_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(no_control)
        .collect()
}

/// Why a record could not be parsed, with the 1-based line in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line in the whole file.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A parsed record: typed front matter, the keys the type does not know
/// (kept so a rewrite never drops what a person added), and the body.
#[derive(Clone, Debug)]
pub struct Document<T> {
    /// The front matter as the record type sees it.
    pub front: T,
    /// Front-matter keys the record type does not know.
    pub extra: toml::Table,
    /// Everything after the closing `+++`.
    pub body: String,
}

/// Parses `text`; `known` lists the keys of `T`, the rest go to `extra`.
pub fn parse<T: DeserializeOwned>(text: &str, known: &[&str]) -> Result<Document<T>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != DELIM {
        return Err(ParseError {
            line: 1,
            reason: "the file must start with a `+++` line opening the TOML front matter".into(),
        });
    }
    let front_start = first.len();
    let mut offset = front_start;
    let mut close = None;
    for (i, line) in lines.enumerate() {
        if line.trim_end() == DELIM {
            close = Some((offset, offset + line.len(), i + 2));
            break;
        }
        offset += line.len();
    }
    let Some((front_end, body_start, _)) = close else {
        return Err(ParseError {
            line: text.lines().count().max(1),
            reason: "the front matter opened on line 1 is never closed by a `+++` line".into(),
        });
    };
    let front_text = &text[front_start..front_end];
    let line_of = |span: Option<std::ops::Range<usize>>| {
        let at = span.map_or(0, |s| s.start.min(front_text.len()));
        2 + front_text[..at].matches('\n').count()
    };
    let front: T = toml::from_str(front_text).map_err(|e| {
        let line = line_of(e.span());
        ParseError {
            line,
            reason: with_key(text, line, e.message()),
        }
    })?;
    let mut extra: toml::Table = toml::from_str(front_text).map_err(|e| ParseError {
        line: line_of(e.span()),
        reason: e.message().to_owned(),
    })?;
    extra.retain(|k, _| !known.contains(&k));
    Ok(Document {
        front,
        extra,
        body: text[body_start..].to_owned(),
    })
}

/// `reason`, prefixed with the key set on `line` of `text` when the reason
/// does not name it already (a value's own check cannot know its key).
fn with_key(text: &str, line: usize, reason: &str) -> String {
    let key = text
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !reason.contains(k));
    match key {
        Some(key) => format!("{key}: {reason}"),
        None => reason.to_owned(),
    }
}

/// Renders a record: the typed front matter first, then the extra keys,
/// then the body (ending in a newline). `T` must serialize to plain keys
/// (no tables), so the extra keys, tables included, can follow it.
pub fn render<T: Serialize>(front: &T, extra: &toml::Table, body: &str) -> Result<String, String> {
    let typed = toml::to_string(front).map_err(|e| e.to_string())?;
    let extra = toml::to_string(extra).map_err(|e| e.to_string())?;
    // A multi-line string holding a `+++` line would close the front
    // matter early when the file is read back.
    if typed
        .lines()
        .chain(extra.lines())
        .any(|l| l.trim_end() == DELIM)
    {
        return Err(
            "a value contains a line `+++`, which would end the front matter; \
                    remove that line from it"
                .to_owned(),
        );
    }
    let mut out = String::with_capacity(typed.len() + extra.len() + body.len() + 10);
    out.push_str(DELIM);
    out.push('\n');
    out.push_str(&typed);
    out.push_str(&extra);
    out.push_str(DELIM);
    out.push('\n');
    out.push_str(body);
    if !body.is_empty() && !body.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, Debug)]
    struct Front {
        id: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Deserialize, Debug)]
    struct Titled {
        #[serde(deserialize_with = "plain")]
        title: String,
        #[serde(default, deserialize_with = "plain_list")]
        tags: Vec<String>,
    }

    #[test]
    fn control_characters_are_refused_at_their_line() {
        let ok = "+++\ntitle = \"Deploys\ttoo\"\n+++\n";
        assert!(
            parse::<Titled>(ok, &["title"]).is_err(),
            "a tab is a control too"
        );
        let esc = "+++\ntags = [\"a\"]\ntitle = \"x\\u001b]52;c;aGk=\\u0007\"\n+++\nbody\n";
        let e = parse::<Titled>(esc, &["title", "tags"]).err();
        let e = e.expect("refused");
        assert_eq!(e.line, 3, "{e:?}");
        assert!(
            e.reason.starts_with("title: ") && e.reason.contains("U+001B"),
            "{e:?}"
        );
        let tag = "+++\ntitle = \"x\"\ntags = [\"ok\", \"\\u009b2K\"]\n+++\n";
        let e = parse::<Titled>(tag, &["title", "tags"]).err();
        assert_eq!(e.map(|e| e.line), Some(3));
        let fine = "+++\ntitle = \"Déploiements ✓\"\ntags = [\"ops\"]\n+++\n";
        let doc = parse::<Titled>(fine, &["title", "tags"]).map_err(|e| e.reason);
        let front = doc.map(|d| d.front);
        assert_eq!(
            front.map(|f| (f.title, f.tags)),
            Ok(("Déploiements ✓".to_owned(), vec!["ops".to_owned()]))
        );
    }

    #[test]
    fn round_trip_keeps_unknown_keys() -> Result<(), String> {
        let text = "+++\nid = \"a\"\nmood = \"calm\"\ntags = [\"x\"]\n[meta]\nk = 1\n+++\nhello\n";
        let doc = parse::<Front>(text, &["id", "tags"]).map_err(|e| e.reason)?;
        assert_eq!(doc.front.id, "a");
        assert_eq!(doc.body, "hello\n");
        assert!(doc.extra.contains_key("mood"));
        let again = render(&doc.front, &doc.extra, &doc.body)?;
        assert!(again.contains("mood = \"calm\""), "{again}");
        assert!(again.starts_with("+++\nid = \"a\"\n"), "{again}");
        let back = parse::<Front>(&again, &["id", "tags"]).map_err(|e| e.reason)?;
        assert!(back.extra.contains_key("meta"), "{again}");
        Ok(())
    }

    #[test]
    fn a_value_cannot_close_the_front_matter() {
        let front = Front {
            id: "a\n+++\nb".into(),
            tags: vec![],
        };
        assert!(render(&front, &toml::Table::new(), "x").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // The toml crate stops at its recursion limit (80) for every kind of
        // nesting; a record is at most 1 MiB, which would allow 500,000.
        let n = 100_000;
        for front in [
            format!("[{}a]\nx = 1\n", "a.".repeat(n)),
            format!("{}a = 1\n", "a.".repeat(n)),
            format!("x = {}1{}\n", "[".repeat(n), "]".repeat(n)),
            format!("x = {}1{}\n", "{a=".repeat(n), "}".repeat(n)),
        ] {
            let text = format!("+++\n{front}+++\nbody\n");
            let err = parse::<toml::Table>(&text, &[]).err();
            assert!(
                err.as_ref().is_some_and(|e| e.reason.contains("recursion")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn errors_carry_the_file_line() {
        let text = "+++\nid = \"a\"\ntags = [\"x\"\n+++\nbody\n";
        let err = parse::<Front>(text, &[]).err();
        assert!(
            matches!(err, Some(ParseError { line: 3..=4, .. })),
            "{err:?}"
        );

        let err = parse::<Front>("no front matter\n", &[]).err();
        assert_eq!(err.map(|e| e.line), Some(1));

        let err = parse::<Front>("+++\nid = \"a\"\nbody\n", &[]).err();
        assert!(err.is_some_and(|e| e.reason.contains("never closed")));

        let err = parse::<Front>("+++\nid = 5\n+++\n", &[]).err();
        assert_eq!(err.map(|e| e.line), Some(2));
    }
}
