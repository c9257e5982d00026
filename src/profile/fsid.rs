//! The thread's filesystem identity (docs/SECURITY.md, rule 12): work inside a
//! profile runs with the calling thread's fsuid/fsgid set to the profile's
//! owner, so the kernel checks every access as that account would be
//! checked, on top of the `openat2` and `fstat` checks of rule 1. A mistake
//! in those checks can then never reach further than the account could
//! itself (a 0700 directory of another account, a file she made 0000).
//!
//! `setfsuid`/`setfsgid` change one thread only (glibc does not broadcast
//! them to the other threads as it does `setuid`), so the rest of the
//! daemon keeps root's identity. Moving fsuid from 0 to the account also
//! clears `CAP_CHOWN`, `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`,
//! `CAP_FOWNER` and the like from the thread's effective set
//! (capabilities(7)); moving back to 0 restores them. So what the daemon
//! creates as the account is owned by the account without any `chown`.
//!
//! Only the account's primary group is the fsgid: access that needs one of
//! its supplementary groups is refused. Inside the account's own profile
//! (0700, its own files) that never matters.

use std::cell::Cell;
use std::marker::PhantomData;

use nix::unistd::{Gid, Uid, setfsgid, setfsuid};

use super::{Error, Result};
use crate::accounts::Account;

/// `setfsuid(-1)` changes nothing and answers the current fsuid: the only
/// way to learn whether a change took.
const QUERY: u32 = u32::MAX;

thread_local! {
    /// The (uid, gid) a live guard set on this thread: a guard for the same
    /// account inside it (an operation calling another) then needs no
    /// system call.
    static ACTING: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
}

/// While alive, the thread's filesystem identity is the account's; dropping
/// it (also while unwinding from a panic) restores the previous one. It
/// belongs to the thread that made it (not `Send`): the identity is the
/// thread's.
#[must_use = "the identity is restored as soon as the guard is dropped"]
pub(super) struct AsAccount {
    /// What to put back; `None` for a guard inside one for the same account.
    restore: Option<Restore>,
    not_send: PhantomData<*const ()>,
}

/// The thread's identity before a guard changed it.
struct Restore {
    uid: Uid,
    gid: Gid,
    acting: Option<(u32, u32)>,
}

impl AsAccount {
    /// Sets the thread's fsgid and fsuid to `account`'s (the group first,
    /// while the thread still has root's fsuid). Refuses to go on when the
    /// kernel did not take the change (a daemon without `CAP_SETUID`).
    pub(super) fn enter(account: &Account) -> Result<AsAccount> {
        let wanted = (account.uid.0, account.gid.0);
        if ACTING.get() == Some(wanted) {
            return Ok(AsAccount {
                restore: None,
                not_send: PhantomData,
            });
        }
        let gid = setfsgid(Gid::from_raw(account.gid.0));
        let uid = setfsuid(Uid::from_raw(account.uid.0));
        let guard = AsAccount {
            restore: Some(Restore {
                uid,
                gid,
                acting: ACTING.get(),
            }),
            not_send: PhantomData,
        };
        let now_uid = setfsuid(Uid::from_raw(QUERY));
        let now_gid = setfsgid(Gid::from_raw(QUERY));
        if now_uid.as_raw() != account.uid.0 || now_gid.as_raw() != account.gid.0 {
            // `guard` puts back whatever did change.
            return Err(Error::Io {
                path: ".".to_owned(),
                op: "act as the profile's account (setfsuid)",
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "the kernel kept fsuid {now_uid}/fsgid {now_gid} instead of {}/{}: \
                         profiled needs CAP_SETUID and CAP_SETGID (run it as root)",
                        account.uid, account.gid
                    ),
                ),
            });
        }
        ACTING.set(Some(wanted));
        Ok(guard)
    }
}

impl Drop for AsAccount {
    fn drop(&mut self) {
        let Some(r) = &self.restore else { return };
        // The uid first: going back to fsuid 0 brings the capabilities back.
        setfsuid(r.uid);
        setfsgid(r.gid);
        ACTING.set(r.acting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{GroupId, UserId};

    fn current() -> (u32, u32) {
        (
            setfsuid(Uid::from_raw(QUERY)).as_raw(),
            setfsgid(Gid::from_raw(QUERY)).as_raw(),
        )
    }

    #[test]
    #[ignore = "needs root"]
    fn the_identity_is_the_accounts_inside_and_restored_after_even_on_panic() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root: it changes the thread's fsuid (run scripts/test as root)"
        );
        let before = current();
        let account = Account {
            name: "nobody-test".into(),
            uid: UserId(65_534),
            gid: GroupId(65_533),
            home: "/".into(),
        };
        let (entered, inside_now) = std::sync::mpsc::channel();
        let (checked, done) = std::sync::mpsc::channel::<()>();
        let inside = std::thread::spawn(move || {
            let _as = AsAccount::enter(&account).expect("enter");
            entered.send(current()).expect("send");
            // Held until this thread's identity was compared with another's.
            done.recv().expect("recv");
        });
        let inside_now = inside_now.recv().expect("recv");
        // Meanwhile another thread of the process keeps its identity.
        assert_eq!((inside_now, current()), ((65_534, 65_533), before));
        checked.send(()).expect("send");
        inside.join().expect("thread");
        let account = Account {
            name: "nobody-test".into(),
            uid: UserId(65_534),
            gid: GroupId(65_533),
            home: "/".into(),
        };
        let after = std::thread::spawn(move || {
            let caught = std::panic::catch_unwind(|| {
                let _as = AsAccount::enter(&account).expect("enter");
                panic!("a bug while acting as the account");
            });
            assert!(caught.is_err());
            current()
        })
        .join()
        .expect("thread");
        assert_eq!(after, before);
    }

    #[test]
    #[ignore = "needs root"]
    fn a_guard_inside_another_keeps_or_restores_the_outer_identity() {
        assert!(
            rustix::process::geteuid().is_root(),
            "needs root: it changes the thread's fsuid (run scripts/test as root)"
        );
        let account = |uid, gid| Account {
            name: "nested-test".into(),
            uid: UserId(uid),
            gid: GroupId(gid),
            home: "/".into(),
        };
        let (a, b) = (account(65_534, 65_533), account(65_532, 65_531));
        std::thread::spawn(move || {
            let before = current();
            {
                let _outer = AsAccount::enter(&a).expect("enter a");
                {
                    let _same = AsAccount::enter(&a).expect("enter a again");
                    assert_eq!(current(), (65_534, 65_533));
                }
                // The inner guard for the same account put nothing back.
                assert_eq!(current(), (65_534, 65_533));
                {
                    let _other = AsAccount::enter(&b).expect("enter b");
                    assert_eq!(current(), (65_532, 65_531));
                    let _again = AsAccount::enter(&a).expect("a inside b");
                    assert_eq!(current(), (65_534, 65_533));
                }
                assert_eq!(current(), (65_534, 65_533));
            }
            assert_eq!(current(), before);
            // And a new guard after all of them really changes it again.
            let _as = AsAccount::enter(&b).expect("enter b");
            assert_eq!(current(), (65_532, 65_531));
        })
        .join()
        .expect("thread");
    }
}
