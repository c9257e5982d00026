//! The daemon as a systemd service: the notify protocol (ready, reloading,
//! watchdog pings), journald's log format, and the open-file limit. The
//! service manager's side is played by the test: a datagram socket named by
//! `NOTIFY_SOCKET`, the log file's device and inode in `JOURNAL_STREAM`.
//! (tests/package.rs runs the shipped unit under a real systemd.)

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};
use nix::sys::signal::Signal;

/// The notifications received until `until` says stop, or 10 s pass.
fn receive_until(sock: &UnixDatagram, mut until: impl FnMut(&[String]) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&seen) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

/// The `MONOTONIC_USEC` sent with the first `RELOADING=1` in `seen`.
fn monotonic_usec(seen: &[String]) -> u64 {
    let reloading = seen
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 after SIGHUP: {seen:?}"));
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0, "{reloading:?}");
    usec
}

#[test]
#[ignore = "needs root"]
fn the_daemon_pings_the_watchdog_and_tells_systemd_of_each_reload() {
    require_root();
    let mut d = Daemon::configure("");
    let path = d.scratch.path.join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // WatchdogSec=400ms: a ping every 200 ms.
    d.spawn_with(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .expect("the daemon starts");

    let pings = |seen: &[String]| seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let seen = receive_until(&sock, |seen| pings(seen) >= 3);
    assert!(
        seen.iter().any(|m| m.contains("READY=1")),
        "no READY=1: {seen:?}"
    );
    assert!(
        pings(&seen) >= 3,
        "fewer than 3 watchdog pings in 10 s: {seen:?}"
    );

    // A reload is RELOADING=1 with the monotonic clock, then READY=1 ...
    d.signal(Signal::SIGHUP);
    let seen = receive_until(&sock, |seen| {
        seen.iter()
            .skip_while(|m| !m.contains("RELOADING=1"))
            .any(|m| m.contains("READY=1"))
    });
    let first = monotonic_usec(&seen);
    // ... also when the new config is refused: systemd must not wait on it.
    std::fs::write(&d.config, "[paths]\nnonsense = 1\n").expect("break the config");
    d.signal(Signal::SIGHUP);
    let seen = receive_until(&sock, |seen| {
        seen.iter()
            .skip_while(|m| !m.contains("RELOADING=1"))
            .any(|m| m.contains("READY=1"))
    });
    assert!(
        seen.iter()
            .skip_while(|m| !m.contains("RELOADING=1"))
            .any(|m| m.contains("READY=1")),
        "no RELOADING=1 then READY=1 for a refused config: {seen:?}"
    );
    // systemd tells one reload from the next by the clock.
    let second = monotonic_usec(&seen);
    assert!(second > first, "MONOTONIC_USEC {second} after {first}");

    // And the pings go on after the reloads.
    let seen = receive_until(&sock, |seen| pings(seen) >= 2);
    assert!(pings(&seen) >= 2, "the pings stopped: {seen:?}");
    let status = d.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    let mut buf = [0u8; 4096];
    let mut last = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        last.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        last.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1: {last:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn under_journald_each_line_has_its_priority_and_no_timestamp_and_other_crates_are_quiet() {
    require_root();
    let mut d = Daemon::configure("");
    let dir = d.scratch.path.join("agents.d");
    std::fs::create_dir(&dir).expect("agents.d");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/etc/agents.d/builtin.toml"),
        dir.join("builtin.toml"),
    )
    .expect("install builtin.toml");
    let config = std::fs::read_to_string(&d.config).expect("read the config");
    let config = config.replacen(
        "[paths]\n",
        &format!("[paths]\nagents_dir = \"{}\"\n", dir.display()),
        1,
    );
    std::fs::write(&d.config, config).expect("write the config");
    // The daemon's standard error is the log file: name it as the journal's
    // stream, as systemd does.
    std::fs::write(d.log_path(), "").expect("create the log");
    let md = std::fs::metadata(d.log_path()).expect("stat the log");
    let stream = format!("{}:{}", md.dev(), md.ino());
    d.spawn_with(&[], &[("JOURNAL_STREAM", &stream)])
        .expect("the daemon starts");

    // The index agent runs tantivy, which logs at info.
    let alice = TestUser::new("alice");
    d.ok(Some(&alice), &["capture", "tantivy should stay quiet"]);
    d.ok(Some(&alice), &["agent", "run", "index"]);
    // A refused reload is an error.
    std::fs::write(&d.config, "[paths]\nnonsense = 1\n").expect("break the config");
    d.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("config reload refused") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log_text();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("serving on")),
        "no <6> serving line: {log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<3>") && l.contains("config reload refused")),
        "the refused reload is not <3>: {log}"
    );
    for line in log.lines() {
        assert!(
            line.len() > 3 && line.starts_with('<') && line.as_bytes()[2] == b'>',
            "a line without a priority: {line:?} in {log}"
        );
        // No timestamp of our own (the journal has one): no "2026-12-…".
        assert!(
            !line[3..].starts_with(|c: char| c.is_ascii_digit()),
            "a line with a timestamp: {line:?}"
        );
        assert!(
            !(line.contains("tantivy") && (line.starts_with("<6>") || line.starts_with("<7>"))),
            "tantivy's info chatter in the log: {line:?}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn without_the_journal_lines_keep_their_timestamps() {
    require_root();
    let mut d = Daemon::configure("");
    // JOURNAL_STREAM inherited from a service, but stderr is a file.
    d.spawn_with(&[], &[("JOURNAL_STREAM", "1:1")])
        .expect("the daemon starts");
    let log = d.log_text();
    let serving = log
        .lines()
        .find(|l| l.contains("serving on"))
        .unwrap_or_else(|| panic!("no serving line: {log}"));
    assert!(
        serving.starts_with(|c: char| c.is_ascii_digit()) && serving.contains(" INFO "),
        "not a plain line with a timestamp: {serving:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    require_root();
    let mut d = Daemon::configure("");
    d.spawn_with(&["prlimit", "--nofile=256:8192", "--"], &[])
        .expect("the daemon starts");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("read its limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["8192", "8192"], "{line}");
    assert!(
        d.log_text()
            .contains("open-file limit raised from 256 to 8192"),
        "{}",
        d.log_text()
    );
}
