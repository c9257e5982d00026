//! How answers are printed: short text for people, JSON with `--json`.
//!
//! Everything profilectl prints goes through [`emit`] (the `outln!`,
//! `out!`, `errln!` and `err!` macros; `print!` and friends are denied in
//! this binary). Much of it is text other accounts wrote (knowledge
//! entries) or programs produced (agent output), and a terminal acts on
//! control characters: OSC 52 writes the clipboard, others retitle the
//! window, erase lines or move the cursor to forge output. So every
//! control character but the newline is shown escaped (`\u001b`, `\t`),
//! whatever the daemon let through, in JSON's escape syntax so that
//! `--json` output stays JSON.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

/// Prints a line to stdout through [`emit`].
macro_rules! outln {
    () => {
        $crate::render::emit($crate::render::Stream::Out, format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::render::emit($crate::render::Stream::Out, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints to stdout through [`emit`], without a newline.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::render::emit($crate::render::Stream::Out, format_args!($($arg)*))
    };
}

/// Prints a line to stderr through [`emit`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::render::emit($crate::render::Stream::Err, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints to stderr through [`emit`], without a newline.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::render::emit($crate::render::Stream::Err, format_args!($($arg)*))
    };
}

/// Where [`emit`] writes.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Out,
    Err,
}

/// Writes `args` to `stream` with its control characters escaped
/// ([`escape_controls`]). When the reader of stdout went away
/// (`profilectl events | head -1`), nothing more will be read: profilectl
/// exits at once, quietly and successfully, as ripgrep does (a stream
/// would otherwise run on forever). Other write errors drop the text.
pub fn emit(stream: Stream, args: std::fmt::Arguments<'_>) {
    // Wiped when dropped: `creds reveal` prints a secret through here.
    let text = zeroize::Zeroizing::new(std::fmt::format(args));
    let safe = escape_controls(&text);
    let written = match stream {
        Stream::Out => std::io::stdout().lock().write_all(safe.as_bytes()),
        Stream::Err => std::io::stderr().lock().write_all(safe.as_bytes()),
    };
    if let Err(e) = written
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        drop(text);
        std::process::exit(0);
    }
}

/// `text` with every control character (C0, DEL, C1) but the newline
/// written as an escape: `\t`, `\r`, else `\u001b`. These are JSON's
/// own escapes, so JSON stays valid JSON of the same value: serde_json
/// escapes C0 in strings but writes DEL and C1 as they are, and a newline
/// outside a string is only layout.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push('\n'),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

use profiled::api::{Me, NewToken, ProfileChange, ProfileRow, TokenInfo};
use profiled::search::query::Hits;
use profiled::store::{Memory, Page, Persona, Problem, Task};
use serde::Serialize;

/// Where and how to print.
pub struct Output {
    /// Print JSON instead of text.
    pub json: bool,
}

impl Output {
    fn print_json<T: Serialize>(&self, v: &T) {
        match serde_json::to_string_pretty(v) {
            Ok(s) => outln!("{s}"),
            Err(e) => errln!("profilectl: cannot print JSON: {e}"),
        }
    }

    pub fn me(&self, me: &Me) {
        if self.json {
            return self.print_json(me);
        }
        outln!("{} (uid {}, {})", me.user, me.uid, me.role);
        match (&me.profile, &me.note) {
            (Some(p), _) => outln!("profile: {p}"),
            (None, Some(note)) => outln!("no profile: {note}"),
            (None, None) => {}
        }
        if me.profile.is_some() {
            problems(&me.problems, "no problems found in the profile");
        }
    }

    pub fn created<T: Serialize>(&self, id: &str, v: &T) {
        if self.json {
            self.print_json(v)
        } else {
            outln!("{id}");
        }
    }

    pub fn done(&self, msg: &str) {
        if !self.json {
            outln!("{msg}");
        }
    }

    pub fn hits(&self, hits: &Hits) {
        if self.json {
            return self.print_json(hits);
        }
        if hits.hits.is_empty() {
            outln!("nothing found for {:?}", hits.query);
        }
        for h in &hits.hits {
            outln!("{}  {}  {:.2}  {}", h.id, h.kind, h.score, h.title);
            outln!("    {}", h.snippet);
        }
        if hits.partial {
            errln!(
                "(partial: the search stopped at its time limit; fewer or rarer words answer in full)"
            );
        }
    }

    pub fn memories(&self, page: &Page<Memory>) {
        if self.json {
            return self.print_json(page);
        }
        for m in &page.items {
            outln!(
                "{}  {}  {}",
                m.id,
                m.created.as_deref().unwrap_or("-"),
                first_line(&m.text, 60)
            );
        }
        if let Some(next) = &page.next {
            outln!("(more: --before {next})");
        }
        problems(&page.problems, "");
    }

    pub fn memory(&self, m: &Memory) {
        if self.json {
            return self.print_json(m);
        }
        outln!("id:      {}", m.id);
        outln!("file:    {}", m.path);
        outln!("created: {}", m.created.as_deref().unwrap_or("-"));
        if !m.tags.is_empty() {
            outln!("tags:    {}", m.tags.join(", "));
        }
        outln!();
        out!("{}", m.text);
    }

    pub fn tasks(&self, page: &Page<Task>) {
        if self.json {
            return self.print_json(page);
        }
        for t in &page.items {
            self.task_line(t);
        }
        if let Some(next) = &page.next {
            outln!("(more: --before {next})");
        }
        problems(&page.problems, "");
    }

    pub fn task_line(&self, t: &Task) {
        if self.json {
            return self.print_json(t);
        }
        // Padded to the longest status, `[in_progress]`, so titles align.
        let status = format!("[{}]", t.status.as_str());
        let due = t
            .due
            .as_deref()
            .map(|d| format!("  due {d}"))
            .unwrap_or_default();
        outln!("{}  {status:<13}  {}{due}", t.id, t.title);
    }

    pub fn persona(&self, p: &Persona) {
        if self.json {
            return self.print_json(p);
        }
        match toml::to_string(p) {
            Ok(s) if s.trim().is_empty() => outln!("(empty persona)"),
            Ok(s) => out!("{s}"),
            Err(e) => errln!("profilectl: cannot print the persona: {e}"),
        }
    }

    pub fn profiles(&self, rows: &[ProfileRow]) {
        if self.json {
            return self.print_json(&rows);
        }
        for r in rows {
            outln!("{:<20} {:<16} {}", r.user, r.state, r.detail);
        }
    }

    pub fn profile_change(&self, c: &ProfileChange) {
        if self.json {
            return self.print_json(c);
        }
        outln!("{}: {}", c.user, c.outcome);
        for s in &c.skipped {
            outln!("  left as is: {s}");
        }
    }

    pub fn new_token(&self, t: &NewToken) {
        if self.json {
            return self.print_json(t);
        }
        outln!("{}", t.token);
        errln!(
            "token {} ({}) expires {}; it is shown only now: store it safely",
            t.id,
            t.user,
            t.expires
        );
    }

    pub fn tokens(&self, list: &[TokenInfo]) {
        if self.json {
            return self.print_json(&list);
        }
        for t in list {
            let kind = serde_json::to_value(t.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            outln!(
                "{}  {:<8} {:<20} expires {}  last used {}",
                t.id,
                kind,
                t.name.as_deref().unwrap_or("-"),
                t.expires,
                t.last_used
            );
        }
    }

    pub fn raw(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => self.print_json(&v),
            Err(_) if !text.is_empty() => outln!("{text}"),
            Err(_) => {}
        }
    }
}

fn problems(list: &[Problem], none: &str) {
    if list.is_empty() {
        if !none.is_empty() {
            outln!("{none}");
        }
        return;
    }
    errln!("{} file(s) need fixing:", list.len());
    for p in list {
        errln!("  {p}");
    }
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_but_the_newline_is_escaped() {
        let osc52 = "title\u{1b}]52;c;aGVsbG8=\u{7}\u{1b}[2K\u{9b}31m\r\tend\n";
        let safe = escape_controls(osc52);
        assert_eq!(
            safe,
            "title\\u001b]52;c;aGVsbG8=\\u0007\\u001b[2K\\u009b31m\\r\\tend\n"
        );
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'));
        assert!(matches!(escape_controls("plain ✓\n"), Cow::Borrowed(_)));
        // JSON stays JSON of the same value.
        let value = serde_json::json!({"t": "a\u{9b}b\u{7f}"});
        let json = serde_json::to_string_pretty(&value).unwrap_or_default();
        let back: serde_json::Value =
            serde_json::from_str(&escape_controls(&json)).unwrap_or_default();
        assert_eq!(back, value);
    }
}
