//! Live profiles: changes made on disk reach their owner's event stream,
//! read by `profilectl events --json` running as that account on the real
//! socket, and nobody else's.

mod common;

use std::time::{Duration, Instant};

use common::stream::{PATIENCE, Stream, is, marker, save_like_an_editor};
use common::{Daemon, KillOnDrop, PROFILECTL, TestUser, capture, memory_file, require_root};
use serde_json::Value;

#[test]
#[ignore = "needs root"]
fn an_editor_save_is_one_update_for_its_owner_and_nothing_for_others() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let alice_events = Stream::settled(&d, &alice);
    let bob_events = Stream::settled(&d, &bob);
    let id = alice_events.capture(&d, &alice, "first draft");
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

    // bob's next event is his own marker: alice's changes never reached him.
    let task = marker(&d, &bob);
    let seen = bob_events.until("bob's marker", |v| is(v, "task.created", &task));
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(seen.iter().all(|v| v["user"] == bob.name.as_str()));
}

fn id_of(v: &Value) -> u64 {
    v["id"].as_u64().expect("an event id")
}

#[test]
#[ignore = "needs root"]
fn reconnecting_with_last_event_id_gets_the_missed_events_in_order() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let live = Stream::settled(&d, &alice);
    let first = capture(&d, &alice, "seen before the disconnect");
    let seen = live.until("the first memory", |v| is(v, "memory.created", &first));
    let resume_after = id_of(seen.last().expect("an event"));

    // While a client is away, three memories and a task change.
    let missed: Vec<String> = (0..3)
        .map(|n| capture(&d, &alice, &format!("missed {n}")))
        .collect();
    let task = marker(&d, &alice);
    let expected = live.until("the task", |v| is(v, "task.created", &task));

    let back = Stream::open(&d, &alice, Some(resume_after));
    let got = back.until("the task", |v| is(v, "task.created", &task));
    assert_eq!(got, expected, "the catch-up is what a live client saw");
    let ids: Vec<u64> = got.iter().map(id_of).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let memories: Vec<&str> = got
        .iter()
        .filter(|v| v["type"] == "memory.created")
        .filter_map(|v| v["record"].as_str())
        .collect();
    assert_eq!(memories, missed, "in the order they were written");

    // An id older than anything kept: the client is told to resync.
    let stale = Stream::open(&d, &alice, Some(1));
    let got = stale.until("resync", |v| v["type"] == "resync");
    assert_eq!(got.len(), 1, "{got:#?}");
}

/// The inodes of every directory the daemon's inotify instances watch
/// (from /proc/PID/fdinfo).
fn watched_inodes(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            if let Some(ino) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                out.push(ino);
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn a_symlink_in_a_profile_is_neither_followed_nor_watched() {
    use std::os::unix::fs::MetadataExt;
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let events = Stream::settled(&d, &alice);

    // Another directory alice can write, linked from her profile where a
    // month of memories would be.
    let elsewhere = d.scratch.path.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir elsewhere");
    std::os::unix::fs::chown(&elsewhere, Some(alice.uid), Some(alice.gid)).expect("chown");
    let month = d.profile(&alice).join("memory/episodic/2031/01");
    let out = alice
        .command("sh")
        .arg("-c")
        .arg(
            "mkdir -p \"$(dirname \"$2\")\" && ln -s \"$1\" \"$2\" && mkdir \"$1/sub\" && \
             printf 'x' > \"$1/evt-linked.md\" && printf 'y' > \"$1/sub/evt-deeper.md\" && \
             printf 'z' > \"$2/evt-through.md\"",
        )
        .arg("sh")
        .arg(&elsewhere)
        .arg(&month)
        .output()
        .expect("link and write as alice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let task = marker(&d, &alice);
    let seen = events.until("the marker", |v| is(v, "task.created", &task));
    assert!(
        seen.iter().all(|v| !v["path"]
            .as_str()
            .unwrap_or("")
            .starts_with("memory/episodic/2031/01")),
        "{seen:#?}"
    );
    // Watched: alice's real directories; never the link's target.
    let watched = watched_inodes(d.pid());
    let ino = |p: &std::path::Path| std::fs::metadata(p).expect("stat").ino();
    assert!(watched.contains(&ino(&d.profile(&alice).join("memory/episodic"))));
    assert!(!watched.contains(&ino(&elsewhere)), "the target is watched");
    assert!(!watched.contains(&ino(&elsewhere.join("sub"))));
}

#[test]
#[ignore = "needs root"]
fn a_burst_across_profiles_reaches_each_owner_and_nobody_else() {
    require_root();
    // The figure: 10,000 files across 100 profiles.
    const USERS: usize = 100;
    const FILES: usize = 100;
    let users: Vec<TestUser> = (0..USERS).map(|_| TestUser::new("burst")).collect();
    let d = Daemon::start("");
    let streams: Vec<Stream> = users.iter().map(|u| Stream::settled(&d, u)).collect();
    // Each user writes half the files into a directory made just before
    // (files written right after a mkdir must not be missed), half into
    // memory/tasks, all at once.
    let writers: Vec<KillOnDrop> = users
        .iter()
        .map(|u| {
            let script = format!(
                "cd \"$1\" && mkdir -p memory/episodic/2031/02 && i=0; \
                 while [ $i -lt {half} ]; do \
                 printf 'm' > memory/episodic/2031/02/evt-b$i.md; \
                 printf 't' > memory/tasks/tsk-b$i.md; i=$((i+1)); done",
                half = FILES / 2
            );
            KillOnDrop(
                u.command("sh")
                    .arg("-c")
                    .arg(script)
                    .arg("sh")
                    .arg(d.profile(u))
                    .spawn()
                    .expect("spawn a writer"),
            )
        })
        .collect();
    for mut w in writers {
        assert!(w.0.wait().expect("writer").success());
    }
    for (user, stream) in users.iter().zip(&streams) {
        let mut expected: std::collections::BTreeSet<String> = (0..FILES / 2)
            .flat_map(|i| {
                [
                    format!("memory/episodic/2031/02/evt-b{i}.md"),
                    format!("memory/tasks/tsk-b{i}.md"),
                ]
            })
            .collect();
        let seen = stream.until("every path", |v| {
            assert_eq!(v["user"], user.name.as_str(), "another user's event: {v}");
            if let Some(p) = v["path"].as_str() {
                expected.remove(p);
            }
            expected.is_empty()
        });
        assert!(seen.len() >= FILES);
    }
}

#[test]
#[ignore = "needs root"]
fn polling_reports_the_same_change() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("[watch]\nmode = \"poll\"\npoll_interval = \"1s\"\n");
    let events = Stream::settled(&d, &alice);
    let id = events.capture(&d, &alice, "first draft");
    let file = memory_file(&d, &alice, &id);
    let text = std::fs::read_to_string(&file).expect("read");
    save_like_an_editor(&alice, &file, &text.replace("first draft", "polled"));
    let seen = events.until("memory.updated", |v| is(v, "memory.updated", &id));
    assert_eq!(seen.len(), 1, "{seen:#?}");
}

#[test]
#[ignore = "needs root"]
fn admins_watch_another_profile_audited_and_users_cannot() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let alice_events = Stream::settled(&d, &alice);
    // root over the socket is an admin.
    let mut as_root = std::process::Command::new(PROFILECTL);
    as_root.args(["--user", &alice.name]);
    let watched = Stream::spawn(&d, as_root, None);
    let task = marker(&d, &alice);
    alice_events.until("the marker", |v| is(v, "task.created", &task));
    let seen = watched.until("alice's marker", |v| is(v, "task.created", &task));
    assert!(seen.iter().all(|v| v["user"] == alice.name.as_str()));
    assert!(d.system_audit().contains("events.watch"));
    assert!(d.user_audit(&alice).contains("events.watch"));

    let out = d.ctl(Some(&bob), &["--user", &alice.name, "events"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only admins"), "{err}");
}

/// Issue 13: `profilectl events | head -1` ends when `head` does, and
/// `profilectl memories | head -1` neither panics nor complains: a closed
/// pipe ends profilectl quietly, with status 0, as it does ripgrep.
#[test]
#[ignore = "needs root"]
fn profilectl_ends_quietly_when_its_reader_goes_away() {
    use std::io::BufRead;
    use std::process::Stdio;
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    capture(&d, &alice, "a note");
    let spawn = |args: &[&str]| {
        alice
            .command(PROFILECTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn profilectl")
    };
    let finish = |mut child: std::process::Child, what: &str| {
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{what} still runs 10 s after its reader went away");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(status.success(), "{what}: {status}, stderr: {stderr}");
        let lower = stderr.to_lowercase();
        assert!(
            !lower.contains("panicked")
                && !lower.contains("broken pipe")
                && !lower.contains("error"),
            "{what} complains about a closed pipe: {stderr}"
        );
    };

    // A listing whose reader is gone before it prints.
    let mut list = spawn(&["memories", "--limit", "100"]);
    drop(list.stdout.take());
    finish(list, "profilectl memories");

    // A stream whose reader goes after the first event: the next event
    // ends it (it used to run on, writing into the closed pipe forever).
    let mut events = spawn(&["events"]);
    let stdout = events.stdout.take().expect("stdout");
    let (tx, first) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
        // The reader and the pipe's read end are dropped here.
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        capture(&d, &alice, "an event to read");
        if let Ok(line) = first.recv_timeout(Duration::from_millis(200)) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no event reached profilectl events"
        );
    };
    assert!(!line.is_empty());
    capture(&d, &alice, "an event nobody reads");
    finish(events, "profilectl events");
}

#[test]
#[ignore = "needs root"]
fn the_stream_works_over_tcp_with_a_token() {
    use std::io::{Read, Write};
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password("correct horse 5");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let reply = d.login(&alice.name, "correct horse 5");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json()["token"].as_str().expect("token").to_owned();

    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        tcp,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\n\r\n",
        d.port
    )
    .expect("send");
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = |got: &mut String, needle: &str| {
        while !got.contains(needle) {
            let n = tcp.read(&mut buf).expect("read the stream");
            assert!(n > 0, "the stream ended: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(&mut got, "\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("text/event-stream"), "{got}");
    let task = marker(&d, &alice);
    read_until(&mut got, &task);
    assert!(got.contains("event: task.created"), "{got}");
}

#[test]
#[ignore = "needs root"]
fn an_invalid_profile_toml_keeps_the_last_good_settings_and_is_reported_until_fixed() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let events = Stream::settled(&d, &alice);
    let file = d.profile(&alice).join("profile.toml");
    let write = |text: &str| {
        let out = alice
            .command("sh")
            .arg("-c")
            .arg("printf '%s' \"$2\" > \"$1.new\" && mv \"$1.new\" \"$1\"")
            .arg("sh")
            .arg(&file)
            .arg(text)
            .output()
            .expect("write as alice");
        assert!(out.status.success());
    };

    // A valid file first: its display name is in force.
    write("display_name = \"Alice A\"\n");
    events.until("settings.created", |v| {
        v["type"] == "settings.created" || v["type"] == "settings.updated"
    });
    let in_force = |d: &Daemon| d.api(Some(&alice), "GET", "/v1/settings", None).1;
    assert_eq!(in_force(&d)["settings"]["display_name"], "Alice A");

    write("display_name = \"Alice broken\"\n\ncolour = \"blue\"\n");
    let seen = events.until("settings.invalid", |v| v["type"] == "settings.invalid");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let problem = &seen[0]["problem"];
    assert_eq!(problem["file"], "profile.toml", "{problem}");
    assert_eq!(problem["line"], 3, "{problem}");
    assert!(
        problem["reason"].as_str().unwrap_or("").contains("colour"),
        "{problem}"
    );
    let (_, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    assert!(
        me["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p["file"] == "profile.toml" && p["line"] == 3),
        "{me}"
    );
    // The last valid file stays in force, and says why the new one is not.
    let now = in_force(&d);
    assert_eq!(now["settings"]["display_name"], "Alice A", "{now}");
    assert_eq!(now["problem"]["line"], 3, "{now}");
    let shown = d.ctl(Some(&alice), &["settings"]);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("Alice A"),
        "{shown:?}"
    );
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("profile.toml:3:"),
        "{shown:?}"
    );

    write("display_name = \"Alice B\"\n");
    let seen = events.until("settings.updated", |v| v["type"] == "settings.updated");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let (_, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    assert_eq!(me["problems"].as_array().map(Vec::len), Some(0), "{me}");
    let now = in_force(&d);
    assert_eq!(now["settings"]["display_name"], "Alice B", "{now}");
    assert!(now["problem"].is_null(), "{now}");
}

#[test]
#[ignore = "needs root"]
fn the_system_config_is_reloaded_when_it_changes_and_a_bad_one_is_refused() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let as_admin = || d.ctl(Some(&bob), &["--user", &alice.name, "status"]);
    assert!(!as_admin().status.success());

    // No SIGHUP: saving the file is enough.
    let good = std::fs::read_to_string(&d.config).expect("read config")
        + &format!("\n[accounts]\nadmins = [\"{}\"]\n", bob.name);
    std::fs::write(&d.config, &good).expect("write config");
    let deadline = Instant::now() + PATIENCE;
    while !as_admin().status.success() {
        assert!(Instant::now() < deadline, "not reloaded: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A broken file is refused and the last good one stays in force.
    std::fs::write(&d.config, good.replace("admins =", "admins ==")).expect("break it");
    let deadline = Instant::now() + PATIENCE;
    while !d.log_text().contains("config reload refused") {
        assert!(Instant::now() < deadline, "not refused: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(d.log_text().contains("profiled.toml:"), "{}", d.log_text());
    assert!(as_admin().status.success());
}

#[test]
#[ignore = "needs root"]
fn a_save_that_moves_the_original_away_first_is_one_update() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let events = Stream::settled(&d, &alice);
    let id = events.capture(&d, &alice, "first draft");
    let file = memory_file(&d, &alice, &id);
    let text = std::fs::read_to_string(&file).expect("read");
    // vim with a backup copy: the original moves to FILE~, the new text is
    // written to FILE (and synced), then the backup goes.
    let out = alice
        .command("sh")
        .arg("-c")
        .arg("mv \"$1\" \"$1~\" && printf '%s' \"$2\" > \"$1\" && sync \"$1\" && rm \"$1~\"")
        .arg("sh")
        .arg(&file)
        .arg(text.replace("first draft", "saved with a backup"))
        .output()
        .expect("edit as alice");
    assert!(out.status.success());
    let seen = events.until("memory.updated", |v| is(v, "memory.updated", &id));
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let task = marker(&d, &alice);
    let seen = events.until("the marker", |v| is(v, "task.created", &task));
    assert_eq!(seen.len(), 1, "{seen:#?}");
}

#[test]
#[ignore = "needs root"]
fn a_profile_removed_while_running_reports_its_records_deleted() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let events = Stream::settled(&d, &alice);
    let id = events.capture(&d, &alice, "soon gone");
    std::fs::remove_dir_all(d.profile(&alice)).expect("remove the profile");
    let seen = events.until("memory.deleted", |v| is(v, "memory.deleted", &id));
    assert!(seen.iter().all(|v| v["action"] == "deleted"), "{seen:#?}");
}

/// `user`'s memories listing: (ids with their text, problem files).
fn memories_listed(d: &Daemon, user: &TestUser) -> (Vec<(String, String)>, Vec<String>) {
    let (status, page) = d.api(Some(user), "GET", "/v1/memories?limit=100", None);
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    let problems = page["problems"].as_array().expect("problems");
    (
        items
            .iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or("").to_owned(),
                    m["text"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        problems
            .iter()
            .map(|p| p["file"].as_str().unwrap_or("").to_owned())
            .collect(),
    )
}

#[test]
#[ignore = "needs root"]
fn a_hand_edit_is_listed_once_its_event_arrives() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let events = Stream::settled(&d, &alice);
    let id = events.capture(&d, &alice, "first draft");
    let file = memory_file(&d, &alice, &id);
    let rel = file
        .strip_prefix(d.profile(&alice))
        .expect("relative")
        .display()
        .to_string();
    // The first listing builds the view.
    let (items, _) = memories_listed(&d, &alice);
    assert_eq!(items, vec![(id.clone(), "first draft\n".to_owned())]);

    // An editor's save (temp file renamed over the original).
    let text = std::fs::read_to_string(&file).expect("read");
    save_like_an_editor(&alice, &file, &text.replace("first draft", "edited in vim"));
    events.until("memory.updated", |v| is(v, "memory.updated", &id));
    let (items, problems) = memories_listed(&d, &alice);
    assert_eq!(items, vec![(id.clone(), "edited in vim\n".to_owned())]);
    assert!(problems.is_empty(), "{problems:?}");

    // A save that breaks the front matter: listed as a problem, as before.
    save_like_an_editor(
        &alice,
        &file,
        &text.replace("processed = false", "processed = flase"),
    );
    events.until("memory.updated (broken)", |v| is(v, "memory.updated", &id));
    let (items, problems) = memories_listed(&d, &alice);
    assert!(items.is_empty(), "{items:?}");
    assert_eq!(problems, vec![rel.clone()]);

    // A task written by hand appears in the task listing.
    let task_file = d
        .profile(&alice)
        .join("memory/tasks/task-written-by-hand.md");
    save_like_an_editor(&alice, &task_file, "+++\ntitle = \"by hand\"\n+++\n");
    events.until("task.created", |v| {
        is(v, "task.created", "task-written-by-hand")
    });
    let (status, tasks) = d.api(Some(&alice), "GET", "/v1/tasks?status=todo", None);
    assert_eq!(status, 200, "{tasks}");
    assert!(
        tasks["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|t| t["id"] == "task-written-by-hand" && t["title"] == "by hand"),
        "{tasks}"
    );

    // A deletion by hand: neither the record nor its problem is listed.
    let out = alice
        .command("rm")
        .arg(&file)
        .output()
        .expect("rm as alice");
    assert!(out.status.success());
    events.until("memory.deleted", |v| is(v, "memory.deleted", &id));
    let (items, problems) = memories_listed(&d, &alice);
    assert!(
        items.is_empty() && problems.is_empty(),
        "{items:?} {problems:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_text_too_long_for_the_view_is_listed_whole() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let long = format!("{}\n", "a long memory. ".repeat(400));
    let id = capture(&d, &alice, &long);
    // The first listing walks the profile; the second is served by the view,
    // which reads this one record from disk.
    for _ in 0..2 {
        let (items, problems) = memories_listed(&d, &alice);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(items, vec![(id.clone(), long.clone())]);
    }
}
