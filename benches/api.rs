//! Benchmark (not a test): an authenticated `GET /v1/memories?limit=20` over
//! loopback TCP at 64 connections, side by side in the same run with a bare
//! hyper hello-world server and a bare hyper server answering the same page
//! (same bytes), all loaded by `wrk`; and the time a successful PAM login
//! takes.
//!
//! `sudo cargo bench --bench api` (needs root and `wrk`: apt-get install
//! wrk). Without `--bench` (as `cargo test --all-targets` runs it) it only
//! checks that the path works, quickly.

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};
use hyper::body::Bytes;

const PASSWORD: &str = "benchmark password 42";
const CONNECTIONS: &str = "64";
const SECONDS: &str = "5s";
/// Rounds of the three servers in turn.
const ROUNDS: usize = 3;

fn main() {
    require_root();
    let full = std::env::args().any(|a| a == "--bench");
    let user = TestUser::new("bench");
    user.set_password(PASSWORD);
    // One account on 64 connections: above the default per-account budget.
    let d = Daemon::start(&format!(
        "[limits]\nconnections_per_account = 128\n\n[limits.per_user.{}]\nrequests_per_second = 100000000\nrequest_burst = 100000000\n",
        user.name
    ));
    for i in 0..100 {
        d.ok(Some(&user), &["capture", &format!("benchmark memory {i}")]);
    }

    let mut login_times = Vec::new();
    let mut token = String::new();
    for _ in 0..if full { 20 } else { 1 } {
        let t = Instant::now();
        let reply = d.login(&user.name, PASSWORD);
        login_times.push(t.elapsed());
        assert_eq!(reply.status, 200, "login failed: {}", reply.body);
        token = reply.json()["token"].as_str().expect("token").to_owned();
    }
    let auth = format!("Bearer {token}");
    let page = d.http(
        "GET",
        "/v1/memories?limit=20",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.json()["items"].as_array().map(Vec::len), Some(20));
    if !full {
        println!("api bench: smoke run ok (run `cargo bench --bench api` to measure)");
        return;
    }

    let hello_port = common::free_port();
    std::thread::spawn(move || bare_server(hello_port, Bytes::from_static(b"hello")));
    // The same page as profiled answers, served by bare hyper: what the
    // answer's size costs on its own (loopback copies, wrk's parsing).
    let page_port = common::free_port();
    let page_bytes = Bytes::from(page.body.clone());
    std::thread::spawn(move || bare_server(page_port, page_bytes));
    std::thread::sleep(Duration::from_millis(200));

    // The machine is shared: the three servers take turns, round after
    // round, so a busy moment weighs on all of them alike.
    let url = format!("http://127.0.0.1:{}/v1/memories?limit=20", d.port);
    println!("| round | server | requests/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let hello = wrk(&format!("http://127.0.0.1:{hello_port}/"), None);
        let same_page = wrk(&format!("http://127.0.0.1:{page_port}/"), None);
        let ours = wrk(&url, Some(&auth));
        for (name, r) in [
            ("bare hyper hello world".to_owned(), &hello),
            (
                format!("bare hyper, the same {}-byte page", page.body.len()),
                &same_page,
            ),
            (
                "profiled GET /v1/memories?limit=20 (bearer)".to_owned(),
                &ours,
            ),
        ] {
            println!(
                "| {round} | {name} | {:.0} | {} | {} |",
                r.rps, r.p50, r.p99
            );
        }
        ratios.push((ours.rps / hello.rps, ours.rps / same_page.rps));
    }
    login_times.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    for (round, (hello, page)) in ratios.iter().enumerate() {
        println!(
            "round {}: ratio profiled / bare hyper hello {hello:.2}, / bare hyper with the same page {page:.2}",
            round + 1
        );
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "median ratio profiled / bare hyper hello: {:.2}",
        ratios[ratios.len() / 2].0
    );
    println!(
        "PAM login (pam_unix, yescrypt), {} logins: p50 {:?}, p99 {:?}",
        login_times.len(),
        pct(&login_times, 0.5),
        pct(&login_times, 0.99)
    );
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
}

/// Runs wrk with 2 threads and 64 connections for 5 s.
fn wrk(url: &str, auth: Option<&str>) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", CONNECTIONS, "-d", SECONDS, "--latency"]);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("Authorization: {a}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors against {url}:\n{text}"
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output:\n{text}"))
    };
    WrkResult {
        rps: field("Requests/sec:").parse().expect("requests/s"),
        p50: field("50%"),
        p99: field("99%"),
    }
}

/// The baseline: hyper answering `body` with nothing else to do.
fn bare_server(port: u16, body: Bytes) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind hello server");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
