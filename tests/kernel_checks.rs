//! Rule 12, first half: inside a profile the daemon works with the
//! thread's filesystem uid/gid set to the profile's account, so the kernel
//! refuses what that account could not do itself, whatever the daemon's
//! own checks say. Root's DAC override would read a file its owner made
//! unreadable and write in a directory its owner made read-only; the
//! daemon must not.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Daemon, TestUser, capture, memory_file, require_root};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
#[ignore = "needs root"]
fn a_file_its_owner_made_unreadable_is_refused_with_what_to_do() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let id = capture(&d, &alice, "a memory alice will lock away from herself");
    let file = memory_file(&d, &alice, &id);
    // What alice herself could do: chmod her own file to 000.
    chmod(&file, 0o000);
    let (status, body) = d.api(Some(&alice), "GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 422, "the daemon read what alice cannot: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("chmod u+rw") && detail.contains("account's own permissions"),
        "{body}"
    );
    // Her own permissions back: served again, nothing was changed.
    chmod(&file, 0o600);
    let (status, body) = d.api(Some(&alice), "GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("lock away from herself"),
        "{body}"
    );
}

#[test]
#[ignore = "needs root"]
fn a_directory_its_owner_made_read_only_is_not_written_by_the_daemon() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let tasks = d.profile(&alice).join("memory/tasks");
    let before: Vec<_> = std::fs::read_dir(&tasks)
        .expect("tasks")
        .flatten()
        .collect();
    chmod(&tasks, 0o500);
    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/tasks",
        Some(r#"{"title":"written where alice cannot write"}"#),
    );
    chmod(&tasks, 0o700);
    assert_eq!(status, 422, "the daemon wrote where alice cannot: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("chmod u+rwx"), "{body}");
    let after: Vec<_> = std::fs::read_dir(&tasks)
        .expect("tasks")
        .flatten()
        .collect();
    assert_eq!(before.len(), after.len(), "a file was left: {after:?}");
    // Writable again: the same request succeeds, and what it creates is
    // alice's without any chown (created as her).
    let (status, task) = d.api(
        Some(&alice),
        "POST",
        "/v1/tasks",
        Some(r#"{"title":"written as alice"}"#),
    );
    assert_eq!(status, 200, "{task}");
    let id = task["id"].as_str().expect("id");
    let meta = std::fs::metadata(tasks.join(format!("{id}.md"))).expect("the task file");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (alice.uid, alice.gid, 0o600)
    );
}
