//! Benchmark (not a test): listing the newest 20 of 10,000 memories
//! (`GET /v1/memories?limit=20`) from the profile's in-memory view while the
//! profile is edited by hand all along: editor saves (a temporary file
//! renamed over a memory among the newest), new memories and deletions,
//! each of which the watcher turns into a re-read of that one file.
//! Requests go over loopback TCP with a bearer token, one keep-alive
//! connection, one request at a time. Also shown: the first listing (the
//! walk that builds the view) and the daemon's resident memory before and
//! after it.
//!
//! `sudo cargo bench --bench view` measures. Without `--bench` (as
//! `cargo test --all-targets` runs every bench target) it does a tiny
//! smoke run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};

const PASSWORD: &str = "view benchmark password 9";

struct Plan {
    memories: usize,
    warmup: usize,
    calls: usize,
    /// Hand edits per second during the measurement.
    edits_per_second: u64,
}

const FULL: Plan = Plan {
    memories: 10_000,
    warmup: 1_000,
    calls: 50_000,
    edits_per_second: 200,
};

const SMOKE: Plan = Plan {
    memories: 100,
    warmup: 5,
    calls: 50,
    edits_per_second: 50,
};

fn main() {
    require_root();
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { FULL } else { SMOKE };
    let user = TestUser::new("view");
    user.set_password(PASSWORD);
    let mut d = Daemon::configure(&format!(
        "[limits.per_user.{}]\nrequests_per_second = 100000000\nrequest_burst = 100000000\n",
        user.name
    ));
    // The profile exists before the daemon starts, as a copied tree would:
    // the watcher's baseline takes it in without an event per file.
    let month = month_dir(&d, &user);
    let mut ids: Vec<String> = (0..plan.memories).map(|_| new_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        write_memory(&month, id, &format!("benchmark memory {i}"), &user);
    }
    d.spawn().expect("the daemon starts");

    let reply = d.login(&user.name, PASSWORD);
    assert_eq!(reply.status, 200, "login failed: {}", reply.body);
    let token = reply.json()["token"].as_str().expect("token").to_owned();
    let mut client = Client::connect(d.port, &token);

    let rss_before = rss_kib(d.pid());
    let t = Instant::now();
    let first = client.list();
    let walk = t.elapsed();
    let rss_after = rss_kib(d.pid());
    let page: serde_json::Value = serde_json::from_str(&first).expect("a JSON page");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(20), "{page}");
    for _ in 0..plan.warmup {
        client.list();
    }

    // Hand edits all along the measurement.
    let stop = Arc::new(AtomicBool::new(false));
    let edits = Arc::new(AtomicUsize::new(0));
    let editor = {
        let (stop, edits, month) = (stop.clone(), edits.clone(), month.clone());
        let newest: Vec<String> = ids.split_off(ids.len() - 100);
        let oldest = ids;
        let (uid, gid) = (user.uid, user.gid);
        let pause = Duration::from_micros(1_000_000 / plan.edits_per_second);
        std::thread::spawn(move || {
            edit_by_hand(&month, newest, oldest, (uid, gid), pause, &stop, &edits)
        })
    };
    let mut times = Vec::with_capacity(plan.calls);
    let started = Instant::now();
    for _ in 0..plan.calls {
        let t = Instant::now();
        let body = client.list();
        times.push(t.elapsed());
        assert!(body.starts_with("{\"items\":["), "{body}");
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    editor.join().expect("the editor thread");
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "view bench ({}): {} memories; first listing (walk) {:?}; daemon RSS {} KiB -> {} KiB",
        if full {
            "full"
        } else {
            "smoke, run with --bench to measure"
        },
        plan.memories,
        walk,
        rss_before,
        rss_after
    );
    println!(
        "GET /v1/memories?limit=20, {} calls in {:.2?} with {} hand edits meanwhile: p50 {:?}, p99 {:?}, max {:?}",
        plan.calls,
        wall,
        edits.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

/// An editor at work: saves over the newest memories (temporary file,
/// rename), adds new ones and deletes old ones, one change per `pause`.
fn edit_by_hand(
    month: &Path,
    mut newest: Vec<String>,
    mut oldest: Vec<String>,
    owner: (u32, u32),
    pause: Duration,
    stop: &AtomicBool,
    edits: &AtomicUsize,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match n % 10 {
            0 => {
                let id = new_id();
                save(month, &id, &format!("added by hand {n}"), owner);
                newest.push(id);
            }
            5 => {
                if let Some(id) = oldest.pop() {
                    std::fs::remove_file(month.join(format!("{id}.md"))).expect("delete by hand");
                }
            }
            _ => {
                let id = &newest[n % newest.len()];
                save(month, id, &format!("edited by hand {n}"), owner);
            }
        }
        edits.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(pause);
    }
}

/// `memory/episodic/YYYY/MM` of the profile, created owned by the user.
fn month_dir(d: &Daemon, user: &TestUser) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let profile = d.profile(user);
    let month = profile.join(format!(
        "memory/episodic/{:04}/{:02}",
        now.year(),
        now.month() as u8
    ));
    std::fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(&d.profiles)
        .expect("profiles root");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&month)
        .expect("month directory");
    let mut dir = month.clone();
    while dir != d.profiles {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).expect("chown");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        dir.pop();
    }
    month
}

fn new_id() -> String {
    format!("evt-{}", ulid::Ulid::generate())
}

fn text_of(id: &str, text: &str) -> String {
    format!(
        "+++\nid = \"{id}\"\ncreated = 2026-11-22T05:41:54Z\ntags = [\"bench\", \"view\"]\nprocessed = false\n+++\n{text}: met the team about the migration plan, wrote down what to do next.\n"
    )
}

fn write_memory(month: &Path, id: &str, text: &str, user: &TestUser) {
    let file = month.join(format!("{id}.md"));
    std::fs::write(&file, text_of(id, text)).expect("write a memory");
    std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid)).expect("chown");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// An editor's save: a temporary file beside the target, renamed over it.
fn save(month: &Path, id: &str, text: &str, (uid, gid): (u32, u32)) {
    let tmp = month.join(format!(".{id}.md.swp"));
    std::fs::write(&tmp, text_of(id, text)).expect("write the temporary file");
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).expect("chown");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, month.join(format!("{id}.md"))).expect("rename over");
}

/// The daemon's resident memory.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One keep-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    request: String,
}

impl Client {
    fn connect(port: u16, token: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
            request: format!(
                "GET /v1/memories?limit=20 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
        }
    }

    /// One listing; its body.
    fn list(&mut self) -> String {
        self.writer
            .write_all(self.request.as_bytes())
            .expect("send");
        let mut length = 0usize;
        let mut status = String::new();
        self.reader.read_line(&mut status).expect("status line");
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("body");
        String::from_utf8(body).expect("UTF-8 body")
    }
}
