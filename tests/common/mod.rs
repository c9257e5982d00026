//! The integration-test harness: real Linux accounts (created with useradd
//! and removed by a drop guard), a real daemon process per test in its own
//! scratch directory, and profilectl run as those accounts.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod container;
pub mod model;
pub mod peer;
pub mod stream;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PROFILED: &str = env!("CARGO_BIN_EXE_profiled");
pub const PROFILECTL: &str = env!("CARGO_BIN_EXE_profilectl");

/// Fails the test unless it runs as root (it creates Linux accounts). Root
/// tests are also `#[ignore = "needs root"]`, so a plain `cargo test` lists
/// them as ignored instead of passing them unrun; `scripts/test` runs them
/// with `--include-ignored`, as root.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (it creates Linux accounts): run `sudo scripts/test`"
    );
}

/// A short random tag, so parallel tests and test binaries never share names.
pub fn tag() -> String {
    ulid::Ulid::generate().to_string()[20..].to_ascii_lowercase()
}

/// Serialises useradd/userdel/groupadd across threads and test binaries:
/// they all take /etc/passwd's lock and fail when it is held.
fn accounts_lock() -> File {
    let f = File::create("/tmp/pft-accounts.lock").expect("open /tmp/pft-accounts.lock");
    f.lock().expect("lock /tmp/pft-accounts.lock");
    f
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run an account command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Linux account for one test, removed (with its home) when dropped.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// A new regular account `pft<tag><role>`.
    pub fn new(role: &str) -> TestUser {
        TestUser::with_args(role, &[])
    }

    /// A new account with extra useradd arguments (`-r` for a system
    /// account, `-G group` for membership).
    pub fn with_args(role: &str, args: &[&str]) -> TestUser {
        let name = format!("pft{}{role}", tag());
        {
            let _lock = accounts_lock();
            run_ok(Command::new("useradd").args(args).arg("-M").arg(&name));
        }
        let user = nix::unistd::User::from_name(&name)
            .expect("getpwnam")
            .expect("the new account exists");
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }

    /// Sets the account's password (chpasswd), for PAM logins.
    pub fn set_password(&self, password: &str) {
        let _lock = accounts_lock();
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn chpasswd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{}:{password}\n", self.name).as_bytes())
            .expect("write chpasswd");
        assert!(child.wait().expect("chpasswd").success(), "chpasswd failed");
    }

    /// Locks the password (`passwd -l`).
    pub fn lock_password(&self) {
        let _lock = accounts_lock();
        run_ok(Command::new("passwd").args(["-l", &self.name]));
    }

    /// Sets the account's expiry date (`chage -E DAY`, DAY as chage takes
    /// it: days since 1970-01-01 or YYYY-MM-DD; -1 for never).
    pub fn expire(&self, day: &str) {
        let _lock = accounts_lock();
        run_ok(Command::new("chage").args(["-E", day, &self.name]));
    }

    /// A command that runs as this account (its primary group only).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // std drops the supplementary groups when it sets the uid as root.
        cmd.uid(self.uid).gid(self.gid);
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _lock = accounts_lock();
        let _ = Command::new("userdel").arg("-f").arg(&self.name).output();
    }
}

/// A group for one test, removed when dropped.
#[derive(Debug)]
pub struct TestGroup {
    pub name: String,
}

impl TestGroup {
    pub fn new(role: &str) -> TestGroup {
        let name = format!("pft{}{role}", tag());
        let _lock = accounts_lock();
        run_ok(Command::new("groupadd").arg(&name));
        TestGroup { name }
    }

    pub fn add(&self, user: &TestUser) {
        let _lock = accounts_lock();
        run_ok(Command::new("gpasswd").args(["-a", &user.name, &self.name]));
    }

    pub fn remove(&self, user: &TestUser) {
        let _lock = accounts_lock();
        run_ok(Command::new("gpasswd").args(["-d", &user.name, &self.name]));
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _lock = accounts_lock();
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// A child process killed when dropped, even when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory (root, 0755, so accounts can reach their profiles)
/// removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let path = PathBuf::from(format!("/tmp/pft-{}", tag()));
        std::fs::create_dir(&path).expect("create scratch dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running daemon over its own scratch directory, with its own PAM
/// service file and its own loopback TCP port.
pub struct Daemon {
    pub scratch: Scratch,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub profiles: PathBuf,
    pub state: PathBuf,
    /// The loopback TCP port.
    pub port: u16,
    /// /etc/pam.d/<service>, removed on drop.
    pub pam_file: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Daemon {
    /// Writes a config (the scratch paths plus `extra` TOML, which may add
    /// any section but [paths], [tcp] and [auth]) without starting.
    pub fn configure(extra: &str) -> Daemon {
        Daemon::configure_auth(extra, "")
    }

    /// As [`Daemon::configure`], with `auth` lines added to [auth].
    pub fn configure_auth(extra: &str, auth: &str) -> Daemon {
        let scratch = Scratch::new();
        let state = scratch.path.join("state");
        let run = scratch.path.join("run");
        let config = scratch.path.join("profiled.toml");
        let service = format!("pft-{}", tag());
        let pam_file = PathBuf::from("/etc/pam.d").join(&service);
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/pam.d/profiled");
        std::fs::copy(&shipped, &pam_file).expect("install the PAM service file");
        let port = free_port();
        std::fs::write(
            &config,
            format!(
                "[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\n[tcp]\nlisten = \"127.0.0.1:{port}\"\n\n[auth]\npam_service = \"{service}\"\n{auth}\n\n{extra}",
                state.display(),
                run.display()
            ),
        )
        .expect("write config");
        Daemon {
            socket: run.join("api.sock"),
            profiles: state.join("profiles"),
            log: scratch.path.join("daemon.log"),
            state,
            config,
            scratch,
            port,
            pam_file,
            child: None,
        }
    }

    /// Configures and starts a daemon, waiting until it serves.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_auth(extra, "")
    }

    /// As [`Daemon::start`], with `auth` lines added to [auth].
    pub fn start_auth(extra: &str, auth: &str) -> Daemon {
        let mut d = Daemon::configure_auth(extra, auth);
        d.spawn().expect("the daemon starts");
        d
    }

    /// Starts the daemon process; `Err` with its output if it exits early.
    pub fn spawn(&mut self) -> Result<(), String> {
        self.spawn_with(&[], &[])
    }

    /// As [`Daemon::spawn`], through `wrapper` (a command that execs the
    /// rest of its arguments, such as `prlimit --nofile=…`) and with `env`
    /// added to the daemon's environment.
    pub fn spawn_with(&mut self, wrapper: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open daemon log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(PROFILED);
                c
            }
            None => Command::new(PROFILED),
        };
        let child = cmd
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn profiled");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log_text()));
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log file (its standard output and error).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` and waits for the exit status.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("kill");
        c.wait().expect("wait for daemon")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).expect("kill");
    }

    /// profilectl as `user` (None: as root) against this daemon.
    pub fn ctl(&self, user: Option<&TestUser>, args: &[&str]) -> Output {
        self.ctl_stdin(user, args, None)
    }

    /// profilectl with `stdin` piped in.
    pub fn ctl_stdin(&self, user: Option<&TestUser>, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = match user {
            Some(u) => u.command(PROFILECTL),
            None => Command::new(PROFILECTL),
        };
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn profilectl");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("profilectl output")
    }

    /// profilectl that must succeed; returns stdout.
    pub fn ok(&self, user: Option<&TestUser>, args: &[&str]) -> String {
        let out = self.ctl(user, args);
        assert!(
            out.status.success(),
            "profilectl {args:?} as {:?} failed ({}): {}{}",
            user.map(|u| &u.name),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// A raw request through `profilectl api`: (HTTP status, JSON body).
    pub fn api(
        &self,
        user: Option<&TestUser>,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut args = vec!["api", method, path];
        if let Some(b) = body {
            args.push(b);
        }
        let out = self.ctl(user, &args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let json: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        let status = if out.status.success() {
            // Success bodies carry no status: 2xx is all that matters here.
            200
        } else {
            json.get("status")
                .and_then(serde_json::Value::as_u64)
                .map_or(0, |s| s as u16)
        };
        (status, json)
    }

    /// The profile directory of `user`.
    pub fn profile(&self, user: &TestUser) -> PathBuf {
        self.profiles.join(&user.name)
    }

    /// Every line of every audit file of `user`'s profile.
    pub fn user_audit(&self, user: &TestUser) -> String {
        read_all(&self.profile(user).join("logs/audit"))
    }

    /// Every line of the system audit log.
    pub fn system_audit(&self) -> String {
        read_all(&self.state.join("audit"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.pam_file);
    }
}

/// An HTTP answer read off a TCP connection.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Daemon {
    /// One HTTP/1.1 request over loopback TCP, written by hand so a test can
    /// forge any header. `Host` defaults to 127.0.0.1:<port>.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpReply {
        http_request(self.port, method, path, headers, body)
    }

    /// Logs `name` in over TCP with `password` from a process of `client`
    /// (curl run as that account, so the connecting socket is the
    /// client's); the HTTP status.
    pub fn login_from(&self, client: &TestUser, name: &str, password: &str) -> u16 {
        let body = serde_json::json!({"username": name, "password": password}).to_string();
        let mut child = client
            .command("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ])
            .arg(format!("http://127.0.0.1:{}/v1/auth/login", self.port))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn curl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.as_bytes())
            .expect("write the login body");
        let out = child.wait_with_output().expect("curl output");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl printed no status: {out:?}"))
    }

    /// Logs `user` in over TCP with `password`; the reply.
    pub fn login(&self, user: &str, password: &str) -> HttpReply {
        let body = serde_json::json!({"username": user, "password": password}).to_string();
        self.http("POST", "/v1/auth/login", &[], Some(&body))
    }
}

/// [`Daemon::http`] to any loopback port (a daemon the test did not start).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpReply {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect over TCP");
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn read_all(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// The control characters (C0, DEL, C1) in `bytes` other than the
/// newline: what a terminal would act on if profilectl printed it.
pub fn controls(bytes: &[u8]) -> Vec<char> {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect()
}

/// The escapes a hostile text carries: OSC 52 (write the clipboard), OSC 0
/// (retitle the window), CSI 2K (erase the line), a C1 CSI, a carriage
/// return, as TOML `\u` escapes.
pub const TERMINAL_ATTACK: &str =
    "\\u001b]52;c;cm0gLXJmIH4=\\u0007\\u001b]0;pwned\\u0007\\u001b[2K\\u009b2J\\r";

/// Captures `text` as `user` and returns the new id.
pub fn capture(d: &Daemon, user: &TestUser, text: &str) -> String {
    d.ok(Some(user), &["capture", text]).trim().to_owned()
}

/// The path of memory `id` under `user`'s profile, found on disk.
pub fn memory_file(d: &Daemon, user: &TestUser, id: &str) -> PathBuf {
    let root = d.profile(user).join("memory/episodic");
    for year in std::fs::read_dir(&root).expect("episodic dir").flatten() {
        for month in std::fs::read_dir(year.path()).expect("year dir").flatten() {
            let p = month.path().join(format!("{id}.md"));
            if p.exists() {
                return p;
            }
        }
    }
    panic!("memory {id} not found under {}", root.display());
}
