//! How answers are printed: short text for people, JSON with `--json`.

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
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("profilectl: cannot print JSON: {e}"),
        }
    }

    pub fn me(&self, me: &Me) {
        if self.json {
            return self.print_json(me);
        }
        println!("{} (uid {}, {})", me.user, me.uid, me.role);
        match (&me.profile, &me.note) {
            (Some(p), _) => println!("profile: {p}"),
            (None, Some(note)) => println!("no profile: {note}"),
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
            println!("{id}");
        }
    }

    pub fn done(&self, msg: &str) {
        if !self.json {
            println!("{msg}");
        }
    }

    pub fn hits(&self, hits: &Hits) {
        if self.json {
            return self.print_json(hits);
        }
        if hits.hits.is_empty() {
            println!("nothing found for {:?}", hits.query);
        }
        for h in &hits.hits {
            println!("{}  {}  {:.2}  {}", h.id, h.kind, h.score, h.title);
            println!("    {}", h.snippet);
        }
        if hits.partial {
            eprintln!(
                "(partial: the search stopped at its time limit; fewer or rarer words answer in full)"
            );
        }
    }

    pub fn memories(&self, page: &Page<Memory>) {
        if self.json {
            return self.print_json(page);
        }
        for m in &page.items {
            println!(
                "{}  {}  {}",
                m.id,
                m.created.as_deref().unwrap_or("-"),
                first_line(&m.text, 60)
            );
        }
        if let Some(next) = &page.next {
            println!("(more: --before {next})");
        }
        problems(&page.problems, "");
    }

    pub fn memory(&self, m: &Memory) {
        if self.json {
            return self.print_json(m);
        }
        println!("id:      {}", m.id);
        println!("file:    {}", m.path);
        println!("created: {}", m.created.as_deref().unwrap_or("-"));
        if !m.tags.is_empty() {
            println!("tags:    {}", m.tags.join(", "));
        }
        println!();
        print!("{}", m.text);
    }

    pub fn tasks(&self, page: &Page<Task>) {
        if self.json {
            return self.print_json(page);
        }
        for t in &page.items {
            self.task_line(t);
        }
        if let Some(next) = &page.next {
            println!("(more: --before {next})");
        }
        problems(&page.problems, "");
    }

    pub fn task_line(&self, t: &Task) {
        if self.json {
            return self.print_json(t);
        }
        let status = serde_json::to_value(t.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let due = t
            .due
            .as_deref()
            .map(|d| format!("  due {d}"))
            .unwrap_or_default();
        println!("{}  [{status}]  {}{due}", t.id, t.title);
    }

    pub fn persona(&self, p: &Persona) {
        if self.json {
            return self.print_json(p);
        }
        match toml::to_string(p) {
            Ok(s) if s.trim().is_empty() => println!("(empty persona)"),
            Ok(s) => print!("{s}"),
            Err(e) => eprintln!("profilectl: cannot print the persona: {e}"),
        }
    }

    pub fn profiles(&self, rows: &[ProfileRow]) {
        if self.json {
            return self.print_json(&rows);
        }
        for r in rows {
            println!("{:<20} {:<16} {}", r.user, r.state, r.detail);
        }
    }

    pub fn profile_change(&self, c: &ProfileChange) {
        if self.json {
            return self.print_json(c);
        }
        println!("{}: {}", c.user, c.outcome);
        for s in &c.skipped {
            println!("  left as is: {s}");
        }
    }

    pub fn new_token(&self, t: &NewToken) {
        if self.json {
            return self.print_json(t);
        }
        println!("{}", t.token);
        eprintln!(
            "token {} ({}) expires {}; it is shown only now: store it safely",
            t.id, t.user, t.expires
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
            println!(
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
            Err(_) if !text.is_empty() => println!("{text}"),
            Err(_) => {}
        }
    }
}

fn problems(list: &[Problem], none: &str) {
    if list.is_empty() {
        if !none.is_empty() {
            println!("{none}");
        }
        return;
    }
    eprintln!("{} file(s) need fixing:", list.len());
    for p in list {
        eprintln!("  {p}");
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
