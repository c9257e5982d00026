//! Benchmark (not a test) of the built-in agents, with real accounts:
//!
//! 1. `ingest` over 100,000 small files dropped in the inboxes of 100
//!    profiles (1,000 each), users one after another as a cycle runs them;
//!    target under 30 s.
//! 2. Search over one profile of 100,000 memories: `index` builds the
//!    index, then p50/p99 of queries through the library call behind
//!    `GET /v1/search`, beside ripgrep (`rg -l -F -w WORD`) over the same
//!    files in the same run; target at least 100x faster than ripgrep.
//!
//! `sudo cargo bench --bench builtins` (needs root and `rg`). Without
//! `--bench` (as `cargo test --all-targets` runs it) it only checks that the
//! path works, on a few files.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, TestUser, require_root};
use profiled::builtin::{self, ingest};
use profiled::config::Config;
use profiled::profile::{ProfileDir, ProfilesRoot};
use profiled::search::budget::TIME;
use profiled::search::limits::QueryText;

struct Size {
    profiles: usize,
    files_each: usize,
    memories: usize,
    queries: usize,
}

const FULL: Size = Size {
    profiles: 100,
    files_each: 1000,
    memories: 100_000,
    queries: 200,
};
const SMOKE: Size = Size {
    profiles: 2,
    files_each: 10,
    memories: 500,
    queries: 5,
};

/// A small deterministic generator, so runs are comparable.
struct Words(u64);

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// One of 5,000 made-up words.
    fn word(&mut self) -> String {
        format!("w{}", self.next() % 5000)
    }

    fn sentence(&mut self, n: usize) -> String {
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
}

fn account_of(user: &TestUser) -> profiled::accounts::Account {
    profiled::accounts::by_name(&user.name)
        .expect("NSS answers")
        .expect("the account exists")
}

fn profile(root: &ProfilesRoot, user: &TestUser) -> ProfileDir {
    root.ensure_profile(&account_of(user))
        .expect("provision the profile")
        .0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    require_root();
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full { FULL } else { SMOKE };
    let d = Daemon::start("");
    let config = Config::load(&d.config).expect("the daemon's config");
    let root = ProfilesRoot::open_beside_daemon(&d.profiles, 1 << 20).expect("profiles root");
    let mut words = Words(0x9e37_79b9_7f4a_7c15);

    // 1. Ingest.
    let users: Vec<TestUser> = (0..size.profiles)
        .map(|i| TestUser::new(&format!("in{i}")))
        .collect();
    let dirs: Vec<ProfileDir> = users.iter().map(|u| profile(&root, u)).collect();
    for u in &users {
        let inbox = d.profile(u).join("memory/inbox");
        for f in 0..size.files_each {
            let path = inbox.join(format!("note-{f:05}.txt"));
            let text = format!("note {f} of {}: {}\n", u.name, words.sentence(12));
            std::fs::write(&path, text).expect("write an inbox file");
            chown(&path, Some(u.uid), Some(u.gid)).expect("chown");
        }
    }
    let opts = ingest::Options {
        settle: Duration::ZERO,
    };
    let start = Instant::now();
    let mut ingested = 0;
    for dir in &dirs {
        let s = ingest::run_with(&config, dir, opts).expect("ingest runs");
        ingested += s.count("ingested");
    }
    let ingest_time = start.elapsed();
    let total = (size.profiles * size.files_each) as u64;
    assert_eq!(ingested, total);
    println!(
        "ingest: {total} files across {} profiles in {:.2} s ({:.0} files/s; target < 30 s)",
        size.profiles,
        ingest_time.as_secs_f64(),
        total as f64 / ingest_time.as_secs_f64()
    );
    drop(dirs);
    drop(users);

    // 2. Search over one big profile, beside ripgrep.
    let big = TestUser::new("big");
    let dir = profile(&root, &big);
    let month = d.profile(&big).join("memory/episodic/2026/11");
    std::fs::create_dir_all(&month).expect("month dir");
    for p in [month.parent().expect("year"), month.as_path()] {
        chown(p, Some(big.uid), Some(big.gid)).expect("chown");
    }
    for i in 0..size.memories {
        // A ULID of November 2026, as the store makes.
        let id = format!(
            "evt-{}",
            ulid::Ulid::from_parts(1_795_000_000_000 + i as u64, i as u128)
        );
        let text = format!(
            "+++\nid = \"{id}\"\ncreated = 2026-11-22T05:41:54Z\ntags = []\nprocessed = false\n+++\n{}\n",
            words.sentence(20)
        );
        let path = month.join(format!("{id}.md"));
        std::fs::write(&path, text).expect("write a memory");
        chown(&path, Some(big.uid), Some(big.gid)).expect("chown");
    }
    let start = Instant::now();
    let s = builtin::index(&config, &dir).expect("index runs");
    let index_time = start.elapsed();
    assert_eq!(s.count("indexed"), size.memories as u64, "{}", s.line);
    let start = Instant::now();
    let s = builtin::index(&config, &dir).expect("index runs");
    let noop_time = start.elapsed();
    assert_eq!(s.count("unchanged"), size.memories as u64, "{}", s.line);
    println!(
        "index: {} memories built in {:.2} s; a run with nothing changed {:.0} ms",
        size.memories,
        index_time.as_secs_f64(),
        ms(noop_time)
    );

    let account = account_of(&big);
    let queries: Vec<QueryText> = (0..size.queries)
        .map(|_| QueryText::new(&words.word()).expect("a word is a query"))
        .collect();
    // Warm both: the page cache for rg, the reader for the index.
    let _ = profiled::search::query::search(&d.state, &account, &queries[0], 10, TIME);
    let _ = rg(queries[0].as_str(), &month);
    let mut ours = Vec::new();
    let mut found = 0;
    for q in &queries {
        let start = Instant::now();
        let hits =
            profiled::search::query::search(&d.state, &account, q, 10, TIME).expect("search");
        ours.push(start.elapsed());
        found += hits.hits.len();
    }
    assert!(found > 0, "the queries found nothing");
    let rg_runs = queries.len().min(30);
    let mut theirs = Vec::new();
    for q in &queries[..rg_runs] {
        let start = Instant::now();
        rg(q.as_str(), &month);
        theirs.push(start.elapsed());
    }
    ours.sort();
    theirs.sort();
    let (p50, p99) = (percentile(&ours, 0.5), percentile(&ours, 0.99));
    let (rg50, rg99) = (percentile(&theirs, 0.5), percentile(&theirs, 0.99));
    println!(
        "search over {} memories ({} queries, top 10 with snippets): p50 {:.2} ms, p99 {:.2} ms",
        size.memories,
        queries.len(),
        ms(p50),
        ms(p99)
    );
    println!(
        "ripgrep over the same files ({rg_runs} queries): p50 {:.1} ms, p99 {:.1} ms; ratio at p50 {:.0}x, at p99 {:.0}x (target >= 100x)",
        ms(rg50),
        ms(rg99),
        rg50.as_secs_f64() / p50.as_secs_f64(),
        rg99.as_secs_f64() / p99.as_secs_f64()
    );
}

/// Files ripgrep finds containing the word `q`.
fn rg(q: &str, dir: &Path) -> usize {
    let out = Command::new("rg")
        .args(["-l", "-F", "-w", q])
        .arg(dir)
        .output()
        .expect("run rg (apt-get install -y ripgrep)");
    out.stdout.iter().filter(|b| **b == b'\n').count()
}
