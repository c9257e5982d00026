//! The built-in agents (issue 6 item 4) with real accounts: `ingest`,
//! `index` behind `/v1/search` and `profilectl remember`, and `organize`
//! against a small OpenAI-compatible server on loopback. The functions are
//! called through the library, as the agent framework calls them, on the
//! profiles of a real daemon.

mod common;

use std::os::unix::fs::{chown, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::model::{FakeModel, Seen};
use common::{Daemon, TestUser, capture, require_root};
use profiled::builtin::{self, ingest};
use profiled::config::Config;
use profiled::profile::{ProfileDir, ProfilesRoot, WriteMode};

/// The daemon's config and `user`'s profile (provisioned by the daemon).
fn profile_of(d: &Daemon, user: &TestUser) -> (Config, ProfileDir) {
    d.ok(Some(user), &["status"]);
    let config = Config::load(&d.config).expect("the daemon's config");
    let root = ProfilesRoot::open_beside_daemon(&d.profiles, 1 << 20).expect("profiles root");
    let dir = root
        .open_owned(&account_of(user))
        .expect("open the profile")
        .expect("the profile exists");
    (config, dir)
}

fn account_of(user: &TestUser) -> profiled::accounts::Account {
    profiled::accounts::by_name(&user.name)
        .expect("NSS answers")
        .expect("the account exists")
}

/// Ingest now, without waiting for files to settle (the test wrote them
/// and closed them before).
fn ingest_now(config: &Config, dir: &ProfileDir) -> builtin::Summary {
    ingest::run_with(
        config,
        dir,
        ingest::Options {
            settle: Duration::ZERO,
        },
    )
    .expect("ingest runs")
}

/// Writes `name` with `text` into `user`'s inbox, owned by `user`.
fn drop_file(d: &Daemon, user: &TestUser, name: &str, text: &str) {
    let path = d.profile(user).join("memory/inbox").join(name);
    std::fs::write(&path, text).expect("write an inbox file");
    chown(&path, Some(user.uid), Some(user.gid)).expect("chown the inbox file");
}

/// The 100 files of the inbox test: text, Markdown with tags, JSON.
fn hundred_files() -> Vec<(String, String)> {
    (0..100)
        .map(|i| match i % 10 {
            0 => (
                format!("note-{i:03}.md"),
                format!("+++\ntags = [\"md\", \"n{i}\"]\n+++\nMarkdown inboxword number{i}\n"),
            ),
            1 => (
                format!("note-{i:03}.json"),
                format!("{{\"text\": \"JSON inboxword number{i}\", \"tags\": [\"json\"]}}"),
            ),
            _ => (
                format!("note-{i:03}.txt"),
                format!("Plain inboxword number{i}\nsecond line\n"),
            ),
        })
        .collect()
}

fn remember_json(d: &Daemon, user: &TestUser, query: &str) -> serde_json::Value {
    let out = d.ok(Some(user), &["--json", "remember", query, "--limit", "500"]);
    serde_json::from_str(&out).expect("remember --json prints JSON")
}

fn hits(v: &serde_json::Value) -> &Vec<serde_json::Value> {
    v["hits"].as_array().expect("a hits array")
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| r.filter_map(Result::ok).count())
}

#[test]
#[ignore = "needs root"]
fn a_hundred_inbox_files_become_memories_found_by_remember_and_not_twice() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let (config, dir) = profile_of(&d, &alice);
    let files = hundred_files();
    for (name, text) in &files {
        drop_file(&d, &alice, name, text);
    }
    // The same content twice in one run makes one memory.
    drop_file(&d, &alice, "copy-of-2.txt", &files[2].1);
    // A link to a root-only file planted in the inbox is never read.
    let inbox = d.profile(&alice).join("memory/inbox");
    symlink("/etc/shadow", inbox.join("shadow.txt")).expect("plant a symlink");

    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("ingested"), 100, "{}", s.line);
    assert_eq!(s.count("duplicates"), 1, "{}", s.line);
    assert_eq!(s.count("rejected"), 1, "{}", s.line);
    assert!(s.line.contains("shadow.txt: a symbolic link"), "{}", s.line);
    assert_eq!(count_files(&d.profile(&alice).join("memory/archive")), 101);
    let rejected = inbox.join("rejected/shadow.txt");
    assert!(
        std::fs::symlink_metadata(&rejected)
            .expect("the link is set aside, not lost")
            .file_type()
            .is_symlink()
    );

    let s = builtin::index(&config, &dir).expect("index runs");
    assert_eq!(s.count("indexed"), 100, "{}", s.line);
    let found = remember_json(&d, &alice, "inboxword");
    assert_eq!(hits(&found).len(), 100);
    // Nothing of /etc/shadow was ingested: root's entry is in no memory.
    assert!(hits(&remember_json(&d, &alice, "root")).is_empty());
    let one = remember_json(&d, &alice, "number42");
    assert_eq!(hits(&one).len(), 1);
    assert_eq!(one["hits"][0]["kind"], "memory");
    assert!(
        one["hits"][0]["snippet"]
            .as_str()
            .expect("a snippet")
            .contains("**number42**"),
        "{one}"
    );
    // Tags of Markdown front matter and JSON are kept and searchable.
    assert_eq!(hits(&remember_json(&d, &alice, "tags:md")).len(), 10);
    assert_eq!(hits(&remember_json(&d, &alice, "tags:json")).len(), 10);
    let text = d.ok(Some(&alice), &["remember", "number7"]);
    assert!(text.contains("Plain inboxword number7"), "{text}");

    // The same files again, after a "restart" (fresh state in the
    // functions, hashes read from the profile): no new memory.
    for (name, text) in &files {
        drop_file(&d, &alice, name, text);
    }
    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("ingested"), 0, "{}", s.line);
    assert_eq!(s.count("duplicates"), 100, "{}", s.line);
    assert_eq!(count_files(&d.profile(&alice).join("memory/archive")), 201);
    let s = builtin::index(&config, &dir).expect("index runs");
    assert_eq!(s.count("indexed"), 0, "{}", s.line);
    assert_eq!(s.count("unchanged"), 100, "{}", s.line);
    assert_eq!(hits(&remember_json(&d, &alice, "inboxword")).len(), 100);

    // A deleted memory leaves the index on the next run.
    let id = one["hits"][0]["id"].as_str().expect("an id").to_owned();
    d.ok(Some(&alice), &["memory", "rm", &id]);
    let s = builtin::index(&config, &dir).expect("index runs");
    assert_eq!(s.count("removed"), 1, "{}", s.line);
    assert!(hits(&remember_json(&d, &alice, "number42")).is_empty());
}

#[test]
#[ignore = "needs root"]
fn bad_inbox_files_are_set_aside_with_a_reason_and_nothing_is_lost() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let (config, dir) = profile_of(&d, &alice);
    let inbox = d.profile(&alice).join("memory/inbox");
    drop_file(&d, &alice, "bad.json", "{\"text\": ");
    drop_file(&d, &alice, "empty.txt", "   \n");
    std::fs::write(inbox.join("latin1.txt"), b"caf\xe9\n").expect("write");
    chown(inbox.join("latin1.txt"), Some(alice.uid), Some(alice.gid)).expect("chown");
    // bob's file in alice's inbox, and a hard link to a root-owned file.
    std::fs::write(inbox.join("bobs.txt"), "from bob").expect("write");
    chown(inbox.join("bobs.txt"), Some(bob.uid), Some(bob.gid)).expect("chown");
    let secret = d.scratch.path.join("root-secret");
    std::fs::write(&secret, "root only").expect("write");
    std::fs::hard_link(&secret, inbox.join("hard.txt")).expect("hard link");
    nix::unistd::mkfifo(&inbox.join("fifo.txt"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    drop_file(&d, &alice, "good.txt", "a good note");

    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("ingested"), 1, "{}", s.line);
    assert_eq!(s.count("rejected"), 6, "{}", s.line);
    for reason in [
        "bad.json: bad JSON at line 1",
        "latin1.txt: not UTF-8",
        "empty.txt: no text",
    ] {
        assert!(s.line.contains(reason), "{reason} not in {}", s.line);
    }
    let rejected: Vec<String> = std::fs::read_dir(inbox.join("rejected"))
        .expect("rejected dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rejected.len(), 6, "{rejected:?}");
    assert_eq!(
        std::fs::read(inbox.join("rejected/latin1.txt")).expect("kept byte for byte"),
        b"caf\xe9\n"
    );
    assert_eq!(
        std::fs::read_to_string(&secret).expect("root file"),
        "root only"
    );
    let audit = d.user_audit(&alice);
    assert!(audit.contains("ingest.reject"), "{audit}");
}

/// Every file under `dir`, recursively (hidden ones included).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(p) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sets or clears the immutable attribute of `path` (as root, a write
/// into an immutable directory fails: a real failure in the middle of a
/// run, no fake).
fn immutable(path: &Path, on: bool) {
    let ok = std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .expect("run chattr");
    assert!(ok.success(), "chattr on {}", path.display());
}

/// Clears the immutable attribute when the test ends, passed or not, so
/// the scratch directory can be removed.
struct Mutable(PathBuf);

impl Drop for Mutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
#[ignore = "needs root"]
fn a_failed_batch_leaves_every_inbox_file_in_place_and_the_next_run_finishes_it() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let (config, dir) = profile_of(&d, &alice);
    let home = d.profile(&alice);
    let episodic = home.join("memory/episodic");
    drop_file(&d, &alice, "first.txt", "the first note");
    assert_eq!(ingest_now(&config, &dir).count("ingested"), 1);
    let first = files_under(&episodic);
    let month = first[0].parent().expect("a month directory").to_owned();

    // 1. The memories cannot be written: nothing changes.
    for i in 0..5 {
        drop_file(
            &d,
            &alice,
            &format!("n{i}.txt"),
            &format!("note number {i}"),
        );
    }
    let _guard = Mutable(month.clone());
    immutable(&month, true);
    let err = ingest::run_with(
        &config,
        &dir,
        ingest::Options {
            settle: Duration::ZERO,
        },
    )
    .expect_err("a memory directory that refuses writes fails the run");
    assert!(err.to_string().contains("stay in memory/inbox/"), "{err}");
    immutable(&month, false);
    assert_eq!(count_files(&home.join("memory/inbox")), 5);
    // No memory and no temporary file was left behind.
    assert_eq!(files_under(&episodic), first);

    // 2. The memories are placed but the originals cannot be archived:
    // they stay in the inbox, and the next run archives them as
    // duplicates instead of making their memories twice.
    let archive = home.join("memory/archive");
    let _guard2 = Mutable(archive.clone());
    immutable(&archive, true);
    ingest::run_with(
        &config,
        &dir,
        ingest::Options {
            settle: Duration::ZERO,
        },
    )
    .expect_err("an archive that refuses renames fails the run");
    immutable(&archive, false);
    assert_eq!(count_files(&home.join("memory/inbox")), 5);
    assert_eq!(files_under(&episodic).len(), 6);
    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("ingested"), 0, "{}", s.line);
    assert_eq!(s.count("duplicates"), 5, "{}", s.line);
    assert_eq!(count_files(&home.join("memory/inbox")), 0);
    assert_eq!(count_files(&archive), 6);
    assert_eq!(files_under(&episodic).len(), 6);
}

#[test]
#[ignore = "needs root"]
fn a_batch_cut_short_is_finished_from_its_journal_without_loss_or_duplicates() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let (config, dir) = profile_of(&d, &alice);
    let home = d.profile(&alice);
    let texts = ["placed one", "placed two", "never placed"];
    for (i, t) in texts.iter().enumerate() {
        drop_file(&d, &alice, &format!("f{i}.txt"), t);
    }
    assert_eq!(ingest_now(&config, &dir).count("ingested"), 3);
    // The state a crash leaves after the renames of a batch and before
    // its hashes and archive moves: the journal, the originals back in
    // the inbox, no hashes; the third file's memory never made it.
    let memories = files_under(&home.join("memory/episodic"));
    let path_of = |text: &str| -> String {
        let found = memories
            .iter()
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(text)))
            .expect("a memory with that text");
        found
            .strip_prefix(&home)
            .expect("inside the profile")
            .to_string_lossy()
            .into_owned()
    };
    let lost = path_of("never placed");
    std::fs::remove_file(home.join(&lost)).expect("remove the third memory");
    let mut journal = String::new();
    for (i, t) in texts.iter().enumerate() {
        let path = if i == 2 { lost.clone() } else { path_of(t) };
        journal.push_str(&format!("{} {path}\n", sha256_hex(t)));
        let name = format!("f{i}.txt");
        std::fs::remove_file(home.join("memory/archive").join(&name)).expect("unarchive");
        drop_file(&d, &alice, &name, t);
    }
    std::fs::remove_dir_all(home.join(".profiled/ingest-hashes")).expect("forget the hashes");
    let journal_path = home.join(".profiled/ingest-journal");
    std::fs::write(&journal_path, journal).expect("write the journal");
    chown(&journal_path, Some(alice.uid), Some(alice.gid)).expect("chown");
    // Temporary files of a batch the crash cut off are swept; another
    // writer's temporary file is not the batch's and stays.
    let month = home.join(&lost);
    let month = month.parent().expect("the month directory");
    let litter = [
        month.join(".evt-01KBCDEFGHJKMNPQRSTVWXYZ00.md.01KBCDEFGHJKMNPQRSTVWXYZ01.batch.tmp"),
        home.join(".profiled/.ingest-journal.01KBCDEFGHJKMNPQRSTVWXYZ02.batch.tmp"),
    ];
    let other = month.join(".evt-01KBCDEFGHJKMNPQRSTVWXYZ03.md.01KBCDEFGHJKMNPQRSTVWXYZ04.tmp");
    for p in litter.iter().chain([&other]) {
        std::fs::write(p, "+++\nid = \"half").expect("write litter");
        chown(p, Some(alice.uid), Some(alice.gid)).expect("chown");
    }

    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("duplicates"), 2, "{}", s.line);
    assert_eq!(s.count("ingested"), 1, "{}", s.line);
    let visible = files_under(&home.join("memory/episodic"))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .count();
    assert_eq!(visible, 3, "no memory lost, none twice");
    assert!(!journal_path.exists(), "the journal is removed once used");
    for p in &litter {
        assert!(!p.exists(), "{} swept", p.display());
    }
    assert!(other.exists(), "another writer's temporary file is kept");
    assert_eq!(count_files(&home.join("memory/inbox")), 0);
    // Dropped again: all three are known.
    for (i, t) in texts.iter().enumerate() {
        drop_file(&d, &alice, &format!("g{i}.txt"), t);
    }
    assert_eq!(ingest_now(&config, &dir).count("duplicates"), 3);
}

#[test]
#[ignore = "needs root"]
fn the_single_file_hash_store_moves_into_shards_and_still_finds_duplicates() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let (config, dir) = profile_of(&d, &alice);
    let home = d.profile(&alice);
    // The first format: one file of hashes, as earlier versions wrote it.
    let old = ["ingested long ago", "also long ago"];
    let legacy = home.join(".profiled/ingest-hashes");
    std::fs::create_dir_all(home.join(".profiled")).expect("mkdir");
    chown(home.join(".profiled"), Some(alice.uid), Some(alice.gid)).expect("chown");
    let text: String = old.iter().map(|t| sha256_hex(t) + "\n").collect();
    std::fs::write(&legacy, text).expect("write the old hash file");
    chown(&legacy, Some(alice.uid), Some(alice.gid)).expect("chown");
    drop_file(&d, &alice, "old.txt", old[0]);
    drop_file(&d, &alice, "new.txt", "brand new");

    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("duplicates"), 1, "{}", s.line);
    assert_eq!(s.count("ingested"), 1, "{}", s.line);
    assert!(
        legacy.is_dir(),
        "the shards directory took the file's place"
    );
    assert!(!home.join(".profiled/ingest-hashes.v1").exists());
    for t in [old[0], old[1], "brand new"] {
        let h = sha256_hex(t);
        let shard = std::fs::read_to_string(legacy.join(&h[..2])).expect("the shard");
        assert_eq!(
            shard.lines().filter(|l| *l == h).count(),
            1,
            "{h} in {shard}"
        );
    }
    let shard = std::fs::metadata(legacy.join(&sha256_hex(old[1])[..2])).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((shard.uid(), shard.mode() & 0o777), (alice.uid, 0o600));
    drop_file(&d, &alice, "old2.txt", old[1]);
    assert_eq!(ingest_now(&config, &dir).count("duplicates"), 1);
    // One audit line per batch names the memories made.
    let audit = d.user_audit(&alice);
    assert!(audit.contains("ingest.batch"), "{audit}");
    assert!(!audit.contains("memory.create"), "{audit}");
}

#[test]
#[ignore = "needs root"]
fn a_small_size_limit_makes_smaller_batches_and_refuses_what_cannot_fit() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let (config, _) = profile_of(&d, &alice);
    // limits.max_record_bytes = 4096: a batch's journal may hold 2 KiB.
    let root = ProfilesRoot::open_beside_daemon(&d.profiles, 4096).expect("profiles root");
    let dir = root
        .open_owned(&account_of(&alice))
        .expect("open the profile")
        .expect("the profile exists");
    for i in 0..100 {
        drop_file(
            &d,
            &alice,
            &format!("n{i:03}.txt"),
            &format!("small note {i}"),
        );
    }
    let items: Vec<String> = (0..40)
        .map(|i| format!("{{\"text\": \"item {i}\"}}"))
        .collect();
    drop_file(&d, &alice, "many.json", &format!("[{}]", items.join(",")));
    // Under the limit as a file, over it with the memory's front matter.
    drop_file(&d, &alice, "full.txt", &"x".repeat(4000));

    let s = ingest_now(&config, &dir);
    assert_eq!(s.count("ingested"), 100, "{}", s.line);
    assert_eq!(s.count("rejected"), 2, "{}", s.line);
    assert!(
        s.line.contains("many.json: 40 memories in one file"),
        "{}",
        s.line
    );
    assert!(s.line.contains("split it"), "{}", s.line);
    assert!(
        s.line.contains("full.txt: as a memory, it is"),
        "{}",
        s.line
    );
    assert_eq!(
        files_under(&d.profile(&alice).join("memory/episodic")).len(),
        100
    );
    let audit = d.user_audit(&alice);
    let batches = audit.lines().filter(|l| l.contains("ingest.batch")).count();
    assert!(batches >= 5, "{batches} batches: {audit}");
}

#[test]
#[ignore = "needs root"]
fn search_answers_only_the_callers_own_records() {
    require_root();
    let d = Daemon::start("");
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let (config, alice_dir) = profile_of(&d, &alice);
    let (_, bob_dir) = profile_of(&d, &bob);
    capture(&d, &alice, "alice's secret plan zanzibar");
    capture(&d, &bob, "bob's grocery list");
    d.ok(Some(&alice), &["task", "add", "book zanzibar flights"]);
    builtin::index(&config, &alice_dir).expect("index alice");
    builtin::index(&config, &bob_dir).expect("index bob");

    let mine = remember_json(&d, &alice, "zanzibar");
    let kinds: Vec<&str> = hits(&mine)
        .iter()
        .filter_map(|h| h["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "{mine}");
    assert!(
        kinds.contains(&"task") && kinds.contains(&"memory"),
        "{mine}"
    );
    assert!(hits(&remember_json(&d, &bob, "zanzibar")).is_empty());
    assert!(hits(&remember_json(&d, &alice, "grocery")).is_empty());
    // bob cannot name alice's index.
    let (status, body) = d.api(
        Some(&bob),
        "GET",
        &format!("/v1/search?q=zanzibar&user={}", alice.name),
        None,
    );
    assert_eq!(status, 403, "{body}");
    // Bad syntax says what is wrong.
    let (status, body) = d.api(Some(&alice), "GET", "/v1/search?q=nosuchfield:x", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("nosuchfield"),
        "{body}"
    );
    let (status, _) = d.api(Some(&alice), "GET", "/v1/search", None);
    assert_eq!(status, 400);
    // The index lives in the root-only state directory, not the profile.
    let index_dir = profiled::search::dir_of(&d.state, &account_of(&alice));
    let md = std::fs::metadata(&index_dir).expect("the index dir");
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.mode() & 0o777), (0, 0o700));
}

fn set_key(d: &Daemon, user: &TestUser, secret: &str) {
    let out = d.ctl_stdin(
        Some(user),
        &["creds", "set", "openai"],
        Some(&format!("{secret}\n")),
    );
    assert!(out.status.success(), "creds set: {out:?}");
}

fn use_model(dir: &ProfileDir, url: &str) {
    let toml =
        format!("[model]\nprovider = \"openai\"\nbase_url = \"{url}\"\nname = \"test-model\"\n");
    dir.write("profile.toml", toml.as_bytes(), WriteMode::Replace)
        .expect("write profile.toml");
}

#[test]
#[ignore = "needs root"]
fn organize_uses_each_users_own_key_and_stops_on_a_missing_or_rejected_key() {
    require_root();
    let d = Daemon::start("");
    let tag = common::tag();
    let alice_key = format!("sk-alice-{tag}");
    let bob_key = format!("sk-bob-{tag}");
    let dave_key = format!("sk-dave-rejected-{tag}");
    let model = FakeModel::start(dave_key.clone());
    let users: Vec<TestUser> = ["alice", "bob", "carol", "dave"]
        .iter()
        .map(|r| TestUser::new(r))
        .collect();
    let [alice, bob, _carol, dave] = &users[..] else {
        unreachable!("four users")
    };
    let mut dirs = Vec::new();
    let mut config = None;
    for u in &users {
        let (c, dir) = profile_of(&d, u);
        use_model(&dir, &model.url);
        capture(
            &d,
            u,
            &format!("{} met the team about the migration", u.name),
        );
        capture(&d, u, &format!("{} bought flowers", u.name));
        config = Some(c);
        dirs.push(dir);
    }
    let config = config.expect("a config");
    set_key(&d, alice, &alice_key);
    set_key(&d, bob, &bob_key);
    set_key(&d, dave, &dave_key);

    let mut summaries = Vec::new();
    for dir in &dirs {
        summaries.push(builtin::organize(&config, dir).expect("organize runs"));
    }
    let seen = model.requests();
    let by_key = |key: &str| -> Vec<Seen> {
        seen.iter()
            .filter(|s| s.authorization == format!("Bearer {key}"))
            .cloned()
            .collect()
    };
    for (user, key) in [(alice, &alice_key), (bob, &bob_key)] {
        let mine = by_key(key);
        assert_eq!(mine.len(), 2, "{} sent {mine:?}", user.name);
        assert!(mine.iter().all(|s| s.body.contains(&user.name)), "{mine:?}");
        assert!(
            mine.iter()
                .all(|s| s.body.contains("\"model\":\"test-model\""))
        );
    }
    // carol has no key: nothing sent, and she is told what to do.
    assert_eq!(seen.len(), 5, "{seen:?}");
    let carol_says = summaries[2].attention.clone().expect("carol's status");
    assert!(
        carol_says.contains("profilectl creds set openai"),
        "{carol_says}"
    );
    // dave's key is refused once...
    assert_eq!(by_key(&dave_key).len(), 1);
    let dave_says = summaries[3].attention.clone().expect("dave's status");
    assert!(
        dave_says.contains("your openai key was rejected"),
        "{dave_says}"
    );
    // ... and not tried again.
    let again = builtin::organize(&config, &dirs[3]).expect("organize runs");
    assert!(again.attention.is_some_and(|a| a.contains("rejected")));
    assert_eq!(model.requests().len(), 5);
    // A new key is tried.
    set_key(&d, dave, &format!("sk-dave-new-{tag}"));
    let fixed = builtin::organize(&config, &dirs[3]).expect("organize runs");
    assert_eq!(fixed.count("tagged"), 2, "{}", fixed.line);

    // alice's memories are tagged and processed; her tokens are counted.
    let page: serde_json::Value =
        serde_json::from_str(&d.ok(Some(alice), &["--json", "memories"])).expect("json");
    for m in page["items"].as_array().expect("items") {
        assert_eq!(m["processed"], true, "{m}");
        assert_eq!(m["tags"], serde_json::json!(["fake", "organized"]), "{m}");
    }
    let usage = read_all(&d.profile(alice).join("logs/usage"));
    assert!(usage.contains("\"kind\":\"model_tokens\""), "{usage}");
    assert!(usage.contains("\"count\":74"), "{usage}");
    // No key in any summary, usage line or audit line.
    for key in [&alice_key, &bob_key, &dave_key] {
        for s in &summaries {
            assert!(!s.line.contains(key.as_str()));
        }
        for u in &users {
            assert!(!read_all(&d.profile(u).join("logs")).contains(key.as_str()));
            assert!(!read_all(&d.profile(u).join(".profiled")).contains(key.as_str()));
        }
    }
    // A second run has nothing left to do and sends nothing.
    let before = model.requests().len();
    let s = builtin::organize(&config, &dirs[0]).expect("organize runs");
    assert_eq!(s.count("tagged"), 0);
    assert_eq!(model.requests().len(), before);
}

/// Issue 13: a model that cannot be reached fails the run (it used to
/// report "ok" with a remark), and the memories wait for the next one.
#[test]
#[ignore = "needs root"]
fn organize_whose_model_cannot_be_reached_fails_the_run() {
    require_root();
    let d = Daemon::start("");
    let erin = TestUser::new("erin");
    let (config, dir) = profile_of(&d, &erin);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    use_model(&dir, &format!("http://127.0.0.1:{port}/v1"));
    set_key(&d, &erin, "sk-erin-unreachable");
    capture(&d, &erin, "a note");
    let err = builtin::organize(&config, &dir).expect_err("the run fails");
    let says = err.to_string();
    assert!(
        says.contains("the model call failed after 0 memories were tagged, 1 wait"),
        "{says}"
    );
    // The agents layer records an error as the run's status (`error`).
}

#[test]
#[ignore = "needs root"]
fn organize_without_a_model_sends_nothing_and_says_what_to_set() {
    require_root();
    let d = Daemon::start("");
    let erin = TestUser::new("erin");
    let (config, dir) = profile_of(&d, &erin);
    capture(&d, &erin, "a note");
    let s = builtin::organize(&config, &dir).expect("organize runs");
    let says = s.attention.expect("a status");
    assert!(
        says.contains("no model configured in profile.toml [model]"),
        "{says}"
    );
}

/// Every file's text under `dir`, recursively.
fn read_all(dir: &Path) -> String {
    files_under(dir)
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect()
}
