//! Benchmark (not a test): the time from a file write (temp file renamed
//! into a profile) to the event arriving at an SSE client
//! (`profilectl events --json` as the profile's account, on the socket),
//! with many profiles and as many connected clients, beside `inotifywait`
//! timing the same writes in the same run (the kernel's own delay).
//!
//! `sudo cargo bench --bench events` (needs root and inotify-tools).
//! Without `--bench` (as `cargo test --all-targets` runs it) it only checks
//! that the path works, quickly.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use common::{Daemon, KillOnDrop, PROFILECTL, TestUser, require_root};

const PATIENCE: Duration = Duration::from_secs(30);

/// Reads `child`'s stdout lines into `tx` with their arrival time, after
/// waiting for a stderr line containing `ready`.
fn follow(
    mut child: std::process::Child,
    ready: &str,
    tx: Sender<(String, Instant)>,
) -> KillOnDrop {
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    let (ready_tx, ready_rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { return };
            let _ = ready_tx.send(line);
        }
    });
    loop {
        let line = ready_rx.recv_timeout(PATIENCE).expect("the client starts");
        if line.contains(ready) {
            break;
        }
    }
    KillOnDrop(child)
}

/// Waits for a line containing `needle`; its arrival time.
fn arrival(rx: &Receiver<(String, Instant)>, needle: &str) -> Instant {
    loop {
        let (line, at) = rx.recv_timeout(PATIENCE).expect("the event arrives");
        if line.contains(needle) {
            return at;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} writes",
        percentile(&v, 0.50).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        v.len()
    );
}

fn main() {
    require_root();
    let full = std::env::args().any(|a| a == "--bench");
    let (profiles, writes) = if full { (100, 1000) } else { (2, 10) };
    let users: Vec<TestUser> = (0..profiles).map(|_| TestUser::new("ev")).collect();
    let d = Daemon::start("");
    for u in &users {
        d.ok(Some(u), &["status"]);
    }
    let (sse_tx, sse_rx) = channel();
    let _clients: Vec<KillOnDrop> = users
        .iter()
        .map(|u| {
            let child = u
                .command(PROFILECTL)
                .env_clear()
                .arg("--socket")
                .arg(&d.socket)
                .args(["--json", "events"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn profilectl events");
            follow(child, "watching", sse_tx.clone())
        })
        .collect();
    let (ino_tx, ino_rx) = channel();
    let _inotifywait = follow(
        Command::new("inotifywait")
            .args(["-m", "-r", "-e", "close_write,moved_to", "--format", "%w%f"])
            .arg(&d.profiles)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn inotifywait (apt-get install inotify-tools)"),
        "Watches established",
        ino_tx,
    );

    let mut to_sse = Vec::new();
    let mut to_inotify = Vec::new();
    for i in 0..writes {
        let dir = d.profile(&users[i % profiles]).join("memory/tasks");
        let name = format!("tsk-bench{i}.md");
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = dir.join(&name);
        let start = Instant::now();
        std::fs::write(&tmp, format!("+++\ntitle = \"bench {i}\"\n+++\n")).expect("write");
        std::fs::rename(&tmp, &file).expect("rename");
        let kernel = arrival(&ino_rx, &file.display().to_string());
        let client = arrival(&sse_rx, &format!("\"memory/tasks/{name}\""));
        to_inotify.push(kernel - start);
        to_sse.push(client - start);
    }
    println!("{profiles} profiles, {profiles} SSE clients, {writes} writes one at a time:");
    report("inotifywait", to_inotify);
    report("SSE client (profilectl events)", to_sse);
}
