//! The daemon's life: start-up refusals, config checks, readiness, reload,
//! graceful stop, adoption of existing trees and profile conflicts.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use common::{Daemon, PROFILED, TestUser, capture, require_root};
use nix::sys::signal::Signal;

#[test]
#[ignore = "needs root"]
fn a_group_writable_profiles_root_stops_the_daemon_with_the_fix() {
    require_root();
    let mut d = Daemon::configure("");
    std::fs::create_dir_all(&d.profiles).expect("create profiles root");
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&d.profiles, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let err = d.spawn().expect_err("the daemon must refuse to start");
    assert!(err.contains(&d.profiles.display().to_string()), "{err}");
    assert!(err.contains("group- or world-writable"), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", d.profiles.display())),
        "{err}"
    );

    // Not root-owned: refused too, with the chown to run.
    let alice = TestUser::new("alice");
    std::fs::set_permissions(&d.profiles, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&d.profiles, Some(alice.uid), None).expect("chown");
    let err = d.spawn().expect_err("the daemon must refuse to start");
    assert!(
        err.contains(&format!("chown root:root {}", d.profiles.display())),
        "{err}"
    );

    std::os::unix::fs::chown(&d.profiles, Some(0), None).expect("chown");
    d.spawn().expect("a safe root starts");
}

#[test]
fn check_config_reports_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("pft-cfg-{}", common::tag()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[accounts]\nadmin_group = \"ops\"\nuid_mni = 1000\n").expect("write");
    let out = Command::new(PROFILED)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    assert!(err.contains("uid_mni"), "{err}");

    let good = dir.join("good.toml");
    let agents_d = dir.join("agents.d");
    std::fs::create_dir(&agents_d).expect("agents.d");
    std::fs::write(
        &good,
        format!(
            "[accounts]\nadmins = [\"ops\"]\n[limits]\nmax_page_size = 50\n\
             [paths]\nagents_dir = \"{}\"\n",
            agents_d.display()
        ),
    )
    .expect("write");
    let check = || {
        Command::new(PROFILED)
            .args(["check-config", "--config"])
            .arg(&good)
            .output()
            .expect("run check-config")
    };
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Issue 13: a broken agent declaration fails the check too, with its
    // file and line (the daemon only logs it and keeps the previous ones).
    let tidy = agents_d.join("tidy.toml");
    std::fs::write(&tidy, "[agents.tidy]\ncommand = 5\n").expect("write");
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", tidy.display())), "{err}");
    std::fs::write(
        &tidy,
        "[agents.tidy]\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n",
    )
    .expect("write");
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
#[ignore = "needs root"]
fn a_layout_that_would_hand_state_directories_to_accounts_is_refused() {
    require_root();
    let alice = TestUser::new("alice");
    let mut d = Daemon::configure("");
    // The state directory named like alice, inside the profiles root: she
    // would be given it (and the keys in it) as her profile.
    let state = d.scratch.path.join(&alice.name);
    let keys = state.join("keys");
    std::fs::create_dir_all(&keys).expect("create the state dir");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = std::fs::read_to_string(&d.config).expect("read config");
    let old_state = format!("state_dir = \"{}\"", d.state.display());
    assert!(config.contains(&old_state), "{config}");
    let layouts = [
        format!(
            "state_dir = \"{}\"\nprofiles_dir = \"{}\"",
            state.display(),
            d.scratch.path.display()
        ),
        // The state directory itself as the profiles root: an account
        // named `keys` or `sessions` would be given that directory.
        format!(
            "state_dir = \"{}\"\nprofiles_dir = \"{}/\"",
            state.display(),
            state.display()
        ),
    ];
    for layout in layouts {
        std::fs::write(&d.config, config.replacen(&old_state, &layout, 1)).expect("write config");
        let out = Command::new(PROFILED)
            .args(["check-config", "--config"])
            .arg(&d.config)
            .output()
            .expect("run check-config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{layout}: {err}");
        assert!(
            err.contains(&format!("{}:3: paths.profiles_dir", d.config.display()))
                && err.contains("paths.state_dir"),
            "{err}"
        );
        let err = d.spawn().expect_err("the daemon must refuse to start");
        assert!(err.contains("paths.profiles_dir"), "{err}");
        // Nothing was handed to alice.
        for dir in [&state, &keys] {
            let meta = std::fs::metadata(dir).expect("stat");
            assert_eq!(
                (meta.uid(), meta.gid()),
                (0, 0),
                "{} was chowned",
                dir.display()
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn ready_is_sent_to_notify_socket_and_sigterm_drains_and_exits_zero() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::configure("");
    let notify_path = d.scratch.path.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify");
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut child = common::KillOnDrop(
        Command::new(PROFILED)
            .arg("--config")
            .arg(&d.config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a notification arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // Serving once ready.
    capture(&d, &alice, "before stop");

    // Captures keep arriving while SIGTERM lands: each acknowledged one is
    // on disk and the daemon exits 0.
    let socket = d.socket.clone();
    let writer = {
        let alice_uid = (alice.uid, alice.gid);
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..200 {
                let out = std::os::unix::process::CommandExt::gid(
                    std::os::unix::process::CommandExt::uid(
                        &mut Command::new(common::PROFILECTL),
                        alice_uid.0,
                    ),
                    alice_uid.1,
                )
                .arg("--socket")
                .arg(&socket)
                .args(["capture", &format!("during stop {i}")])
                .output()
                .expect("profilectl");
                if !out.status.success() {
                    break;
                }
                acked.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
            acked
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let n = notify.recv(&mut buf).expect("STOPPING arrives");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(!d.socket.exists(), "the socket is removed on exit");
    let acked = writer.join().expect("writer");
    assert!(!acked.is_empty());
    let all = walk_names(&d.profile(&alice).join("memory/episodic"));
    for id in acked {
        assert!(
            all.iter().any(|n| n == &format!("{id}.md")),
            "{id} lost in shutdown"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn sighup_reloads_the_config_and_a_bad_one_keeps_the_old() {
    require_root();
    let alice = TestUser::new("alice");
    let carol = TestUser::new("carol");
    let d = Daemon::start("");
    capture(&d, &alice, "hello");
    let base = std::fs::read_to_string(&d.config).expect("config");
    let not_admin = d.ctl(Some(&carol), &["--user", &alice.name, "memories"]);
    assert_eq!(not_admin.status.code(), Some(1));

    std::fs::write(
        &d.config,
        format!("{base}\n[accounts]\nadmins = [\"{}\"]\n", carol.name),
    )
    .expect("write config");
    d.signal(Signal::SIGHUP);
    wait_for(|| {
        d.ctl(Some(&carol), &["--user", &alice.name, "memories"])
            .status
            .success()
    });

    std::fs::write(&d.config, format!("{base}\n[accounts]\nadmins = 5\n")).expect("bad config");
    d.signal(Signal::SIGHUP);
    wait_for(|| d.log_text().contains("config reload refused"));
    let log = d.log_text();
    assert!(log.contains(&format!("{}:", d.config.display())), "{log}");
    // The old config (carol is admin) stays in force.
    d.ok(Some(&carol), &["--user", &alice.name, "memories"]);
}

#[test]
#[ignore = "needs root"]
fn a_root_owned_tree_is_adopted_without_touching_its_content() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles.example/alice");
    let target = d.profile(&alice);
    let out = Command::new("cp")
        .arg("-a")
        .arg(&example)
        .arg(&target)
        .output()
        .expect("cp -a");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for entry in walk(&target) {
        std::os::unix::fs::lchown(&entry, Some(0), Some(0)).expect("chown root");
    }
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = walk(&target)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    // Traps an adoption must not fall into.
    let secret = d.scratch.path.join("root-secret");
    std::fs::write(&secret, "root only").expect("secret");
    std::fs::hard_link(&secret, target.join("hardlink")).expect("hard link");
    symlink("/etc/shadow", target.join("shadow-link")).expect("symlink");

    let status = d.ok(Some(&alice), &["--json", "status"]);
    let me: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(me["problems"].as_array().map(Vec::len), Some(0), "{me}");
    let page: serde_json::Value =
        serde_json::from_str(&d.ok(Some(&alice), &["--json", "memories"])).expect("json");
    let n = page["items"].as_array().map_or(0, Vec::len);
    assert!(n >= 3, "the example's memories are served: {page}");
    let tasks: serde_json::Value =
        serde_json::from_str(&d.ok(Some(&alice), &["--json", "task", "list"])).expect("json");
    assert_eq!(tasks["items"].as_array().map(Vec::len), Some(2), "{tasks}");

    for (path, bytes) in before {
        let md = std::fs::metadata(&path).expect("stat");
        assert_eq!(md.uid(), alice.uid, "{}", path.display());
        assert_eq!(
            md.mode() & 0o077,
            0,
            "{} still open to others",
            path.display()
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "{} changed",
            path.display()
        );
    }
    let md = std::fs::metadata(&target).expect("stat profile");
    assert_eq!((md.uid(), md.mode() & 0o7777), (alice.uid, 0o700));
    assert_eq!(
        std::fs::metadata(&secret).expect("secret").uid(),
        0,
        "a hard link was chowned"
    );
    assert_eq!(std::fs::metadata("/etc/shadow").expect("shadow").uid(), 0);
}

#[test]
#[ignore = "needs root"]
fn a_profile_owned_by_another_uid_is_a_conflict_until_an_admin_adopts_it() {
    require_root();
    let alice = TestUser::new("alice");
    let old = TestUser::new("old");
    let d = Daemon::start("");
    // The previous holder of the name left a profile behind.
    let target = d.profile(&alice);
    std::fs::create_dir_all(target.join("memory/tasks")).expect("mkdir");
    std::fs::write(target.join("notes.md"), "old notes").expect("write");
    for p in walk(&target) {
        std::os::unix::fs::lchown(&p, Some(old.uid), Some(old.gid)).expect("chown");
    }

    let (status, body) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "profile_conflict");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("profile adopt"),
        "{body}"
    );
    assert_eq!(
        std::fs::metadata(&target).expect("stat").uid(),
        old.uid,
        "handed over silently"
    );

    let list = d.ok(None, &["profile", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&alice.name) && l.contains("conflict")),
        "{list}"
    );
    let out = d.ctl(Some(&alice), &["profile", "adopt", &alice.name]);
    assert_eq!(out.status.code(), Some(1), "a user cannot adopt");

    d.ok(None, &["profile", "adopt", &alice.name]);
    for p in walk(&target) {
        assert_eq!(
            std::fs::metadata(&p).expect("stat").uid(),
            alice.uid,
            "{}",
            p.display()
        );
    }
    capture(&d, &alice, "mine now");
    let system = d.system_audit();
    assert!(
        system.contains("profile.adopt") && system.contains(&alice.name),
        "{system}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

fn walk_names(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
