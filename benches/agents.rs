//! Benchmark (not a test): one cycle of a no-op external agent
//! (`/bin/true`) over many accounts, beside the same number of plain
//! fork+exec of `/bin/true` as those accounts (groups looked up, then
//! setgroups/setgid/setuid in the child) in the same run.
//!
//! `sudo cargo bench --bench agents` (1,000 accounts, created with useradd
//! and removed after). Without `--bench` (as `cargo test --all-targets`
//! runs it) it uses 3 accounts and only checks that the path works.
//! `BENCH_ACCOUNTS=N` sets the number of accounts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};

/// Runs `/bin/true` as `user` the plain way: groups from getgrouplist in
/// the parent, then setgroups, setgid, setuid in the child.
fn plain_true(user: &TestUser) {
    let name = CString::new(user.name.as_str()).expect("a name without NUL");
    let groups: Vec<libc::gid_t> =
        nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
            .expect("getgrouplist")
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
    let (uid, gid) = (user.uid, user.gid);
    let mut cmd = Command::new("/bin/true");
    cmd.env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe system calls on data prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().expect("run /bin/true");
    assert!(status.success());
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    require_root();
    let full = std::env::args().any(|a| a == "--bench");
    let (accounts, rounds) = if full { (1000, 3) } else { (3, 1) };
    // BENCH_ACCOUNTS overrides the count (to look at a smaller run).
    let accounts = std::env::var("BENCH_ACCOUNTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(accounts);
    let made = Instant::now();
    let users: Vec<TestUser> = (0..accounts).map(|_| TestUser::new("ag")).collect();
    eprintln!("{accounts} accounts created in {:?}", made.elapsed());
    let d = Daemon::configure("");
    let agents_d = d.scratch.path.join("agents.d");
    std::fs::create_dir(&agents_d).expect("agents.d");
    std::fs::write(
        agents_d.join("noop.toml"),
        "[agents.noop]\ncommand = [\"/bin/true\"]\n",
    )
    .expect("noop.toml");
    let config = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        config.replacen(
            "[paths]\n",
            &format!("[paths]\nagents_dir = \"{}\"\n", agents_d.display()),
            1,
        ),
    )
    .expect("config");
    let mut d = d;
    d.spawn().expect("the daemon starts");
    for u in &users {
        d.ok(None, &["profile", "create", &u.name]);
    }

    let mut cycles = Vec::new();
    let mut plains = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let out = d.ok(None, &["agent", "run", "noop", "--all"]);
        cycles.push(t.elapsed());
        assert!(out.contains(&format!("ran ({accounts} users)")), "{out}");
        let t = Instant::now();
        for u in &users {
            plain_true(u);
        }
        plains.push(t.elapsed());
    }
    let (cycle, plain) = (median(cycles), median(plains));
    let per = |t: Duration| t.as_secs_f64() * 1000.0 / accounts as f64;
    println!(
        "agents: cycle of a no-op agent over {accounts} accounts: {:.0} ms ({:.2} ms/user); \
         plain fork+exec as those users: {:.0} ms ({:.2} ms/user); ratio {:.2} (target <= 1.5); \
         median of {rounds}",
        cycle.as_secs_f64() * 1000.0,
        per(cycle),
        plain.as_secs_f64() * 1000.0,
        per(plain),
        cycle.as_secs_f64() / plain.as_secs_f64()
    );
    for line in d.log_text().lines().filter(|l| l.contains("manual cycle")) {
        println!(
            "  daemon: {}",
            line.split_once("agent ").map_or(line, |(_, r)| r)
        );
    }
    for u in &users {
        let log = std::fs::read_to_string(d.profile(u).join("logs/agents/noop.jsonl"))
            .expect("a run log");
        assert_eq!(log.lines().count(), rounds, "one run per cycle");
        assert!(log.contains("\"status\":\"ok\""));
    }
}
