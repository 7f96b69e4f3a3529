//! systemd integration (`Type=notify`): readiness, reloads, the watchdog and a one-line status,
//! through the `sd_notify` protocol. Every function is a no-op when the process does not run
//! under systemd (`NOTIFY_SOCKET` unset), and a failure to notify is logged, never fatal.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "could not notify systemd");
    }
}

/// The first valid policy is loaded and the catalog is open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (file change or SIGHUP) starts; call [`reloaded`] when it is over.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A reload is over (applied or refused: the daemon runs either way).
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The reconcile loop is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// A one-line summary for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if enabled.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// One test owns NOTIFY_SOCKET for the whole process (env is process-global).
    #[test]
    fn notifications_reach_the_socket_and_are_silent_without_one() {
        // SAFETY: no other test in this binary reads or writes NOTIFY_SOCKET.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        ready("no socket: nothing happens");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // SAFETY: as above.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        let mut buf = [0u8; 512];
        let mut recv = || {
            let n = socket.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        ready("1 database, next backup 03:00");
        assert_eq!(recv(), "READY=1\nSTATUS=1 database, next backup 03:00\n");
        reloading();
        assert!(recv().starts_with("RELOADING=1\nMONOTONIC_USEC="));
        reloaded("reloaded");
        assert_eq!(recv(), "READY=1\nSTATUS=reloaded\n");
        watchdog();
        assert_eq!(recv(), "WATCHDOG=1\n");
        stopping();
        assert_eq!(recv(), "STOPPING=1\nSTATUS=stopping\n");
        // SAFETY: as above.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    }
}
