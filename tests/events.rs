//! Live profiles: changes made on disk reach their owner's event stream,
//! read by `profilectl events --json` running as that account on the real
//! socket, and nobody else's.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{Daemon, KillOnDrop, PROFILECTL, TestUser, capture, memory_file, require_root};
use serde_json::Value;

/// Generous: only there so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// `profilectl events --json` running as a user; its lines as JSON.
struct Stream {
    _child: KillOnDrop,
    lines: Receiver<Value>,
}

impl Stream {
    fn open(d: &Daemon, user: &TestUser, last_event_id: Option<u64>) -> Stream {
        let mut cmd = user.command(PROFILECTL);
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

    /// Every event up to and including the first that matches `pred`.
    fn until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
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

fn is(v: &Value, ty: &str, record: &str) -> bool {
    v["type"] == ty && v["record"] == record
}

/// Adds a task as `user` through the API: a change to use as a marker.
fn marker(d: &Daemon, user: &TestUser) -> String {
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
fn save_like_an_editor(user: &TestUser, file: &std::path::Path, text: &str) {
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

#[test]
fn an_editor_save_is_one_update_for_its_owner_and_nothing_for_others() {
    if !require_root() {
        return;
    }
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let alice_events = Stream::open(&d, &alice, None);
    let bob_events = Stream::open(&d, &bob, None);
    // Opening the stream provisioned alice's profile: its files appear.
    alice_events.until("settings.created", |v| v["type"] == "settings.created");
    let id = capture(&d, &alice, "first draft");
    alice_events.until("memory.created", |v| is(v, "memory.created", &id));
    let file = memory_file(&d, &alice, &id);

    let text = std::fs::read_to_string(&file).expect("read");
    save_like_an_editor(&alice, &file, &text.replace("first draft", "edited in vim"));
    let seen = alice_events.until("memory.updated", |v| is(v, "memory.updated", &id));
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let ev = &seen[0];
    assert_eq!(ev["user"], alice.name.as_str());
    assert_eq!(ev["kind"], "memory");
    assert_eq!(ev["action"], "updated");
    let rel = file.strip_prefix(d.profile(&alice)).expect("relative");
    assert_eq!(ev["path"], rel.display().to_string().as_str());

    // Nothing more for that save: the next event alice gets is the marker.
    let task = marker(&d, &alice);
    let seen = alice_events.until("the marker", |v| is(v, "task.created", &task));
    assert_eq!(seen.len(), 1, "{seen:#?}");

    // Up to his own marker, bob saw only his own profile (created when
    // his stream opened): alice's changes never reached him.
    let task = marker(&d, &bob);
    let seen = bob_events.until("bob's marker", |v| is(v, "task.created", &task));
    assert!(seen.iter().all(|v| v["user"] == bob.name.as_str()));
}
