//! Rule 9: no local account, eligible or not, can lock the others out of
//! the API by holding connections or event streams, on the socket or on
//! TCP; root still gets in; idle keep-alive connections are closed.
//!
//! Connections "as" an account are opened by a thread of this test whose
//! effective uid alone is switched (a raw `setresuid`, which the kernel
//! applies to the calling thread only), so the daemon's `SO_PEERCRED`
//! names that account, exactly as for a process of hers.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};

/// An answer must come within this, however loaded the machine.
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// What a flood may leave of its connections open, at most (the defaults
/// of docs/CONFIG.md).
const PER_ACCOUNT: usize = 32;
const PER_INELIGIBLE_UID: usize = 4;
const STREAMS_PER_ACCOUNT: usize = 8;

/// Lets this process hold thousands of descriptors.
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

/// `n` connections to `socket` whose peer credentials are `uid`'s; stops
/// early only if connecting itself fails.
fn connect_as(socket: &Path, uid: u32, n: usize) -> Vec<UnixStream> {
    common::peer::as_uid(uid, || {
        (0..n)
            .map_while(|_| UnixStream::connect(socket).ok())
            .collect()
    })
}

/// Writes `req` and reads the answer's head, and its body when it has a
/// length: (status, head and body); status 0 when the connection was
/// closed without an answer.
fn exchange<S: Read + Write>(s: &mut S, req: &str) -> (u16, String) {
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (0, String::from_utf8_lossy(&raw).into_owned()),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(length) = length {
        while raw.len() < head_end + length {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8_lossy(&raw).into_owned())
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n")
}

/// One request on a new socket connection as `uid`, timed.
fn socket_request(d: &Daemon, uid: u32, path: &str) -> (u16, Duration, String) {
    let start = Instant::now();
    let mut s = connect_as(&d.socket, uid, 1)
        .pop()
        .expect("connect to the socket");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let (status, text) = exchange(&mut s, &get(path, "Connection: close\r\n"));
    (status, start.elapsed(), text)
}

/// Opens `n` event streams on the socket as `uid`: the connections that
/// got a stream (200), and the statuses of the others.
fn streams_on_socket(d: &Daemon, uid: u32, n: usize) -> (Vec<UnixStream>, Vec<u16>) {
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for mut s in connect_as(&d.socket, uid, n) {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        match exchange(&mut s, &get("/v1/events", "")).0 {
            200 => open.push(s),
            other => refused.push(other),
        }
    }
    (open, refused)
}

/// How many of `conns` the daemon still holds open, once it has had
/// `patience` to close the ones it refuses.
fn still_open<S: Read>(conns: &mut [S], set_nonblocking: impl Fn(&S), patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    loop {
        let mut open = 0;
        for c in conns.iter_mut() {
            set_nonblocking(c);
            let mut buf = [0u8; 1024];
            loop {
                match c.read(&mut buf) {
                    // An answer to a request sent before, or a refusal
                    // being written: read on.
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        open += 1;
                        break;
                    }
                    _ => break,
                }
            }
        }
        if Instant::now() >= deadline {
            return open;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Alice's 20 requests on the socket, each on a new connection: all must
/// be answered 200 within [`ANSWERED_WITHIN`].
fn alice_is_served_on_the_socket(d: &Daemon, alice: &TestUser) {
    for i in 0..20 {
        let (status, took, text) = socket_request(d, alice.uid, "/v1/me");
        assert_eq!(status, 200, "alice's request {i} was not served: {text:?}");
        assert!(took < ANSWERED_WITHIN, "alice's request {i} took {took:?}");
    }
}

fn metric(d: &Daemon, name_and_labels: &str) -> u64 {
    let (_, _, text) = socket_request(d, 0, "/v1/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

fn socket_flood_leaves_others_served(attacker: &TestUser, per_uid: usize, streams: usize) {
    raise_nofile();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    // A profile for alice first, so her requests below are plain reads.
    assert_eq!(socket_request(&d, alice.uid, "/v1/me").0, 200);

    let (mut held_streams, _) = streams_on_socket(&d, attacker.uid, 100);
    let mut idle = connect_as(&d.socket, attacker.uid, 600);

    alice_is_served_on_the_socket(&d, &alice);
    let (status, took, text) = socket_request(&d, 0, "/v1/profiles");
    assert_eq!(status, 200, "root was not served: {text:?}");
    assert!(took < ANSWERED_WITHIN, "root's request took {took:?}");
    // Alice may still open her own event stream.
    let (alice_streams, refused) = streams_on_socket(&d, alice.uid, 1);
    assert_eq!((alice_streams.len(), refused), (1, Vec::<u16>::new()));

    assert!(
        held_streams.len() <= streams,
        "{} holds {} event streams; at most {streams} are allowed",
        attacker.name,
        held_streams.len()
    );
    let unix = |s: &UnixStream| s.set_nonblocking(true).expect("nonblocking");
    let open = still_open(&mut idle, unix, Duration::from_secs(6))
        + still_open(&mut held_streams, unix, Duration::ZERO);
    assert!(
        open <= per_uid,
        "{} still holds {open} connections; at most {per_uid} are allowed",
        attacker.name
    );
    let refused = metric(
        &d,
        "profiled_connections_refused_total{listener=\"unix\",reason=\"account\"}",
    );
    assert!(refused >= 500, "{refused} refusals counted");
    // The attacker's own client is told why, and what to do.
    let (status, json) = d.api(Some(attacker), "GET", "/v1/health", None);
    assert_eq!(status, 429, "{json}");
    assert_eq!(json["code"], "too_many_connections", "{json}");
    assert!(
        json["detail"]
            .as_str()
            .is_some_and(|t| t.contains("limits.connections_per") && t.contains("close idle ones")),
        "{json}"
    );
    // Hundreds of refusals, one log line: no flooding of the journal.
    let logged = format!("refused a unix connection from uid {}:", attacker.uid);
    assert_eq!(d.log_text().matches(&logged).count(), 1, "{}", d.log_text());
}

#[test]
#[ignore = "needs root"]
fn an_eligible_account_holding_connections_and_streams_locks_nobody_out() {
    require_root();
    let mallory = TestUser::new("mallory");
    socket_flood_leaves_others_served(&mallory, PER_ACCOUNT, STREAMS_PER_ACCOUNT);
}

#[test]
#[ignore = "needs root"]
fn an_ineligible_system_account_holding_connections_locks_nobody_out() {
    require_root();
    // A system account: outside the eligible uid range, no profile, and
    // only /v1/health to call; it may not hold a single event stream.
    let daemon_account = TestUser::with_args("sys", &["-r"]);
    socket_flood_leaves_others_served(&daemon_account, PER_INELIGIBLE_UID, 0);
}

#[test]
#[ignore = "needs root"]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("[limits]\nidle_timeout = \"2s\"\n");
    let (mut stream, refused) = streams_on_socket(&d, alice.uid, 1);
    assert!(refused.is_empty(), "{refused:?}");

    // A keep-alive connection that asked once, and one that never asks.
    let mut conns = connect_as(&d.socket, alice.uid, 2);
    for c in &conns {
        c.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("read timeout");
    }
    let started = Instant::now();
    let (status, text) = exchange(&mut conns[0], &get("/v1/me", ""));
    assert_eq!(status, 200, "{text}");
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let closed = matches!(c.read(&mut buf), Ok(0));
        let after = started.elapsed();
        assert!(
            closed,
            "connection {i} is still open {after:?} after its last request"
        );
        assert!(
            after >= Duration::from_secs(1),
            "connection {i} was closed after {after:?}, before the idle timeout"
        );
    }
    // An event stream is not idle: it outlives the timeout.
    let unix = |s: &UnixStream| s.set_nonblocking(true).expect("nonblocking");
    assert_eq!(
        still_open(&mut stream, unix, Duration::ZERO),
        1,
        "the event stream was closed"
    );
}

/// A token of `user`'s, made over the socket (with a password set: an
/// account whose password is locked has its tokens refused).
fn token(d: &Daemon, user: &TestUser) -> String {
    user.set_password("correct horse battery staple");
    let (status, json) = d.api(Some(user), "POST", "/v1/tokens", Some(r#"{"name":"t"}"#));
    assert_eq!(status, 200, "{json}");
    json["token"].as_str().expect("a token").to_owned()
}

fn tcp_connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect over TCP");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s
}

fn tcp_get(d: &Daemon, path: &str, token: &str, close: bool) -> (TcpStream, u16, String) {
    let mut s = tcp_connect(d);
    let extra = format!(
        "Authorization: Bearer {token}\r\n{}",
        if close { "Connection: close\r\n" } else { "" }
    );
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}\r\n",
        d.port
    );
    let (status, text) = exchange(&mut s, &req);
    (s, status, text)
}

fn user_is_served_over_tcp(d: &Daemon, user: &TestUser, token: &str) {
    for i in 0..20 {
        let start = Instant::now();
        let (_, status, text) = tcp_get(d, "/v1/me", token, true);
        let took = start.elapsed();
        assert_eq!(
            status, 200,
            "{}'s request {i} over TCP was not served: {text:?}",
            user.name
        );
        assert!(
            took < ANSWERED_WITHIN,
            "{}'s request {i} took {took:?}",
            user.name
        );
    }
}

#[test]
#[ignore = "needs root"]
fn unauthenticated_tcp_connections_idle_or_stalled_do_not_lock_token_holders_out() {
    require_root();
    raise_nofile();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let token = token(&d, &alice);
    // First logins whose body never comes, so a request stays in progress
    // on each, enough to fill the places of unauthenticated connections;
    // then 600 connections that never send a byte.
    let stalled = format!(
        "POST /v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"username\":",
        d.port
    );
    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = tcp_connect(&d);
            // The daemon may have closed it already (pushed out).
            let _ = s.write_all(stalled.as_bytes());
            s
        })
        .collect();
    // Time for the daemon to read their heads (not an assertion: later is
    // only a weaker test).
    std::thread::sleep(Duration::from_secs(1));
    idle.extend((0..600).map(|_| tcp_connect(&d)));

    user_is_served_over_tcp(&d, &alice, &token);
    let tcp = |s: &TcpStream| s.set_nonblocking(true).expect("nonblocking");
    let open = still_open(&mut idle, tcp, Duration::from_secs(3));
    assert!(
        open <= 32,
        "{open} unauthenticated connections are still open; at most 32 are allowed"
    );
    assert!(metric(&d, "profiled_connections_pushed_out_total") > 0);
}

#[test]
#[ignore = "needs root"]
fn one_accounts_authenticated_tcp_connections_do_not_lock_another_out() {
    require_root();
    raise_nofile();
    let mallory = TestUser::new("mallory");
    let bob = TestUser::new("bob");
    // The request rate is not what this test is about.
    let d = Daemon::start("[limits]\nrequests_per_second = 100000\nrequest_burst = 100000\n");
    let mallory_token = token(&d, &mallory);
    let bob_token = token(&d, &bob);

    let mut streams = Vec::new();
    for _ in 0..20 {
        let (s, status, _) = tcp_get(&d, "/v1/events", &mallory_token, false);
        if status == 200 {
            streams.push(s);
        }
    }
    let mut held: Vec<TcpStream> = (0..600)
        .map(|_| tcp_get(&d, "/v1/me", &mallory_token, false).0)
        .collect();

    user_is_served_over_tcp(&d, &bob, &bob_token);

    assert!(
        streams.len() <= STREAMS_PER_ACCOUNT,
        "mallory holds {} event streams over TCP; at most {STREAMS_PER_ACCOUNT} are allowed",
        streams.len()
    );
    let tcp = |s: &TcpStream| s.set_nonblocking(true).expect("nonblocking");
    let open = still_open(&mut held, tcp, Duration::from_secs(3))
        + still_open(&mut streams, tcp, Duration::ZERO);
    assert!(
        open <= PER_ACCOUNT,
        "mallory still holds {open} TCP connections; at most {PER_ACCOUNT} are allowed"
    );
}

#[test]
#[ignore = "needs root"]
fn root_and_admins_keep_a_reserve_when_the_socket_is_full() {
    require_root();
    let mallory = TestUser::new("mallory");
    let bob = TestUser::new("bob");
    let ops = TestUser::new("ops");
    // 16 of the 20 places are for everyone; mallory takes all 16.
    let d = Daemon::start(&format!(
        "[accounts]\nadmins = [\"{}\"]\n\n[limits]\nconnections_total = 20\nconnections_reserved = 4\nconnections_per_account = 16\n",
        ops.name
    ));
    // Mallory holds 16 connections the daemon has certainly admitted (each
    // answered a keep-alive request). Root's own connections, which count
    // in the total too, may make one wait for a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut held = Vec::new();
    while held.len() < 16 {
        assert!(
            Instant::now() < deadline,
            "mallory could not open 16 connections: {}",
            d.log_text()
        );
        let mut s = connect_as(&d.socket, mallory.uid, 1)
            .pop()
            .expect("connect as mallory");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        match exchange(&mut s, &get("/v1/health", "")).0 {
            200 => held.push(s),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }

    let (status, _, text) = socket_request(&d, bob.uid, "/v1/me");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"code\":\"server_busy\""), "{text}");
    assert!(text.to_lowercase().contains("retry-after: 2"), "{text}");
    for (who, uid) in [("ops (an admin)", ops.uid), ("root", 0)] {
        let (status, took, text) = socket_request(&d, uid, "/v1/me");
        assert_eq!(status, 200, "{who} was not served: {text:?}");
        assert!(took < ANSWERED_WITHIN, "{who}'s request took {took:?}");
    }
}

#[test]
#[ignore = "needs root"]
fn an_accounts_stream_budget_comes_back_when_its_streams_close() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let (streams, refused) = streams_on_socket(&d, alice.uid, STREAMS_PER_ACCOUNT + 1);
    assert_eq!(streams.len(), STREAMS_PER_ACCOUNT);
    assert_eq!(refused, vec![429u16]);
    drop(streams);
    // The daemon notices the clients are gone and gives their places back.
    let start = Instant::now();
    loop {
        let (again, _) = streams_on_socket(&d, alice.uid, 1);
        if again.len() == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alice's closed streams still count against her"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
