//! The Debian package, installed and run under a real systemd: a container
//! booted from a writable copy of this machine's OS (tests/common/
//! container.rs). Builds the .deb with `packaging/build-deb --debug` (the
//! dev profile's binaries, so CI builds nothing twice), installs it, and
//! checks what an administrator would: the unit starts through Type=notify,
//! reloads, pings its watchdog, logs to the journal with priorities, logs a
//! user in over TCP through PAM, serves profilectl, runs an agent as the
//! user inside the unit's sandbox and cgroup, scores low in `systemd-analyze
//! security`, passes `systemd-analyze verify`, has manual pages and
//! completions that load, and purges cleanly, keeping the users' profiles.

mod common;

use std::time::{Duration, Instant};

use common::container::{Container, require_programs};
use common::{free_port, http_request, require_root, tag};

/// The exposure `systemd-analyze security` may give the unit, in tenths
/// (issue 12 asks for 2.5 or less). Under the unit's RestrictSUIDSGID=yes
/// systemd answers openat2 with ENOSYS, so this test's login, capture and
/// agent run also exercise the file layer's stepwise fallback.
const MAX_EXPOSURE_TENTHS: u32 = 25;

/// The whole life of the package on one machine, in order: each step needs
/// the previous one.
#[test]
#[ignore = "needs root"]
fn the_package_installs_runs_sandboxed_under_systemd_and_purges_keeping_profiles() {
    require_root();
    require_programs(common::container::NEEDS);
    require_programs(&[
        (
            "cargo-deb",
            "cargo install cargo-deb --version 3.8.0 --locked",
        ),
        ("pandoc", "apt-get install pandoc"),
        ("zsh", "apt-get install zsh"),
        ("fish", "apt-get install fish"),
        ("man", "apt-get install man-db"),
    ]);
    assert!(
        std::path::Path::new("/usr/share/bash-completion/bash_completion").exists(),
        "bash-completion is missing (install: apt-get install bash-completion); .ci/run installs it"
    );
    let started = Instant::now();
    let deb = build_deb();
    let built = started.elapsed();

    let c = Container::boot(&format!("pft{}", tag()));
    let booted = started.elapsed();
    std::fs::copy(&deb, c.path("/var/tmp/profiled.deb")).expect("copy the .deb in");

    // Install: enabled and started as Debian does.
    let out = c.ok("dpkg -i /var/tmp/profiled.deb 2>&1");
    println!("dpkg -i:\n{out}");
    assert_eq!(
        c.ok("systemctl is-enabled profiled").trim(),
        "enabled",
        "{out}"
    );
    assert!(
        c.ok("getent group profiled-admin")
            .starts_with("profiled-admin:"),
        "no profiled-admin group"
    );
    for (path, mode) in [
        ("/var/lib/profiled", "755"),
        ("/var/lib/profiled/audit", "700"),
    ] {
        assert_eq!(c.ok(&format!("stat -c %a {path}")).trim(), mode, "{path}");
    }

    // Our own port (the container shares the host's network), an agent
    // that reports what it may do, and quick watchdog pings to watch.
    let port = free_port();
    std::fs::write(
        c.path("/etc/profiled/profiled.toml"),
        format!("[tcp]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .expect("write the config");
    std::fs::write(c.path("/etc/profiled/agents.d/probe.toml"), PROBE_AGENT)
        .expect("declare the probe agent");
    std::fs::create_dir_all(c.path("/etc/systemd/system/profiled.service.d")).expect("drop-in dir");
    std::fs::write(
        c.path("/etc/systemd/system/profiled.service.d/watchdog.conf"),
        "[Service]\nWatchdogSec=2s\n",
    )
    .expect("write the drop-in");
    c.ok("systemctl daemon-reload && systemctl disable --now profiled && systemctl enable --now profiled");
    let show = c.ok("systemctl show -p Type -p ActiveState -p SubState -p MainPID profiled");
    assert!(
        show.contains("Type=notify")
            && show.contains("ActiveState=active")
            && show.contains("SubState=running"),
        "{show}\n{}",
        c.ok("journalctl -u profiled --no-pager | tail -n 30")
    );

    // The watchdog: WatchdogTimestamp is the last ping.
    let ping = || {
        c.ok("systemctl show -p WatchdogTimestampMonotonic --value profiled")
            .trim()
            .parse::<u64>()
            .expect("a monotonic timestamp")
    };
    // A restart also moves it: the same process must still be serving
    // after three watchdog intervals.
    let main_pid = c.ok("systemctl show -p MainPID -p NRestarts profiled");
    let first = ping();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ping() <= first && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ping() > first, "no watchdog ping after {first}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        c.ok("systemctl show -p MainPID -p NRestarts profiled"),
        main_pid,
        "the watchdog killed the daemon: {}",
        c.ok("journalctl -u profiled --no-pager | tail -n 20")
    );

    // Reload: a good config reloads; a bad one is refused by ExecReload's
    // check before any signal, and the daemon keeps running.
    c.ok("systemctl reload profiled");
    let good = std::fs::read_to_string(c.path("/etc/profiled/profiled.toml")).expect("config");
    std::fs::write(
        c.path("/etc/profiled/profiled.toml"),
        format!("{good}\n[nonsense]\n"),
    )
    .expect("break the config");
    let refused = c.sh("systemctl reload profiled");
    assert!(!refused.status.success(), "a bad config reloaded");
    // The daemon's own refusal (a signal that skips ExecReload) is an error
    // in the journal, with its priority.
    c.ok("systemctl kill -s HUP profiled");
    let deadline = Instant::now() + Duration::from_secs(20);
    let errors = loop {
        let errors = c.ok("journalctl -u profiled -p err --no-pager -o cat");
        if errors.contains("config reload refused") || Instant::now() > deadline {
            break errors;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(errors.contains("config reload refused"), "{errors}");
    std::fs::write(c.path("/etc/profiled/profiled.toml"), &good).expect("fix the config");
    c.ok("systemctl reload profiled");
    assert_eq!(c.ok("systemctl is-active profiled").trim(), "active");

    // An upgrade (the same package again) keeps the edited conffile and
    // restarts the daemon.
    let pid = |c: &Container| c.ok("systemctl show -p MainPID --value profiled");
    let before = pid(&c);
    c.ok("dpkg -i --force-confold /var/tmp/profiled.deb");
    assert_ne!(pid(&c), before, "not restarted by the upgrade");
    assert_eq!(c.ok("systemctl is-active profiled").trim(), "active");
    assert_eq!(
        std::fs::read_to_string(c.path("/etc/profiled/profiled.toml")).expect("config"),
        good,
        "the upgrade replaced the edited config"
    );

    // A person with a password.
    let user = format!("pft{}u", tag());
    c.ok(&format!(
        "useradd -m -s /bin/sh {user} && echo '{user}:Correct-Horse-9' | chpasswd"
    ));
    let uid = c.ok(&format!("id -u {user}")).trim().to_owned();

    // PAM login over loopback TCP, then the token works.
    let body = serde_json::json!({"username": user, "password": "Correct-Horse-9"}).to_string();
    let login = http_request(port, "POST", "/v1/auth/login", &[], Some(&body));
    assert_eq!(login.status, 200, "login: {}", login.body);
    let token = login.json()["token"].as_str().expect("a token").to_owned();
    let auth = format!("Bearer {token}");
    let me = http_request(port, "GET", "/v1/me", &[("Authorization", &auth)], None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains(&user), "{}", me.body);

    // profilectl as that user, through the socket.
    let id = c.ok(&format!(
        "runuser -u {user} -- profilectl capture 'installed from the package'"
    ));
    assert!(id.trim().starts_with("evt-"), "{id}");
    let owner = c.ok(&format!(
        "stat -c %U:%a /var/lib/profiled/profiles/{user} && find /var/lib/profiled/profiles/{user}/memory/episodic -name '{}.md' -printf '%u\\n'",
        id.trim()
    ));
    assert_eq!(owner, format!("{user}:700\n{user}\n"), "{owner}");

    // An agent run as that user, inside the unit's sandbox and cgroup.
    c.ok(&format!("runuser -u {user} -- profilectl agent run probe"));
    let log = std::fs::read_to_string(c.path(&format!(
        "/var/lib/profiled/profiles/{user}/logs/agents/probe.jsonl"
    )))
    .expect("the probe's run log");
    println!("the probe agent's run log:\n{log}");
    for expected in [
        format!("uid={uid}"),
        "cgroup=0::/system.slice/profiled.service".to_owned(),
        "etc=Read-only file system".to_owned(),
        "home=empty".to_owned(),
        // @resources is filtered: the niceness stays 0.
        "nice=0".to_owned(),
    ] {
        assert!(log.contains(&expected), "{expected} not in {log}");
    }

    // The sandbox's score, from the systemd that runs it.
    let security = c.ok("systemd-analyze security profiled.service --no-pager");
    println!("{security}");
    let exposure = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for profiled.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an overall exposure line");
    let tenths: u32 = exposure
        .replace('.', "")
        .parse()
        .expect("a number like 2.6");
    assert!(
        tenths <= MAX_EXPOSURE_TENTHS,
        "exposure {exposure} is above {}.{}",
        MAX_EXPOSURE_TENTHS / 10,
        MAX_EXPOSURE_TENTHS % 10
    );

    // Every unit file the package ships is clean.
    let verify = c.sh("systemd-analyze verify /usr/lib/systemd/system/profiled.service");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(
        verify.status.success() && !complaints.contains("profiled"),
        "systemd-analyze verify: {complaints}"
    );

    // The manual pages render without a warning.
    let pages = c.ok("dpkg -L profiled | grep '^/usr/share/man/man./.*\\.gz$'");
    let pages: Vec<&str> = pages.lines().collect();
    for page in [
        "/usr/share/man/man8/profiled.8.gz",
        "/usr/share/man/man8/profiled-check-config.8.gz",
        "/usr/share/man/man1/profilectl.1.gz",
        "/usr/share/man/man1/profilectl-capture.1.gz",
        "/usr/share/man/man5/profiled.toml.5.gz",
    ] {
        assert!(
            pages.contains(&page),
            "{page} is not in the package: {pages:?}"
        );
    }
    for page in &pages {
        let warnings = c.ok(&format!("MANWIDTH=80 man -l {page} 2>&1 >/dev/null"));
        // groff says when a long table cell cannot be justified at 80
        // columns, or a table is wider than the page (each after a line
        // that only says where): layout, not an error in the page.
        let layout = [
            "cannot adjust line",
            "can't break line",
            "table wider than line width",
        ];
        let real: Vec<&str> = warnings
            .lines()
            .filter(|l| !layout.iter().any(|w| l.contains(w)))
            .filter(|l| !(l.starts_with("warning: file '") && l.ends_with(':')))
            .collect();
        assert!(real.is_empty(), "man -l {page} warned: {real:?}");
        let text = c.ok(&format!("MANWIDTH=80 man -l {page}"));
        assert!(
            text.contains("NAME") && text.len() > 500,
            "man -l {page}: {text}"
        );
    }
    let keys = c.ok("man -l /usr/share/man/man5/profiled.toml.5.gz");
    for key in [
        "profiles_dir",
        "admin_group",
        "shutdown_grace",
        "max_body_bytes",
    ] {
        assert!(keys.contains(key), "profiled.toml(5) lacks {key}");
    }

    // Each completion script loads in its shell and completes a command.
    let bash = c.ok("bash -c '. /usr/share/bash-completion/bash_completion; \
         . /usr/share/bash-completion/completions/profilectl; \
         COMP_WORDS=(profilectl capt); COMP_CWORD=1; _profilectl profilectl capt profilectl; \
         echo \"${COMPREPLY[@]}\"'");
    assert!(bash.contains("capture"), "bash: {bash}");
    let zsh = c.ok(
        "zsh -fc 'fpath=(/usr/share/zsh/vendor-completions $fpath); autoload -U compinit; \
         compinit -u; print -r -- $_comps[profilectl]'",
    );
    assert_eq!(zsh.trim(), "_profilectl", "zsh: {zsh}");
    let fish = c.ok("fish -c 'complete -C\"profilectl capt\"'");
    assert!(fish.contains("capture"), "fish: {fish}");

    // Purge: the package's files, config and the daemon's own state go;
    // the users' profiles stay, and purge says where they are.
    let purge = c.ok("dpkg --purge profiled 2>&1");
    println!("dpkg --purge:\n{purge}");
    assert!(
        purge.contains("/var/lib/profiled/profiles"),
        "purge does not say where the profiles are: {purge}"
    );
    for gone in [
        "/usr/bin/profiled",
        "/usr/bin/profilectl",
        "/usr/lib/systemd/system/profiled.service",
        "/etc/profiled",
        "/etc/pam.d/profiled",
        "/var/lib/profiled/sessions",
        "/var/lib/profiled/audit",
        "/var/lib/profiled/index",
    ] {
        assert!(!c.path(gone).exists(), "{gone} is left after purge");
    }
    for kept in [
        format!("/var/lib/profiled/profiles/{user}/memory/episodic"),
        "/var/lib/profiled/keys".to_owned(),
    ] {
        assert!(c.path(&kept).exists(), "{kept} was removed by purge");
    }
    assert_ne!(c.sh("systemctl is-active profiled").status.code(), Some(0));
    println!(
        "times: .deb built in {:?}, container booted at {:?}, whole test {:?}",
        built,
        booted,
        started.elapsed()
    );
}

/// An agent that prints what the sandbox lets it do, one `key=value` a line.
const PROBE_AGENT: &str = r#"[agents.probe]
description = "What an agent may do under the unit's sandbox"
shell = true
command = """
echo "uid=$(id -u) groups=$(id -G)"
echo "cgroup=$(grep '^0::' /proc/self/cgroup)"
echo "etc=$(touch /etc/pft-probe 2>&1 | sed 's/.*: //')"
echo "home=$(ls -A /home | head -c 100 | grep -q . && echo visible || echo empty)"
echo "nice=$(nice -n 5 nice 2>/dev/null)"
"""
"#;

/// Builds the package from this tree; its path.
fn build_deb() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("packaging/build-deb"))
        .arg("--debug")
        .current_dir(root)
        .output()
        .expect("run packaging/build-deb");
    assert!(
        out.status.success(),
        "packaging/build-deb --debug failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let arch = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
    let deb = root.join(format!(
        "target/debian/profiled_{}-1_{arch}.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(deb.is_file(), "{} was not built", deb.display());
    deb
}
