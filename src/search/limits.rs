//! The limits a search query must keep before tantivy's query parser sees
//! it.
//!
//! tantivy's query grammar is a recursive-descent parser (nom) that
//! backtracks: every `(` is a level of recursion, so about 2,000 of them
//! overflow a 2 MiB thread stack and abort the whole daemon, and at every
//! level it tries a boolean expression before a single term, so balanced
//! nesting costs about 2^depth parses (depth 20: 0.8 s of CPU). The text is
//! therefore scanned here once, left to right and without recursion, and
//! refused when it is too long, nests too deep, has too many words, or uses
//! the range and set syntax (whose cost tantivy pays over the whole term
//! dictionary, outside any time check) or a `*` anywhere but right after a
//! phrase (match anything; after an operator and white space it made
//! tantivy's parser panic, found by the fuzz target). A [`QueryText`] is
//! the only way to reach [`super::query::search`], so no text skips the
//! check.
//!
//! The scanner follows the grammar's quoting: a `"` or `'` opens a phrase
//! that the same unescaped character closes, and `\` escapes the next
//! character everywhere. Where tantivy would read a quote differently (a
//! quote in the middle of a word), its parse fails at that quote, before it
//! reaches anything after it, so the two never disagree about the part
//! tantivy parses. The fuzz target `search_query` checks this: a text
//! accepted here parses into a tree no deeper than the limits allow, with
//! only plain term and phrase leaves.

use std::fmt;

/// The longest query, in bytes (a sentence or two; pasted documents are not
/// queries).
pub const MAX_BYTES: usize = 1024;
/// The deepest nesting of parentheses (a person nests two or three). The
/// parser's cost doubles with each level: at 4, a query of [`MAX_BYTES`]
/// takes it about 16 passes, a few milliseconds (depth 8 was 256 passes,
/// about 1 s in a debug build).
pub const MAX_DEPTH: usize = 4;
/// The most words (runs of letters and digits, the tokens the index is
/// searched for; operators and field names count too). Each becomes a term
/// query over three fields.
pub const MAX_WORDS: usize = 32;

/// Why a query is refused before it is parsed. Every message says which
/// limit and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Over [`MAX_BYTES`].
    #[error(
        "the query is {bytes} bytes long and the most is {max}; search for fewer or shorter words"
    )]
    TooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Parentheses nested deeper than [`MAX_DEPTH`].
    #[error(
        "the query nests parentheses {max_plus} deep at character {at} and the most is {max}; \
         remove parentheses (words without them must all match)",
        max_plus = max + 1
    )]
    TooDeep {
        /// 1-based character position of the `(` that went over.
        at: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_WORDS`] words.
    #[error(
        "the query has {words} words and the most is {max} (operators and field names count); \
         search for fewer words"
    )]
    TooManyWords {
        /// How many it has.
        words: usize,
        /// The limit.
        max: usize,
    },
    /// A `*` anywhere but right after a phrase: where tantivy reads it as
    /// a term it means "any document" or "any value" (and its parser
    /// panics on `- *`: an "exists" query without a field).
    #[error(
        "`*` at character {at} is not right after a quoted phrase, where it would stand for \
         \"anything\", which search does not support; put text with a `*` in quotes, and write \
         \"migra\"* for words that start with migra"
    )]
    Wildcard {
        /// Its 1-based character position.
        at: usize,
    },
    /// Range or set syntax, which profiled does not search with.
    #[error(
        "{found:?} at character {at} starts a range or a set, which search does not support; \
         put the text in \"quotes\" to search for it"
    )]
    Unsupported {
        /// The character.
        found: char,
        /// Its 1-based character position.
        at: usize,
    },
}

/// A query that keeps every limit above, ready for tantivy's parser.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryText(String);

impl QueryText {
    /// Checks `text` (trimmed) against the limits.
    pub fn new(text: &str) -> Result<QueryText, Refusal> {
        let text = text.trim();
        check(text)?;
        Ok(QueryText(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for QueryText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// One pass over `text`; the first limit it breaks.
fn check(text: &str) -> Result<(), Refusal> {
    if text.len() > MAX_BYTES {
        return Err(Refusal::TooLong {
            bytes: text.len(),
            max: MAX_BYTES,
        });
    }
    let mut depth = 0usize;
    let mut words = 0usize;
    let mut in_word = false;
    let mut escaped = false;
    let mut quote: Option<char> = None;
    // Whether the previous character closed a phrase: the one place a `*`
    // means something searchable (a prefix).
    let mut after_phrase = false;
    for (i, c) in text.chars().enumerate() {
        let at = i + 1;
        if c.is_alphanumeric() {
            words += usize::from(!in_word);
            in_word = true;
        } else {
            in_word = false;
        }
        let prefix = std::mem::take(&mut after_phrase);
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        if let Some(q) = quote {
            if c == q {
                quote = None;
                after_phrase = true;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Refusal::TooDeep { at, max: MAX_DEPTH });
                }
            }
            ')' => depth = depth.saturating_sub(1),
            '[' | ']' | '{' | '}' => return Err(Refusal::Unsupported { found: c, at }),
            // tantivy starts a new term wherever one ends, white space or
            // not (`a^1<5` is a term and a range), so these are refused
            // wherever they stand outside quotes.
            '<' | '>' => return Err(Refusal::Unsupported { found: c, at }),
            '*' if !prefix => return Err(Refusal::Wildcard { at }),
            _ => {}
        }
    }
    if words > MAX_WORDS {
        return Err(Refusal::TooManyWords {
            words,
            max: MAX_WORDS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_queries_pass() {
        for q in [
            "migration",
            "met bob about the migration plan",
            "\"dual write\" AND (bob OR alice) -draft +plan",
            "tags:meeting title:(plan OR roadmap)",
            "it's \"f(x)\" \"a->b\" c++ e-mail",
            "\"phrase\"~2 \"prefix wor\"* word^2",
            "((((deep))))",
        ] {
            assert_eq!(check(q), Ok(()), "{q}");
        }
    }

    #[test]
    fn each_limit_is_named() {
        let long = "a".repeat(MAX_BYTES + 1);
        assert!(matches!(check(&long), Err(Refusal::TooLong { .. })));
        let parens = "(".repeat(1000);
        assert_eq!(
            check(&parens),
            Err(Refusal::TooDeep {
                at: MAX_DEPTH + 1,
                max: MAX_DEPTH
            })
        );
        let deep = format!("{}x{}", "(".repeat(20), ")".repeat(20));
        assert!(matches!(check(&deep), Err(Refusal::TooDeep { .. })));
        let many = vec!["w"; MAX_WORDS + 1].join(" ");
        assert!(matches!(check(&many), Err(Refusal::TooManyWords { .. })));
        for (q, found) in [
            ("title:[a TO z]", '['),
            ("x IN [a b]", '['),
            ("{a TO b}", '{'),
            ("body:>5", '>'),
            ("-<=x", '<'),
            // Found by the fuzz target: a term ends at `^1` and a range
            // starts right after it.
            ("\"phr or p\" d^1<1y", '<'),
            ("a->b", '>'),
        ] {
            assert!(
                matches!(check(q), Err(Refusal::Unsupported { found: f, .. }) if f == found),
                "{q}: {:?}",
                check(q)
            );
        }
    }

    #[test]
    fn a_star_standing_alone_is_refused() {
        // `- *` made tantivy's parser panic ("Exist query without a field
        // isn't allowed"); the fuzz target found it with `\r` for the space.
        for (q, at) in [
            ("*", 1),
            ("- *", 3),
            ("-\r\r*\r,", 4),
            ("+\t*", 3),
            ("title:*", 7),
            ("a (*)", 4),
            ("(a)*", 4),
            ("a^2*", 4),
            ("\"a\"**", 5),
            ("a*b", 2),
        ] {
            assert_eq!(check(q), Err(Refusal::Wildcard { at }), "{q:?}");
        }
        // Quoted, escaped, or a prefix after a phrase: text, not a term.
        for q in ["\"migra\"*", "'migra'*", "\"*\"", "\\*"] {
            assert_eq!(check(q), Ok(()), "{q:?}");
        }
    }

    #[test]
    fn quotes_and_escapes_hide_syntax() {
        // Inside a phrase or escaped, these are text: tantivy reads them so.
        assert_eq!(check("\"[a TO b] ((((((((((x\""), Ok(()));
        assert_eq!(check("\\[a \\( \\( \\("), Ok(()));
        // A closing parenthesis in a phrase does not undo an open one.
        let sneaky = format!("{}\")\"{}", "(".repeat(MAX_DEPTH), "(");
        assert!(matches!(check(&sneaky), Err(Refusal::TooDeep { .. })));
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = check(&"(".repeat(9)).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "the query nests parentheses 5 deep at character 5 and the most is 4; \
                 remove parentheses (words without them must all match)"
            )
        );
    }
}
