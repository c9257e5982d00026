//! The watcher at the kernel's inotify limits: a reached watch limit is
//! reported (health, log, the sysctl to raise) and the rest polled; an
//! overflowing event queue is rescanned so no change is lost.
//!
//! These tests lower root's inotify sysctls, which every process of root
//! shares, so they live in their own test binary (cargo runs binaries one
//! after another), run one at a time, and restore the values on drop.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;

use common::stream::Stream;
use common::{Daemon, KillOnDrop, TestUser, require_root};
use nix::sys::signal::Signal;

/// One test at a time: they change machine-wide settings.
static SYSCTL: Mutex<()> = Mutex::new(());

/// A value under /proc/sys/fs/inotify, set for a test and put back on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(name: &str, value: u64) -> Sysctl {
        let path: &'static str = match name {
            "max_user_watches" => "/proc/sys/fs/inotify/max_user_watches",
            "max_queued_events" => "/proc/sys/fs/inotify/max_queued_events",
            other => panic!("no such inotify sysctl: {other}"),
        };
        let old = std::fs::read_to_string(path).expect("read the sysctl");
        std::fs::write(path, value.to_string()).expect("set the sysctl (needs root)");
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

/// The inotify watches of the processes in `pids` (from fdinfo).
fn watches_of(pids: impl Iterator<Item = u32>) -> u64 {
    let mut n = 0;
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let text = std::fs::read_to_string(fd.path()).unwrap_or_default();
            n += text
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count() as u64;
        }
    }
    n
}

/// Every process whose real uid is root.
fn root_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
                })
                .unwrap_or(false)
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn health(d: &Daemon, user: &TestUser) -> serde_json::Value {
    let (status, body) = d.api(Some(user), "GET", "/v1/health", None);
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
#[ignore = "needs root"]
fn a_reached_watch_limit_is_reported_with_the_sysctl_and_the_rest_is_polled() {
    require_root();
    let _one = SYSCTL.lock().unwrap_or_else(|p| p.into_inner());
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let mut d = Daemon::start("[watch]\nmode = \"auto\"\npoll_interval = \"1s\"\n");
    // What the daemon watches besides the profiles: the profiles root, the
    // knowledge directory, /etc for the identity cache.
    let others = watches_of(std::iter::once(d.pid()));
    d.ok(Some(&alice), &["status"]);
    d.ok(Some(&bob), &["status"]);
    assert_eq!(health(&d, &alice)["watch"]["limited"], false);
    // Each profile's record directories get watches of their own (at
    // least the profile, persona/, memory/ and memory/tasks/ each).
    let deadline = std::time::Instant::now() + common::stream::PATIENCE;
    let mut all = watches_of(std::iter::once(d.pid()));
    while all < others + 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        all = watches_of(std::iter::once(d.pid()));
    }
    assert!(
        all >= others + 8,
        "the daemon watches the profiles: {all} watches, {others} without them"
    );
    d.kill9();

    // Room for everything but the profiles and two more directories: the
    // rest of alice's and bob's directories go unwatched.
    let room = watches_of(root_pids()) + others + 2;
    let _limit = Sysctl::set("max_user_watches", room);
    d.spawn().expect("the daemon starts under the limit");

    let report = health(&d, &alice);
    let watch = &report["watch"];
    assert_eq!(watch["limited"], true, "{report}");
    assert_eq!(watch["polling"], true, "{report}");
    let hint = watch["hint"].as_str().unwrap_or("");
    assert!(
        hint.contains("sysctl fs.inotify.max_user_watches="),
        "{report}"
    );
    assert!(
        d.log_text().contains("sysctl fs.inotify.max_user_watches="),
        "{}",
        d.log_text()
    );

    // Changes in both profiles still arrive, by polling where no watch is.
    for user in [&alice, &bob] {
        let events = Stream::open(&d, user, None);
        let task = common::stream::marker(&d, user);
        events.until("the marker", |v| {
            common::stream::is(v, "task.created", &task)
        });
        let file = d.profile(user).join("memory/tasks/tsk-handmade.md");
        let out = user
            .command("sh")
            .arg("-c")
            .arg("printf '+++\\ntitle = \"by hand\"\\n+++\\n' > \"$1\"")
            .arg("sh")
            .arg(&file)
            .output()
            .expect("write as the user");
        assert!(out.status.success(), "{out:?}");
        events.until("the hand-made task", |v| {
            common::stream::is(v, "task.created", "tsk-handmade")
        });
    }
}

#[test]
#[ignore = "needs root"]
fn an_overflowing_event_queue_is_rescanned_and_no_change_is_lost() {
    require_root();
    let _one = SYSCTL.lock().unwrap_or_else(|p| p.into_inner());
    const FILES: usize = 300;
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    // The queue length is fixed when an inotify instance is made: set it
    // before the daemon starts.
    let _queue = Sysctl::set("max_queued_events", 16);
    let d = Daemon::start("[watch]\nmode = \"inotify\"\n");
    let alice_events = Stream::settled(&d, &alice);
    let bob_events = Stream::settled(&d, &bob);

    // The daemon is stopped while alice writes, so far more than 16 events
    // wait in the queue: the kernel drops the rest and says so.
    d.signal(Signal::SIGSTOP);
    let writer = alice
        .command("sh")
        .arg("-c")
        .arg(format!(
            "cd \"$1\" && i=0; while [ $i -lt {FILES} ]; do \
             printf 'm' > memory/tasks/tsk-q$i.md; i=$((i+1)); done"
        ))
        .arg("sh")
        .arg(d.profile(&alice))
        .spawn()
        .expect("spawn the writer");
    let status = KillOnDrop(writer).0.wait();
    d.signal(Signal::SIGCONT);
    assert!(status.expect("writer").success());

    let mut expected: BTreeSet<String> = (0..FILES)
        .map(|i| format!("memory/tasks/tsk-q{i}.md"))
        .collect();
    alice_events.until("every path", |v| {
        assert_eq!(v["user"], alice.name.as_str(), "another user's event: {v}");
        if let Some(p) = v["path"].as_str() {
            expected.remove(p);
        }
        expected.is_empty()
    });
    assert!(
        d.log_text().contains("event queue overflowed"),
        "{}",
        d.log_text()
    );
    // bob got none of it: his next event is his own marker.
    let task = common::stream::marker(&d, &bob);
    let seen = bob_events.until("bob's marker", |v| {
        common::stream::is(v, "task.created", &task)
    });
    assert_eq!(seen.len(), 1, "{seen:#?}");
}
