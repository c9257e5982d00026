//! An account's live event stream, read the way a client reads it:
//! `profilectl events --json` running as that account on the real socket.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Daemon, KillOnDrop, PROFILECTL, TestUser, capture};

/// Generous: only there so a broken build fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `profilectl events --json` running as a user; its lines as JSON.
pub struct Stream {
    _child: KillOnDrop,
    lines: Receiver<Value>,
}

impl Stream {
    pub fn open(d: &Daemon, user: &TestUser, last_event_id: Option<u64>) -> Stream {
        Stream::spawn(d, user.command(PROFILECTL), last_event_id)
    }

    /// `profilectl events` run by `cmd` (any account, any options).
    pub fn spawn(d: &Daemon, mut cmd: std::process::Command, last_event_id: Option<u64>) -> Stream {
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .arg("--socket")
            .arg(&d.socket)
            .args(["--json", "events"]);
        if let Some(id) = last_event_id {
            cmd.args(["--last-event-id", &id.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn profilectl events");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        // The stream is subscribed once profilectl says it is watching.
        let (ready_tx, ready) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = ready_tx.send(line);
            }
        });
        let first = ready
            .recv_timeout(PATIENCE)
            .expect("profilectl events starts");
        assert!(first.contains("watching"), "{first}");
        Stream {
            _child: KillOnDrop(child),
            lines,
        }
    }

    /// A stream of `user`'s events with everything that happened before
    /// (the profile's provisioning included) already behind it.
    /// Captures `text` as `user` and waits for its `memory.created` on this
    /// stream; the new memory's id.
    pub fn capture(&self, d: &Daemon, user: &TestUser, text: &str) -> String {
        let id = capture(d, user, text);
        self.until("memory.created", |v| is(v, "memory.created", &id));
        id
    }

    pub fn settled(d: &Daemon, user: &TestUser) -> Stream {
        d.ok(Some(user), &["status"]);
        let stream = Stream::open(d, user, None);
        // The second marker is written after the first was seen, so it is
        // found in a later burst than anything before the first.
        for _ in 0..2 {
            let task = marker(d, user);
            stream.until("a marker", |v| is(v, "task.created", &task));
        }
        stream
    }

    /// Every event up to and including the first that matches `pred`.
    pub fn until(&self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    let hit = pred(&v);
                    seen.push(v);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("no event {what} within {PATIENCE:?}; saw {seen:#?}"),
            }
        }
    }
}

pub fn is(v: &Value, ty: &str, record: &str) -> bool {
    v["type"] == ty && v["record"] == record
}

/// Adds a task as `user` through the API: a change to use as a marker.
pub fn marker(d: &Daemon, user: &TestUser) -> String {
    let (status, task) = d.api(
        Some(user),
        "POST",
        "/v1/tasks",
        Some(r#"{"title":"marker"}"#),
    );
    assert_eq!(status, 200, "{task}");
    task["id"].as_str().expect("task id").to_owned()
}

/// Replaces `file` as `user` the way vim and most editors save: write a
/// temporary file beside it, then rename it over the original.
pub fn save_like_an_editor(user: &TestUser, file: &std::path::Path, text: &str) {
    let out = user
        .command("sh")
        .arg("-c")
        .arg("printf '%s' \"$3\" > \"$1\" && mv \"$1\" \"$2\"")
        .arg("sh")
        .arg(file.with_extension("md.swp"))
        .arg(file)
        .arg(text)
        .output()
        .expect("edit as the user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
