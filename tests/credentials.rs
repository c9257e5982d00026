//! Credentials (issue 4): per-account provider keys in `credentials.age`,
//! age-encrypted to a daemon identity and the owner's own key; rule 5
//! (secrets never leak), fallback to the host's key, broken files, and
//! key rotation.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, PROFILECTL, PROFILED, TestGroup, TestUser, require_root};
use profiled::config::Config;
use profiled::creds::{self, Settings, Source, Vault};
use profiled::profile::ProfilesRoot;

/// Host fallback for openai, to the endpoint pinned for it.
const FALLBACK: &str = "[credentials]\nfallback = [\"openai\"]\n\
    [credentials.endpoints]\nopenai = \"https://api.openai.com/v1\"\n";

/// The text of the account's own key `r` (a host key fails the test).
fn own_text(r: &creds::Resolved) -> &str {
    match r {
        creds::Resolved::User(k) => k.secret().expose(),
        creds::Resolved::Host(_) => panic!("the host's key, not the account's own"),
    }
}

/// The pinned endpoint of the host key `r` (an own key fails the test).
fn host_endpoint(r: &creds::Resolved) -> &str {
    match r {
        creds::Resolved::Host(k) => k.endpoint().url(),
        creds::Resolved::User(_) => panic!("the account's own key, not the host's"),
    }
}

/// A secret no file or process could hold by chance.
fn fresh_secret(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::generate())
}

/// `profilectl creds set PROVIDER ARGS…` as `user` (None: root), the secret
/// on standard input.
fn set_key(d: &Daemon, user: Option<&TestUser>, provider: &str, secret: &str, args: &[&str]) {
    let mut argv = vec!["creds", "set", provider];
    argv.extend_from_slice(args);
    let out = d.ctl_stdin(user, &argv, Some(&format!("{secret}\n")));
    assert!(
        out.status.success(),
        "creds set {provider}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// profilectl that must fail with status 1; its stderr.
fn fails(d: &Daemon, user: Option<&TestUser>, args: &[&str]) -> String {
    let out = d.ctl(user, args);
    assert_eq!(out.status.code(), Some(1), "{args:?} did not fail: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every regular file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(e.path())
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(e.path());
            }
        }
    }
    found
}

/// The command lines of every process that contain `needle`.
fn cmdlines_containing(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            if line.contains(needle) {
                found.push(format!("{}: {line}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Makes an age identity with the stock `age-keygen`, owned by `user` in a
/// directory only they can read; returns (identity file, public key).
fn age_identity(d: &Daemon, user: &TestUser) -> (PathBuf, String) {
    let dir = d.scratch.path.join(format!("{}-age", user.name));
    std::fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).expect("chown");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let file = dir.join("identity.txt");
    let out = user
        .command("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("run age-keygen (Debian package age)");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).expect("read identity");
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_owned();
    (file, public)
}

/// The library's resolution, as an agent will call it, against the
/// daemon's state and profiles.
fn resolve(
    d: &Daemon,
    user: &TestUser,
    provider: &str,
    settings: &Settings,
) -> Result<creds::Resolved, creds::Error> {
    let root = ProfilesRoot::open_beside_daemon(&d.profiles, 1 << 20).expect("profiles root");
    let account = profiled::accounts::by_name(&user.name)
        .expect("nss")
        .expect("account");
    let (profile, _) = root
        .open_profile(&account)
        .expect("open profile")
        .expect("profile exists");
    Vault::open(&d.state)
        .expect("keys dir")
        .resolve(&profile, provider, settings)
}

#[test]
#[ignore = "needs root"]
fn alice_sets_a_key_that_only_she_and_her_own_age_identity_can_open() {
    require_root();
    let admins = TestGroup::new("adm");
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let carol = TestUser::new("carol");
    admins.add(&carol);
    let d = Daemon::start(&format!("[accounts]\nadmin_group = \"{}\"\n", admins.name));
    let secret = fresh_secret("sk-proj");
    let second = fresh_secret("sk-ant");
    let mut seen = String::new(); // every answer and error body, grepped at the end

    // alice adds her own age key (made by the stock age-keygen) as a recipient.
    let (identity, public) = age_identity(&d, &alice);
    let out = d.ok(
        Some(&alice),
        &["creds", "add-recipient", identity.to_str().expect("utf-8")],
    );
    assert!(out.contains(&public), "{out}");

    // The secret goes in on standard input; while profilectl waits for it,
    // and after, no process has it in its arguments.
    let mut child = alice
        .command(PROFILECTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["creds", "set", "openai", "--label", "work"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn profilectl");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cmdlines_containing(&secret), Vec::<String>::new());
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{secret}\n").as_bytes())
        .expect("write the secret");
    let out = child.wait_with_output().expect("profilectl");
    assert!(out.status.success(), "{out:?}");
    set_key(&d, Some(&alice), "anthropic", &second, &[]);

    // On disk: alice's, 0600, an age file without the key's bytes.
    let file = d.profile(&alice).join("credentials.age");
    let md = std::fs::metadata(&file).expect("credentials.age");
    assert_eq!((md.uid(), md.mode() & 0o7777), (alice.uid, 0o600));
    let bytes = std::fs::read(&file).expect("read credentials.age");
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert!(files_containing(&d.profile(&alice), &secret).is_empty());

    // The stock age CLI opens it with alice's own identity.
    let out = alice
        .command("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&file)
        .output()
        .expect("run age");
    assert!(out.status.success(), "{out:?}");
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(plain.contains("[providers.openai]"), "{plain}");
    assert!(
        plain.contains(&format!("secret = \"{secret}\"")),
        "wrong plaintext"
    );
    assert!(plain.contains("label = \"work\""));

    // The daemon's identity: root, 0600, in a root 0700 directory.
    let keys = d.state.join("keys");
    let md = std::fs::metadata(&keys).expect("keys dir");
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o700));
    let md = std::fs::metadata(keys.join(format!("{}.key", alice.name))).expect("alice.key");
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));

    // alice lists names and metadata, and reveals her key on request.
    let list = d.ok(Some(&alice), &["creds", "list"]);
    assert!(list.contains("openai") && list.contains("work") && list.contains("anthropic"));
    assert!(list.contains(&public), "{list}");
    seen.push_str(&list);
    seen.push_str(&d.ok(Some(&alice), &["--json", "creds", "list"]));
    assert_eq!(
        d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(),
        secret
    );
    let audit = d.user_audit(&alice);
    assert!(
        audit.contains("\"action\":\"credentials.reveal\""),
        "{audit}"
    );

    // bob reaches none of it, by any route.
    let own = d.ok(Some(&bob), &["creds", "list"]);
    assert!(!own.contains("openai"), "{own}");
    seen.push_str(&own);
    let bobs_try = fresh_secret("sk-bob");
    let put = format!("{{\"secret\": \"{bobs_try}\"}}");
    let u = &alice.name;
    for (method, path, body) in [
        ("GET", format!("/v1/credentials?user={u}"), None),
        (
            "POST",
            format!("/v1/credentials/openai/reveal?user={u}"),
            None,
        ),
        (
            "PUT",
            format!("/v1/credentials/openai?user={u}"),
            Some(put.as_str()),
        ),
        ("DELETE", format!("/v1/credentials/openai?user={u}"), None),
        (
            "PUT",
            format!("/v1/credentials/recipients?user={u}"),
            Some("{\"recipients\": []}"),
        ),
        ("POST", format!("/v1/credentials/reset?user={u}"), None),
        ("GET", "/v1/host/credentials".to_owned(), None),
        (
            "PUT",
            "/v1/host/credentials/openai".to_owned(),
            Some(put.as_str()),
        ),
    ] {
        let (status, answer) = d.api(Some(&bob), method, &path, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
        seen.push_str(&answer.to_string());
    }
    seen.push_str(&fails(
        &d,
        Some(&bob),
        &["--user", u, "creds", "reveal", "openai"],
    ));
    seen.push_str(&fails(&d, Some(&bob), &["--user", u, "creds", "list"]));
    let (status, answer) = d.api(Some(&bob), "POST", "/v1/credentials/openai/reveal", None);
    assert_eq!(status, 404, "{answer}");
    seen.push_str(&answer.to_string());
    assert_eq!(
        d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(),
        secret
    );

    // An admin lists her key names and deletes one, but never reveals or sets.
    let listed = d.ok(Some(&carol), &["--user", u, "creds", "list"]);
    assert!(
        listed.contains("openai") && listed.contains("anthropic"),
        "{listed}"
    );
    seen.push_str(&listed);
    for admin in [Some(&carol), None] {
        let (status, answer) = d.api(
            admin,
            "POST",
            &format!("/v1/credentials/openai/reveal?user={u}"),
            None,
        );
        assert_eq!(
            (status, answer["code"].as_str()),
            (403, Some("owner_only")),
            "{answer}"
        );
        seen.push_str(&answer.to_string());
    }
    let (status, answer) = d.api(
        Some(&carol),
        "PUT",
        &format!("/v1/credentials/openai?user={u}"),
        Some(&put),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (403, Some("owner_only")),
        "{answer}"
    );
    seen.push_str(&answer.to_string());
    d.ok(Some(&carol), &["--user", u, "creds", "rm", "anthropic"]);
    let list = d.ok(Some(&alice), &["creds", "list"]);
    assert!(
        list.contains("openai") && !list.contains("anthropic"),
        "{list}"
    );
    let deleted_by = format!("\"actor\":\"{}\"", carol.name);
    assert!(
        d.user_audit(&alice)
            .lines()
            .any(|l| l.contains("credentials.delete") && l.contains(&deleted_by))
    );
    assert!(
        d.system_audit()
            .lines()
            .any(|l| l.contains("credentials.delete") && l.contains(&deleted_by))
    );
    assert_eq!(
        d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(),
        secret
    );

    // The secrets appear nowhere: no file of the daemon's tree (its log,
    // audit and usage files, keys, profiles), no answer, no process.
    for s in [&secret, &second] {
        assert_eq!(files_containing(&d.scratch.path, s), Vec::<PathBuf>::new());
        assert!(!d.log_text().contains(s.as_str()));
        assert!(!seen.contains(s.as_str()));
        assert_eq!(cmdlines_containing(s), Vec::<String>::new());
    }
    assert!(!seen.contains(&bobs_try));
    assert!(files_containing(&d.scratch.path, &bobs_try).is_empty());
}

#[test]
#[ignore = "needs root"]
fn the_host_key_stands_in_only_where_the_config_allows_it() {
    require_root();
    let alice = TestUser::new("alice");
    let carol = TestUser::new("carol");
    let d = Daemon::start(FALLBACK);
    let settings = Config::load(&d.config).expect("config").credentials;
    let host = fresh_secret("sk-host");
    let own = fresh_secret("sk-alice");
    set_key(&d, None, "openai", &host, &["--host"]);
    set_key(
        &d,
        None,
        "anthropic",
        &fresh_secret("sk-host-ant"),
        &["--host"],
    );
    let listed = d.ok(None, &["creds", "list", "--host"]);
    assert!(listed.contains("openai") && listed.contains("anthropic") && !listed.contains(&host));
    let md = std::fs::metadata(d.state.join("credentials.age")).expect("host file");
    assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));
    d.ok(Some(&carol), &["status"]);

    // carol has no key: fallback allowed for openai, not for anthropic.
    let r = resolve(&d, &carol, "openai", &settings).expect("fallback");
    assert_eq!(
        (r.source(), host_endpoint(&r)),
        (Source::Host, "https://api.openai.com/v1")
    );
    let err = resolve(&d, &carol, "anthropic", &settings).expect_err("no fallback");
    assert_eq!(
        err.to_string(),
        "no key for \"anthropic\": set one with profilectl creds set anthropic"
    );
    // With fallback off, the actionable error.
    let err = resolve(&d, &carol, "openai", &Settings::default()).expect_err("fallback off");
    assert_eq!(
        err.to_string(),
        "no key for \"openai\": set one with profilectl creds set openai"
    );

    // alice's own key wins; it expires, and then is never used.
    let expires =
        profiled::timefmt::rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(4));
    set_key(&d, Some(&alice), "openai", &own, &["--expires", &expires]);
    let r = resolve(&d, &alice, "openai", &settings).expect("own key");
    assert_eq!((own_text(&r), r.source()), (own.as_str(), Source::User));

    // last_used is recorded, and not rewritten within the minute.
    let listing: serde_json::Value =
        serde_json::from_str(&d.ok(Some(&alice), &["--json", "creds", "list"])).expect("json");
    assert!(
        listing["credentials"][0]["last_used"].is_string(),
        "{listing}"
    );
    let file = d.profile(&alice).join("credentials.age");
    let before = std::fs::read(&file).expect("read");
    resolve(&d, &alice, "openai", &settings).expect("own key again");
    assert_eq!(
        std::fs::read(&file).expect("read"),
        before,
        "rewritten within a minute"
    );

    std::thread::sleep(Duration::from_secs(5));
    let r = resolve(&d, &alice, "openai", &settings).expect("host once expired");
    assert_eq!(r.source(), Source::Host);
    let err = resolve(&d, &alice, "openai", &Settings::default()).expect_err("expired");
    assert!(err.to_string().contains("expired at"), "{err}");
    assert!(
        err.to_string().contains("profilectl creds set openai"),
        "{err}"
    );
    let list = d.ok(Some(&alice), &["creds", "list"]);
    assert!(list.contains("EXPIRED"), "{list}");

    for s in [&host, &own] {
        assert_eq!(files_containing(&d.scratch.path, s), Vec::<PathBuf>::new());
        assert!(!d.log_text().contains(s.as_str()));
    }
}

#[test]
#[ignore = "needs root"]
fn a_broken_file_is_reported_kept_byte_for_byte_and_set_aside_only_on_reset() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let carol = TestUser::new("carol");
    let erin = TestUser::new("erin");
    let d = Daemon::start("");
    let secrets: Vec<String> = (0..4).map(|_| fresh_secret("sk")).collect();
    for (user, secret) in [&alice, &bob, &carol, &erin].into_iter().zip(&secrets) {
        set_key(&d, Some(user), "openai", secret, &[]);
    }
    let file = |u: &TestUser| d.profile(u).join("credentials.age");
    // bob's is cut short, erin's altered, carol's is alice's (foreign).
    let whole = std::fs::read(file(&bob)).expect("read");
    std::fs::write(file(&bob), &whole[..whole.len() / 2]).expect("truncate");
    let mut altered = std::fs::read(file(&erin)).expect("read");
    let at = altered.len() - 10;
    altered[at] ^= 0x01;
    std::fs::write(file(&erin), &altered).expect("alter");
    std::fs::write(file(&carol), std::fs::read(file(&alice)).expect("read")).expect("copy");
    let broken = std::fs::read(file(&bob)).expect("read");

    for (user, why) in [
        (&bob, "cut short"),
        (&erin, "integrity check"),
        (&carol, "not encrypted to this account's daemon identity"),
    ] {
        let before = std::fs::read(file(user)).expect("read");
        let err = fails(&d, Some(user), &["creds", "list"]);
        assert!(
            err.contains("credentials.age cannot be opened") && err.contains(why),
            "{err}"
        );
        assert!(err.contains("profilectl creds reset"), "{err}");
        let out = d.ctl_stdin(Some(user), &["creds", "set", "openai"], Some("sk-new\n"));
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be opened"));
        fails(&d, Some(user), &["creds", "rm", "openai"]);
        assert_eq!(
            std::fs::read(file(user)).expect("read"),
            before,
            "{why}: file changed"
        );
        let (_, me) = d.api(Some(user), "GET", "/v1/me", None);
        let problems = me["problems"].as_array().cloned().unwrap_or_default();
        assert!(
            problems.iter().any(|p| p["file"] == "credentials.age"
                && p["reason"].as_str().is_some_and(|r| r.contains(why))),
            "{me}"
        );
        let audit = d.user_audit(user);
        assert!(
            audit
                .lines()
                .any(|l| l.contains("credentials.read") && l.contains("refused")),
            "{audit}"
        );
        let err = resolve(&d, user, "openai", &Settings::default()).expect_err("broken");
        assert!(matches!(err, creds::Error::Broken { .. }), "{err}");
    }

    // alice is unaffected.
    assert_eq!(
        d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(),
        secrets[0]
    );
    let r = resolve(&d, &alice, "openai", &Settings::default()).expect("alice resolves");
    assert_eq!(own_text(&r), secrets[0]);

    // bob resets: the broken file is kept aside, byte for byte.
    assert_eq!(std::fs::read(file(&bob)).expect("read"), broken);
    let out = d.ok(Some(&bob), &["creds", "reset"]);
    assert!(out.contains("credentials.age.broken-"), "{out}");
    assert!(!file(&bob).exists());
    let aside: Vec<PathBuf> = std::fs::read_dir(d.profile(&bob))
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("credentials.age.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("read"), broken);
    assert_eq!(std::fs::metadata(&aside[0]).expect("stat").uid(), bob.uid);
    let err = fails(&d, Some(&bob), &["creds", "reset"]);
    assert!(
        err.contains("nothing to reset") || err.contains("no credentials.age"),
        "{err}"
    );
    let fresh = fresh_secret("sk-bob");
    set_key(&d, Some(&bob), "openai", &fresh, &[]);
    assert_eq!(
        d.ok(Some(&bob), &["creds", "reveal", "openai"]).trim(),
        fresh
    );
    assert!(d.user_audit(&bob).contains("credentials.reset"));

    let err = fails(&d, Some(&alice), &["creds", "reset"]);
    assert!(err.contains("opens fine"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn rotate_keys_reencrypts_every_file_and_removes_the_old_identities() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let carol = TestUser::new("carol");
    let d = Daemon::start(FALLBACK);
    let settings = Config::load(&d.config).expect("config").credentials;
    let (identity, public) = age_identity(&d, &alice);
    d.ok(Some(&alice), &["creds", "add-recipient", &public]);
    let (a, b, h) = (
        fresh_secret("sk-a"),
        fresh_secret("sk-b"),
        fresh_secret("sk-h"),
    );
    set_key(&d, Some(&alice), "openai", &a, &[]);
    set_key(&d, Some(&bob), "anthropic", &b, &[]);
    set_key(&d, None, "openai", &h, &["--host"]);
    // Provisioning made carol's identity with her profile.
    d.ok(Some(&carol), &["status"]);
    let keys = d.state.join("keys");
    let key_of = |name: &str| keys.join(format!("{name}.key"));
    assert!(key_of(&carol.name).exists());

    let secret_line = |p: &Path| {
        std::fs::read_to_string(p)
            .expect("read key")
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a key line")
            .to_owned()
    };
    let names = [
        alice.name.clone(),
        bob.name.clone(),
        carol.name.clone(),
        ".host".to_owned(),
    ];
    let old: Vec<String> = names.iter().map(|n| secret_line(&key_of(n))).collect();
    let old_alice = d.scratch.path.join("old-alice.key");
    std::fs::write(&old_alice, format!("{}\n", old[0])).expect("save the old identity");

    let run = |args: &[&str]| {
        let out = Command::new(PROFILED)
            .arg("--config")
            .arg(&d.config)
            .arg("rotate-keys")
            .args(args)
            .output()
            .expect("run profiled rotate-keys");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Beside the running daemon.
    let report = run(&[]);
    for n in [&alice.name, &bob.name, &carol.name] {
        assert!(report.contains(&format!("{n}: rotated")), "{report}");
    }
    assert!(report.contains("(host): rotated"), "{report}");

    // The old identities are gone from the keys directory; no leftovers.
    for (name, line) in names.iter().zip(&old) {
        assert_ne!(&secret_line(&key_of(name)), line, "{name} not rotated");
        assert!(
            files_containing(&keys, line).is_empty(),
            "{name}'s old identity remains"
        );
        let md = std::fs::metadata(key_of(name)).expect("key");
        assert_eq!((md.uid(), md.mode() & 0o7777), (0, 0o600));
    }
    let leftovers: Vec<String> = std::fs::read_dir(&keys)
        .expect("list keys")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".key") && !n.ends_with(".lock"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The old identity opens nothing; alice's own still opens her file.
    let file = d.profile(&alice).join("credentials.age");
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&old_alice)
        .arg(&file)
        .output()
        .expect("age");
    assert!(
        !out.status.success(),
        "the old identity still opens the file"
    );
    let out = alice
        .command("age")
        .arg("-d")
        .arg("-i")
        .arg(&identity)
        .arg(&file)
        .output()
        .expect("age");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&a));

    // Every key still resolves, through the library and the running daemon.
    let r = resolve(&d, &alice, "openai", &settings).expect("alice");
    assert_eq!((own_text(&r), r.source()), (a.as_str(), Source::User));
    let r = resolve(&d, &bob, "anthropic", &settings).expect("bob");
    assert_eq!(own_text(&r), b);
    let r = resolve(&d, &carol, "openai", &settings).expect("carol falls back");
    assert_eq!(r.source(), Source::Host);
    // The host file opens with the new host identity and holds the key.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key_of(".host"))
        .arg(d.state.join("credentials.age"))
        .output()
        .expect("age");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&h));
    assert_eq!(d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(), a);
    assert!(d.ok(Some(&alice), &["creds", "list"]).contains(&public));

    // --user rotates that account's identity only.
    let before_bob = secret_line(&key_of(&bob.name));
    let before_alice = secret_line(&key_of(&alice.name));
    let report = run(&["--user", &alice.name]);
    assert!(
        report.contains(&format!("{}: rotated", alice.name)),
        "{report}"
    );
    assert!(!report.contains(&bob.name), "{report}");
    assert_ne!(secret_line(&key_of(&alice.name)), before_alice);
    assert_eq!(secret_line(&key_of(&bob.name)), before_bob);
    assert_eq!(d.ok(Some(&alice), &["creds", "reveal", "openai"]).trim(), a);
}
