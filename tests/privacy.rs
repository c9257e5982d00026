//! Rule 4: a user sees and changes only their own profile; admins may act
//! on others, and every such act is audited in both logs.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Daemon, TestGroup, TestUser, capture, memory_file, require_root};

#[test]
#[ignore = "needs root"]
fn a_capture_lands_in_the_users_own_profile_and_nowhere_else() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");

    let id = capture(&d, &alice, "met Bob about the migration");
    let file = memory_file(&d, &alice, &id);

    // Owned by alice, 0600, every directory up to the profile 0700.
    let md = std::fs::metadata(&file).expect("stat memory");
    assert_eq!(md.uid(), alice.uid);
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    let mut dir = file.parent().expect("parent").to_path_buf();
    while dir != d.profiles {
        let md = std::fs::metadata(&dir).expect("stat dir");
        assert_eq!(md.uid(), alice.uid, "{}", dir.display());
        assert_eq!(md.permissions().mode() & 0o7777, 0o700, "{}", dir.display());
        dir.pop();
    }

    // alice can read it with cat: a Markdown file with TOML front matter.
    let out = alice.command("cat").arg(&file).output().expect("cat");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("+++\n"), "{text}");
    assert!(text.contains(&format!("id = \"{id}\"")), "{text}");
    assert!(
        text.ends_with("+++\nmet Bob about the migration\n"),
        "{text}"
    );

    // bob cannot see it by any route.
    let bobs = d.ok(Some(&bob), &["memories"]);
    assert!(!bobs.contains(&id), "{bobs}");
    let out = bob.command("cat").arg(&file).output().expect("cat as bob");
    assert!(!out.status.success(), "bob could cat alice's memory");

    let (status, theirs) = d.api(Some(&bob), "GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 404, "{theirs}");
    let missing = "evt-01M80ZAVQQEFCZA6K4K4DZH3XG";
    let (status, none) = d.api(Some(&bob), "GET", &format!("/v1/memories/{missing}"), None);
    assert_eq!(status, 404);
    // Exactly as a missing one: the same body but for the id asked for.
    assert_eq!(
        theirs.to_string().replace(&id, "ID"),
        none.to_string().replace(missing, "ID")
    );
    for method in ["PUT", "DELETE"] {
        let body = (method == "PUT").then_some(r#"{"text":"mine now"}"#);
        let (status, _) = d.api(Some(&bob), method, &format!("/v1/memories/{id}"), body);
        assert_eq!(status, 404, "{method}");
    }

    let out = d.ctl(Some(&bob), &["--user", &alice.name, "memories"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only admins"), "{err}");
    let (status, body) = d.api(
        Some(&bob),
        "GET",
        &format!("/v1/memories?user={}", alice.name),
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(body["code"], "forbidden_user");

    // Still there, unchanged, for alice.
    let mine = d.ok(Some(&alice), &["memory", "show", &id]);
    assert!(mine.contains("met Bob about the migration"), "{mine}");
}

#[test]
#[ignore = "needs root"]
fn an_admin_acts_on_another_profile_and_it_is_audited_in_both_logs() {
    require_root();
    let admins = TestGroup::new("adm");
    let alice = TestUser::new("alice");
    let carol = TestUser::new("carol");
    let d = Daemon::start(&format!("[accounts]\nadmin_group = \"{}\"\n", admins.name));
    let id = capture(&d, &alice, "quarterly numbers");

    // Not yet an admin.
    let out = d.ctl(Some(&carol), &["--user", &alice.name, "memories"]);
    assert_eq!(out.status.code(), Some(1));

    // Membership takes effect on the next request: no restart.
    admins.add(&carol);
    let listed = d.ok(Some(&carol), &["--user", &alice.name, "memories"]);
    assert!(listed.contains(&id), "{listed}");

    let user_log = d.user_audit(&alice);
    let line = user_log
        .lines()
        .find(|l| l.contains("\"action\":\"memory.list\""))
        .unwrap_or_else(|| panic!("no memory.list in alice's log: {user_log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("audit line is JSON");
    assert_eq!(v["actor"], carol.name.as_str());
    assert_eq!(v["user"], alice.name.as_str());
    assert_eq!(v["result"], "ok");
    for key in ["time", "actor", "user", "action", "target", "result"] {
        assert!(v.get(key).is_some(), "{key} missing in {line}");
    }
    let system = d.system_audit();
    assert!(
        system
            .lines()
            .any(|l| l.contains("\"action\":\"memory.list\"")
                && l.contains(&format!("\"actor\":\"{}\"", carol.name))
                && l.contains(&format!("\"user\":\"{}\"", alice.name))),
        "{system}"
    );

    // An admin's change on alice's profile is audited in both too.
    let id2 = d
        .ok(
            Some(&carol),
            &["--user", &alice.name, "capture", "added by an admin"],
        )
        .trim()
        .to_owned();
    assert!(
        d.user_audit(&alice)
            .contains(&format!("\"target\":\"{id2}\""))
    );
    assert!(d.system_audit().contains(&format!("\"target\":\"{id2}\"")));

    // alice's own changes stay out of the system log.
    let own = capture(&d, &alice, "my own note");
    assert!(d.user_audit(&alice).contains(&own));
    assert!(!d.system_audit().contains(&own));

    // root over the socket is admin too.
    let listed = d.ok(None, &["--user", &alice.name, "memories"]);
    assert!(listed.contains(&id));

    // Removing carol from the group takes effect at once.
    drop(admins);
    let out = d.ctl(Some(&carol), &["--user", &alice.name, "memories"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
#[ignore = "needs root"]
fn first_request_provisions_and_accounts_outside_the_range_are_refused() {
    require_root();
    let alice = TestUser::new("alice");
    let sys = TestUser::with_args("sys", &["-r"]);
    let d = Daemon::start("");

    assert!(!d.profile(&alice).exists());
    let status = d.ok(Some(&alice), &["status"]);
    assert!(status.contains(&alice.name), "{status}");
    let md = std::fs::metadata(d.profile(&alice)).expect("profile created");
    assert_eq!(md.uid(), alice.uid);
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    for sub in [
        "memory/episodic",
        "memory/tasks",
        "memory/inbox",
        "persona",
        "logs/audit",
    ] {
        let md = std::fs::metadata(d.profile(&alice).join(sub)).expect(sub);
        assert_eq!(
            (md.uid(), md.permissions().mode() & 0o7777),
            (alice.uid, 0o700),
            "{sub}"
        );
    }
    let toml = std::fs::metadata(d.profile(&alice).join("profile.toml")).expect("profile.toml");
    assert_eq!(
        (toml.uid(), toml.permissions().mode() & 0o7777),
        (alice.uid, 0o600)
    );
    assert!(d.system_audit().contains("profile.create"));
    // No temporary provisioning directory is left behind.
    let hidden: Vec<_> = std::fs::read_dir(&d.profiles)
        .expect("list profiles")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    let (status, body) = d.api(Some(&sys), "GET", "/v1/memories", None);
    assert_eq!(status, 403);
    assert_eq!(body["code"], "not_eligible");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("outside the eligible uid range"),
        "{detail}"
    );
    assert!(!d.profile(&sys).exists());
}

#[test]
#[ignore = "needs root"]
fn a_listing_never_serves_another_profiles_cached_view() {
    require_root();
    const PASSWORD: &str = "view privacy password 7";
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    bob.set_password(PASSWORD);
    let d = Daemon::start("");
    let memory = capture(&d, &alice, "alice's cached secret");
    let (status, task) = d.api(
        Some(&alice),
        "POST",
        "/v1/tasks",
        Some(r#"{"title":"alice's cached task"}"#),
    );
    assert_eq!(status, 200, "{task}");
    let task = task["id"].as_str().expect("task id").to_owned();
    // alice lists: her view now holds both records.
    for (path, id) in [("/v1/memories", &memory), ("/v1/tasks", &task)] {
        let (status, page) = d.api(Some(&alice), "GET", path, None);
        assert_eq!(status, 200);
        assert!(page.to_string().contains(id.as_str()), "{page}");
    }

    // bob, through every listing, on the socket and over TCP, sees none of it.
    let reply = d.login(&bob.name, PASSWORD);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let auth = format!("Bearer {}", reply.json()["token"].as_str().expect("token"));
    let secrets = [memory.as_str(), task.as_str(), "cached"];
    for path in [
        "/v1/memories",
        "/v1/memories?limit=1000",
        &format!("/v1/memories?before={memory}z"),
        "/v1/tasks",
        "/v1/tasks?status=todo",
        "/v1/me",
    ] {
        let (status, body) = d.api(Some(&bob), "GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        let tcp = d.http("GET", path, &[("Authorization", &auth)], None);
        assert_eq!(tcp.status, 200, "{path}: {}", tcp.body);
        for secret in secrets {
            assert!(!body.to_string().contains(secret), "{path}: {body}");
            assert!(!tcp.body.contains(secret), "{path}: {}", tcp.body);
        }
    }
    for path in ["/v1/memories", "/v1/tasks"] {
        let path = format!("{path}?user={}", alice.name);
        let (status, body) = d.api(Some(&bob), "GET", &path, None);
        assert_eq!(status, 403, "{path}: {body}");
        let tcp = d.http("GET", &path, &[("Authorization", &auth)], None);
        assert_eq!(tcp.status, 403, "{path}: {}", tcp.body);
        for secret in secrets {
            assert!(!body.to_string().contains(secret), "{body}");
            assert!(!tcp.body.contains(secret), "{}", tcp.body);
        }
    }

    // A profile removed and provisioned again is another directory: what
    // was cached of the old one is not served for it.
    std::fs::remove_dir_all(d.profile(&alice)).expect("remove alice's profile");
    let (status, page) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
}
