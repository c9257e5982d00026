//! Records as files a person edits: hand edits are read as they are, broken
//! ones are reported with file and line, bad input changes nothing.

mod common;

use common::{Daemon, TERMINAL_ATTACK, TestUser, capture, controls, memory_file, require_root};

#[test]
#[ignore = "needs root"]
fn hand_edits_are_served_and_broken_files_are_named_with_their_line() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let id = capture(&d, &alice, "first draft");
    let keep = capture(&d, &alice, "another memory");
    let file = memory_file(&d, &alice, &id);

    // alice edits the file herself, as her editor would (temp and rename).
    let original = std::fs::read_to_string(&file).expect("read");
    let edited = original.replace("first draft", "final text, edited in vim");
    let tmp = file.with_extension("md.swp");
    let out = alice
        .command("sh")
        .arg("-c")
        .arg("cat > \"$1\" && mv \"$1\" \"$2\"")
        .arg("sh")
        .arg(&tmp)
        .arg(&file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(edited.as_bytes())?;
            c.wait_with_output()
        })
        .expect("edit as alice");
    assert!(out.status.success());
    let shown = d.ok(Some(&alice), &["memory", "show", &id]);
    assert!(shown.contains("final text, edited in vim"), "{shown}");

    // She breaks the front matter with a typo.
    let broken = edited.replacen("processed = false", "processed = flase", 1);
    let line = broken
        .lines()
        .position(|l| l.starts_with("processed"))
        .expect("tags line")
        + 1;
    std::fs::write(&file, &broken).expect("break it");
    let (status, page) = d.api(Some(&alice), "GET", "/v1/memories", None);
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().expect("items");
    assert!(items.iter().any(|m| m["id"] == keep.as_str()), "{page}");
    assert!(!items.iter().any(|m| m["id"] == id.as_str()), "{page}");
    let rel = file
        .strip_prefix(d.profile(&alice))
        .expect("relative")
        .display()
        .to_string();
    let (_, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    let problems = me["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{me}");
    assert_eq!(problems[0]["file"], rel.as_str());
    assert_eq!(problems[0]["line"], line);
    let status_text = d.ctl(Some(&alice), &["status"]);
    let err = String::from_utf8_lossy(&status_text.stderr);
    assert!(err.contains(&format!("{rel}:{line}:")), "{err}");
    let (status, body) = d.api(Some(&alice), "GET", &format!("/v1/memories/{id}"), None);
    assert_eq!(status, 422);
    assert_eq!(body["code"], "invalid_record");

    // Fixing it clears the problem.
    std::fs::write(&file, &edited).expect("fix it");
    let (_, me) = d.api(Some(&alice), "GET", "/v1/me", None);
    assert_eq!(me["problems"].as_array().map(Vec::len), Some(0), "{me}");

    // A key added by hand survives an update through the API.
    std::fs::write(&file, edited.replacen("+++\n", "+++\nmood = \"calm\"\n", 1)).expect("add key");
    let (status, _) = d.api(
        Some(&alice),
        "PUT",
        &format!("/v1/memories/{id}"),
        Some(r#"{"text":"rewritten","tags":["x"]}"#),
    );
    assert_eq!(status, 200);
    let now = std::fs::read_to_string(&file).expect("read");
    assert!(
        now.contains("mood = \"calm\"") && now.ends_with("+++\nrewritten\n"),
        "{now}"
    );
}

#[test]
#[ignore = "needs root"]
fn bad_input_gets_a_precise_error_and_changes_nothing() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("[limits]\nmax_body_bytes = 4096\nmax_record_bytes = 2048\n");
    d.ok(Some(&alice), &["status"]);
    let count = || {
        let (_, page) = d.api(Some(&alice), "GET", "/v1/memories", None);
        page["items"].as_array().map_or(0, Vec::len)
    };

    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(10_000));
    let (status, body) = d.api(Some(&alice), "POST", "/v1/memories", Some(&big));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "body_too_large");

    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/memories",
        Some(r#"{"text":"  "}"#),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("invalid_input")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("text:"),
        "{body}"
    );

    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/memories",
        Some(r#"{"text":"x","colour":"red"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{body}"
    );

    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/tasks",
        Some(r#"{"title":"t","due":"soon"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("due:"),
        "{body}"
    );

    let (status, body) = d.api(Some(&alice), "GET", "/v1/tasks?status=maybe", None);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query")),
        "{body}"
    );

    // A record the daemon could not read back is never written.
    let near_limit = format!(r#"{{"text":"{}"}}"#, "y".repeat(3_000));
    let (status, body) = d.api(Some(&alice), "POST", "/v1/memories", Some(&near_limit));
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("unsafe_file")),
        "{body}"
    );
    let (status, body) = d.api(
        Some(&alice),
        "POST",
        "/v1/memories",
        Some(r#"{"text":"x","source":"a\n+++\nb"}"#),
    );
    assert_eq!(status, 422, "{body}");

    let (status, body) = d.api(Some(&alice), "PUT", "/v1/persona", Some(r#"{"nmae":"x"}"#));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or_default().contains("nmae"),
        "{body}"
    );

    assert_eq!(count(), 0, "a refused request wrote a memory");
    let tasks = std::fs::read_dir(d.profile(&alice).join("memory/tasks"))
        .expect("tasks")
        .count();
    assert_eq!(tasks, 0, "a refused request wrote a task");
}

#[test]
#[ignore = "needs root"]
fn tasks_persona_and_stdin_capture_through_profilectl() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");

    let out = d.ctl_stdin(
        Some(&alice),
        &["capture", "-"],
        Some("from a pipe\nsecond line\n"),
    );
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let shown = d.ok(Some(&alice), &["memory", "show", &id]);
    assert!(shown.contains("from a pipe\nsecond line\n"), "{shown}");
    d.ok(Some(&alice), &["memory", "rm", &id]);
    let out = d.ctl(Some(&alice), &["memory", "show", &id]);
    assert_eq!(out.status.code(), Some(1));

    let t1 = d.ok(
        Some(&alice),
        &["task", "add", "write the report", "--due", "2026-12-01"],
    );
    let t1 = t1.trim();
    let t2 = d.ok(Some(&alice), &["task", "add", "book travel"]);
    let t2 = t2.trim();
    d.ok(Some(&alice), &["task", "done", t1]);
    let todo = d.ok(Some(&alice), &["task", "list", "--status", "todo"]);
    assert!(todo.contains(t2) && !todo.contains(t1), "{todo}");
    let done = d.ok(Some(&alice), &["task", "list", "--status", "done"]);
    assert!(
        done.contains(t1) && done.contains("due 2026-12-01"),
        "{done}"
    );
    d.ok(Some(&alice), &["task", "rm", t2]);
    let all = d.ok(Some(&alice), &["task", "list"]);
    assert!(!all.contains(t2), "{all}");
    let file = d.profile(&alice).join(format!("memory/tasks/{t1}.md"));
    let text = std::fs::read_to_string(file).expect("task file");
    assert!(
        text.contains("status = \"done\"") && text.contains("due = 2026-12-01"),
        "{text}"
    );

    d.ok(Some(&alice), &["persona", "set", "name", "Sage"]);
    d.ok(
        Some(&alice),
        &["persona", "set", "values", "honesty, curiosity"],
    );
    let shown = d.ok(Some(&alice), &["persona", "show"]);
    assert!(shown.contains("name = \"Sage\""), "{shown}");
    assert!(
        shown.contains("values = [\"honesty\", \"curiosity\"]"),
        "{shown}"
    );
    let out = d.ctl(Some(&alice), &["persona", "set", "colour", "red"]);
    assert_eq!(out.status.code(), Some(2));

    // Usage errors exit 2.
    let out = d.ctl(Some(&alice), &["task", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 13: a daemon that cannot be reached is exit status 3 (a refusal
/// is 1), with a hint that fits the socket named, and JSON with `--json`.
#[test]
fn an_unreachable_daemon_is_its_own_exit_status_with_a_fitting_hint() {
    let socket = std::env::temp_dir().join(format!("pft-nothing-{}.sock", common::tag()));
    let run = |args: &[&str]| {
        std::process::Command::new(common::PROFILECTL)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("PROFILED_SOCKET")
            .output()
            .expect("run profilectl")
    };
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no socket is there")
            && said.contains("named by --socket or PROFILED_SOCKET"),
        "{said}"
    );
    let out = run(&["--json", "memories"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let error: serde_json::Value =
        serde_json::from_slice(&out.stderr).expect("a JSON error on stderr");
    assert_eq!(error["error"]["code"], "unreachable", "{error}");
}

/// Issue 13: `--help` shows examples, and lists the global options apart
/// from each command's own.
#[test]
fn help_has_examples_and_global_options_apart() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(common::PROFILECTL)
            .args(args)
            .output()
            .expect("run profilectl");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("Examples:") && top.contains("profilectl task start ID"),
        "{top}"
    );
    let list = help(&["task", "list", "--help"]);
    let (own, global) = list
        .split_once("Global options:")
        .expect("a global options heading");
    assert!(
        own.contains("--status") && !own.contains("--socket"),
        "{list}"
    );
    assert!(
        global.contains("--socket") && global.contains("--json"),
        "{list}"
    );
}

/// Issue 13: the task verbs a person expects (start, cancel, edit), a bad
/// status refused by profilectl with the choices and by the API in plain
/// words, columns that line up, and `status --check` failing on a profile
/// with a file to fix.
#[test]
#[ignore = "needs root"]
fn task_verbs_plain_errors_and_a_status_check() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    let id = d.ok(Some(&alice), &["task", "add", "write the report"]);
    let id = id.trim();
    let other = d.ok(Some(&alice), &["task", "add", "book travel"]);
    let other = other.trim();

    let started = d.ok(Some(&alice), &["task", "start", id]);
    assert!(started.contains("[in_progress]"), "{started}");
    let edited = d.ok(
        Some(&alice),
        &[
            "task",
            "edit",
            id,
            "--title",
            "write the final report",
            "--due",
            "2026-12-24",
            "--tag",
            "work",
        ],
    );
    assert!(
        edited.contains("write the final report") && edited.contains("due 2026-12-24"),
        "{edited}"
    );
    let (_, task) = d.api(Some(&alice), "GET", &format!("/v1/tasks/{id}"), None);
    assert_eq!(task["tags"], serde_json::json!(["work"]), "{task}");
    assert_eq!(task["status"], "in_progress", "{task}");
    let nothing = d.ctl(Some(&alice), &["task", "edit", id]);
    assert_eq!(nothing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("nothing to change"));
    let listed = d.ok(Some(&alice), &["task", "list", "--status", "in_progress"]);
    assert!(listed.contains(id) && !listed.contains(other), "{listed}");
    // The titles line up whatever the status.
    let all = d.ok(Some(&alice), &["task", "list"]);
    let starts: Vec<usize> = all
        .lines()
        .filter(|l| l.starts_with("task-"))
        .map(|l| l.find("write").or_else(|| l.find("book")).expect("a title"))
        .collect();
    assert_eq!(starts.len(), 2, "{all}");
    assert_eq!(starts[0], starts[1], "{all}");
    let cancelled = d.ok(Some(&alice), &["task", "cancel", id]);
    assert!(cancelled.contains("[cancelled]"), "{cancelled}");

    let bogus = d.ctl(Some(&alice), &["task", "list", "--status", "bogus"]);
    assert_eq!(bogus.status.code(), Some(2));
    let said = String::from_utf8_lossy(&bogus.stderr);
    assert!(
        said.contains("possible values: todo, in_progress, done, cancelled"),
        "{said}"
    );
    let (status, v) = d.api(Some(&alice), "GET", "/v1/tasks?status=bogus", None);
    assert_eq!(status, 400, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("status: \"bogus\" is not one of todo, in_progress, done, cancelled")
            && !detail.contains("deserialize"),
        "{v}"
    );
    let (status, v) = d.api(Some(&alice), "GET", "/v1/memories?limit=abc", None);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("limit: not a whole number"),
        "{v}"
    );

    // Nouns and defaults a person tries first.
    let captured = d.ok(Some(&alice), &["capture", "a note to list"]);
    let listed = d.ok(Some(&alice), &["memory", "list", "--limit", "5"]);
    assert!(listed.contains(captured.trim()), "{listed}");
    d.ok(Some(&alice), &["persona", "set", "name", "Sage"]);
    let persona = d.ok(Some(&alice), &["persona"]);
    assert!(persona.contains("name = \"Sage\""), "{persona}");
    let version = d.ok(Some(&alice), &["--version"]);
    assert!(version.starts_with("profilectl "), "{version}");

    // A refusal with --json is JSON on stderr, and exits 1.
    let out = d.ctl(
        Some(&alice),
        &["--json", "task", "done", "task-01AAAAAAAAAAAAAAAAAAAAAAAA"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: serde_json::Value =
        serde_json::from_slice(&out.stderr).expect("a JSON error on stderr");
    assert_eq!(error["error"]["status"], 404, "{error}");
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    // A file that needs fixing: `status` says so, `status --check` fails.
    d.ok(Some(&alice), &["status", "--check"]);
    let broken = d.profile(&alice).join(format!("memory/tasks/{other}.md"));
    std::fs::write(&broken, "+++\nthis is not toml\n+++\n").expect("break a task");
    std::os::unix::fs::chown(&broken, Some(alice.uid), Some(alice.gid)).expect("chown");
    let out = d.ctl(Some(&alice), &["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 problem in your profile needs fixing"),
        "{out:?}"
    );
    d.ok(Some(&alice), &["status"]);
}

/// Two requests that both need a new directory (the first captures of a
/// month) never see it half made: it appears already owned by the account.
#[test]
#[ignore = "needs root"]
fn a_directory_made_by_one_writer_is_never_seen_half_made_by_another() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    d.ok(Some(&alice), &["status"]);
    let root = profiled::profile::ProfilesRoot::open_beside_daemon(&d.profiles, 1 << 20)
        .expect("open the profiles root");
    let account = profiled::accounts::by_name(&alice.name)
        .expect("NSS answers")
        .expect("alice exists");
    let dir = root
        .open_owned(&account)
        .expect("open alice's profile")
        .expect("alice has a profile");
    for round in 0..300 {
        let rel = format!("out/race-{round}/inner");
        let failures: Vec<String> = std::thread::scope(|s| {
            let writers: Vec<_> = (0..4).map(|_| s.spawn(|| dir.ensure_dir(&rel))).collect();
            writers
                .into_iter()
                .filter_map(|w| match w.join() {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("a writer panicked".to_owned()),
                })
                .collect()
        });
        assert!(failures.is_empty(), "round {round}: {failures:?}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.profile(&alice).join("out"))
        .expect("list out/")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
}

#[test]
#[ignore = "needs root"]
fn memories_and_tasks_reach_the_terminal_escaped() {
    require_root();
    let alice = TestUser::new("alice");
    let d = Daemon::start("");
    // A memory's text may hold anything (it is the user's own), raw escapes
    // included; profilectl shows them escaped.
    let body = serde_json::json!({"text": "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}]0;pwned\u{7}note\r\nmore\u{9b}2J"});
    let (status, v) = d.api(
        Some(&alice),
        "POST",
        "/v1/memories",
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("an id").to_owned();
    let task = capture(&d, &alice, "plain one");
    // A hand-written tag with escapes: reported with its line, not served.
    let file = memory_file(&d, &alice, &task);
    let text = std::fs::read_to_string(&file).expect("read");
    let tags_line = text
        .lines()
        .position(|l| l.starts_with("tags"))
        .map(|i| i + 1);
    let hostile = text.replacen("tags = []", &format!("tags = [\"x{TERMINAL_ATTACK}\"]"), 1);
    assert_ne!(hostile, text, "no tags line in {text}");
    std::fs::write(&file, hostile).expect("write");
    for args in [
        vec!["memories"],
        vec!["memory", "show", &id],
        vec!["--json", "memories"],
    ] {
        let out = d.ctl(Some(&alice), &args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                controls(stream).is_empty(),
                "{args:?} printed {:?}: {}",
                controls(stream),
                String::from_utf8_lossy(stream)
            );
        }
    }
    let listed = d.ctl(Some(&alice), &["memories"]);
    let problems = String::from_utf8_lossy(&listed.stderr);
    let line = tags_line.expect("a tags line");
    assert!(
        problems.contains(&format!("{task}.md:{line}: tags")),
        "the hostile tag is not reported at its line: {problems}"
    );
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&task));
}
