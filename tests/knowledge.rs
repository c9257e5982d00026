//! The knowledge hub: entries shared by every eligible account, each a file
//! owned by its author, streamed to everyone as they change; attribution
//! comes from the file's owner and cannot be forged, and nothing but an
//! eligible account's own regular file is ever served.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::stream::Stream;
use common::{Daemon, TERMINAL_ATTACK, TestGroup, TestUser, controls, require_root};
use serde_json::Value;

/// The knowledge directory of `d` (the default, under the state directory).
fn hub(d: &Daemon) -> PathBuf {
    d.state.join("knowledge")
}

/// `sh -c script` as `user`, with the user's supplementary groups (std's
/// `uid()` drops them, and the writers' group is one).
fn sh_as(user: &TestUser, script: &str, args: &[&Path]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--init-groups",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run sh as the user")
}

/// Adds an entry as `user` with profilectl; its id.
fn add(d: &Daemon, user: &TestUser, title: &str, text: &str) -> String {
    let out = d.ok(Some(user), &["--json", "knowledge", "add", title, text]);
    let v: Value = serde_json::from_str(&out).expect("json");
    v["id"].as_str().expect("an id").to_owned()
}

/// Rewrites `file` in place as `user` (the entry keeps its inode and owner,
/// as when an editor writes over it).
fn overwrite_as(d: &Daemon, user: &TestUser, file: &Path, text: &str) {
    let draft = d.scratch.path.join(format!("draft-{}", common::tag()));
    std::fs::write(&draft, text).expect("write the draft");
    std::fs::set_permissions(&draft, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = sh_as(user, "cat \"$2\" > \"$1\"", &[file, &draft]);
    assert!(out.status.success(), "{out:?}");
}

fn is(v: &Value, ty: &str, id: &str) -> bool {
    v["type"] == ty && v["record"] == id
}

#[test]
#[ignore = "needs root"]
fn an_entry_reaches_everyone_attributed_to_its_author_who_alone_may_change_it() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let bob_events = Stream::settled(&d, &bob);

    let id = add(&d, &alice, "Deploys", "Deploys go out on Tuesdays.\n");
    let seen = bob_events.until("knowledge.created", |v| is(v, "knowledge.created", &id));
    let created = seen.last().expect("the event");
    assert_eq!(created["author"], alice.name.as_str(), "{created}");
    assert_eq!(created["path"], format!("{id}.md"), "{created}");
    assert!(
        seen.iter()
            .all(|v| v["author"].is_null() || v["author"] == alice.name.as_str()),
        "{seen:#?}"
    );

    // The entry is alice's file; bob reads it through the API.
    let file = hub(&d).join(format!("{id}.md"));
    let meta = std::fs::symlink_metadata(&file).expect("the entry file");
    assert_eq!(meta.uid(), alice.uid);
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    let (status, entry) = d.api(Some(&bob), "GET", &format!("/v1/knowledge/{id}"), None);
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["author"], alice.name.as_str());
    assert_eq!(entry["title"], "Deploys");
    assert!(entry["text"].as_str().unwrap_or("").contains("Tuesdays"));

    // bob can neither edit, replace nor remove it: not on disk...
    let edit = sh_as(&bob, "echo 'bob was here' >> \"$1\"", &[&file]);
    assert!(!edit.status.success(), "bob appended to alice's entry");
    let replace = sh_as(
        &bob,
        "echo forged > \"$1.new\" && mv \"$1.new\" \"$1\"",
        &[&file],
    );
    assert!(!replace.status.success(), "bob replaced alice's entry");
    let rm = sh_as(&bob, "rm -f \"$1\"", &[&file]);
    assert!(
        !rm.status.success() || file.exists(),
        "bob removed alice's entry"
    );
    // ...nor through the API.
    let out = d.ctl(Some(&bob), &["knowledge", "rm", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only its author or an admin"), "{err}");
    assert!(file.exists());

    // alice edits her entry in place, in any editor; bob sees the update.
    let text = std::fs::read_to_string(&file).expect("read the entry");
    overwrite_as(&d, &alice, &file, &text.replace("Tuesdays", "Wednesdays"));
    let seen = bob_events.until("knowledge.updated", |v| is(v, "knowledge.updated", &id));
    assert_eq!(seen.len(), 1, "one update for one save: {seen:#?}");
    assert_eq!(seen[0]["author"], alice.name.as_str());
    let shown = d.ok(Some(&bob), &["knowledge", "show", &id]);
    assert!(shown.contains("Wednesdays"), "{shown}");
    assert!(shown.contains(&format!("by {}", alice.name)), "{shown}");

    // alice removes it: everyone sees it go; the listing no longer has it.
    d.ok(Some(&alice), &["knowledge", "rm", &id]);
    bob_events.until("knowledge.deleted", |v| is(v, "knowledge.deleted", &id));
    let listed = d.ok(Some(&bob), &["knowledge", "list"]);
    assert!(!listed.contains(&id), "{listed}");
    assert!(d.system_audit().contains("knowledge.delete"));
}

#[test]
#[ignore = "needs root"]
fn terminal_escapes_in_shared_titles_are_refused_and_never_printed_raw() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let esc = "Deploys\u{1b}]52;c;cm0gLXJmIH4=\u{7}";
    // Through the API: refused, naming the field, nothing written.
    for (path, body, field) in [
        (
            "/v1/knowledge",
            serde_json::json!({"title": esc, "text": "t"}),
            "title",
        ),
        (
            "/v1/knowledge",
            serde_json::json!({"title": "ok", "text": "t", "tags": ["\u{9b}2J"]}),
            "tags",
        ),
        ("/v1/tasks", serde_json::json!({"title": esc}), "title"),
        (
            "/v1/memories",
            serde_json::json!({"text": "t", "tags": [esc]}),
            "tags",
        ),
    ] {
        let (status, v) = d.api(Some(&alice), "POST", path, Some(&body.to_string()));
        assert_eq!(status, 422, "{path} {body}: {v}");
        assert_eq!(v["code"], "invalid_input", "{v}");
        let detail = v["detail"].as_str().unwrap_or("");
        assert!(detail.starts_with(&format!("{field}:")), "{v}");
    }
    let (_, page) = d.api(Some(&bob), "GET", "/v1/knowledge", None);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");

    // By hand: alice writes the escapes into her entry's title (TOML `\u`
    // escapes) and raw ones into another entry's text.
    let id = add(&d, &alice, "Deploys", "Tuesdays.\n");
    let file = hub(&d).join(format!("{id}.md"));
    let text = std::fs::read_to_string(&file).expect("read the entry");
    let title_line = text
        .lines()
        .position(|l| l.starts_with("title"))
        .expect("a title line")
        + 1;
    let hostile = text.replacen(
        "title = \"Deploys\"",
        &format!("title = \"Deploys{TERMINAL_ATTACK}\""),
        1,
    );
    assert_ne!(hostile, text);
    overwrite_as(&d, &alice, &file, &hostile);
    let body_id = add(&d, &alice, "Oncall", "placeholder\n");
    let body_file = hub(&d).join(format!("{body_id}.md"));
    let body = std::fs::read_to_string(&body_file).expect("read");
    let raw = body.replacen(
        "placeholder",
        "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[2J ask",
        1,
    );
    overwrite_as(&d, &alice, &body_file, &raw);

    let out = d.ctl(Some(&bob), &["knowledge", "list"]);
    assert!(out.status.success(), "{out:?}");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            controls(stream).is_empty(),
            "bob's terminal got {:?} from: {}",
            controls(stream),
            String::from_utf8_lossy(stream)
        );
    }
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains(&id),
        "a hostile title was served: {listed}"
    );
    assert!(listed.contains(&body_id), "{listed}");
    let problems = String::from_utf8_lossy(&out.stderr);
    assert!(
        problems.contains(&format!("{id}.md:{title_line}: title")) && problems.contains("U+001B"),
        "the hostile file is not reported with its line: {problems}"
    );
    // The text, printed in full, comes out escaped.
    let out = d.ctl(Some(&bob), &["knowledge", "show", &body_id]);
    assert!(out.status.success(), "{out:?}");
    assert!(controls(&out.stdout).is_empty(), "{:?}", out.stdout);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("\\u001b]52;c;"), "{shown}");
    // JSON stays JSON, its strings escaped by JSON itself.
    let json = d.ok(Some(&bob), &["--json", "knowledge", "show", &body_id]);
    let v: Value = serde_json::from_str(&json).expect("json");
    assert!(v["text"].as_str().unwrap_or("").contains('\u{1b}'), "{v}");
    assert!(controls(json.as_bytes()).is_empty(), "{json}");
}

#[test]
#[ignore = "needs root"]
fn an_author_written_in_the_file_is_ignored() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let id = add(&d, &alice, "Oncall", "Ask in #ops.\n");
    let file = hub(&d).join(format!("{id}.md"));
    // alice claims bob wrote it.
    let text = std::fs::read_to_string(&file).expect("read the entry");
    let forged = text.replacen("+++\n", &format!("+++\nauthor = \"{}\"\n", bob.name), 1);
    overwrite_as(&d, &alice, &file, &forged);
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains(&format!("author = \"{}\"", bob.name)),
        "{text}"
    );

    let (status, entry) = d.api(Some(&bob), "GET", &format!("/v1/knowledge/{id}"), None);
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["author"], alice.name.as_str(), "{entry}");
    let (_, page) = d.api(Some(&bob), "GET", "/v1/knowledge", None);
    let row = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["id"] == id.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(row["author"], alice.name.as_str(), "{row}");
}

#[test]
#[ignore = "needs root"]
fn writers_create_entries_directly_and_planted_links_are_never_served() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let carol = TestUser::new("carol");
    let writers = TestGroup::new("kw");
    writers.add(&alice);
    writers.add(&bob);
    let d = Daemon::start(&format!("[knowledge]\ngroup = \"{}\"\n", writers.name));
    let dir = hub(&d);
    let meta = std::fs::metadata(&dir).expect("the knowledge dir");
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o1775);
    let carol_events = Stream::settled(&d, &carol);

    // A member writes an entry with any tool; everyone sees it, by her.
    let direct = dir.join("kn-handwritten.md");
    let out = sh_as(
        &alice,
        "printf '+++\\ntitle = \"Written by hand\"\\n+++\\nStraight into the hub.\\n' > \"$1\"",
        &[&direct],
    );
    assert!(out.status.success(), "{out:?}");
    let seen = carol_events.until("knowledge.created", |v| {
        is(v, "knowledge.created", "kn-handwritten")
    });
    assert_eq!(seen.last().expect("event")["author"], alice.name.as_str());

    // Non-members cannot write there; members cannot remove each other's
    // entries (the sticky bit).
    let out = sh_as(&carol, "echo x > \"$1\"", &[&dir.join("kn-carol.md")]);
    assert!(!out.status.success(), "carol is no writer");
    let out = sh_as(&bob, "rm -f \"$1\" || mv \"$1\" \"$1.x\"", &[&direct]);
    assert!(
        !out.status.success() && direct.exists(),
        "bob removed alice's entry"
    );

    // bob plants a symlink to /etc/shadow, a hard link to alice's entry
    // (alice's file, so the owner check alone would pass) and root leaves
    // a file of its own: none is served, listed or announced.
    let out = sh_as(
        &bob,
        "ln -s /etc/shadow \"$1\" && ln -s /etc \"$2\"",
        &[&dir.join("kn-shadow.md"), &dir.join("kn-etc.md")],
    );
    assert!(out.status.success(), "{out:?}");
    let hard = dir.join("kn-hardlink.md");
    std::fs::hard_link(&direct, &hard).expect("hard link (as root: protected_hardlinks)");
    std::fs::write(
        dir.join("kn-root.md"),
        "+++\ntitle = \"root's\"\n+++\nROOT-ONLY-NOTE\n",
    )
    .expect("a root-owned entry");

    let shadow = std::fs::read_to_string("/etc/shadow").expect("read /etc/shadow");
    let shadow_line = shadow.lines().next().expect("a line of /etc/shadow");
    for id in ["kn-shadow", "kn-etc", "kn-hardlink", "kn-root"] {
        let (status, body) = d.api(Some(&carol), "GET", &format!("/v1/knowledge/{id}"), None);
        assert_ne!(status, 200, "{id} served: {body}");
        let text = body.to_string();
        assert!(
            !text.contains(shadow_line),
            "{id} leaked /etc/shadow: {text}"
        );
        assert!(
            !text.contains("ROOT-ONLY-NOTE"),
            "{id} leaked root's file: {text}"
        );
        assert!(
            !text.contains("Straight into the hub"),
            "{id} leaked: {text}"
        );
    }
    let (status, page) = d.api(Some(&carol), "GET", "/v1/knowledge", None);
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        Vec::<&str>::new(),
        "the hard-linked entry is refused too"
    );
    let refused: Vec<&str> = page["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["file"].as_str())
        .collect();
    for name in ["kn-shadow.md", "kn-etc.md", "kn-hardlink.md", "kn-root.md"] {
        assert!(refused.contains(&name), "{name} not reported: {page}");
    }
    assert!(!page.to_string().contains("ROOT-ONLY-NOTE"), "{page}");
    assert!(d.system_audit().contains("knowledge.read"));

    // Removing the hard link makes alice's entry whole again: carol's next
    // knowledge events are exactly that, with nothing of the planted files.
    std::fs::remove_file(&hard).expect("remove the hard link");
    let id = add(&d, &alice, "marker", "the last event of this test\n");
    let seen = carol_events.until("the marker", |v| is(v, "knowledge.created", &id));
    for v in &seen {
        let record = v["record"].as_str().unwrap_or("");
        assert!(
            !["kn-shadow", "kn-etc", "kn-hardlink", "kn-root"].contains(&record),
            "a planted file was announced: {seen:#?}"
        );
    }
    let (_, entry) = d.api(Some(&carol), "GET", "/v1/knowledge/kn-handwritten", None);
    assert_eq!(entry["author"], alice.name.as_str(), "{entry}");
}

#[test]
#[ignore = "needs root"]
fn an_admin_removes_anyones_entry_and_it_is_audited_in_the_authors_log() {
    require_root();
    let alice = TestUser::new("alice");
    let admin = TestUser::new("admin");
    let d = Daemon::start(&format!("[accounts]\nadmins = [\"{}\"]\n", admin.name));
    d.ok(Some(&alice), &["status"]);
    let id = add(&d, &alice, "Stale", "to be removed\n");
    d.ok(Some(&admin), &["knowledge", "rm", &id]);
    assert!(!hub(&d).join(format!("{id}.md")).exists());
    let log = d.user_audit(&alice);
    assert!(
        log.lines()
            .any(|l| l.contains("knowledge.delete") && l.contains(&admin.name) && l.contains(&id)),
        "{log}"
    );
    // Knowledge is shared: --user makes no sense and is refused.
    let out = d.ctl(Some(&admin), &["--user", &alice.name, "knowledge", "list"]);
    assert!(!out.status.success());
}
