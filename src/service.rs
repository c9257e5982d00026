//! What the daemon tells its service manager (systemd's `sd_notify`
//! protocol, `Type=notify`): ready, reloading, stopping, and the watchdog's
//! "still alive". Outside systemd (no `NOTIFY_SOCKET`) every call does
//! nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Start-up is done: the sockets serve.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A reload begins. systemd wants the monotonic time with it (it tells a
/// new reload from an old one by it), and `READY=1` once the reload is over:
/// call [`ready`] then, whether the new config was taken or refused.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!("cannot read the monotonic clock for systemd's reload: {e}"),
    }
}

/// The daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd ({states:?}): {e}");
    }
}

/// When systemd asks for watchdog pings (`WatchdogSec=` sets
/// `WATCHDOG_USEC`), starts a task that sends `WATCHDOG=1` at half that
/// interval until `stop` turns true. The pings come from a task on the
/// daemon's own async runtime, so they stop when its worker threads stop
/// running tasks (a deadlock, a thread stuck in a blocking call), and
/// systemd then kills and restarts the daemon.
pub fn start_watchdog(mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    // systemd's smallest WatchdogSec is 1 µs; a ping loop with no pause
    // would be a busy loop.
    let interval = interval.max(Duration::from_millis(10));
    tracing::info!("systemd watchdog: a ping every {} ms", interval.as_millis());
    Some(tokio::spawn(async move {
        loop {
            send(&[NotifyState::Watchdog]);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
        }
    }))
}
