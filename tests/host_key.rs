//! Rule 10 (issue 11 item 2): a host (fallback) key never reaches a
//! process the user controls or an endpoint the user chose. With real
//! accounts, a real daemon, real agent processes, and OpenAI-compatible
//! servers on loopback standing in for the admin's pinned endpoint and for
//! a listener of the user's own.

mod common;

use std::path::{Path, PathBuf};

use common::model::FakeModel;
use common::{Daemon, TestUser, capture, require_root};
use serde_json::Value;

/// A key no file or process could hold by chance.
fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}-{}", common::tag(), common::tag())
}

/// A daemon configured with `extra` appended to its config and an empty
/// agents.d (`<scratch>/agents.d`), not started yet.
fn configure(extra: &str) -> Daemon {
    let d = Daemon::configure(extra);
    let agents_d = d.scratch.path.join("agents.d");
    std::fs::create_dir(&agents_d).expect("create agents.d");
    let config = std::fs::read_to_string(&d.config).expect("read config");
    let config = config.replacen(
        "[paths]\n",
        &format!("[paths]\nagents_dir = \"{}\"\n", agents_d.display()),
        1,
    );
    std::fs::write(&d.config, config).expect("write config");
    d
}

/// Adds an agents.d file to `d` and starts it.
fn start_with(mut d: Daemon, agents: &str) -> Daemon {
    std::fs::write(d.scratch.path.join("agents.d/test.toml"), agents)
        .expect("write an agents.d file");
    d.spawn().expect("the daemon starts");
    d
}

fn set_key(d: &Daemon, user: Option<&TestUser>, secret: &str) {
    let mut args = vec!["creds", "set", "openai"];
    if user.is_none() {
        args.push("--host");
    }
    let out = d.ctl_stdin(user, &args, Some(&format!("{secret}\n")));
    assert!(
        out.status.success(),
        "creds set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces `user`'s profile.toml (a new file, owned by the user).
fn write_settings(d: &Daemon, user: &TestUser, text: &str) {
    let dir = d.profile(user);
    let tmp = dir.join(format!(".profile.toml.{}", common::tag()));
    std::fs::write(&tmp, text).expect("write profile.toml");
    std::os::unix::fs::chown(&tmp, Some(user.uid), Some(user.gid)).expect("chown");
    std::fs::rename(&tmp, dir.join("profile.toml")).expect("rename profile.toml");
}

/// The runs in `user`'s log of `agent`, oldest first.
fn runs(d: &Daemon, user: &TestUser, agent: &str) -> Vec<Value> {
    let path = d.profile(user).join(format!("logs/agents/{agent}.jsonl"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a run line is JSON"))
        .collect()
}

fn last_run(d: &Daemon, user: &TestUser, agent: &str) -> Value {
    runs(d, user, agent).pop().expect("a run was logged")
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// An agent script that copies everything it was given (its credentials
/// directory and its environment) into the profile's `out/<name>.txt`,
/// which is the user's to read.
fn grabber(d: &Daemon, name: &str) -> PathBuf {
    let path = d.scratch.path.join(format!("{name}.sh"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nmkdir -p out\n{{ echo \"dir=$CREDENTIALS_DIRECTORY\"; \
             for f in \"$CREDENTIALS_DIRECTORY\"/*; do [ -e \"$f\" ] || continue; echo \"file=$(basename \"$f\")=$(cat \"$f\")\"; done; \
             env; }} > out/{name}.txt 2>&1\n"
        ),
    )
    .expect("write the agent script");
    path
}

const ADMIN_AGENT: &str = "grab-admin";
const USER_AGENT: &str = "grab-mine";

#[test]
#[ignore = "needs root"]
fn agents_get_the_users_own_keys_only_never_the_hosts() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = configure(
        "[credentials]\nfallback = [\"openai\"]\n\
         [credentials.endpoints]\nopenai = \"https://api.openai.com/v1\"\n",
    );
    let admin_script = grabber(&d, ADMIN_AGENT);
    let user_script = grabber(&d, USER_AGENT);
    let d = start_with(
        d,
        &format!(
            "[agents.{ADMIN_AGENT}]\ncommand = [\"/bin/sh\", \"{}\"]\n\
             credentials = [\"openai\"]\nenv = {{ OPENAI_API_KEY = \"openai\" }}\n",
            admin_script.display()
        ),
    );
    let host = fresh("sk-host");
    set_key(&d, None, &host);
    for u in [&alice, &bob] {
        d.ok(Some(u), &["status"]);
        write_settings(
            &d,
            u,
            &format!(
                "[agents.{USER_AGENT}]\ncommand = [\"/bin/sh\", \"{}\"]\n\
                 credentials = [\"openai\"]\nenv = {{ OPENAI_API_KEY = \"openai\" }}\n",
                user_script.display()
            ),
        );
    }
    let bobs = fresh("sk-bob");
    set_key(&d, Some(&bob), &bobs);

    // alice has no openai key: both agents run without one, and say so.
    for agent in [ADMIN_AGENT, USER_AGENT] {
        let out = d.ctl(Some(&alice), &["agent", "run", agent]);
        let grabbed = std::fs::read_to_string(d.profile(&alice).join(format!("out/{agent}.txt")))
            .expect("the agent ran");
        assert!(
            !grabbed.contains(&host),
            "{agent} got the host key: {grabbed}"
        );
        assert!(!grabbed.contains("file="), "{agent}: {grabbed}");
        let run = last_run(&d, &alice, agent);
        assert_eq!(run["status"], "ok", "{agent}: {run} {out:?}");
        let notes = run["notes"].to_string();
        assert!(
            notes.contains("openai") && notes.contains("profilectl creds set openai"),
            "{agent}: the run says which key is missing and how to add it: {run}"
        );
    }
    assert_eq!(
        files_containing(&d.profile(&alice), &host),
        Vec::<PathBuf>::new()
    );
    let shown = d.ok(Some(&alice), &["agent", "logs", USER_AGENT]);
    assert!(shown.contains("profilectl creds set openai"), "{shown}");

    // bob, with his own key, gets his own.
    for agent in [ADMIN_AGENT, USER_AGENT] {
        d.ok(Some(&bob), &["agent", "run", agent]);
        let grabbed = std::fs::read_to_string(d.profile(&bob).join(format!("out/{agent}.txt")))
            .expect("the agent ran");
        assert!(
            grabbed.contains(&format!("file=openai={bobs}"))
                && grabbed.contains(&format!("OPENAI_API_KEY={bobs}")),
            "{agent}: {grabbed}"
        );
        assert!(last_run(&d, &bob, agent).get("notes").is_none());
    }

    // alice adds her own key: she gets hers, and still never the host's.
    let alices = fresh("sk-alice");
    set_key(&d, Some(&alice), &alices);
    for agent in [ADMIN_AGENT, USER_AGENT] {
        d.ok(Some(&alice), &["agent", "run", agent]);
        let grabbed = std::fs::read_to_string(d.profile(&alice).join(format!("out/{agent}.txt")))
            .expect("the agent ran");
        assert!(
            grabbed.contains(&format!("file=openai={alices}")),
            "{agent}: {grabbed}"
        );
    }
    for u in [&alice, &bob] {
        assert_eq!(
            files_containing(&d.profile(u), &host),
            Vec::<PathBuf>::new()
        );
    }
    assert!(!d.log_text().contains(&host));
}

/// organize, run on demand only (no schedule to add runs of its own).
const ORGANIZE: &str = "[agents.organize]\nbuiltin = \"organize\"\n";

fn model_settings(url: &str) -> String {
    format!("[model]\nprovider = \"openai\"\nbase_url = \"{url}\"\nname = \"test-model\"\n")
}

fn organize(d: &Daemon, user: &TestUser) -> Value {
    let _ = d.ctl(Some(user), &["agent", "run", "organize"]);
    last_run(d, user, "organize")
}

fn tags_of(d: &Daemon, user: &TestUser) -> Vec<Value> {
    let page: Value =
        serde_json::from_str(&d.ok(Some(user), &["--json", "memories"])).expect("json");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["tags"].clone())
        .collect()
}

#[test]
#[ignore = "needs root"]
fn organize_sends_the_host_key_only_to_the_endpoint_the_admin_pinned() {
    require_root();
    let pinned = FakeModel::start(String::new());
    let hers = FakeModel::start(String::new());
    let d = start_with(
        configure(&format!(
            "[credentials]\nfallback = [\"openai\"]\n\
             [credentials.endpoints]\nopenai = {{ url = \"{}\", allow_loopback_http = true }}\n",
            pinned.url
        )),
        ORGANIZE,
    );
    let host = fresh("sk-host");
    set_key(&d, None, &host);
    let alice = TestUser::new("alice");
    d.ok(Some(&alice), &["status"]);
    capture(&d, &alice, "met bob about the migration");

    // Her base_url is her own listener, and she has no key: nothing is
    // sent anywhere, and she is told why and what to do.
    write_settings(&d, &alice, &model_settings(&hers.url));
    let run = organize(&d, &alice);
    assert!(
        hers.requests().is_empty(),
        "her listener was sent {:?}",
        hers.requests()
    );
    assert!(pinned.requests().is_empty(), "{:?}", pinned.requests());
    assert_eq!(run["status"], "error", "{run}");
    let says = run["error"].as_str().unwrap_or_default();
    assert!(
        says.contains(&pinned.url) && says.contains("profilectl creds set openai"),
        "{run}"
    );

    // The admin's pinned endpoint (her base_url names it, or she sets
    // none): the host key goes there, and organize works.
    for settings in [
        model_settings(&format!("{}/", pinned.url)),
        "[model]\nprovider = \"openai\"\nname = \"test-model\"\n".to_owned(),
    ] {
        capture(&d, &alice, "bought flowers for the team");
        write_settings(&d, &alice, &settings);
        let run = organize(&d, &alice);
        assert_eq!(run["status"], "ok", "{run}");
        let last = pinned
            .requests()
            .pop()
            .expect("a request to the pinned endpoint");
        assert_eq!(last.authorization, format!("Bearer {host}"));
        assert!(last.body.contains("\"model\":\"test-model\""), "{last:?}");
    }
    assert!(
        tags_of(&d, &alice)
            .iter()
            .all(|t| *t == serde_json::json!(["fake", "organized"])),
        "{:?}",
        tags_of(&d, &alice)
    );
    assert!(hers.requests().is_empty());

    // With a key of her own, her own base_url works as before.
    let alices = fresh("sk-alice");
    set_key(&d, Some(&alice), &alices);
    write_settings(&d, &alice, &model_settings(&hers.url));
    capture(&d, &alice, "planned the offsite");
    let run = organize(&d, &alice);
    assert_eq!(run["status"], "ok", "{run}");
    let seen = hers.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].authorization, format!("Bearer {alices}"));
    assert!(
        hers.requests()
            .iter()
            .all(|s| !s.authorization.contains(&host))
    );
    assert_eq!(
        files_containing(&d.profile(&alice), &host),
        Vec::<PathBuf>::new()
    );
}

#[test]
#[ignore = "needs root"]
fn an_error_answer_from_the_users_endpoint_reaches_her_log_as_a_status_only() {
    require_root();
    // What root may fetch and she may not (a metadata service, a port the
    // firewall opens to root only), answering with an error status.
    let secret_text = fresh("root-only-answer");
    let hers = FakeModel::failing(
        "500 Internal Server Error",
        &format!("{{\"token\": \"{secret_text}\"}}"),
    );
    let d = start_with(configure(""), ORGANIZE);
    let alice = TestUser::new("alice");
    d.ok(Some(&alice), &["status"]);
    set_key(&d, Some(&alice), &fresh("sk-alice"));
    write_settings(&d, &alice, &model_settings(&hers.url));
    capture(&d, &alice, "a note to tag");
    let run = organize(&d, &alice);
    assert_eq!(hers.requests().len(), 1, "the request was made");
    let logged = run.to_string();
    assert!(logged.contains("HTTP 500"), "{logged}");
    assert!(!logged.contains(&secret_text), "{logged}");
    assert_eq!(
        files_containing(&d.profile(&alice), &secret_text),
        Vec::<PathBuf>::new()
    );
}

/// `profiled check-config` on `text`: (exit code, stderr).
fn check_config(text: &str) -> (Option<i32>, String) {
    let scratch = common::Scratch::new();
    let file = scratch.path.join("profiled.toml");
    std::fs::write(&file, text).expect("write the config");
    let out = std::process::Command::new(common::PROFILED)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .expect("run check-config");
    let err = String::from_utf8_lossy(&out.stderr).replace(&file.display().to_string(), "FILE");
    (out.status.code(), err)
}

#[test]
fn check_config_refuses_an_unpinned_fallback_and_unsafe_endpoints_with_file_and_line() {
    let ok = "[credentials]\nfallback = [\"openai\", \"ollama\"]\n\n[credentials.endpoints]\n\
              openai = \"https://api.openai.com/v1\"\n\
              ollama = { url = \"http://127.0.0.1:11434/v1\", allow_loopback_http = true }\n";
    assert_eq!(check_config(ok).0, Some(0), "{}", check_config(ok).1);
    for (text, line, why) in [
        // A fallback with nowhere pinned to send the key.
        (
            "[credentials]\nfallback = [\"openai\"]\n",
            2,
            "[credentials.endpoints]",
        ),
        // Plain http only where allowed, and then to loopback only.
        (
            "[credentials.endpoints]\nopenai = \"http://127.0.0.1:11434/v1\"\n",
            2,
            "allow_loopback_http",
        ),
        (
            "[credentials.endpoints]\n\nopenai = { url = \"http://192.0.2.7/v1\", allow_loopback_http = true }\n",
            3,
            "loopback",
        ),
        (
            "[credentials.endpoints]\nopenai = \"https://me:pw@api.openai.com/v1\"\n",
            2,
            "user name or password",
        ),
        (
            "[credentials.endpoints]\nopenai = \"gopher://api.openai.com/v1\"\n",
            2,
            "https",
        ),
    ] {
        let (code, err) = check_config(text);
        assert_eq!(code, Some(1), "{text}: {err}");
        assert!(
            err.contains(&format!("FILE:{line}: credentials.")) && err.contains(why),
            "{text}: {err}"
        );
    }
}

/// A listener of `user`'s own on 127.0.0.1:`port` (perl, which Debian
/// and its derivatives always have): it writes every request head it gets
/// to `log` and answers 500. Waits until it listens.
fn users_listener(user: &TestUser, port: u16, log: &Path) -> common::KillOnDrop {
    const SERVER: &str = r#"use IO::Socket::INET; $| = 1;
my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $ARGV[0], Listen => 5, ReuseAddr => 1) or die "listen: $!";
while (my $c = $s->accept) { while (my $l = <$c>) { print $l; last if $l eq "\r\n"; }
print $c "HTTP/1.1 500 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"; close $c; }"#;
    let out = std::fs::File::create(log).expect("create the listener's log");
    let child = user
        .command("perl")
        .args(["-e", SERVER, &port.to_string()])
        .stdout(out)
        .spawn()
        .expect("run perl as the user");
    let child = common::KillOnDrop(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "her listener never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
#[ignore = "needs root"]
fn a_pinned_loopback_port_taken_by_a_user_gets_no_host_key() {
    require_root();
    let alice = TestUser::new("alice");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/v1");
    let pinned = |extra: &str| {
        format!(
            "[credentials]\nfallback = [\"openai\"]\n[credentials.endpoints]\n\
             openai = {{ url = \"{url}\", allow_loopback_http = true{extra} }}\n"
        )
    };
    let d = start_with(configure(&pinned("")), ORGANIZE);
    let host = fresh("sk-host");
    set_key(&d, None, &host);
    d.ok(Some(&alice), &["status"]);
    write_settings(&d, &alice, &model_settings(&url));
    capture(&d, &alice, "a note to tag");

    // The admin's model server is down; alice listens on its port.
    let log = d.scratch.path.join("hers.log");
    let hers = users_listener(&alice, port, &log);
    let run = organize(&d, &alice);
    let heard = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !heard.contains(&host),
        "her listener got the host key: {heard}"
    );
    assert!(
        !heard.contains("POST"),
        "her listener got a request: {heard}"
    );
    let logged = run.to_string();
    assert!(
        logged.contains(&format!("held by uid {}", alice.uid)) && logged.contains("not sent"),
        "{logged}"
    );
    assert!(d.log_text().contains("not sent"), "the admin is told too");
    drop(hers);
    drop(d);

    // Where the admin names the account the server runs as, its listener
    // is the endpoint (here alice's stands in for such a service account).
    let d = start_with(
        configure(&pinned(&format!(", listener_user = \"{}\"", alice.name))),
        ORGANIZE,
    );
    set_key(&d, None, &host);
    d.ok(Some(&alice), &["status"]);
    write_settings(&d, &alice, &model_settings(&url));
    capture(&d, &alice, "a note to tag");
    let log = d.scratch.path.join("hers.log");
    let _hers = users_listener(&alice, port, &log);
    let run = organize(&d, &alice);
    let heard = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(heard.contains(&format!("Bearer {host}")), "{run} / {heard}");
}
