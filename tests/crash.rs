//! Rule 2: writes are atomic and acknowledged writes survive a crash.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Daemon, TestUser, require_root};

#[test]
#[ignore = "needs root"]
fn kill_9_during_concurrent_captures_loses_no_acknowledged_write() {
    require_root();
    let alice = Arc::new(TestUser::new("alice"));
    // No request-rate limit: this test measures crash safety, not limits.
    let d = Daemon::start("[limits]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n");
    d.ok(Some(&alice), &["status"]);
    let d = Arc::new(Mutex::new(d));
    let socket = d.lock().expect("lock").socket.clone();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));

    // 10 clients, 100 captures each, each capture its own profilectl process.
    let clients: Vec<_> = (0..10)
        .map(|c| {
            let (alice, acked, done, socket) =
                (alice.clone(), acked.clone(), done.clone(), socket.clone());
            std::thread::spawn(move || {
                for i in 0..100 {
                    let out = alice
                        .command(common::PROFILECTL)
                        .arg("--socket")
                        .arg(&socket)
                        .args(["capture", &format!("client {c} capture {i}")])
                        .output()
                        .expect("run profilectl");
                    if out.status.success() {
                        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                        acked.lock().expect("lock").push(id);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Kill the daemon once a good share of the captures is under way.
    while done.load(Ordering::SeqCst) < 300 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.lock().expect("lock").kill9();
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 300,
        "only {} captures acknowledged",
        acked.len()
    );
    assert!(acked.len() < 1000, "the daemon was not killed mid-run");

    let mut d = d.lock().expect("lock");
    d.spawn().expect("restart after kill -9");
    let mut listed = BTreeSet::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(b) => format!("/v1/memories?limit=200&before={b}"),
            None => "/v1/memories?limit=200".to_owned(),
        };
        let (status, page) = d.api(Some(&alice), "GET", &path, None);
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["problems"].as_array().map(Vec::len), Some(0), "{page}");
        for m in page["items"].as_array().expect("items") {
            let id = m["id"].as_str().expect("id").to_owned();
            assert!(
                id.starts_with("evt-"),
                "a temporary file was read as a record: {id}"
            );
            let text = m["text"].as_str().unwrap_or_default();
            assert!(text.starts_with("client "), "torn record {id}: {text:?}");
            listed.insert(id);
        }
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => break,
        }
    }
    for id in &acked {
        assert!(
            listed.contains(id),
            "acknowledged capture {id} is missing after the crash"
        );
    }
}
