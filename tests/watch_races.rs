//! Rule 12, second half: the watcher adds watches only on directories it
//! opened, beneath the profile's handle, without following a link, as the
//! profile's account; each profile has a watch budget; and nothing a user
//! does in her profile changes what another profile's watches report.
//!
//! The attacks race the watcher: a directory is created (so an event says
//! "new directory here") and swapped for a link before the watcher looks,
//! while a burst of other events keeps the watcher busy.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::stream::{PATIENCE, Stream};
use common::{Daemon, KillOnDrop, Scratch, TestUser, require_root};

/// The inotify watches of process `pid` (every instance it has).
fn watches_of(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    fds.flatten()
        .map(|fd| {
            std::fs::read_to_string(fd.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

/// Waits until the daemon's watch count stops moving (the watcher caught
/// up), at most `PATIENCE`; the count.
fn settled_watches(pid: u32) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut last = watches_of(pid);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = watches_of(pid);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// A tree of `n` directories under `top`, root's only (0700).
fn root_only_tree(top: &Path, n: usize) {
    std::fs::create_dir(top).expect("mkdir the tree");
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for i in 0..n {
        std::fs::create_dir(top.join(format!("d{i}"))).expect("mkdir in the tree");
    }
}

/// As `user`, in `profile`: creates `rounds` year directories under
/// memory/episodic and swaps each for a link to `target` at once, while
/// another process writes a burst of inbox files to keep the watcher busy.
fn race_links(user: &TestUser, profile: &Path, target: &Path, rounds: usize) {
    let burst = user
        .command("sh")
        .arg("-c")
        .arg(
            "cd \"$1\" && i=0; while [ $i -lt 3000 ]; do \
             : > memory/inbox/.burst$i; i=$((i+1)); done",
        )
        .arg("sh")
        .arg(profile)
        .spawn()
        .expect("spawn the burst");
    let burst = KillOnDrop(burst);
    let out = user
        .command("sh")
        .arg("-c")
        .arg(format!(
            "cd \"$1/memory/episodic\" && i=0; while [ $i -lt {rounds} ]; do \
             y=$((2100+i)); mkdir $y && mv $y .gone$y && ln -s \"$2\" $y; i=$((i+1)); done"
        ))
        .arg("sh")
        .arg(profile)
        .arg(target)
        .output()
        .expect("race as the user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The burst may still run: it is stopped here, its work done.
    drop(burst);
}

#[test]
#[ignore = "needs root"]
fn a_directory_swapped_for_a_link_to_a_root_only_tree_is_never_watched() {
    require_root();
    const TREE: usize = 400;
    let scratch = Scratch::new();
    let secret = scratch.path.join("secret");
    root_only_tree(&secret, TREE);
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let before = settled_watches(d.pid());
    race_links(&alice, &d.profile(&alice), &secret, 150);
    let after = settled_watches(d.pid());
    assert!(
        after < before + TREE / 2,
        "the daemon watched the root-only tree through alice's links: \
         {before} watches before, {after} after ({TREE} directories in the tree)"
    );
    // Still watching alice's own directories: a hand-made task arrives.
    let events = Stream::open(&d, &alice, None);
    write_task(&alice, &d.profile(&alice), "tsk-after-race");
    events.until("the hand-made task", |v| {
        common::stream::is(v, "task.created", "tsk-after-race")
    });
}

#[test]
#[ignore = "needs root"]
fn directories_alice_can_read_but_are_not_hers_are_never_watched() {
    require_root();
    const TREE: usize = 200;
    let scratch = Scratch::new();
    // A world-writable drop directory (not sticky): alice may rename what
    // is in it, bob's directories included.
    let drop_dir = scratch.path.join("drop");
    std::fs::create_dir(&drop_dir).expect("mkdir drop");
    std::fs::set_permissions(&drop_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    for name in ["linked", "moved"] {
        let out = bob
            .command("sh")
            .arg("-c")
            .arg(format!(
                "umask 022 && mkdir \"$1/{name}\" && cd \"$1/{name}\" && i=0; \
                 while [ $i -lt {TREE} ]; do mkdir d$i; i=$((i+1)); done; \
                 chmod 0777 ."
            ))
            .arg("sh")
            .arg(&drop_dir)
            .output()
            .expect("bob's tree");
        assert!(out.status.success(), "{out:?}");
    }
    let before = settled_watches(d.pid());
    // bob's trees, which alice may read (and, their tops being 0777,
    // move): one through links...
    race_links(&alice, &d.profile(&alice), &drop_dir.join("linked"), 100);
    // ...and the other renamed into her profile as a year directory (the
    // same inode, owned by bob, now inside her profile).
    let out = alice
        .command("mv")
        .arg(drop_dir.join("moved"))
        .arg(d.profile(&alice).join("memory/episodic/2077"))
        .output()
        .expect("mv as alice");
    assert!(out.status.success(), "{out:?}");
    let after = settled_watches(d.pid());
    assert!(
        after < before + TREE / 2,
        "the daemon watched bob's directories through alice's profile: \
         {before} watches before, {after} after ({TREE} directories in each tree)"
    );
}

/// Writes a task file by hand as `user` into `profile`.
fn write_task(user: &TestUser, profile: &Path, id: &str) {
    let out = user
        .command("sh")
        .arg("-c")
        .arg("printf '+++\\ntitle = \"by hand\"\\n+++\\n' > \"$1\"")
        .arg("sh")
        .arg(profile.join(format!("memory/tasks/{id}.md")))
        .output()
        .expect("write as the user");
    assert!(out.status.success(), "{out:?}");
}

#[test]
#[ignore = "needs root"]
fn links_to_another_profiles_directory_never_relabel_its_watches() {
    require_root();
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start("");
    let alice_events = Stream::settled(&d, &alice);
    let bob_events = Stream::settled(&d, &bob);
    // bob's profile is 0700: alice cannot open it, but root could, and a
    // watcher that adds watches by path as root follows her link there and
    // finds bob's memory/tasks, whose watch (one per inode) it then files
    // under her path.
    let target = d.profile(&bob).join("memory");
    race_links(&alice, &d.profile(&alice), &target, 150);
    // bob edits by hand: his stream reports it, alice's never does.
    for n in 0..3 {
        let id = format!("tsk-bob-by-hand-{n}");
        write_task(&bob, &d.profile(&bob), &id);
        bob_events.until("bob's hand-made task", |v| {
            assert_eq!(v["user"], bob.name.as_str(), "{v}");
            common::stream::is(v, "task.created", &id)
        });
    }
    let marker = common::stream::marker(&d, &alice);
    let seen = alice_events.until("alice's marker", |v| {
        common::stream::is(v, "task.created", &marker)
    });
    for v in &seen {
        assert!(
            !v.to_string().contains("bob-by-hand"),
            "bob's file reached alice's stream: {v}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn a_profile_past_its_watch_budget_is_polled_and_others_are_unaffected() {
    require_root();
    const CAP: usize = 20;
    let alice = TestUser::new("alice");
    let bob = TestUser::new("bob");
    let d = Daemon::start(&format!(
        "[watch]\nmode = \"auto\"\npoll_interval = \"1s\"\nmax_watches_per_profile = {CAP}\n"
    ));
    let alice_events = Stream::settled(&d, &alice);
    let bob_events = Stream::settled(&d, &bob);
    let before = settled_watches(d.pid());
    // 40 years of 3 months each: 160 directories where records may live.
    let out = alice
        .command("sh")
        .arg("-c")
        .arg(
            "cd \"$1/memory/episodic\" && y=2000; while [ $y -lt 2040 ]; do \
             mkdir -p $y/01 $y/02 $y/03; y=$((y+1)); done",
        )
        .arg("sh")
        .arg(d.profile(&alice))
        .output()
        .expect("mkdir as alice");
    assert!(out.status.success(), "{out:?}");
    let after = settled_watches(d.pid());
    assert!(
        after <= before + CAP,
        "alice's profile took {} watches, over its budget of {CAP}",
        after - before
    );
    let (status, health) = d.api(Some(&bob), "GET", "/v1/health", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["watch"]["polling"], true, "{health}");
    assert_eq!(health["watch"]["polled_profiles"], 1, "{health}");
    let (status, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    assert_eq!(status, 200, "{me}");
    let note = me["watch"].as_str().unwrap_or_default();
    assert!(note.contains("max_watches_per_profile"), "{me}");
    let (_, me) = d.api(Some(&bob), "GET", "/v1/me", None);
    assert!(me.get("watch").is_none_or(|w| w.is_null()), "{me}");

    // alice's changes in directories without a watch arrive by polling.
    let month = d.profile(&alice).join("memory/episodic/2039/03");
    let out = alice
        .command("sh")
        .arg("-c")
        .arg("printf '+++\\ncreated = 2039-03-01T00:00:00Z\\n+++\\nlate\\n' > \"$1\"")
        .arg("sh")
        .arg(month.join("evt-polled.md"))
        .output()
        .expect("write as alice");
    assert!(out.status.success(), "{out:?}");
    alice_events.until("the memory found by polling", |v| {
        common::stream::is(v, "memory.created", "evt-polled")
    });
    // bob is watched as before: his hand edit arrives.
    write_task(&bob, &d.profile(&bob), "tsk-bob-unaffected");
    bob_events.until("bob's hand-made task", |v| {
        common::stream::is(v, "task.created", "tsk-bob-unaffected")
    });
}
