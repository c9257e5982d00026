//! Rule 1: files placed in a profile to trick the root daemon are refused
//! with a clear error, no byte of their target is ever answered, and the
//! daemon keeps serving.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::{Daemon, TestUser, capture, memory_file, require_root};

/// A memory id whose file would live in the same month directory as `near`.
fn sibling_id(near: &str, n: u8) -> String {
    // Same timestamp part (first 10 chars of the ULID), different randomness.
    let ulid = &near["evt-".len()..];
    format!("evt-{}{:0>16}", &ulid[..10], format!("ATTACK{n}"))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("lchown");
}

#[test]
#[ignore = "needs root"]
fn unsafe_files_in_a_profile_are_refused_and_never_leak() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let real = capture(&d, &alice, "a real memory");
    let month = memory_file(&d, &alice, &real)
        .parent()
        .expect("month dir")
        .to_path_buf();
    let shadow_first_line = std::fs::read_to_string("/etc/shadow")
        .expect("read /etc/shadow")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let secret = "TOPSECRET-root-file";
    let secret_file = d.scratch.path.join("root-secret");
    std::fs::write(&secret_file, format!("+++\nid = \"x\"\n+++\n{secret}\n")).expect("secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // 1. A symlink to /etc/shadow named like a memory.
    let shadow_link = sibling_id(&real, 1);
    let p = month.join(format!("{shadow_link}.md"));
    symlink("/etc/shadow", &p).expect("symlink");
    chown(&p, alice.uid, alice.gid);
    // 2. A symlinked directory pointing outside the profile, as a year.
    let outside = d.scratch.path.join("outside/12");
    std::fs::create_dir_all(&outside).expect("outside dir");
    let outside_id = "evt-01KCZ0000000000000000SECRT";
    std::fs::write(
        outside.join(format!("{outside_id}.md")),
        format!("+++\n+++\n{secret}\n"),
    )
    .expect("outside memory");
    let year_link = d.profile(&alice).join("memory/episodic/2025");
    symlink(d.scratch.path.join("outside"), &year_link).expect("dir symlink");
    chown(&year_link, alice.uid, alice.gid);
    // 3. A hard link to a root-owned file.
    let hard = sibling_id(&real, 3);
    std::fs::hard_link(&secret_file, month.join(format!("{hard}.md"))).expect("hard link");
    // 4. A FIFO.
    let fifo = sibling_id(&real, 4);
    let fifo_path = month.join(format!("{fifo}.md"));
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .expect("mkfifo");
    chown(&fifo_path, alice.uid, alice.gid);
    // 5. A file owned by bob.
    let bobs = sibling_id(&real, 5);
    let bobs_path = month.join(format!("{bobs}.md"));
    std::fs::write(&bobs_path, format!("+++\n+++\n{secret}\n")).expect("bob's file");
    chown(&bobs_path, bob.uid, bob.gid);
    // 6. A 100 MB file.
    let big = sibling_id(&real, 6);
    let big_path = month.join(format!("{big}.md"));
    let f = std::fs::File::create(&big_path).expect("big file");
    f.set_len(100 * 1024 * 1024).expect("set_len");
    drop(f);
    chown(&big_path, alice.uid, alice.gid);

    let cases = [
        (shadow_link.as_str(), "symbolic link"),
        (outside_id, "symbolic link"),
        (hard.as_str(), "hard link"),
        (fifo.as_str(), "FIFO"),
        (bobs.as_str(), &format!("owned by uid {}", bob.uid)),
        (big.as_str(), "over the 1048576-byte limit"),
    ];
    let mut answers = String::new();
    for (id, reason) in cases {
        let (status, body) = d.api(Some(&alice), "GET", &format!("/v1/memories/{id}"), None);
        assert_eq!(status, 422, "{id}: {body}");
        assert_eq!(body["code"], "unsafe_file", "{id}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{id}: {detail}");
        answers.push_str(&body.to_string());
        // An update is refused the same way and writes nothing.
        let (status, body) = d.api(
            Some(&alice),
            "PUT",
            &format!("/v1/memories/{id}"),
            Some(r#"{"text":"overwrite"}"#),
        );
        assert_eq!(status, 422, "PUT {id}: {body}");
        answers.push_str(&body.to_string());
    }

    // The listing and the status still answer, naming each bad file.
    let (status, page) = d.api(Some(&alice), "GET", "/v1/memories?limit=100", None);
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], real.as_str());
    let problems = page["problems"].to_string();
    for id in [&shadow_link, &hard, &fifo, &bobs, &big] {
        assert!(problems.contains(id.as_str()), "{id} not in {problems}");
    }
    answers.push_str(&page.to_string());
    let (status, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    assert_eq!(status, 200);
    let me_problems = me["problems"].to_string();
    assert!(
        me_problems.contains("memory/episodic/2025"),
        "{me_problems}"
    );
    assert!(me_problems.contains(&fifo), "{me_problems}");
    answers.push_str(&me.to_string());

    assert!(!answers.contains(secret), "a secret leaked: {answers}");
    assert!(
        shadow_first_line.is_empty() || !answers.contains(&shadow_first_line),
        "/etc/shadow leaked"
    );
    // Every refusal is audited.
    let audit = d.user_audit(&alice);
    for id in [&shadow_link, &hard, &fifo, &bobs, &big] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(id.as_str()) && l.contains("refused")),
            "no refusal audited for {id}: {audit}"
        );
    }
    // The targets are untouched and nothing was handed to alice.
    let md = std::fs::metadata(&secret_file).expect("secret still there");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), 0);
    assert!(
        std::fs::read_to_string(&secret_file)
            .expect("read")
            .contains(secret)
    );

    // Still serving, for alice and for everyone else.
    let (status, _) = d.api(Some(&alice), "GET", "/v1/health", None);
    assert_eq!(status, 200);
    capture(&d, &bob, "bob is fine");
}

#[test]
#[ignore = "needs root"]
fn writes_never_follow_a_symlinked_directory() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let target = d.scratch.path.join("elsewhere");
    std::fs::create_dir(&target).expect("target dir");
    let episodic = d.profile(&alice).join("memory/episodic");
    std::fs::remove_dir_all(&episodic).expect("remove episodic");
    symlink(&target, &episodic).expect("symlink episodic");
    chown(&episodic, alice.uid, alice.gid);

    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/memories",
        Some(r#"{"text":"x"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "unsafe_file");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("memory/episodic"),
        "{body}"
    );
    let written: Vec<_> = walk(&target);
    assert!(written.is_empty(), "wrote through a symlink: {written:?}");

    // A task path through a link is refused the same way.
    let tasks = d.profile(&alice).join("memory/tasks");
    std::fs::remove_dir_all(&tasks).expect("remove tasks");
    symlink(&target, &tasks).expect("symlink tasks");
    chown(&tasks, alice.uid, alice.gid);
    let (status, _) = d.api(Some(&alice), "POST", "/v1/tasks", Some(r#"{"title":"x"}"#));
    assert_eq!(status, 422);
    assert!(walk(&target).is_empty());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path()));
        }
    }
    out
}
