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

use serde::Serialize;
use serde::de::DeserializeOwned;

const DELIM: &str = "+++";

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
    let front: T = toml::from_str(front_text).map_err(|e| ParseError {
        line: line_of(e.span()),
        reason: e.message().to_owned(),
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
    use serde::Deserialize;

    #[derive(Deserialize, Serialize, Debug)]
    struct Front {
        id: String,
        #[serde(default)]
        tags: Vec<String>,
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
