//! Limits on every parser of user bytes (issue 11, "Limits on every
//! parser"): what is past a limit is refused with the limit, through every
//! way in, and changes nothing. Real accounts, a real daemon, real files.

mod common;

use std::os::unix::fs::chown;

use common::{Daemon, TestUser, capture, memory_file, require_root};

#[test]
#[ignore = "needs root"]
fn a_record_has_at_most_64_tags_through_the_api_and_on_disk() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let tags = |n: usize| {
        (0..n)
            .map(|i| format!("\"t{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let body = format!("{{\"text\": \"many tags\", \"tags\": [{}]}}", tags(65));
    let (status, answer) = d.api(Some(&alice), "POST", "/v1/memories", Some(&body));
    assert_eq!(status, 422, "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("65 tags and the most is 64"), "{detail}");
    let body = format!("{{\"title\": \"many tags\", \"tags\": [{}]}}", tags(65));
    let (status, answer) = d.api(Some(&alice), "POST", "/v1/tasks", Some(&body));
    assert_eq!(status, 422, "{answer}");
    let (status, listing) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(status, 200);
    assert_eq!(
        listing["items"].as_array().map(Vec::len),
        Some(0),
        "{listing}"
    );

    let body = format!("{{\"text\": \"enough tags\", \"tags\": [{}]}}", tags(64));
    let (status, answer) = d.api(Some(&alice), "POST", "/v1/memories", Some(&body));
    assert_eq!(status, 200, "{answer}");

    // A hand edit past the limit is a problem at the line of `tags`.
    let id = capture(&d, &alice, "edited by hand");
    let path = memory_file(&d, &alice, &id);
    std::fs::write(
        &path,
        format!(
            "+++\nid = \"{id}\"\ntags = [{}]\n+++\nedited by hand\n",
            tags(1000)
        ),
    )
    .expect("edit the memory");
    chown(&path, Some(alice.uid), Some(alice.gid)).expect("chown");
    let (status, answer) = d.api(Some(&alice), "GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 422, "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(":3: 1000 tags and the most is 64"),
        "{detail}"
    );
}
