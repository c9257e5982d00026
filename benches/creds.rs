//! Benchmark: credential resolution, the agents' hot path. Each call reads
//! `credentials.age` through the profile layer, reads the daemon identity,
//! decrypts (age, X25519) and parses it; nothing is cached.
//!
//! `sudo cargo bench --bench creds` runs the full measurement and prints
//! p50/p99/max per call. Without `--bench` in its arguments (as `cargo test
//! --all-targets` runs it) it makes a short smoke run and exits 0. It needs
//! root (the keys directory and profiles must be root's); otherwise it says
//! so and exits 0 (1 when `CI` is set, as the tests do).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use profiled::accounts::{self, UserId};
use profiled::creds::{Endpoint, Fallback, NewKey, Place, Secret, Settings, Vault};
use profiled::profile::ProfilesRoot;

/// Removes the scratch directory however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    if !rustix::process::geteuid().is_root() {
        // Like the tests: one that could not run never reports success.
        eprintln!("creds bench: needs root (run it with sudo)");
        return ExitCode::FAILURE;
    }
    match run(if full { 20_000 } else { 50 }, full) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("creds bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn key(secret: &str) -> NewKey {
    NewKey {
        secret: Secret::new(secret.to_owned()),
        label: Some("bench".to_owned()),
        expires: None,
    }
}

fn run(calls: usize, full: bool) -> Result<(), String> {
    let scratch = Scratch(PathBuf::from(format!(
        "/tmp/profiled-bench-creds-{}",
        ulid::Ulid::generate()
    )));
    let state = scratch.0.join("state");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    set_mode(&scratch.0)?;
    set_mode(&state)?;
    // root's own profile: the bench needs an account, and root is the one
    // that surely exists; the profile layer checks ownership the same way.
    let account = accounts::by_uid(UserId::ROOT)
        .map_err(|e| e.to_string())?
        .ok_or("no account for uid 0")?;
    let root = ProfilesRoot::open(&state.join("profiles"), 1 << 20).map_err(|e| e.to_string())?;
    let (profile, _) = root.ensure_profile(&account).map_err(|e| e.to_string())?;
    let vault = Vault::open(&state).map_err(|e| e.to_string())?;
    // A realistic file: a few providers.
    for (p, s) in [
        (
            "openai",
            "sk-proj-bench-0123456789abcdefghijklmnopqrstuvwxyz",
        ),
        (
            "anthropic",
            "sk-ant-bench-0123456789abcdefghijklmnopqrstuvwxyz",
        ),
        (
            "openrouter",
            "sk-or-bench-0123456789abcdefghijklmnopqrstuvwxyz",
        ),
    ] {
        vault
            .set(Place::Profile(&profile), p, key(s))
            .map_err(|e| e.to_string())?;
    }
    vault
        .set(Place::Host, "ollama", key("host-bench-token"))
        .map_err(|e| e.to_string())?;
    let settings = Settings {
        fallback: Fallback::Any,
        endpoints: [(
            "ollama".to_owned(),
            Endpoint::parse("http://127.0.0.1:11434/v1", true, None)?,
        )]
        .into(),
    };

    // The first call records last_used: a write, once a minute per key.
    let t = Instant::now();
    vault
        .resolve(&profile, "openai", &settings)
        .map_err(|e| e.to_string())?;
    let first = t.elapsed();

    let own = measure(calls, || {
        vault.resolve(&profile, "openai", &settings).map(drop)
    })?;
    vault
        .resolve(&profile, "ollama", &settings)
        .map_err(|e| e.to_string())?;
    let fallback = measure(calls / 4, || {
        vault.resolve(&profile, "ollama", &settings).map(drop)
    })?;

    println!(
        "creds: resolve-and-decrypt per call ({calls} calls{})",
        if full { "" } else { ", smoke run" }
    );
    report("own key", &own);
    report("host fallback (two files)", &fallback);
    println!(
        "  first call, which also writes last_used: {:.3} ms",
        ms(first)
    );
    Ok(())
}

fn set_mode(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

fn measure<E: std::fmt::Display>(
    n: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<Vec<Duration>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        f().map_err(|e| e.to_string())?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    println!(
        "  {what:<28} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(sorted[sorted.len() - 1])
    );
}
