//! A real systemd booted in a container over a writable copy of this
//! machine's own OS: a tmpfs holding an overlay whose lower layer is `/`,
//! booted by `systemd-nspawn --boot`, driven with `nsenter` into its PID 1's
//! namespaces. Everything (the container, its processes, both mounts) goes
//! when the value is dropped, also when the test fails.
//!
//! The container shares the host's network: pick TCP ports with
//! `free_port`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The programs the container needs on the host, and the Debian packages
/// that have them (.ci/run installs them).
pub const NEEDS: &[(&str, &str)] = &[
    ("systemd-nspawn", "apt-get install systemd-container"),
    ("nsenter", "apt-get install util-linux"),
    ("mount", "apt-get install mount"),
];

/// Fails the test unless every program is there (`(program, how to
/// install it)`), naming what to install (.ci/run installs them all): a
/// test that could not run never reports "ok".
pub fn require_programs(programs: &[(&str, &str)]) {
    let missing: Vec<String> = programs
        .iter()
        .filter(|(program, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(program, install)| format!("{program} (install: {install})"))
        .collect();
    assert!(
        missing.is_empty(),
        "missing: {}; .ci/run installs them all",
        missing.join(", ")
    );
}

/// A booted container.
pub struct Container {
    /// The tmpfs: upper/, work/ and merged/ (the container's root).
    dir: PathBuf,
    mounted_tmpfs: bool,
    mounted_overlay: bool,
    nspawn: Option<Child>,
    /// The container's PID 1 (its systemd) as the host sees it.
    pid1: Option<u32>,
}

impl Container {
    /// Boots a container named `name` and waits (up to 2 minutes) until its
    /// systemd has finished starting up.
    /// Call [`require_programs`] with [`NEEDS`] first.
    pub fn boot(name: &str) -> Container {
        let dir = PathBuf::from(format!("/tmp/pft-ctr-{name}"));
        std::fs::create_dir_all(&dir).expect("create the container's directory");
        let mut c = Container {
            dir,
            mounted_tmpfs: false,
            mounted_overlay: false,
            nspawn: None,
            pid1: None,
        };
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&c.dir),
        );
        c.mounted_tmpfs = true;
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir(c.dir.join(sub)).expect("create an overlay directory");
        }
        run_ok(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir=/,upperdir={},workdir={}",
                    c.dir.join("upper").display(),
                    c.dir.join("work").display()
                ))
                .arg(c.root()),
        );
        c.mounted_overlay = true;
        // Container images (this machine's too) ship a policy-rc.d that
        // forbids starting services from maintainer scripts; a real host
        // has none.
        let _ = std::fs::remove_file(c.root().join("usr/sbin/policy-rc.d"));
        let log = std::fs::File::create(c.dir.join("nspawn.log")).expect("create the boot log");
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(c.root())
            .args(["--boot", "--register=no", "--keep-unit", "--machine", name])
            .args(["--", "systemd.firstboot=off"])
            // The unified cgroup hierarchy, as on current distributions,
            // even where the host still mounts cgroup v1.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the boot log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let nspawn_pid = nspawn.id();
        c.nspawn = Some(nspawn);
        let deadline = Instant::now() + Duration::from_secs(120);
        c.pid1 = loop {
            if let Some(pid) = child_of(nspawn_pid) {
                break Some(pid);
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd did not start: {}",
                c.boot_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // `--wait` returns once start-up is over: running, or degraded when
        // some unit of this OS copy fails in a container.
        loop {
            let out = c.sh("timeout 120 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting ({state}): {}",
                c.boot_log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        c
    }

    /// The container's root directory, as the host sees it.
    pub fn root(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// A path inside the container, as the host sees it.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root().join(inside.trim_start_matches('/'))
    }

    /// What nspawn and the container's console printed.
    pub fn boot_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nspawn.log")).unwrap_or_default()
    }

    /// Runs `script` with /bin/sh inside the container, as root, in all of
    /// its namespaces; killed after 5 minutes, so a container that hangs
    /// (a boot stuck for want of inotify watches, say) fails the test
    /// instead of stalling it.
    pub fn sh(&self, script: &str) -> Output {
        let pid1 = self.pid1.expect("the container is booted");
        Command::new("timeout")
            .args(["--kill-after=10s", "300s", "nsenter"])
            .args(["--target", &pid1.to_string(), "--all", "--"])
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// As [`Container::sh`], which must succeed; its standard output.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the container, `{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL to the container's PID 1 ends its whole PID namespace;
        // then nspawn exits and the mounts are free.
        if let Some(pid) = self.pid1.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut nspawn) = self.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        if self.mounted_overlay {
            unmount(&self.root());
        }
        if self.mounted_tmpfs {
            unmount(&self.dir);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Unmounts `path`, lazily if it is still busy, so a failed test never
/// leaves a mount behind.
fn unmount(path: &Path) {
    let clean = Command::new("umount").arg(path).status();
    if !clean.is_ok_and(|s| s.success()) {
        let _ = Command::new("umount").arg("--lazy").arg(path).status();
    }
}

/// The child of `parent` that is PID 1 of its own PID namespace (nspawn
/// forks helpers too, which come and go).
fn child_of(parent: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| {
                let ids: Vec<&str> = l
                    .strip_prefix("NSpid:")
                    .map(|r| r.split_whitespace().collect())
                    .unwrap_or_default();
                ids.len() > 1 && ids.last() == Some(&"1")
            })
        })
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run a mount command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
