//! Benchmark (not a test) of the foundation, over the daemon's Unix socket as
//! a real account: captures per second (`POST /v1/memories`) from concurrent
//! clients, and the latency of listing the newest 20 memories
//! (`GET /v1/memories?limit=20`) in a profile holding 10,000.
//! docs/BENCHMARKS.md has the figures and what bounds them.
//!
//! `sudo cargo bench --bench foundation` measures. Without `--bench` (as
//! `cargo test --all-targets` runs every bench target) it does a tiny smoke
//! run, so the benchmark is known to work without slowing the tests down.
//!
//! The clients are this binary run again as the account, because the daemon
//! knows its callers by SO_PEERCRED: requests from root would be an admin's
//! `?user=` requests, which add system-audit writes the path measured here
//! does not have.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use nix::sys::signal::{SigSet, Signal};
use profiled::client::Client;
use profiled::store::{Memory, Page};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// In a client's environment: the binary is a client, not the benchmark.
const CLIENT_ENV: &str = "PROFILED_BENCH_CLIENT";

/// The page size listed.
const PAGE: usize = 20;

/// How much one run does.
struct Plan {
    name: &'static str,
    clients: usize,
    captures_per_client: usize,
    /// Memories in the profile when listing is measured.
    memories: usize,
    list_warmup: usize,
    list_calls: usize,
}

const FULL: Plan = Plan {
    name: "full",
    clients: 10,
    captures_per_client: 300,
    memories: 10_000,
    list_warmup: 200,
    list_calls: 2_000,
};

const SMOKE: Plan = Plan {
    name: "smoke (run with --bench to measure)",
    clients: 2,
    captures_per_client: 5,
    memories: 50,
    list_warmup: 5,
    list_calls: 20,
};

fn main() -> ExitCode {
    let outcome = if std::env::var_os(CLIENT_ENV).is_some() {
        client_main()
    } else {
        bench_main()
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("foundation bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench_main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    if !rustix::process::geteuid().is_root() {
        let why = "needs root: it creates a Linux account and runs the daemon \
                   (sudo cargo bench --bench foundation)";
        return Err(why.into());
    }
    trap_signals()?;
    let plan = if full { &FULL } else { &SMOKE };
    // After a signal, the clients' failures are its consequence, not news.
    let results = run(plan).map_err(|e| {
        if INTERRUPTED.load(Ordering::SeqCst) {
            "interrupted".into()
        } else {
            e
        }
    })?;
    results.print(plan);
    Ok(())
}

/// The measurements of one run.
struct Results {
    captures: Batch,
    fill: Batch,
    lists: Batch,
}

/// Requests done by a group of clients started together.
struct Batch {
    /// From the start signal to the last client's last answer.
    wall: Duration,
    /// Every request's latency, sorted.
    micros: Vec<u64>,
}

impl Batch {
    fn rate(&self) -> f64 {
        self.micros.len() as f64 / self.wall.as_secs_f64()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.micros.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.micros[rank.clamp(1, n) - 1] as f64 / 1000.0
    }

    fn row(&self, what: &str) -> String {
        format!(
            "{what:<44} {:>6} {:>7.2} {:>8.0} {:>7.2} {:>7.2} {:>7.2}",
            self.micros.len(),
            self.wall.as_secs_f64(),
            self.rate(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.percentile_ms(100.0),
        )
    }
}

impl Results {
    fn print(&self, plan: &Plan) {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!();
        println!(
            "profiled foundation benchmark, {} run; {cpus} CPUs, Linux {}",
            plan.name,
            kernel.trim()
        );
        println!(
            "{:<44} {:>6} {:>7} {:>8} {:>7} {:>7} {:>7}",
            "", "reqs", "wall s", "req/s", "p50 ms", "p99 ms", "max ms"
        );
        for (batch, what) in [
            (
                &self.captures,
                format!(
                    "POST /v1/memories, {} clients x {}",
                    plan.clients, plan.captures_per_client
                ),
            ),
            (
                &self.fill,
                format!("  the same, filling the profile to {}", plan.memories),
            ),
            (
                &self.lists,
                format!("GET /v1/memories?limit={PAGE}, {} held", plan.memories),
            ),
        ] {
            println!("{}", batch.row(&what));
        }
    }
}

fn run(plan: &Plan) -> Result<Results> {
    // Declared in this order so they are dropped in the reverse one: the
    // daemon stops before its directory goes, and the account goes last.
    let account = Account::create()?;
    let scratch = Scratch::create()?;
    let daemon = Daemon::start(&scratch.path)?;
    interrupted()?;
    let primed = prepare_profile(&daemon.socket, account.name())?;

    let captures = run_clients(
        &account,
        &daemon.socket,
        "capture",
        0,
        &vec![plan.captures_per_client; plan.clients],
    )?;
    interrupted()?;
    let rest = plan
        .memories
        .checked_sub(primed + captures.micros.len())
        .ok_or("the plan captures more memories than the profile is to hold")?;
    let fill = run_clients(
        &account,
        &daemon.socket,
        "capture",
        0,
        &split(rest, plan.clients),
    )?;
    interrupted()?;
    let held = count_memories(&daemon.profiles.join(account.name()))?;
    if held != plan.memories {
        return Err(format!("{held} memory files on disk, expected {}", plan.memories).into());
    }
    let lists = run_clients(
        &account,
        &daemon.socket,
        "list",
        plan.list_warmup,
        &[plan.list_calls],
    )?;
    Ok(Results {
        captures,
        fill,
        lists,
    })
}

/// `total` requests shared by `parts` clients.
fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

/// Runs one client per entry of `counts`, each doing that many requests of
/// `job` after `warmup` unmeasured ones.
fn run_clients(
    account: &Account,
    socket: &Path,
    job: &str,
    warmup: usize,
    counts: &[usize],
) -> Result<Batch> {
    let exe = std::env::current_exe()?;
    let mut clients = Vec::with_capacity(counts.len());
    for count in counts {
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .env(CLIENT_ENV, "1")
            .arg(job)
            .arg(socket)
            .arg(warmup.to_string())
            .arg(count.to_string())
            .uid(account.uid)
            .gid(account.gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        clients.push(ClientProcess::spawn(&mut cmd)?);
    }
    // Process start-up is not what is measured: every client says when it
    // is ready, and they are all let go together.
    for client in &mut clients {
        client.wait_ready()?;
    }
    let start = Instant::now();
    for client in &mut clients {
        client.go()?;
    }
    let finished = std::thread::scope(|s| {
        let readers: Vec<_> = clients
            .iter_mut()
            .map(|c| s.spawn(move || c.finish()))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().map_err(|_| "a client reader panicked")?)
            .collect::<Result<Vec<_>>>()
    })?;
    let end = finished
        .iter()
        .map(|(done, _)| *done)
        .max()
        .ok_or("no clients")?;
    let mut micros: Vec<u64> = finished.into_iter().flat_map(|(_, m)| m).collect();
    micros.sort_unstable();
    if micros.is_empty() {
        return Err("the clients measured nothing".into());
    }
    Ok(Batch {
        wall: end.duration_since(start),
        micros,
    })
}

/// A client process, killed when dropped so a failed run leaves none behind.
struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn spawn(cmd: &mut Command) -> Result<ClientProcess> {
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("a client without stdout")?;
        Ok(ClientProcess {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line != "ready\n" {
            let status = self.child.wait()?;
            return Err(format!("a client did not start ({status}); its error is above").into());
        }
        Ok(())
    }

    fn go(&mut self) -> Result<()> {
        let mut stdin = self.stdin.take().ok_or("a client was started twice")?;
        stdin.write_all(b"g")?;
        Ok(())
    }

    /// When the client's answer arrived, and its latencies in microseconds.
    fn finish(&mut self) -> Result<(Instant, Vec<u64>)> {
        // A client prints nothing until its last request is answered, so
        // the first byte marks its end, before process exit is counted.
        self.stdout.fill_buf()?;
        let done = Instant::now();
        let mut text = String::new();
        self.stdout.read_to_string(&mut text)?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("a client failed ({status}); its error is above").into());
        }
        let micros = text
            .lines()
            .map(str::parse)
            .collect::<Result<Vec<u64>, _>>()?;
        Ok((done, micros))
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client side: runs as the account, does its share of requests once
/// told to go, and prints one latency per line, in microseconds.
fn client_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [job, socket, warmup, count] = args.as_slice() else {
        return Err(format!("a client needs job, socket, warm-up and count, got {args:?}").into());
    };
    let warmup: usize = warmup.parse()?;
    let count: usize = count.parse()?;
    let client = Client::new(Path::new(socket), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(b"ready\n")?;
    stdout.flush()?;
    let mut go = [0u8; 1];
    std::io::stdin().read_exact(&mut go)?;
    let micros = rt.block_on(async {
        match job.as_str() {
            "capture" => capture(&client, count).await,
            "list" => list(&client, warmup, count).await,
            other => Err(format!("unknown client job {other:?}").into()),
        }
    })?;
    let text: String = micros.iter().map(|m| format!("{m}\n")).collect();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

async fn capture(client: &Client, count: usize) -> Result<Vec<u64>> {
    let pid = std::process::id();
    let mut micros = Vec::with_capacity(count);
    for i in 0..count {
        let body = serde_json::json!({
            "text": format!("Benchmark capture {i} of client {pid}: met Bob about the migration plan."),
            "tags": ["bench"],
            "source": "bench",
        });
        let t = Instant::now();
        let resp = client
            .call(Method::POST, "/v1/memories", Some(&body))
            .await?;
        micros.push(elapsed_micros(t));
        if resp.status != StatusCode::CREATED {
            return Err(format!(
                "capture answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
            .into());
        }
    }
    Ok(micros)
}

async fn list(client: &Client, warmup: usize, count: usize) -> Result<Vec<u64>> {
    let path = format!("/v1/memories?limit={PAGE}");
    let mut micros = Vec::with_capacity(count);
    for i in 0..warmup + count {
        let t = Instant::now();
        let resp = client.call(Method::GET, &path, None).await?;
        let us = elapsed_micros(t);
        let page: Page<Memory> = resp.json()?;
        if page.items.len() != PAGE || !page.problems.is_empty() {
            return Err(format!(
                "a listing gave {} items (expected {PAGE}) and problems {:?}",
                page.items.len(),
                page.problems
            )
            .into());
        }
        if i >= warmup {
            micros.push(us);
        }
    }
    Ok(micros)
}

fn elapsed_micros(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Creates `user`'s profile and this month's memory directory, as root
/// (the admin), so that neither is counted in what is measured; returns the
/// memories captured doing so.
///
/// The directory matters beyond timing: concurrent first captures of a
/// month race in the daemon, which creates the directory as root and only
/// then gives it to the account, so a capture that finds it in between is
/// refused (422 unsafe_file, "owned by uid 0").
fn prepare_profile(socket: &Path, user: &str) -> Result<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let admin = Client::new(socket, None);
    let profile = serde_json::json!({ "user": user });
    let memory = serde_json::json!({ "text": "Benchmark priming capture." });
    let path = format!("/v1/memories?user={}", profiled::client::encode(user));
    for (path, body) in [("/v1/profiles", &profile), (path.as_str(), &memory)] {
        let resp = rt.block_on(admin.call(Method::POST, path, Some(body)))?;
        if resp.status != StatusCode::CREATED {
            return Err(format!(
                "POST {path} answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
            .into());
        }
    }
    Ok(1)
}

/// Memory files under `profile`'s `memory/episodic/YYYY/MM/`.
fn count_memories(profile: &Path) -> Result<usize> {
    let mut n = 0;
    for year in std::fs::read_dir(profile.join("memory/episodic"))? {
        for month in std::fs::read_dir(year?.path())? {
            for file in std::fs::read_dir(month?.path())? {
                let name = file?.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".md") && !name.starts_with('.') {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Serialises useradd/userdel with the tests: both take /etc/passwd's lock
/// and fail when it is held.
fn accounts_lock() -> Result<File> {
    let f = File::create("/tmp/pft-accounts.lock")?;
    f.lock()?;
    Ok(f)
}

/// A short random tag, so concurrent runs never share names.
fn tag() -> String {
    ulid::Ulid::generate().to_string()[20..].to_ascii_lowercase()
}

/// An account name, removed with `userdel -f` when dropped.
struct AccountName(String);

impl Drop for AccountName {
    fn drop(&mut self) {
        let _lock = accounts_lock();
        match Command::new("userdel").arg("-f").arg(&self.0).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "userdel -f {} failed, remove the account by hand: {}",
                self.0,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!(
                "userdel -f {} failed, remove the account by hand: {e}",
                self.0
            ),
        }
    }
}

/// The benchmark's Linux account, removed however the run ends.
struct Account {
    name: AccountName,
    uid: u32,
    gid: u32,
}

impl Account {
    fn name(&self) -> &str {
        &self.name.0
    }

    fn create() -> Result<Account> {
        let name = format!("pftbench{}", tag());
        let out = {
            let _lock = accounts_lock()?;
            Command::new("useradd").arg("-M").arg(&name).output()?
        };
        if !out.status.success() {
            return Err(format!(
                "useradd -M {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        // The account exists from here on: the guard owns it before
        // anything else can fail.
        let name = AccountName(name);
        let user = nix::unistd::User::from_name(&name.0)?
            .ok_or_else(|| format!("the new account {} is not in NSS", name.0))?;
        Ok(Account {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            name,
        })
    }
}

/// A root-owned 0755 directory under /tmp (the account must traverse it to
/// reach its profile), removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch> {
        let path = PathBuf::from(format!("/tmp/pftbench-{}", tag()));
        std::fs::create_dir(&path)?;
        let scratch = Scratch { path };
        std::fs::set_permissions(&scratch.path, std::fs::Permissions::from_mode(0o755))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The daemon's pid while it runs, for the signal thread.
static DAEMON_PID: AtomicU32 = AtomicU32::new(0);
/// Set once SIGINT, SIGTERM or SIGHUP has arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A signal would end the process without running the guards, leaving the
/// account in /etc/passwd. So the signals are blocked (before any thread or
/// child exists; std gives children an empty mask) and a thread takes them:
/// it kills the daemon, every client then fails, and the run unwinds
/// through its guards.
fn trap_signals() -> Result<()> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            if let Ok(pid) = i32::try_from(DAEMON_PID.load(Ordering::SeqCst))
                && pid != 0
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    });
    Ok(())
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// The daemon (the build cargo made for this target: release under `cargo
/// bench`), killed when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    profiles: PathBuf,
}

impl Daemon {
    fn start(scratch: &Path) -> Result<Daemon> {
        let config = scratch.join("profiled.toml");
        // [tcp]: the loopback listener is not measured, and its fixed
        // default port would clash with any other daemon on the host.
        // [auth]: the daemon refuses to start without its PAM service file;
        // nothing logs in here, so any existing service will do.
        // [limits]: all clients are one account, and its default rate
        // limit (50 requests/s) would make this a benchmark of the limiter.
        std::fs::write(
            &config,
            format!(
                "[paths]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\n\
                 [tcp]\nlisten = \"\"\n\n\
                 [auth]\npam_service = \"login\"\n\n\
                 [limits]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n",
                scratch.join("state").display(),
                scratch.join("run").display(),
            ),
        )?;
        let log_path = scratch.join("daemon.log");
        let log = File::create(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_profiled"))
            .arg("--config")
            .arg(&config)
            // The production default, whatever the caller's environment says.
            .env("PROFILED_LOG", "info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        DAEMON_PID.store(child.id(), Ordering::SeqCst);
        let mut daemon = Daemon {
            child,
            socket: scratch.join("run/api.sock"),
            profiles: scratch.join("state/profiles"),
        };
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&daemon.socket).is_err() {
            interrupted()?;
            if let Some(status) = daemon.child.try_wait()? {
                return Err(format!("profiled exited with {status}: {}", log_text()).into());
            }
            if Instant::now() > deadline {
                return Err(format!("profiled did not serve within 20 s: {}", log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        DAEMON_PID.store(0, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
