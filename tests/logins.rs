//! Logins over loopback TCP: real PAM against real accounts, hashed
//! sessions and bearer tokens (never cookies), DNS-rebinding and origin
//! guards, throttling, rate limits (rules 5, 6 and 11).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Daemon, TestGroup, TestUser, capture, require_root};

const PASSWORD: &str = "correct horse battery staple";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token_of(reply: &common::HttpReply) -> String {
    assert_eq!(reply.status, 200, "login failed: {}", reply.body);
    reply.json()["token"].as_str().expect("a token").to_owned()
}

#[test]
#[ignore = "needs root"]
fn alice_logs_in_and_uses_her_token_and_never_a_cookie() {
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    let d = Daemon::start("");
    let id = capture(&d, &alice, "over the socket");

    let reply = d.login(&alice.name, PASSWORD);
    let token = token_of(&reply);
    assert!(
        token.starts_with("pfd_") && token.len() == 4 + 64,
        "{token}"
    );
    // No cookie: a browser would send it to every loopback port, another
    // account's server included (rule 11).
    assert_eq!(reply.header("set-cookie"), None, "{:?}", reply.headers);

    let auth = bearer(&token);
    let list = d.http("GET", "/v1/memories", &[("Authorization", &auth)], None);
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains(&id));

    // The token as a cookie is no credential, under the old cookie name or
    // any other, with or without a same-origin Origin.
    let origin = format!("http://127.0.0.1:{}", d.port);
    for jar in [
        format!("profiled_session={token}"),
        format!("session={token}"),
        format!("a=b; profiled_session={token}; token={token}"),
    ] {
        let list = d.http("GET", "/v1/memories", &[("Cookie", &jar)], None);
        assert_eq!(
            (list.status, list.json()["code"].as_str()),
            (401, Some("unauthenticated")),
            "a cookie was taken as a credential: {jar}: {}",
            list.body
        );
        let made = d.http(
            "POST",
            "/v1/memories",
            &[("Cookie", &jar), ("Origin", &origin)],
            Some(r#"{"text":"from the browser"}"#),
        );
        assert_eq!(made.status, 401, "{jar}: {}", made.body);
    }
    let (_, page) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "a cookie wrote"
    );
    // Logging out clears no cookie either; the bearer token still works
    // beside any cookie.
    let list = d.http(
        "GET",
        "/v1/memories",
        &[("Authorization", &auth), ("Cookie", "profiled_session=x")],
        None,
    );
    assert_eq!(list.status, 200, "{}", list.body);
    let out = d.http("POST", "/v1/auth/logout", &[("Authorization", &auth)], None);
    assert_eq!(out.status, 204, "{}", out.body);
    assert_eq!(out.header("set-cookie"), None, "{:?}", out.headers);

    // Without credentials: 401.
    let none = d.http("GET", "/v1/memories", &[], None);
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["code"], "unauthenticated");

    // The secret is nowhere on disk in plain text.
    let grep = std::process::Command::new("grep")
        .args(["-r", "-l", &token])
        .arg(&d.scratch.path)
        .output()
        .expect("grep");
    assert!(
        grep.stdout.is_empty(),
        "token on disk in {}",
        String::from_utf8_lossy(&grep.stdout)
    );
}

#[test]
#[ignore = "needs root"]
fn every_failed_login_looks_the_same_and_locking_ends_access() {
    require_root();
    let alice = TestUser::new("alice");
    let sys = TestUser::with_args("sys", &["-r"]);
    alice.set_password(PASSWORD);
    sys.set_password(PASSWORD);
    let d = Daemon::start("");
    let token = token_of(&d.login(&alice.name, PASSWORD));

    let wrong = d.login(&alice.name, "wrong password");
    let unknown = d.login("pftnosuchuser", PASSWORD);
    let ineligible = d.login(&sys.name, PASSWORD);
    for r in [&wrong, &unknown, &ineligible] {
        assert_eq!(r.status, 401, "{}", r.body);
    }
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.body, ineligible.body);

    // Used just before: whatever the daemon remembers of alice is fresh.
    let used = d.http("GET", "/v1/me", &[("Authorization", &bearer(&token))], None);
    assert_eq!(used.status, 200, "{}", used.body);
    alice.lock_password();
    let used = d.http("GET", "/v1/me", &[("Authorization", &bearer(&token))], None);
    assert_eq!(
        used.status, 401,
        "a locked account's token still works: {}",
        used.body
    );
    assert_eq!(d.login(&alice.name, PASSWORD).status, 401);
}

#[test]
#[ignore = "needs root"]
fn an_expired_accounts_tokens_stop_on_the_next_request() {
    require_root();
    let carol = TestUser::new("carol");
    let dave = TestUser::new("dave");
    carol.set_password(PASSWORD);
    dave.set_password(PASSWORD);
    let d = Daemon::start("");
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 86_400;
    // Day 0 (`chage -E 0`) is 1970-01-01, not "never"; yesterday is past.
    for (user, day) in [(&carol, "0".to_owned()), (&dave, (today - 1).to_string())] {
        let auth = bearer(&token_of(&d.login(&user.name, PASSWORD)));
        let used = d.http("GET", "/v1/me", &[("Authorization", &auth)], None);
        assert_eq!(used.status, 200, "{}", used.body);
        user.expire(&day);
        let used = d.http("GET", "/v1/me", &[("Authorization", &auth)], None);
        assert_eq!(
            used.status, 401,
            "the token of {} still works after chage -E {day}: {}",
            user.name, used.body
        );
        assert_eq!(d.login(&user.name, PASSWORD).status, 401);
    }
    // An expiry in the future leaves the account alone.
    let erin = TestUser::new("erin");
    erin.set_password(PASSWORD);
    erin.expire(&(today + 2).to_string());
    let auth = bearer(&token_of(&d.login(&erin.name, PASSWORD)));
    let used = d.http("GET", "/v1/me", &[("Authorization", &auth)], None);
    assert_eq!(used.status, 200, "{}", used.body);
}

#[test]
#[ignore = "needs root"]
fn leaving_the_admin_group_ends_admin_rights_on_the_next_request() {
    require_root();
    let admins = TestGroup::new("adm");
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    admins.add(&alice);
    let d = Daemon::start(&format!("[accounts]\nadmin_group = \"{}\"\n", admins.name));
    let auth = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    let before = d.http("GET", "/v1/profiles", &[("Authorization", &auth)], None);
    assert_eq!(before.status, 200, "{}", before.body);
    let (status, body) = d.api(Some(&alice), "GET", "/v1/profiles", None);
    assert_eq!(status, 200, "{body}");

    admins.remove(&alice);
    let after = d.http("GET", "/v1/profiles", &[("Authorization", &auth)], None);
    assert_eq!(after.status, 403, "still an admin over TCP: {}", after.body);
    let (status, body) = d.api(Some(&alice), "GET", "/v1/profiles", None);
    assert_eq!(status, 403, "still an admin on the socket: {body}");
}

#[test]
#[ignore = "needs root"]
fn a_token_never_reaches_another_profile() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    alice.set_password(PASSWORD);
    let d = Daemon::start("");
    let bobs = capture(&d, &bob, "bob's secret plan");
    let auth = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    let r = d.http(
        "GET",
        &format!("/v1/memories/{bobs}"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = d.http(
        "GET",
        &format!("/v1/memories/{bobs}?user={}", bob.name),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("secret plan"));
}

#[test]
#[ignore = "needs root"]
fn forged_hosts_and_cross_origin_changes_are_refused() {
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    let d = Daemon::start("");
    let token = token_of(&d.login(&alice.name, PASSWORD));
    let auth = bearer(&token);
    let body = Some(r#"{"text":"x"}"#);

    let r = d.http(
        "GET",
        "/v1/memories",
        &[("Host", "evil.example"), ("Authorization", &auth)],
        None,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("bad_host")),
        "{}",
        r.body
    );
    let r = d.http("GET", "/v1/health", &[("Host", "localhost:1")], None);
    assert_eq!(r.status, 403);

    let r = d.http(
        "POST",
        "/v1/memories",
        &[("Authorization", &auth), ("Origin", "http://evil.example")],
        body,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("bad_origin")),
        "{}",
        r.body
    );
    // Another loopback port is another origin.
    let r = d.http(
        "POST",
        "/v1/memories",
        &[("Authorization", &auth), ("Origin", "http://127.0.0.1:1")],
        body,
    );
    assert_eq!(r.status, 403, "{}", r.body);

    // A bearer token needs no Origin.
    let r = d.http("POST", "/v1/memories", &[("Authorization", &auth)], body);
    assert_eq!(r.status, 201, "{}", r.body);
    let (_, page) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "a refused request wrote"
    );
}

#[test]
#[ignore = "needs root"]
fn an_attack_on_alice_is_throttled_and_bob_logs_in_meanwhile() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    bob.set_password(PASSWORD);
    alice.set_password(PASSWORD);
    let d = Arc::new(Daemon::start(""));

    let attack = {
        let (d, name) = (d.clone(), alice.name.clone());
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            for _ in 0..50 {
                let r = d.login(&name, "guess");
                if r.status == 429 {
                    assert!(r.header("retry-after").is_some(), "429 without Retry-After");
                }
                statuses.push(r.status);
            }
            statuses
        })
    };
    // bob logs in while the attack runs.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = d.login(&bob.name, PASSWORD);
    assert_eq!(
        r.status, 200,
        "bob was held up by alice's attack: {}",
        r.body
    );
    let statuses = attack.join().expect("attack thread");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 40,
        "{statuses:?}"
    );
    // Even the right password waits while alice's account is throttled.
    assert_eq!(d.login(&alice.name, PASSWORD).status, 429);
}

#[test]
#[ignore = "needs root"]
fn a_guesser_is_held_up_even_between_the_owners_own_logins() {
    require_root();
    let alice = TestUser::new("alice");
    let mallory = TestUser::new("mallory");
    alice.set_password(PASSWORD);
    // The defaults: 5 failures per account, 20 per client.
    let d = Daemon::start("");
    let mut guesses = Vec::new();
    for i in 0..30 {
        guesses.push(d.login_from(&mallory, &alice.name, "guess"));
        // alice logs in every third guess, which clears her account's
        // count before it reaches its 5 free failures.
        if i % 3 == 2 {
            let own = d.login_from(&alice, &alice.name, PASSWORD);
            assert_eq!(own, 200, "alice's own login was refused after {guesses:?}");
        }
    }
    assert!(
        guesses.iter().all(|s| *s == 401 || *s == 429),
        "{guesses:?}"
    );
    assert!(
        guesses[..20].iter().all(|s| *s == 401),
        "held up before 20: {guesses:?}"
    );
    // The delays double from 1 s, so however slow this machine is, the
    // last guesses fall inside one.
    let held = guesses[20..].iter().filter(|s| **s == 429).count();
    assert!(
        held >= 3 && guesses.last() == Some(&429),
        "30 guesses at alice between her own logins were not held up after the 20th: {guesses:?}"
    );
    // The guesser's count is hers alone: alice, and another account from
    // the guesser's own client, still log in.
    assert_eq!(d.login_from(&alice, &alice.name, PASSWORD), 200);
    mallory.set_password(PASSWORD);
    assert_eq!(d.login_from(&mallory, &mallory.name, PASSWORD), 200);
}

#[test]
#[ignore = "needs root"]
fn a_spray_across_made_up_names_never_locks_others_out() {
    require_root();
    let bob = TestUser::new("bob");
    bob.set_password(PASSWORD);
    // Fewer free attempts than the spray, so a client-wide block would show.
    let d = Arc::new(Daemon::start_auth(
        "",
        "client_free_attempts = 3\nmax_concurrent_logins = 8",
    ));
    let spray: Vec<_> = (0..12)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || d.login(&format!("pftspray{i}"), "guess").status)
        })
        .collect();
    for t in spray {
        assert_eq!(t.join().expect("spray"), 401);
    }
    let r = d.login(&bob.name, PASSWORD);
    assert_eq!(r.status, 200, "one user's spray locked bob out: {}", r.body);
    // A name that cannot be an account is refused without PAM or a log line.
    let junk = "x".repeat(10_000);
    let r = d.login(&junk, "guess");
    assert_eq!(r.status, 401);
    assert!(
        !d.log_text().contains(&junk[..100]),
        "a junk name reached the log"
    );
}

#[test]
#[ignore = "needs root"]
fn slow_pam_conversations_do_not_stall_the_api() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Arc::new(Daemon::start_auth("", "max_concurrent_logins = 4"));
    capture(&d, &alice, "still readable");
    let order = Arc::new(AtomicUsize::new(0));
    // Eight failing logins: PAM holds each for its failure delay.
    let logins: Vec<_> = (0..8)
        .map(|i| {
            let (d, order) = (d.clone(), order.clone());
            std::thread::spawn(move || {
                let r = d.login(&format!("pftnobody{i}"), "nope");
                assert_eq!(r.status, 401);
                order.fetch_add(1, Ordering::SeqCst)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let health = d.http("GET", "/v1/health", &[], None);
    assert_eq!(health.status, 200);
    let health_done = order.fetch_add(1, Ordering::SeqCst);
    let (status, _) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(status, 200);
    let read_done = order.fetch_add(1, Ordering::SeqCst);
    let login_done: Vec<usize> = logins
        .into_iter()
        .map(|t| t.join().expect("login"))
        .collect();
    let first_login = login_done.iter().min().copied().unwrap_or(0);
    assert!(
        health_done < first_login && read_done < first_login,
        "health {health_done}, read {read_done}, logins {login_done:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn expired_revoked_and_logged_out_credentials_fail() {
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    let mut d = Daemon::start_auth("", "session_idle_timeout = \"2s\"");

    // Idle expiry.
    let idle = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        d.http("GET", "/v1/me", &[("Authorization", &idle)], None)
            .status,
        401
    );

    // Logout.
    let session = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    let r = d.http(
        "POST",
        "/v1/auth/logout",
        &[("Authorization", &session)],
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        d.http("GET", "/v1/me", &[("Authorization", &session)], None)
            .status,
        401
    );

    // A personal token made over the socket: shown once, listed without
    // the secret, works over TCP until revoked, and survives a restart.
    let made: serde_json::Value = serde_json::from_str(&d.ok(
        Some(&alice),
        &["--json", "token", "create", "ci-script", "--days", "30"],
    ))
    .expect("json");
    let secret = made["token"].as_str().expect("token").to_owned();
    let id = made["id"].as_str().expect("id").to_owned();
    let listed = d.ok(Some(&alice), &["--json", "token", "list"]);
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );
    let auth = bearer(&secret);
    assert_eq!(
        d.http("GET", "/v1/me", &[("Authorization", &auth)], None)
            .status,
        200
    );
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    d.spawn().expect("restart");
    assert_eq!(
        d.http("GET", "/v1/me", &[("Authorization", &auth)], None)
            .status,
        200
    );
    d.ok(Some(&alice), &["token", "revoke", &id]);
    assert_eq!(
        d.http("GET", "/v1/me", &[("Authorization", &auth)], None)
            .status,
        401
    );
}

#[test]
#[ignore = "needs root"]
fn an_admin_revokes_another_users_sessions() {
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    let d = Daemon::start("");
    let a = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    let b = bearer(&token_of(&d.login(&alice.name, PASSWORD)));
    let out = d.ok(None, &["--user", &alice.name, "token", "revoke", "--all"]);
    assert!(out.contains('2'), "{out}");
    for t in [&a, &b] {
        assert_eq!(
            d.http("GET", "/v1/me", &[("Authorization", t)], None)
                .status,
            401
        );
    }
    assert!(d.system_audit().contains("auth.revoke"));
}

#[test]
#[ignore = "needs root"]
fn per_account_rate_limits_answer_429_with_retry_after() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start(&format!(
        "[limits]\nrequests_per_second = 1\nrequest_burst = 3\n[limits.per_user.{}]\nrequests_per_second = 1000\nrequest_burst = 1000\n",
        bob.name
    ));
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(d.api(Some(&alice), "GET", "/v1/memories", None).0);
    }
    assert!(statuses[..3].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    for _ in 0..6 {
        assert_eq!(d.api(Some(&bob), "GET", "/v1/memories", None).0, 200);
    }
}

#[test]
#[ignore = "needs root"]
fn metrics_openapi_and_usage_logs() {
    require_root();
    let alice = TestUser::new("alice");
    alice.set_password(PASSWORD);
    let mut d = Daemon::start("");
    token_of(&d.login(&alice.name, PASSWORD));
    assert_eq!(d.login(&alice.name, "bad").status, 401);
    capture(&d, &alice, "counted");

    let m = d.http("GET", "/v1/metrics", &[], None);
    assert_eq!(m.status, 200);
    for line in [
        "profiled_logins_total{result=\"ok\"} 1",
        "profiled_logins_total{result=\"failed\"} 1",
        "profiled_sessions 1",
        "profiled_profiles 1",
        "profiled_requests_total{route=\"/v1/memories\",method=\"POST\",status=\"201\"} 1",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "{line} missing:\n{}",
            m.body
        );
    }
    assert!(!m.body.contains(&alice.name), "metrics name an account");

    // Every route of the code is in the document, and each one exists.
    let doc = d.http("GET", "/v1/openapi.json", &[], None).json();
    for spec in profiled::api::routes::specs() {
        let op = &doc["paths"][spec.path][spec.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from openapi.json",
            spec.method,
            spec.path
        );
        let path = spec
            .path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let out = d.ctl(None, &["api", spec.method.as_str(), &path]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("no route") && !text.contains("method_not_allowed"),
            "{} {path} is not routed: {text}",
            spec.method
        );
    }

    // Request counts reach alice's usage log (flushed at shutdown).
    d.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    let usage = std::fs::read_dir(d.profile(&alice).join("logs/usage"))
        .expect("usage dir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(usage.contains("\"kind\":\"requests\""), "{usage}");
}

#[test]
#[ignore = "needs root"]
fn the_daemon_refuses_to_start_without_its_pam_service() {
    require_root();
    let mut d = Daemon::configure("");
    std::fs::remove_file(&d.pam_file).expect("remove the PAM file");
    let err = d.spawn().expect_err("must refuse");
    assert!(err.contains(&d.pam_file.display().to_string()), "{err}");
}
