//! Raw requests on the daemon's Unix socket from a thread that runs as a
//! test account, so one test can open hundreds of connections as that
//! account (a profilectl process per connection would not scale).
//!
//! The kernel records a connection's peer credentials from the thread that
//! connects, and `set_thread_res_uid` changes only the calling thread (it
//! is the raw system call, not glibc's process-wide `setresuid`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::process::{Gid, Uid};

use super::TestUser;

/// Runs `f` on a new thread whose effective uid is `uid` (its gid and
/// groups stay root's): enough for the daemon's `SO_PEERCRED` to name that
/// account on a connection the thread makes; its result.
pub fn as_uid<T: Send>(uid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            let keep = None::<Uid>;
            rustix::thread::set_thread_res_uid(keep, Some(Uid::from_raw(uid)), keep)
                .expect("set the thread's effective uid");
            f()
        })
        .join()
        .expect("the thread as the account")
    })
}

/// Runs `f` on a new thread whose uid and gid are `user`'s; its result.
pub fn as_user<T: Send>(user: &TestUser, f: impl FnOnce() -> T + Send) -> T {
    let (uid, gid) = (user.uid, user.gid);
    std::thread::scope(|s| {
        s.spawn(move || {
            // The gid first: without root's uid the thread could not change it.
            let g = Gid::from_raw(gid);
            rustix::thread::set_thread_groups(&[]).expect("drop the thread's groups");
            rustix::thread::set_thread_res_gid(g, g, g).expect("set the thread's gid");
            let u = Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u).expect("set the thread's uid");
            f()
        })
        .join()
        .expect("the thread as the account")
    })
}

/// The bytes of a `GET path` request that closes the connection after it.
pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// Sends `GET path` on a new connection to `socket` and reads the answer:
/// (status, body). `None` when nothing came within `timeout` or the
/// daemon closed the connection without an answer.
pub fn get(socket: &Path, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.write_all(get_request(path).as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Percent-encodes every byte but letters and digits (a query value).
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
