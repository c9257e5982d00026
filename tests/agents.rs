//! Agents with real accounts and real child processes: who they run as,
//! what they see, cycles under locks (also across two daemons), failures,
//! timeouts, kill -9 of the daemon, SIGTERM, and invalid declarations.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, KillOnDrop, PROFILECTL, TestGroup, TestUser, controls, require_root};
use serde_json::Value;

/// A daemon whose agents.d is `<scratch>/agents.d` holding `files`, with
/// `paths` added to [paths] and `extra` appended to the config.
fn daemon_with(files: &[(&str, String)], paths: &str, extra: &str) -> (Daemon, PathBuf) {
    let d = Daemon::configure(extra);
    let agents_d = d.scratch.path.join("agents.d");
    std::fs::create_dir(&agents_d).expect("create agents.d");
    for (name, text) in files {
        std::fs::write(agents_d.join(name), text).expect("write an agents.d file");
    }
    let config = std::fs::read_to_string(&d.config).expect("read config");
    let config = config.replacen(
        "[paths]\n",
        &format!("[paths]\nagents_dir = \"{}\"\n{paths}", agents_d.display()),
        1,
    );
    std::fs::write(&d.config, config).expect("write config");
    (d, agents_d)
}

fn start(mut d: Daemon) -> Daemon {
    d.spawn().expect("the daemon starts");
    d
}

/// Writes a shell script into the scratch directory (readable by all).
fn script(d: &Daemon, name: &str, body: &str) -> PathBuf {
    let path = d.scratch.path.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    path
}

/// Waits until `check` holds, failing after a generous deadline.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a cycle of `agent` from a background profilectl, and waits until
/// the agent has written its background child's pid to `out/pid` in
/// `user`'s profile. Dropping the result kills that profilectl.
fn run_in_background(d: &Daemon, agent: &str, user: &TestUser) -> KillOnDrop {
    let runner = KillOnDrop(
        Command::new(PROFILECTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(["agent", "run", agent, "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn profilectl"),
    );
    let pid_file = d.profile(user).join("out/pid");
    wait_for("the agent to start", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    runner
}

/// The runs recorded in `user`'s log of `agent`, oldest first.
fn runs(d: &Daemon, user: &TestUser, agent: &str) -> Vec<Value> {
    let path = d.profile(user).join(format!("logs/agents/{agent}.jsonl"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a run line is JSON"))
        .collect()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Whether any process of `user` is alive (`pgrep -u`). A zombie left to
/// init is dead and holds nothing (this container's init may never reap
/// it), so it does not count.
fn has_processes(user: &TestUser) -> bool {
    let out = Command::new("pgrep")
        .args(["-u", &user.uid.to_string()])
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
}

/// Whether `user` runs a process named `name` (her agent, say, rather than
/// the profilectl that asked for it, which is hers too).
fn runs_program(user: &TestUser, name: &str) -> bool {
    Command::new("pgrep")
        .args(["-u", &user.uid.to_string(), "-x", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `ps` of `user`'s processes, for failure messages.
fn ps(user: &TestUser) -> String {
    Command::new("ps")
        .args([
            "-o",
            "pid,ppid,pgid,sid,stat,cmd",
            "-u",
            &user.uid.to_string(),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn set_key(d: &Daemon, user: &TestUser, provider: &str, secret: &str) {
    let out = d.ctl_stdin(
        Some(user),
        &["creds", "set", provider],
        Some(&format!("{secret}\n")),
    );
    assert!(
        out.status.success(),
        "creds set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `key=value` lines of a probe's report.
fn report(path: &Path) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path).expect("the probe wrote its report");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    out
}

fn one<'a>(r: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    r.get(key)
        .and_then(|v| v.first())
        .map_or("", String::as_str)
}

const PROBE: &str = r#"
exec > out/probe.txt 2>&1
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "pwd=$(pwd -P)"
echo "creds=$(ls "$CREDENTIALS_DIRECTORY" | tr '\n' ' ')"
echo "openai_file=$(cat "$CREDENTIALS_DIRECTORY/openai")"
echo "openai_env=$OPENAI_API_KEY"
for p in "$PROFILE_DIR"/../*/; do
  if ls "$p" >/dev/null 2>&1; then echo "readable=$(basename "$p")"; fi
  if cat "$p/profile.toml" >/dev/null 2>&1; then echo "read_settings=$(basename "$p")"; fi
done
env | cut -d= -f1 | sed 's/^/env=/'
echo "self=$$"
echo "pgrp_sid=$(cut -d' ' -f5,6 /proc/$$/stat)"
grep -E '^Sig(Blk|Ign):' /proc/$$/status | tr -d '\t' | sed 's/^SigBlk:/sigblk=/; s/^SigIgn:/sigign=/'
# The parent-death signal is per process and not inherited: ask for it
# from this very process, by exec.
if command -v python3 >/dev/null; then
  exec python3 -c 'import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print("pdeathsig=%d" % v.value)'
fi
"#;

#[test]
#[ignore = "needs root"]
fn external_agent_runs_as_each_user_with_only_its_credentials() {
    require_root();
    let (alice, bob, carol) = (
        TestUser::new("alice"),
        TestUser::new("bob"),
        TestUser::new("carol"),
    );
    let team = TestGroup::new("team");
    team.add(&alice);
    let team_gid = nix::unistd::Group::from_name(&team.name)
        .expect("getgrnam")
        .expect("the group exists")
        .gid
        .as_raw();
    let (d, _) = daemon_with(&[], "", "");
    let probe = script(&d, "probe.sh", PROBE);
    std::fs::write(
        d.scratch.path.join("agents.d/probe.toml"),
        format!(
            "[agents.probe]\ncommand = [\"/bin/sh\", \"{}\"]\ncredentials = [\"openai\"]\nenv = {{ OPENAI_API_KEY = \"openai\" }}\ntimeout = \"60s\"\n",
            probe.display()
        ),
    )
    .expect("write probe.toml");
    let d = start(d);
    for u in [&alice, &bob, &carol] {
        d.ok(Some(u), &["status"]);
        set_key(&d, u, "openai", &format!("sk-openai-{}", u.name));
        set_key(&d, u, "anthropic", &format!("sk-anthropic-{}", u.name));
    }
    let out = d.ok(None, &["agent", "run", "probe", "--all"]);
    assert!(out.contains("ran (3 users)"), "{out}");

    let allowed: BTreeSet<&str> = [
        "HOME",
        "USER",
        "LOGNAME",
        "PATH",
        "SHELL",
        "PROFILE_DIR",
        "PROFILED_AGENT",
        "PROFILED_RUN_ID",
        "CREDENTIALS_DIRECTORY",
        "OPENAI_API_KEY",
        // What sh itself exports.
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ]
    .into_iter()
    .collect();
    for u in [&alice, &bob, &carol] {
        let r = report(&d.profile(u).join("out/probe.txt"));
        assert_eq!(one(&r, "uid"), u.uid.to_string(), "{r:?}");
        assert_eq!(one(&r, "gid"), u.gid.to_string(), "{r:?}");
        let groups: BTreeSet<u32> = one(&r, "groups")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        assert!(!groups.contains(&0), "root's group leaked: {r:?}");
        assert_eq!(groups.contains(&team_gid), u.name == alice.name, "{r:?}");
        assert_eq!(
            Path::new(one(&r, "pwd")),
            d.profile(u).canonicalize().expect("canonical profile path")
        );
        // Its own session and process group (timeouts kill the group).
        let me = one(&r, "self");
        assert_eq!(one(&r, "pgrp_sid"), format!("{me} {me}"), "{r:?}");
        // No signal of the daemon's stays blocked or ignored.
        assert_eq!(one(&r, "sigblk"), "0000000000000000", "{r:?}");
        assert_eq!(one(&r, "sigign"), "0000000000000000", "{r:?}");
        // SIGKILL when the daemon dies (set after the uid change, which
        // would clear it). Checked where python3 is there to ask.
        if let Some(sig) = r.get("pdeathsig") {
            assert_eq!(sig, &vec!["9".to_owned()], "{r:?}");
        }
        assert_eq!(one(&r, "creds").trim(), "openai", "only the declared key");
        assert_eq!(one(&r, "openai_file"), format!("sk-openai-{}", u.name));
        assert_eq!(one(&r, "openai_env"), format!("sk-openai-{}", u.name));
        assert_eq!(r.get("readable"), Some(&vec![u.name.clone()]), "{r:?}");
        assert!(
            r.get("read_settings")
                .is_none_or(|v| v.iter().all(|n| *n == u.name)),
            "{r:?}"
        );
        let env: BTreeSet<&str> = r["env"].iter().map(String::as_str).collect();
        for needed in ["HOME", "USER", "PATH", "PROFILE_DIR", "PROFILED_RUN_ID"] {
            assert!(env.contains(needed), "{needed} missing: {env:?}");
        }
        assert!(env.is_subset(&allowed), "unexpected variables: {env:?}");
        let logged = runs(&d, u, "probe");
        assert_eq!(logged.len(), 1);
        assert_eq!(field(&logged[0], "status"), "ok", "{:?}", logged[0]);
        // The run log is the user's, not root's.
        let md = std::fs::metadata(d.profile(u).join("logs/agents/probe.jsonl")).expect("run log");
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), u.uid);
    }
    // The private key directories are gone after the runs.
    let left: Vec<_> = std::fs::read_dir(d.scratch.path.join("run/credentials"))
        .expect("credentials dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[ignore = "needs root"]
fn failures_and_timeouts_are_recorded_and_the_cycle_goes_on() {
    require_root();
    let users: Vec<TestUser> = ["alice", "bob", "carol", "dave", "erin"]
        .into_iter()
        .map(TestUser::new)
        .collect();
    // One user at a time, so the runs never overlap (with the default
    // `cycle_parallel` they run side by side: see
    // a_user_stopping_her_run_does_not_hold_up_the_others_in_a_cycle).
    let (d, _) = daemon_with(
        &[],
        "",
        "[agents]\nkill_grace = \"1s\"\ncycle_parallel = 1\n",
    );
    let body = r#"case "$USER" in
  *bob) echo "bob fails"; exit 1 ;;
  *carol) sleep 1000 & echo $! > out/child; sleep 1000 ;;
esac
echo "done for $USER""#;
    let agent = script(&d, "flaky.sh", body);
    std::fs::write(
        d.scratch.path.join("agents.d/flaky.toml"),
        format!(
            "[agents.flaky]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"2s\"\n",
            agent.display()
        ),
    )
    .expect("write flaky.toml");
    let d = start(d);
    for u in &users {
        d.ok(Some(u), &["status"]);
    }
    for _cycle in 0..2 {
        let out = d.ok(None, &["agent", "run", "flaky", "--all"]);
        assert!(out.contains("ran (5 users)"), "{out}");
    }
    let mut all = Vec::new();
    for u in &users {
        let logged = runs(&d, u, "flaky");
        assert_eq!(logged.len(), 2, "{} ran once per cycle: {logged:?}", u.name);
        for run in &logged {
            let expected = match &u.name {
                n if n.ends_with("bob") => "failed",
                n if n.ends_with("carol") => "timeout",
                _ => "ok",
            };
            assert_eq!(field(run, "status"), expected, "{run:?}");
            if expected == "failed" {
                assert_eq!(run["exit_code"], 1);
                assert!(field(run, "output").contains("bob fails"));
            }
            all.push((field(run, "start").to_owned(), field(run, "end").to_owned()));
        }
    }
    let carol = &users[2];
    assert!(
        !has_processes(carol),
        "carol's process group is gone: {}",
        ps(carol)
    );
    all.sort();
    for pair in all.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }
}

#[test]
#[ignore = "needs root"]
fn two_daemons_sharing_a_lock_dir_run_each_user_once_per_cycle() {
    require_root();
    let users: Vec<TestUser> = ["alice", "bob", "carol"]
        .into_iter()
        .map(TestUser::new)
        .collect();
    let (first, agents_d) = daemon_with(&[], "", "");
    let locks = first.scratch.path.join("shared-locks");
    let tick = script(&first, "tick.sh", "echo tick >> out/ticks");
    std::fs::write(
        agents_d.join("tick.toml"),
        format!(
            "[agents.tick]\ncommand = [\"/bin/sh\", \"{}\"]\nevery = \"1s\"\n",
            tick.display()
        ),
    )
    .expect("write tick.toml");
    let config = std::fs::read_to_string(&first.config).expect("config");
    std::fs::write(
        &first.config,
        config.replacen(
            "[paths]\n",
            &format!("[paths]\nlock_dir = \"{}\"\n", locks.display()),
            1,
        ),
    )
    .expect("config");
    let first = start(first);
    for u in &users {
        first.ok(Some(u), &["status"]);
    }
    let (second, _) = daemon_with(
        &[],
        &format!(
            "profiles_dir = \"{}\"\nlock_dir = \"{}\"\n",
            first.profiles.display(),
            locks.display()
        ),
        "",
    );
    // Both read the same agents.d.
    let config = std::fs::read_to_string(&second.config).expect("config");
    std::fs::write(
        &second.config,
        config.replacen(
            &format!(
                "agents_dir = \"{}\"",
                second.scratch.path.join("agents.d").display()
            ),
            &format!("agents_dir = \"{}\"", agents_d.display()),
            1,
        ),
    )
    .expect("config");
    let mut second = start(second);
    wait_for("six cycles for every user", || {
        users.iter().all(|u| runs(&first, u, "tick").len() >= 6)
    });
    second.kill9();
    let mut first = first;
    first.kill9();
    let mut daemons = BTreeSet::new();
    for u in &users {
        let logged = runs(&first, u, "tick");
        let slots: Vec<i64> = logged.iter().filter_map(|r| r["slot"].as_i64()).collect();
        assert_eq!(slots.len(), logged.len(), "every run is a scheduled one");
        let unique: BTreeSet<i64> = slots.iter().copied().collect();
        assert_eq!(
            unique.len(),
            slots.len(),
            "{}: a slot ran twice: {slots:?}",
            u.name
        );
        daemons.extend(logged.iter().filter_map(|r| r["daemon_pid"].as_u64()));
    }
    eprintln!("runs came from daemons {daemons:?}");
}

#[test]
#[ignore = "needs root"]
fn kill9_of_the_daemon_takes_its_agents_down_and_leaves_no_stale_lock() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let hang = script(
        &d,
        "hang.sh",
        "if [ -e out/hung ]; then echo fine; exit 0; fi\ntouch out/hung\nsleep 1000 &\necho $! > out/pid\nwait",
    );
    std::fs::write(
        agents_d.join("hang.toml"),
        format!(
            "[agents.hang]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"1h\"\n",
            hang.display()
        ),
    )
    .expect("write hang.toml");
    let mut d = start(d);
    d.ok(Some(&alice), &["status"]);
    let _runner = run_in_background(&d, "hang", &alice);
    assert!(has_processes(&alice));
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(60);
    while has_processes(&alice) {
        assert!(
            Instant::now() < deadline,
            "alice's agent processes outlived the daemon: {}",
            ps(&alice)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.spawn().expect("the daemon restarts");
    let out = d.ok(None, &["agent", "run", "hang", "--all"]);
    assert!(out.contains("ran (1 users)"), "{out}");
    let logged = runs(&d, &alice, "hang");
    assert_eq!(
        logged.last().map(|r| field(r, "status").to_owned()),
        Some("ok".to_owned()),
        "{logged:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn sigterm_lets_the_run_finish_within_the_grace_then_kills_it() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "[agents]\nshutdown_grace = \"1s\"\n");
    let hang = script(&d, "slow.sh", "sleep 1000 &\necho $! > out/pid\nwait");
    std::fs::write(
        agents_d.join("slow.toml"),
        format!(
            "[agents.slow]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"1h\"\n",
            hang.display()
        ),
    )
    .expect("write slow.toml");
    let mut d = start(d);
    d.ok(Some(&alice), &["status"]);
    let _runner = run_in_background(&d, "slow", &alice);
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    assert!(!has_processes(&alice), "nothing of alice's is left running");
    let logged = runs(&d, &alice, "slow");
    assert_eq!(logged.len(), 1);
    assert_eq!(field(&logged[0], "status"), "stopped", "{logged:?}");
}

#[test]
#[ignore = "needs root"]
fn invalid_declarations_are_reported_and_the_rest_still_run() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let (d, agents_d) = daemon_with(
        &[],
        "",
        &format!("[accounts]\nadmins = [\"{}\"]\n", alice.name),
    );
    let ok = script(&d, "ok.sh", "echo fine");
    let good = |name: &str| {
        format!(
            "[agents.{name}]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            ok.display()
        )
    };
    std::fs::write(agents_d.join("good.toml"), good("good")).expect("write");
    std::fs::write(agents_d.join("kept.toml"), good("kept")).expect("write");
    std::fs::write(
        agents_d.join("bad.toml"),
        "[agents.bad]\ncommand = [\"/bin/true\"]\nevery = \"soon\"\n",
    )
    .expect("write");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let problems = |d: &Daemon| {
        let (status, v) = d.api(Some(&alice), "GET", "/v1/agents", None);
        assert_eq!(status, 200, "{v}");
        v["problems"].to_string()
    };
    let bad = agents_d.join("bad.toml");
    assert!(
        problems(&d).contains(&format!("{}:3:", bad.display())),
        "{}",
        problems(&d)
    );
    assert!(d.log_text().contains(&format!("{}:3:", bad.display())));

    // kept.toml breaks: its last good version stays in force.
    std::fs::write(agents_d.join("kept.toml"), "[agents.kept]\ncommand = 3\n").expect("write");
    let kept = agents_d.join("kept.toml");
    wait_for("the broken kept.toml to be reported", || {
        problems(&d).contains(&format!("{}:2:", kept.display()))
    });
    for agent in ["good", "kept"] {
        let out = d.ok(None, &["agent", "run", agent, "--all"]);
        assert!(out.contains("ran (2 users)"), "{agent}: {out}");
    }

    // bob switches `good` off for himself, and declares one of his own with
    // a mistake: reported with its line; the admins' agents still run.
    std::fs::write(
        d.profile(&bob).join("profile.toml"),
        format!(
            "[agents.good]\nenabled = false\n\n[agents.mine]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"a while\"\n",
            ok.display()
        ),
    )
    .expect("write bob's settings");
    let (_, v) = d.api(Some(&bob), "GET", "/v1/agents", None);
    assert!(
        v["problems"]
            .to_string()
            .contains("profile.toml:6: timeout"),
        "{v}"
    );
    let names: Vec<&str> = v["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        names.contains(&"good") && names.contains(&"kept"),
        "{names:?}"
    );

    std::fs::write(
        d.profile(&bob).join("profile.toml"),
        format!(
            "[agents.good]\nenabled = false\n\n[agents.mine]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            ok.display()
        ),
    )
    .expect("write bob's settings");
    let out = d.ok(None, &["agent", "run", "good", "--all"]);
    assert!(out.contains("ran (1 users)"), "bob switched it off: {out}");
    let out = d.ok(Some(&bob), &["agent", "run", "mine"]);
    assert!(out.contains("ok"), "{out}");
    let logs = d.ok(Some(&bob), &["agent", "logs", "mine"]);
    assert!(logs.contains("fine"), "{logs}");
    // alice has no agent named mine.
    let out = d.ctl(Some(&alice), &["agent", "run", "mine"]);
    assert!(!out.status.success());
}

#[test]
#[ignore = "needs root"]
fn a_file_dropped_in_the_inbox_triggers_a_run_for_that_user_only() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let (d, agents_d) = daemon_with(&[], "", "[agents]\ndebounce = \"1s\"\n");
    let seen = script(&d, "seen.sh", "ls memory/inbox");
    std::fs::write(
        agents_d.join("seen.toml"),
        format!(
            "[agents.seen]\ncommand = [\"/bin/sh\", \"{}\"]\non_change = [\"memory/inbox/*\"]\n",
            seen.display()
        ),
    )
    .expect("write seen.toml");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let note = d.profile(&alice).join("memory/inbox/note.md");
    std::fs::write(&note, "hello").expect("drop a file");
    std::os::unix::fs::chown(&note, Some(alice.uid), Some(alice.gid)).expect("chown");
    wait_for("the triggered run", || !runs(&d, &alice, "seen").is_empty());
    let run = &runs(&d, &alice, "seen")[0];
    assert_eq!(
        field(run, "trigger"),
        "change:memory/inbox/note.md",
        "{run:?}"
    );
    assert_eq!(field(run, "status"), "ok");
    assert!(field(run, "output").contains("note.md"));
    assert!(
        runs(&d, &bob, "seen").is_empty(),
        "bob's profile did not change"
    );
}

/// The shipped built-ins (etc/agents.d/builtin.toml) end to end: files
/// dropped in the inbox become memories through the ingest agent's trigger,
/// the index agent follows, `profilectl remember` finds them, and the same
/// files dropped again add nothing.
#[test]
#[ignore = "needs root"]
fn dropped_files_become_memories_that_remember_finds_once() {
    require_root();
    let alice = TestUser::new("alice");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/agents.d/builtin.toml"),
    )
    .expect("read the shipped built-in agents");
    let (d, _) = daemon_with(
        &[("builtin.toml", shipped)],
        "",
        "[agents]\ndebounce = \"1s\"\n",
    );
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let inbox = d.profile(&alice).join("memory/inbox");
    let drop_all = || {
        for i in 0..100 {
            let file = inbox.join(format!("note-{i:03}.txt"));
            std::fs::write(&file, format!("field note {i}: the zebrafinch{i} sang"))
                .expect("drop a file");
            std::os::unix::fs::chown(&file, Some(alice.uid), Some(alice.gid)).expect("chown");
        }
    };
    let memories = || {
        let out = d.ok(Some(&alice), &["memories", "--json", "--limit", "200"]);
        let page: Value = serde_json::from_str(&out).expect("memory list --json is JSON");
        page["items"].as_array().map_or(0, Vec::len)
    };
    let inbox_empty = || {
        std::fs::read_dir(&inbox)
            .expect("list the inbox")
            .filter_map(Result::ok)
            .all(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    };
    let remembered = |word: &str| {
        let out = d.ok(Some(&alice), &["remember", word, "--json"]);
        let v: Value = serde_json::from_str(&out).expect("remember --json is JSON");
        v["hits"].as_array().map_or(0, Vec::len)
    };

    drop_all();
    wait_for("the inbox to be ingested", || {
        inbox_empty() && memories() == 100
    });
    wait_for("the index to find the notes", || {
        remembered("zebrafinch42") == 1
    });
    assert!(
        runs(&d, &alice, "ingest")
            .iter()
            .all(|r| field(r, "status") == "ok"),
        "{:?}",
        runs(&d, &alice, "ingest")
    );

    let ingest_runs = runs(&d, &alice, "ingest").len();
    drop_all();
    wait_for("the second drop to be handled", || {
        inbox_empty() && runs(&d, &alice, "ingest").len() > ingest_runs
    });
    assert_eq!(memories(), 100, "the same files again add no memory");
    assert_eq!(remembered("zebrafinch42"), 1);
}

/// A built-in that needs the user to act (organize with no model set)
/// records a run whose error says what to set, and sends nothing.
#[test]
#[ignore = "needs root"]
fn a_builtin_that_needs_the_user_records_what_to_do() {
    require_root();
    let alice = TestUser::new("alice");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/agents.d/builtin.toml"),
    )
    .expect("read the shipped built-in agents");
    let (d, _) = daemon_with(&[("builtin.toml", shipped)], "", "");
    let d = start(d);
    d.ok(Some(&alice), &["capture", "an untagged note"]);
    let _ = d.ctl(Some(&alice), &["agent", "run", "organize"]);
    let logged = runs(&d, &alice, "organize");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(field(&logged[0], "status"), "error", "{logged:?}");
    assert!(
        field(&logged[0], "error").contains("[model]"),
        "the error names what to set: {logged:?}"
    );
}

/// A run log that grew large is rotated to `<agent>.jsonl.1` before the
/// next line, so it stays readable (`agent logs`) and bounded.
#[test]
#[ignore = "needs root"]
fn a_full_run_log_is_rotated_and_stays_readable() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, _) = daemon_with(
        &[(
            "quiet.toml",
            "[agents.quiet]\ncommand = [\"/bin/true\"]\n".to_owned(),
        )],
        "",
        "",
    );
    let d = start(d);
    d.ok(Some(&alice), &["agent", "run", "quiet"]);
    let first = runs(&d, &alice, "quiet");
    assert_eq!(first.len(), 1, "{first:?}");
    let line = format!(
        "{}\n",
        serde_json::to_string(&first[0]).expect("a run as JSON")
    );
    let log = d.profile(&alice).join("logs/agents/quiet.jsonl");
    let filler = line.repeat(600 * 1024 / line.len() + 1);
    std::fs::write(&log, &filler).expect("grow the log");
    std::os::unix::fs::chown(&log, Some(alice.uid), Some(alice.gid)).expect("chown");

    d.ok(Some(&alice), &["agent", "run", "quiet"]);
    let rotated = d.profile(&alice).join("logs/agents/quiet.jsonl.1");
    assert_eq!(
        std::fs::read_to_string(&rotated).expect("the rotated log"),
        filler,
        "the full log moved aside byte for byte"
    );
    assert_eq!(runs(&d, &alice, "quiet").len(), 1, "a new log was started");
    let out = d.ok(Some(&alice), &["--json", "agent", "logs", "quiet"]);
    assert!(
        out.contains("\"status\""),
        "the logs read across both files: {out}"
    );
}

/// Rule 7 for a user's own agents: a profile.toml broken by an edit keeps
/// the last good declarations in force, reports file:line, and a fixed file
/// applies at once.
#[test]
#[ignore = "needs root"]
fn a_broken_profile_toml_keeps_the_last_good_agents_in_force() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, _) = daemon_with(&[], "", "");
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let settings = d.profile(&alice).join("profile.toml");
    let write = |text: &str| {
        std::fs::write(&settings, text).expect("write profile.toml");
        std::os::unix::fs::chown(&settings, Some(alice.uid), Some(alice.gid)).expect("chown");
    };
    write("[agents.mine]\ncommand = [\"/bin/true\"]\n");
    let out = d.ok(Some(&alice), &["agent", "run", "mine"]);
    assert!(out.contains("ok"), "{out}");

    write("display_name = \"Alice\"\n[agents.mine\ncommand = [\"/bin/true\"]\n");
    let out = d.ok(Some(&alice), &["agent", "run", "mine"]);
    assert!(
        out.contains("ok"),
        "the last good declaration still runs: {out}"
    );
    let (status, v) = d.api(Some(&alice), "GET", "/v1/agents", None);
    assert_eq!(status, 200, "{v}");
    assert!(
        v["problems"].to_string().contains("profile.toml:2"),
        "the problem is reported with its line: {v}"
    );

    write("display_name = \"Alice\"\n");
    let out = d.ctl(Some(&alice), &["agent", "run", "mine"]);
    assert!(
        !out.status.success(),
        "the fixed file no longer declares it"
    );
    let (_, v) = d.api(Some(&alice), "GET", "/v1/agents", None);
    assert_eq!(v["problems"].as_array().map_or(0, Vec::len), 0, "{v}");
}

/// Issue 13: an editor saving in place (truncate, then write) leaves a
/// valid prefix of the file on disk for a moment (empty, or the lines
/// before `[agents]`); read then, it would take the user's agents away.
#[test]
#[ignore = "needs root"]
fn an_edit_written_in_place_byte_by_byte_never_takes_the_agents_away() {
    use std::io::Write;
    require_root();
    let alice = TestUser::new("alice");
    let (d, _) = daemon_with(&[], "", "");
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let settings = d.profile(&alice).join("profile.toml");
    // Every prefix that ends before `[agents.mine]` is valid TOML without
    // the agent: the empty file, the first line, the comment.
    let text = |name: &str| {
        format!(
            "display_name = \"{name}\"\n# a comment long enough to be read half written\n\
             [agents.mine]\ncommand = [\"/bin/true\"]\n"
        )
    };
    std::fs::write(&settings, text("Alice")).expect("write profile.toml");
    std::os::unix::fs::chown(&settings, Some(alice.uid), Some(alice.gid)).expect("chown");
    let names = |d: &Daemon| {
        let (status, v) = d.api(Some(&alice), "GET", "/v1/agents", None);
        assert_eq!(status, 200, "{v}");
        v["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str().map(str::to_owned))
            .collect::<Vec<String>>()
    };
    assert!(names(&d).contains(&"mine".to_owned()));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (done, settings) = (done.clone(), settings.clone());
        std::thread::spawn(move || {
            for pass in 0..12 {
                let mut file = std::fs::File::create(&settings).expect("truncate profile.toml");
                for byte in text(if pass % 2 == 0 { "Al" } else { "Alice" }).bytes() {
                    file.write_all(&[byte]).expect("write a byte");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut polls = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let now = names(&d);
        assert!(
            now.contains(&"mine".to_owned()),
            "poll {polls}: the agent vanished while profile.toml was written: {now:?}"
        );
        polls += 1;
    }
    writer.join().expect("writer");
    assert!(
        polls > 0,
        "the agents were never polled while the file was written"
    );
    assert!(names(&d).contains(&"mine".to_owned()));
    let (_, v) = d.api(Some(&alice), "GET", "/v1/settings", None);
    assert_eq!(
        v["settings"]["display_name"], "Alice",
        "the last edit applies: {v}"
    );
}

/// An nsswitch.conf of our own, removed on drop.
struct NsswitchFile(PathBuf);

impl NsswitchFile {
    fn new(text: &str) -> NsswitchFile {
        let path = std::env::temp_dir().join(format!("pft-nsswitch-{}", common::tag()));
        std::fs::write(&path, text).expect("write nsswitch file");
        NsswitchFile(path)
    }
}

impl Drop for NsswitchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
#[ignore = "needs root"]
fn a_cycle_snapshot_of_the_account_files_answers_as_nss_does() {
    require_root();
    use profiled::accounts::{self, Files, Snapshot};
    let user = TestUser::new("snap");
    let (first, second, other) = (
        TestGroup::new("sga"),
        TestGroup::new("sgb"),
        TestGroup::new("sgc"),
    );
    first.add(&user);
    second.add(&user);
    let nss = accounts::by_name(&user.name)
        .expect("getpwnam")
        .expect("the account exists");
    let set = |v: Vec<accounts::GroupId>| v.into_iter().collect::<BTreeSet<_>>();
    let from_nss = set(nss.groups().expect("getgrouplist"));
    let conf = NsswitchFile::new("passwd: files\ngroup: files\n");
    let files = Files {
        nsswitch: conf.0.clone(),
        ..Files::default()
    };
    // Answered from the files (nss-files only), and from whatever this
    // host's nsswitch.conf allows: both the same as NSS.
    for snapshot in [Snapshot::of(files.clone()), Snapshot::new()] {
        let account = snapshot
            .by_name(&user.name)
            .expect("lookup")
            .expect("found");
        assert_eq!(account, nss);
        let groups = snapshot.groups(&account).expect("groups");
        assert_eq!(groups.first(), Some(&account.gid), "primary group first");
        assert_eq!(set(groups), from_nss);
        assert_eq!(from_nss.len(), 3, "primary, first and second: {from_nss:?}");
        for (group, member) in [(&first, true), (&second, true), (&other, false)] {
            assert_eq!(
                snapshot
                    .is_member_of(&account, &group.name)
                    .expect("member"),
                member,
                "{}",
                group.name
            );
        }
    }
    assert!(Snapshot::of(files.clone()).sources().group_files_only);
    // A snapshot is of one moment: the next one no longer has a removed
    // account (a cycle takes a new one each time).
    let name = user.name.clone();
    drop(user);
    assert_eq!(Snapshot::of(files).by_name(&name).expect("lookup"), None);
    assert_eq!(Snapshot::new().by_name(&name).expect("lookup"), None);
}

#[test]
#[ignore = "needs root"]
fn an_account_removed_between_cycles_gets_no_run() {
    require_root();
    let (stay, leave) = (TestUser::new("stay"), TestUser::new("leave"));
    let (d, _) = daemon_with(
        &[(
            "noop.toml",
            "[agents.noop]\ncommand = [\"/bin/true\"]\n".to_owned(),
        )],
        "",
        "",
    );
    let d = start(d);
    for u in [&stay, &leave] {
        d.ok(Some(u), &["status"]);
    }
    let out = d.ok(None, &["agent", "run", "noop", "--all"]);
    assert!(out.contains("ran (2 users)"), "{out}");
    let left_behind = d.profile(&leave);
    drop(leave);
    let out = d.ok(None, &["agent", "run", "noop", "--all"]);
    assert!(out.contains("ran (1 users)"), "{out}");
    assert_eq!(runs(&d, &stay, "noop").len(), 2);
    let log = std::fs::read_to_string(left_behind.join("logs/agents/noop.jsonl"))
        .expect("the first cycle's log");
    assert_eq!(
        log.lines().count(),
        1,
        "no run after the account went: {log}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_program_that_cannot_start_is_an_error_that_says_why_and_names_are_found_in_path() {
    require_root();
    let user = TestUser::new("exec");
    let (d, agents_d) = daemon_with(&[], "", "");
    // Written without the execute bit.
    let not_executable = script(&d, "plain.sh", "exit 0");
    std::fs::write(
        agents_d.join("starts.toml"),
        format!(
            "[agents.missing]\ncommand = [\"/nonexistent/agent\"]\n\
             [agents.noexec]\ncommand = [\"{}\"]\n\
             [agents.bare]\ncommand = [\"true\"]\n",
            not_executable.display()
        ),
    )
    .expect("write starts.toml");
    let d = start(d);
    d.ok(Some(&user), &["status"]);
    for (agent, status, says) in [
        ("missing", "error", "No such file"),
        ("noexec", "error", "Permission denied"),
        ("bare", "ok", ""),
    ] {
        d.ok(None, &["agent", "run", agent, "--all"]);
        let logged = runs(&d, &user, agent);
        assert_eq!(logged.len(), 1, "{agent}: {logged:?}");
        assert_eq!(field(&logged[0], "status"), status, "{logged:?}");
        if status == "error" {
            let error = field(&logged[0], "error");
            assert!(error.contains("exec") && error.contains(says), "{error}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn an_agents_output_reaches_the_terminal_escaped() {
    require_root();
    let bob = TestUser::new("bob");
    let (d, _) = daemon_with(&[], "", "");
    let d = start(d);
    d.ok(Some(&bob), &["status"]);
    let loud = script(
        &d,
        "loud.sh",
        "printf '\\033]52;c;cm0gLXJmIH4=\\007\\033]0;pwned\\007\\033[2K\\r\\302\\233done\\n'",
    );
    std::fs::write(
        d.profile(&bob).join("profile.toml"),
        format!(
            "[agents.loud]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            loud.display()
        ),
    )
    .expect("write bob's settings");
    let out = d.ctl(Some(&bob), &["agent", "run", "loud"]);
    assert!(out.status.success(), "{out:?}");
    // The run really wrote the escapes to its log.
    let logged = runs(&d, &bob, "loud");
    let output = logged
        .last()
        .map(|r| r["output"].to_string())
        .unwrap_or_default();
    assert!(output.contains("\\u001b]52;c;"), "{logged:?}");
    for args in [
        vec!["agent", "logs", "loud"],
        vec!["agent", "run", "loud"],
        vec!["--json", "agent", "logs", "loud"],
    ] {
        let out = d.ctl(Some(&bob), &args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                controls(stream).is_empty(),
                "{args:?} printed {:?}: {}",
                controls(stream),
                String::from_utf8_lossy(stream)
            );
        }
    }
    let shown = d.ok(Some(&bob), &["agent", "logs", "loud"]);
    assert!(shown.contains("\\u001b]52;c;cm0gLXJmIH4="), "{shown}");
}

// ---- Issue 11: runs that a user cannot freeze, escape or make others wait on.

/// The real uid of process `pid` (from /proc; zombies included).
fn real_uid(pid: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// (state, ppid) of process `pid` from /proc/<pid>/stat.
fn state_and_parent(pid: &str) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn all_pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// Whether processes `a` and `b` share one address space (kcmp KCMP_VM).
fn same_memory(a: u32, b: u32) -> Option<bool> {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp takes integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a as libc::c_long,
            b as libc::c_long,
            KCMP_VM,
            0,
            0,
        )
    };
    (r >= 0).then_some(r == 0)
}

/// Item 4: alice stops every process of hers the moment it exists (the
/// race that used to freeze a vfork child after its setuid, holding the
/// agent's lock, with the daemon's memory in her hands). Her runs are
/// triggered again and again beside bob's: bob is never refused with
/// agent_busy, and no process running as alice ever shares the daemon's
/// address space.
#[test]
#[ignore = "needs root"]
fn a_user_stopping_her_processes_freezes_no_agent_and_never_holds_the_daemons_memory() {
    require_root();
    let (alice, bob) = (TestUser::new("alice"), TestUser::new("bob"));
    let (d, agents_d) = daemon_with(
        &[],
        "",
        "[agents]\nkill_grace = \"1s\"\nlock_wait = \"10s\"\n",
    );
    std::fs::write(
        agents_d.join("quick.toml"),
        "[agents.quick]\ncommand = [\"/bin/true\"]\ntimeout = \"1s\"\n",
    )
    .expect("write quick.toml");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let daemon = d.pid();
    assert_eq!(same_memory(daemon, daemon), Some(true), "kcmp works here");
    let _spinner = KillOnDrop(
        alice
            .command("/bin/sh")
            .args(["-c", "while :; do kill -STOP -1 2>/dev/null; done"])
            .spawn()
            .expect("start alice's spinner"),
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (bob_answers, shared, alice_runs) = std::thread::scope(|s| {
        // alice's runs, triggered by root one after another (a run that
        // hangs is left behind after 5 s and another one is started).
        let alice_thread = s.spawn(|| {
            let mut started = 0;
            let mut hung = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut run = KillOnDrop(
                    Command::new(PROFILECTL)
                        .arg("--socket")
                        .arg(&d.socket)
                        .args(["--user", &alice.name, "agent", "run", "quick"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn profilectl"),
                );
                started += 1;
                let given_up = Instant::now() + Duration::from_secs(5);
                while run.0.try_wait().ok().flatten().is_none() && Instant::now() < given_up {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if run.0.try_wait().ok().flatten().is_none() {
                    hung.push(run);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            started
        });
        // bob's runs of the same agent.
        let bob_thread = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, v) = d.api(Some(&bob), "POST", "/v1/agents/quick/run", None);
                answers.push((status, v.to_string()));
                std::thread::sleep(Duration::from_millis(200));
            }
            answers
        });
        // Meanwhile: any process of alice's sharing the daemon's memory?
        let mut shared = Vec::new();
        while Instant::now() < deadline {
            for pid in all_pids() {
                if real_uid(&pid) == Some(alice.uid)
                    && let Ok(n) = pid.parse::<u32>()
                    && same_memory(daemon, n) == Some(true)
                {
                    shared.push(n);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let alice_runs = alice_thread.join().expect("alice's thread");
        let bob_answers = bob_thread.join().expect("bob's thread");
        (bob_answers, shared, alice_runs)
    });
    let shared: BTreeSet<u32> = shared.into_iter().collect();
    let refused: Vec<_> = bob_answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        shared.is_empty() && refused.is_empty(),
        "processes running as alice shared the daemon's memory: {shared:?}\n{}\nbob's runs refused while alice stopped her processes: {refused:?}",
        ps(&alice)
    );
    assert!(bob_answers.len() >= 3, "bob got answers: {bob_answers:?}");
    assert!(alice_runs >= 3, "alice's runs were triggered: {alice_runs}");
    // The daemon still answers at once.
    let asked = Instant::now();
    d.ok(Some(&bob), &["status"]);
    assert!(asked.elapsed() < Duration::from_secs(5));
}

/// Item 8: an agent that double-forks and detaches (`setsid`) a sleeper;
/// once the run has ended nothing of alice's is left.
#[test]
#[ignore = "needs root"]
fn a_detached_grandchild_is_gone_when_the_run_ends() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let escape = script(
        &d,
        "escape.sh",
        "( setsid sleep 1000 </dev/null >/dev/null 2>&1 & )\nsleep 0.5\necho left a sleeper",
    );
    std::fs::write(
        agents_d.join("escape.toml"),
        format!(
            "[agents.escape]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            escape.display()
        ),
    )
    .expect("write escape.toml");
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let out = d.ok(None, &["agent", "run", "escape", "--all"]);
    assert!(out.contains("ran (1 users)"), "{out}");
    let logged = runs(&d, &alice, "escape");
    assert_eq!(field(&logged[0], "status"), "ok", "{logged:?}");
    assert!(
        !has_processes(&alice),
        "alice's detached sleeper outlived the run: {}",
        ps(&alice)
    );
    let (_, health) = d.api(Some(&alice), "GET", "/v1/health", None);
    assert_eq!(health["agents"]["containment"], "cgroup", "{health}");
}

/// Item 8: the same after `kill -9` of the daemon: the guard kills the
/// run's cgroup, detached processes included; a restarted daemon runs
/// again.
#[test]
#[ignore = "needs root"]
fn a_detached_grandchild_is_gone_after_kill9_of_the_daemon() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let hang = script(
        &d,
        "detach-and-hang.sh",
        "( setsid sleep 1000 </dev/null >/dev/null 2>&1 & )\nsleep 1\necho $$ > out/pid\nsleep 1000",
    );
    std::fs::write(
        agents_d.join("hang.toml"),
        format!(
            "[agents.hang]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"1h\"\n",
            hang.display()
        ),
    )
    .expect("write hang.toml");
    let mut d = start(d);
    d.ok(Some(&alice), &["status"]);
    let _runner = run_in_background(&d, "hang", &alice);
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    while has_processes(&alice) {
        assert!(
            Instant::now() < deadline,
            "alice's processes outlived the daemon: {}\n{}",
            ps(&alice),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 8: an agent that leaves 50 orphans which exit (each in a session
/// of its own) leaves no zombie behind: none whose parent is the daemon,
/// none of alice's at all.
#[test]
#[ignore = "needs root"]
fn orphans_an_agent_leaves_are_reaped_not_left_as_zombies() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let orphans = script(
        &d,
        "orphans.sh",
        "i=0\nwhile [ $i -lt 50 ]; do ( setsid true & ); i=$((i+1)); done\nsleep 1",
    );
    std::fs::write(
        agents_d.join("orphans.toml"),
        format!(
            "[agents.orphans]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            orphans.display()
        ),
    )
    .expect("write orphans.toml");
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let daemon = d.pid();
    let zombies = || -> Vec<(String, u32, Option<u32>)> {
        all_pids()
            .into_iter()
            .filter_map(|pid| {
                let (state, ppid) = state_and_parent(&pid)?;
                let uid = real_uid(&pid);
                (state == 'Z' && (ppid == daemon || uid == Some(alice.uid)))
                    .then_some((pid, ppid, uid))
            })
            .collect()
    };
    // Zombies of a removed account whose uid useradd gave alice again
    // (left to a PID 1 that does not reap, as on some VMs) are not hers.
    let before: BTreeSet<String> = zombies().into_iter().map(|(pid, _, _)| pid).collect();
    let out = d.ok(None, &["agent", "run", "orphans", "--all"]);
    assert!(out.contains("ran (1 users)"), "{out}");
    let zombies: Vec<(String, u32, Option<u32>)> = zombies()
        .into_iter()
        .filter(|(pid, _, _)| !before.contains(pid))
        .collect();
    assert!(
        zombies.is_empty(),
        "{} zombies left (pid, ppid, uid), daemon {daemon}: {zombies:?}",
        zombies.len()
    );
}

/// The slots (Unix seconds) of `user`'s runs of `agent` in [from, to).
fn slots_in(d: &Daemon, user: &TestUser, agent: &str, from: i64, to: i64) -> Vec<i64> {
    runs(d, user, agent)
        .iter()
        .filter(|r| field(r, "status") == "ok")
        .filter_map(|r| r["slot"].as_i64())
        .filter(|s| (from..to).contains(s))
        .collect()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Sleeps until the wall clock reaches `t` (Unix seconds).
fn sleep_until(t: i64) {
    while unix_now() < t {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Item 7: alice's own long agent holds her profile's lock; an admin
/// agent every 2 s skips her instead of waiting for her (recorded as
/// skipped, with the reason), so bob's runs over 10 s are as many as
/// without her hogging, within one.
#[test]
#[ignore = "needs root"]
fn bobs_run_rate_is_unchanged_while_alice_hogs_her_profile_lock() {
    require_root();
    let (alice, bob) = (TestUser::new("alice"), TestUser::new("bob"));
    let (d, agents_d) = daemon_with(&[], "", "[agents]\nlock_wait = \"20s\"\n");
    std::fs::write(
        agents_d.join("tick.toml"),
        "[agents.tick]\ncommand = [\"/bin/true\"]\nevery = \"2s\"\n",
    )
    .expect("write tick.toml");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let settings = d.profile(&alice).join("profile.toml");
    std::fs::write(
        &settings,
        "[agents.hog]\ncommand = [\"/bin/sleep\", \"40\"]\ntimeout = \"60s\"\n",
    )
    .expect("write alice's settings");
    std::os::unix::fs::chown(&settings, Some(alice.uid), Some(alice.gid)).expect("chown");
    wait_for("bob's first tick", || !runs(&d, &bob, "tick").is_empty());

    let window = 10;
    let from = unix_now() + 2;
    sleep_until(from + window + 3);
    let quiet = slots_in(&d, &bob, "tick", from, from + window);

    let _hog = KillOnDrop(
        alice
            .command(PROFILECTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(["agent", "run", "hog"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alice's hog"),
    );
    wait_for("alice's hog to run", || runs_program(&alice, "sleep"));
    let from = unix_now() + 2;
    sleep_until(from + window + 3);
    let hogged = slots_in(&d, &bob, "tick", from, from + window);
    assert!(quiet.len() >= 4, "bob's ticks without the hog: {quiet:?}");
    assert!(
        quiet.len().abs_diff(hogged.len()) <= 1,
        "bob's ticks: {quiet:?} without alice hogging, {hogged:?} while she did"
    );
    let skipped: Vec<Value> = runs(&d, &alice, "tick")
        .into_iter()
        .filter(|r| field(r, "status") == "skipped")
        .collect();
    assert!(!skipped.is_empty(), "alice's skipped runs are recorded");
    assert!(
        field(&skipped[0], "error").contains("busy"),
        "with the reason: {skipped:?}"
    );
}

/// Item 7: the administrator's cap on users' own agents: a user's
/// `timeout = "1h"` runs for `max_user_timeout` only, and her agent list
/// says so.
#[test]
#[ignore = "needs root"]
fn a_users_agent_runs_no_longer_than_the_administrators_cap() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, _) = daemon_with(
        &[],
        "",
        "[agents]\nmax_user_timeout = \"1s\"\nkill_grace = \"1s\"\n",
    );
    let d = start(d);
    d.ok(Some(&alice), &["status"]);
    let settings = d.profile(&alice).join("profile.toml");
    std::fs::write(
        &settings,
        "[agents.long]\ncommand = [\"/bin/sleep\", \"30\"]\ntimeout = \"1h\"\n",
    )
    .expect("write alice's settings");
    std::os::unix::fs::chown(&settings, Some(alice.uid), Some(alice.gid)).expect("chown");
    let asked = Instant::now();
    let _ = d.ctl(Some(&alice), &["agent", "run", "long"]);
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the run was cut at the cap: {:?}",
        asked.elapsed()
    );
    let logged = runs(&d, &alice, "long");
    assert_eq!(field(&logged[0], "status"), "timeout", "{logged:?}");
    let (_, v) = d.api(Some(&alice), "GET", "/v1/agents", None);
    assert!(
        v["problems"].to_string().contains("max_user_timeout"),
        "{v}"
    );
}

/// The cgroup2 mount point of this host, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            (fs.split_whitespace().next()? == "cgroup2")
                .then(|| mount.split_whitespace().nth(4).map(str::to_owned))?
        })
}

/// Where cgroup v2 cannot be written (here: the daemon in a mount
/// namespace of its own where the cgroup2 mount is read-only), runs fall
/// back to process groups: `/v1/health` and the log say so and why, runs
/// still work, and what an agent leaves in its process group is killed.
#[test]
#[ignore = "needs root"]
fn without_a_writable_cgroup_runs_fall_back_to_process_groups_and_say_so() {
    require_root();
    let mount = cgroup2_mount().expect("this test needs a cgroup2 mount (Linux 4.5 or later)");
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let leave = script(
        &d,
        "leave.sh",
        "sleep 1000 </dev/null >/dev/null 2>&1 &\necho left one in my group",
    );
    std::fs::write(
        agents_d.join("leave.toml"),
        format!(
            "[agents.leave]\ncommand = [\"/bin/sh\", \"{}\"]\n",
            leave.display()
        ),
    )
    .expect("write leave.toml");
    let mut d = d;
    let remount = format!("mount -o remount,bind,ro {mount} && exec \"$0\" \"$@\"");
    d.spawn_with(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &remount,
        ],
        &[],
    )
    .expect("the daemon starts");
    d.ok(Some(&alice), &["status"]);
    let (_, health) = d.api(Some(&alice), "GET", "/v1/health", None);
    assert_eq!(health["agents"]["containment"], "process-group", "{health}");
    assert!(
        health["agents"]["detail"]
            .as_str()
            .is_some_and(|s| s.contains("Read-only") && s.contains("outlive its run")),
        "{health}"
    );
    assert!(
        d.log_text().contains("contained by process group only"),
        "{}",
        d.log_text()
    );
    let out = d.ok(None, &["agent", "run", "leave", "--all"]);
    assert!(out.contains("ran (1 users)"), "{out}");
    let logged = runs(&d, &alice, "leave");
    assert_eq!(field(&logged[0], "status"), "ok", "{logged:?}");
    assert!(
        field(&logged[0], "output").contains("left one"),
        "{logged:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while has_processes(&alice) {
        assert!(
            Instant::now() < deadline,
            "what alice's agent left in its group outlived the run: {}",
            ps(&alice)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Item 8: when the guard is gone too (killed with the daemon), the
/// restarted daemon kills and removes what its previous life left in its
/// cgroups before it runs anything.
#[test]
#[ignore = "needs root"]
fn a_restarted_daemon_kills_what_its_previous_life_left_running() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let hang = script(
        &d,
        "detach-and-hang.sh",
        "( setsid sleep 1000 </dev/null >/dev/null 2>&1 & )\nsleep 1\necho $$ > out/pid\nsleep 1000",
    );
    std::fs::write(
        agents_d.join("hang.toml"),
        format!(
            "[agents.hang]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"1h\"\n",
            hang.display()
        ),
    )
    .expect("write hang.toml");
    let mut d = start(d);
    d.ok(Some(&alice), &["status"]);
    let runner = run_in_background(&d, "hang", &alice);
    let daemon = d.pid();
    let guard: Vec<i32> = all_pids()
        .into_iter()
        .filter(|pid| state_and_parent(pid).is_some_and(|(_, ppid)| ppid == daemon))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("agent-guard"))
        })
        .filter_map(|pid| pid.parse().ok())
        .collect();
    assert_eq!(guard.len(), 1, "the daemon's guard: {guard:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the guard");
    d.kill9();
    drop(runner);
    // The parent-death signals end the helper and the agent's first
    // process; the detached sleeper has no guard left to kill it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        has_processes(&alice),
        "the detached sleeper is still there before the restart: {}",
        ps(&alice)
    );
    d.spawn().expect("the daemon restarts");
    d.ok(Some(&alice), &["status"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while has_processes(&alice) {
        assert!(
            Instant::now() < deadline,
            "what the previous daemon left outlived its restart: {}\n{}",
            ps(&alice),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log_text().contains("a previous daemon left"),
        "{}",
        d.log_text()
    );
}

/// Rule 9 for the scheduler's slots: two users whose own scheduled agents
/// run long (each holding a slot for as long as it runs) do not hold up
/// an admin agent: bob's ticks over 10 s are as many as without them.
#[test]
#[ignore = "needs root"]
fn users_long_own_agents_take_no_slot_from_the_admins_agents() {
    require_root();
    let (alice, bob, carol) = (
        TestUser::new("alice"),
        TestUser::new("bob"),
        TestUser::new("carol"),
    );
    let (d, agents_d) = daemon_with(&[], "", "[agents]\nmax_parallel_agents = 2\n");
    std::fs::write(
        agents_d.join("tick.toml"),
        "[agents.tick]\ncommand = [\"/bin/true\"]\nevery = \"2s\"\n",
    )
    .expect("write tick.toml");
    let d = start(d);
    for u in [&alice, &bob, &carol] {
        d.ok(Some(u), &["status"]);
    }
    wait_for("bob's first tick", || !runs(&d, &bob, "tick").is_empty());
    let window = 10;
    let from = unix_now() + 2;
    sleep_until(from + window + 3);
    let quiet = slots_in(&d, &bob, "tick", from, from + window);

    for u in [&alice, &carol] {
        let settings = d.profile(u).join("profile.toml");
        std::fs::write(
            &settings,
            "[agents.long]\ncommand = [\"/bin/sleep\", \"40\"]\nevery = \"1s\"\ntimeout = \"60s\"\n",
        )
        .expect("write the settings");
        std::os::unix::fs::chown(&settings, Some(u.uid), Some(u.gid)).expect("chown");
    }
    wait_for("alice's and carol's long agents to run", || {
        has_processes(&alice) && has_processes(&carol)
    });
    let from = unix_now() + 2;
    sleep_until(from + window + 3);
    let busy = slots_in(&d, &bob, "tick", from, from + window);
    assert!(quiet.len() >= 4, "bob's ticks before: {quiet:?}");
    assert!(
        quiet.len().abs_diff(busy.len()) <= 1,
        "bob's ticks: {quiet:?} before, {busy:?} while alice's and carol's own agents ran"
    );
}

/// A daemon whose scratch directory may hold the `t/t/t…` chains
/// (thousands deep) the F1 tests build under each directory of
/// `<scratch>/run/credentials`: they are removed one level at a time
/// before the scratch directory's recursive removal, which would overflow
/// the test's stack.
struct WithDeepTrees(Daemon);

impl Drop for WithDeepTrees {
    fn drop(&mut self) {
        self.0.kill9();
        let Ok(entries) = std::fs::read_dir(self.0.scratch.path.join("run/credentials")) else {
            return;
        };
        for dir in entries.flatten().map(|e| e.path()) {
            let (t, n) = (dir.join("t"), dir.join("n"));
            while t.join("t").is_dir() {
                let _ = std::fs::rename(t.join("t"), &n);
                let _ = std::fs::remove_dir(&t);
                let _ = std::fs::rename(&n, &t);
            }
            let _ = std::fs::remove_dir(&t);
        }
    }
}

/// F1: the agent cannot write in `$CREDENTIALS_DIRECTORY`, so it cannot
/// build there the tree thousands of levels deep (by rename: no path gets
/// long) that crashed the daemon's recursive removal as root, and again at
/// every restart. The run ends, the daemon answers, and restarts cleanly.
#[test]
#[ignore = "needs root"]
fn an_agent_cannot_build_a_deep_tree_in_its_credentials_directory() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, agents_d) = daemon_with(&[], "", "");
    let deep = d.scratch.path.join("deep.py");
    std::fs::write(
        &deep,
        r#"import os
os.chdir(os.environ["CREDENTIALS_DIRECTORY"])
try:
    os.mkdir("t")
except OSError as e:
    print("mkdir refused: errno=%d" % e.errno)
    raise SystemExit(0)
for i in range(20000):
    os.mkdir("n"); os.rename("t", "n/t"); os.rename("n", "t")
print("built a tree 20000 deep")
"#,
    )
    .expect("write deep.py");
    std::fs::write(
        agents_d.join("deep.toml"),
        format!(
            "[agents.deep]\ncommand = [\"/usr/bin/python3\", \"{}\"]\ncredentials = [\"openai\"]\ntimeout = \"120s\"\n",
            deep.display()
        ),
    )
    .expect("write deep.toml");
    let mut guard = WithDeepTrees(d);
    let d = &mut guard.0;
    d.spawn().expect("the daemon starts");
    d.ok(Some(&alice), &["status"]);
    set_key(d, &alice, "openai", "sk-openai-alice");
    let out = d.ctl(None, &["agent", "run", "deep", "--all"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.contains("ran (1 users)"),
        "the daemon answered the run: {out}\n{}",
        d.log_text()
    );
    let logged = runs(d, &alice, "deep");
    assert_eq!(logged.len(), 1, "{logged:?}");
    let output = field(&logged[0], "output");
    assert!(
        output.contains("mkdir refused: errno=13") || output.contains("mkdir refused: errno=1\n"),
        "the agent could write in its credentials directory: {logged:?}"
    );
    let (status, _) = d.api(Some(&alice), "GET", "/v1/health", None);
    assert_eq!(status, 200, "the daemon is alive");
    let credentials = d.scratch.path.join("run/credentials");
    let left: Vec<_> = std::fs::read_dir(&credentials)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the run's directory is gone: {left:?}");
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    d.spawn().expect("the daemon restarts");
    d.ok(Some(&alice), &["status"]);
}

/// F1: a stale run directory an older version left with a tree thousands
/// of levels deep in it (the agent could write there) neither crashes the
/// start-up nor is walked: it is reported and left, and the daemon runs.
#[test]
#[ignore = "needs root"]
fn a_stale_credentials_directory_with_a_deep_tree_is_reported_not_walked() {
    require_root();
    let alice = TestUser::new("alice");
    let (d, _) = daemon_with(&[], "", "");
    let credentials = d.scratch.path.join("run/credentials");
    let stale = credentials.join("stale-run");
    std::fs::create_dir_all(&stale).expect("create the stale run directory");
    std::fs::write(stale.join("openai"), "sk-old").expect("write a stale key");
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import os\nos.chdir(os.environ['DIR'])\nos.mkdir('t')\n\
             for i in range(20000):\n    os.mkdir('n'); os.rename('t', 'n/t'); os.rename('n', 't')\n",
        )
        .env("DIR", &stale)
        .status()
        .expect("run python3");
    let mut guard = WithDeepTrees(d);
    assert!(made.success(), "built the deep tree");
    let d = &mut guard.0;
    d.spawn().expect("the daemon starts");
    d.ok(Some(&alice), &["status"]);
    let (status, _) = d.api(Some(&alice), "GET", "/v1/health", None);
    assert_eq!(status, 200, "the daemon is alive");
    let log = d.log_text();
    assert!(
        log.contains("left the stale credentials directory") && log.contains("stale-run"),
        "the stale directory is reported: {log}"
    );
    assert!(
        !stale.join("openai").exists(),
        "the stale key file is removed"
    );
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
}

/// Starts, as `user`, a tracer outside the run that `PTRACE_SEIZE`s `pid`
/// and never waits for it: once killed, that process is a zombie only the
/// tracer can release. Dropping the result kills the tracer.
fn seize(user: &TestUser, pid: &str) -> KillOnDrop {
    use std::io::BufRead;
    let mut tracer = KillOnDrop(
        user.command("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import ctypes, sys, time\n\
                 libc = ctypes.CDLL(None, use_errno=True)\n\
                 libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n\
                 if libc.ptrace(0x4206, int(sys.argv[1]), None, None) != 0:\n    \
                     print('seize failed: errno=%d' % ctypes.get_errno(), flush=True)\n    sys.exit(1)\n\
                 print('seized', flush=True)\n\
                 while True:\n    time.sleep(1)\n",
            )
            .arg(pid)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the tracer"),
    );
    let mut line = String::new();
    let stdout = tracer.0.stdout.take().expect("the tracer's stdout");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the tracer");
    assert_eq!(line.trim(), "seized", "the tracer seized {pid}");
    tracer
}

/// Whether the process `pid` has ended (gone, or a zombie waiting for its
/// parent).
fn ended(pid: u32) -> bool {
    state_and_parent(&pid.to_string()).is_none_or(|(state, _)| state == 'Z')
}

/// F3: alice's tracer (outside the run, same uid) seizes her run's process
/// and never waits for it, so the helper could never reap it. The run is
/// still recorded as a timeout within a bound, bob's run in the same cycle
/// happens, and a SIGTERM during such a held run stops the daemon within a
/// bound.
#[test]
#[ignore = "needs root"]
fn a_users_tracer_holds_up_no_cycle_and_no_stop() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let (d, agents_d) = daemon_with(
        &[],
        "",
        "[agents]\nkill_grace = \"1s\"\nshutdown_grace = \"1s\"\n",
    );
    let body = "case \"$USER\" in\n  *alice) echo $$ > out/pid; exec sleep 1000 ;;\nesac\necho \"done for $USER\"";
    let held = script(&d, "held.sh", body);
    for (name, timeout) in [("traced", "2s"), ("held", "1h")] {
        std::fs::write(
            agents_d.join(format!("{name}.toml")),
            format!(
                "[agents.{name}]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"{timeout}\"\n",
                held.display()
            ),
        )
        .expect("write an agents.d file");
    }
    let mut d = start(d);
    d.ok(Some(&alice), &["status"]);
    d.ok(Some(&bob), &["status"]);
    let pid_file = d.profile(&alice).join("out/pid");

    let runner = run_in_background(&d, "traced", &alice);
    let pid = std::fs::read_to_string(&pid_file).expect("read the pid");
    let seized = Instant::now();
    let tracer = seize(&alice, pid.trim());
    let deadline = seized + Duration::from_secs(30);
    while runs(&d, &bob, "traced").is_empty() || runs(&d, &alice, "traced").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the cycle is held up by alice's tracer: alice {:?}, bob {:?}\n{}\n{}",
            runs(&d, &alice, "traced"),
            runs(&d, &bob, "traced"),
            ps(&alice),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let alices = runs(&d, &alice, "traced");
    assert_eq!(field(&alices[0], "status"), "timeout", "{alices:?}");
    assert!(
        alices[0]["notes"].to_string().contains("tracer"),
        "the run says what was left behind: {alices:?}"
    );
    assert_eq!(field(&runs(&d, &bob, "traced")[0], "status"), "ok");
    drop((runner, tracer));

    std::fs::remove_file(&pid_file).expect("remove the pid file");
    let runner = run_in_background(&d, "held", &alice);
    let pid = std::fs::read_to_string(&pid_file).expect("read the pid");
    let _tracer = seize(&alice, pid.trim());
    let daemon = d.pid();
    let stopping = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    while !ended(daemon) {
        assert!(
            stopping.elapsed() < Duration::from_secs(40),
            "SIGTERM waits for the held run: {}\n{}",
            ps(&alice),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}: {}", d.log_text());
    drop(runner);
    let logged = runs(&d, &alice, "held");
    assert_eq!(field(&logged[0], "status"), "stopped", "{logged:?}");
}

/// The number of threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count)
}

/// F2: alice's long agent holds her profile's lock, and she floods
/// `POST /v1/agents/hog/run` over the socket, closing each connection at
/// once. Her extra runs are refused at once with 409 agent_busy instead of
/// each becoming a thread that waits minutes for her lock and then runs for
/// an hour: the daemon's threads stay few, and bob's and root's requests
/// are answered within 2 s throughout.
#[test]
#[ignore = "needs root"]
fn a_flood_of_manual_runs_neither_piles_up_threads_nor_starves_anyone() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    require_root();
    let (alice, bob) = (TestUser::new("alice"), TestUser::new("bob"));
    let (d, _) = daemon_with(&[], "", "");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let settings = d.profile(&alice).join("profile.toml");
    std::fs::write(
        &settings,
        "[agents.hog]\ncommand = [\"/bin/sleep\", \"3600\"]\ntimeout = \"1h\"\n",
    )
    .expect("write alice's settings");
    std::os::unix::fs::chown(&settings, Some(alice.uid), Some(alice.gid)).expect("chown");
    let _hog = KillOnDrop(
        alice
            .command(PROFILECTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(["agent", "run", "hog"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alice's hog"),
    );
    // Her agent itself, not the profilectl that asked for it (hers too):
    // until the daemon started the run, a request could start it instead.
    wait_for("alice's hog to run", || runs_program(&alice, "sleep"));

    let socket = d.socket.clone();
    let flood = std::thread::spawn({
        let uid = alice.uid;
        move || {
            common::peer::as_uid(uid, move || {
                let request = "POST /v1/agents/hog/run HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
                let mut answers = Vec::new();
                for i in 0..600 {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        answers.push("cannot connect".to_owned());
                        continue;
                    };
                    if s.write_all(request.as_bytes()).is_err() {
                        answers.push("cannot write".to_owned());
                        continue;
                    }
                    // Most connections are closed at once; every 20th
                    // waits (a little) for its answer's status line.
                    if i % 20 == 0 {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                        let mut head = [0u8; 512];
                        let n = s.read(&mut head).unwrap_or(0);
                        answers.push(String::from_utf8_lossy(&head[..n]).into_owned());
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(25));
                }
                answers
            })
        }
    });
    let daemon = d.pid();
    let mut slowest = Duration::ZERO;
    let mut most_threads = 0;
    let mut failures = Vec::new();
    while !flood.is_finished() {
        for (who, path) in [
            (Some(&bob), "/v1/me"),
            (None, "/v1/health"),
            (None, "/v1/profiles"),
        ] {
            let asked = Instant::now();
            let (status, body) = d.api(who, "GET", path, None);
            slowest = slowest.max(asked.elapsed());
            if status != 200 {
                failures.push(format!("{path}: {status} {body}"));
            }
        }
        most_threads = most_threads.max(threads_of(daemon));
        std::thread::sleep(Duration::from_millis(300));
    }
    let answers = flood.join().expect("the flood");
    most_threads = most_threads.max(threads_of(daemon));
    assert!(
        failures.is_empty(),
        "requests failed during the flood: {failures:?}"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "bob's and root's requests took up to {slowest:?} during alice's flood"
    );
    assert!(
        most_threads < 100,
        "the daemon grew to {most_threads} threads during alice's flood"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("HTTP/1.1 409") && a.contains("agent_busy")),
        "alice's extra runs are refused at once with 409 agent_busy: {answers:?}"
    );
}

/// F4: alice stops every process of hers the moment it exists, so her run
/// in an admin cycle hangs until the agent's timeout (20 s). The cycle
/// runs users side by side (`cycle_parallel`), so bob's run, after hers in
/// the cycle's order, starts well before her timeout instead of after it.
#[test]
#[ignore = "needs root"]
fn a_user_stopping_her_run_does_not_hold_up_the_others_in_a_cycle() {
    require_root();
    // Account names carry a random tag: take bobs until one sorts after
    // alice, so her turn in the cycle's order comes first (the others are
    // removed as they drop).
    let alice = TestUser::new("alice");
    let bob = loop {
        let bob = TestUser::new("bob");
        if alice.name < bob.name {
            break bob;
        }
    };
    let (d, agents_d) = daemon_with(&[], "", "[agents]\nkill_grace = \"1s\"\n");
    let stamp = script(&d, "stamp.sh", "date +%s > out/started\nsleep 1");
    std::fs::write(
        agents_d.join("stamp.toml"),
        format!(
            "[agents.stamp]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"20s\"\n",
            stamp.display()
        ),
    )
    .expect("write stamp.toml");
    let d = start(d);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
    }
    let _spinner = KillOnDrop(
        alice
            .command("/bin/sh")
            .args(["-c", "while :; do kill -STOP -1 2>/dev/null; done"])
            .spawn()
            .expect("start alice's spinner"),
    );
    let asked = unix_now();
    let _cycle = KillOnDrop(
        Command::new(PROFILECTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(["agent", "run", "stamp", "--all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn profilectl"),
    );
    let started = d.profile(&bob).join("out/started");
    wait_for("bob's run", || {
        std::fs::read_to_string(&started).is_ok_and(|s| s.ends_with('\n'))
    });
    let bob_started: i64 = std::fs::read_to_string(&started)
        .expect("read bob's stamp")
        .trim()
        .parse()
        .expect("a time");
    wait_for("alice's run to be recorded", || {
        !runs(&d, &alice, "stamp").is_empty()
    });
    let alices = runs(&d, &alice, "stamp");
    assert_eq!(
        field(&alices[0], "status"),
        "timeout",
        "alice's stopped run hung until its timeout: {alices:?}"
    );
    assert!(
        bob_started - asked < 8,
        "bob's run started {} s after the cycle was asked for, behind alice's stopped run",
        bob_started - asked
    );
}
