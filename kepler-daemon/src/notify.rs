//! Readiness for systemd: tells a `Type=notify` unit's manager when the
//! daemon accepts connections (`READY=1`) and when it is going away
//! (`STOPPING=1`).
//!
//! The protocol is one datagram per message, sent to the socket named by
//! `$NOTIFY_SOCKET`: a filesystem path, or an abstract socket written
//! `@name`. Outside systemd the variable is unset and every call does nothing.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tokio::sync::watch;

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Where readiness messages go; `None` when nobody listens.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<SocketAddr>,
    /// `$NOTIFY_SOCKET` as it was, for a binary this one `execve`s into.
    value: Option<std::ffi::OsString>,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` out of the environment, so neither services nor
    /// hooks nor helper processes inherit it and talk to systemd as us.
    ///
    /// Call while the process is still single-threaded (before the runtime
    /// starts): changing the environment races with threads reading it.
    pub fn from_env() -> Self {
        let value = std::env::var_os(NOTIFY_SOCKET_ENV);
        std::env::remove_var(NOTIFY_SOCKET_ENV);
        let notifier = Self::from_value(value.as_deref());
        if value.is_some() && notifier.socket.is_none() {
            tracing::warn!("ignoring {NOTIFY_SOCKET_ENV}={value:?}: not an absolute path or @name");
        }
        notifier
    }

    /// A notifier for a `$NOTIFY_SOCKET`-style value; anything systemd would
    /// not set (empty, relative) gives one that does nothing.
    pub fn from_value(value: Option<&OsStr>) -> Self {
        let socket = value.and_then(|value| {
            let bytes = value.as_bytes();
            match bytes.first() {
                Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).ok(),
                Some(b'/') => SocketAddr::from_pathname(value).ok(),
                _ => None,
            }
        });
        let value = socket.as_ref().and(value.map(OsStr::to_os_string));
        Self { socket, value }
    }

    /// The `$NOTIFY_SOCKET` value this notifier sends to, if any.
    pub fn socket_value(&self) -> Option<&OsStr> {
        self.value.as_deref()
    }

    /// The daemon is handing over to a new binary (an upgrade); `READY=1`
    /// follows from the new one. systemd wants the monotonic time with it.
    pub fn reloading(&self) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid out-pointer for the call.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let now = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send_or_warn(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=upgrading"
        ));
    }

    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The daemon accepts connections.
    pub fn ready(&self) {
        self.send_or_warn("READY=1\nSTATUS=accepting connections");
    }

    /// The daemon is going away; systemd shows the unit as deactivating
    /// even when the stop came over the socket rather than from systemctl.
    pub fn stopping(&self) {
        self.send_or_warn("STOPPING=1\nSTATUS=stopping");
    }

    /// Sends `STOPPING=1` once `shutdown` is raised (the daemon passes its
    /// connections-closing signal, the one of its shutdown signals it
    /// exposes). Needs a tokio runtime.
    pub fn stopping_when_raised(&self, mut shutdown: watch::Receiver<bool>) {
        if !self.is_enabled() {
            return;
        }
        let notifier = self.clone();
        tokio::spawn(async move {
            if shutdown.wait_for(|raised| *raised).await.is_ok() {
                notifier.stopping();
            }
        });
    }

    /// Sends one message (newline-separated `KEY=value` lines).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        // An unbound socket: systemd identifies us by our credentials (pid),
        // which the kernel attaches, not by an address.
        let sender = UnixDatagram::unbound()?;
        let sent = sender.send_to_addr(message.as_bytes(), socket)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", message.len()),
            ));
        }
        Ok(())
    }

    fn send_or_warn(&self, message: &str) {
        if let Err(e) = self.send(message) {
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!("cannot tell systemd {first}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn ready_reaches_a_socket_named_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();

        let notifier = Notifier::from_value(Some(path.as_os_str()));
        notifier.ready();
        notifier.stopping();

        assert_eq!(received(&listener), "READY=1\nSTATUS=accepting connections");
        assert_eq!(received(&listener), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn ready_reaches_an_abstract_socket_written_with_an_at_sign() {
        let name = format!("kepler-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();

        let value = OsString::from(format!("@{name}"));
        Notifier::from_value(Some(&value)).send("READY=1").unwrap();

        assert_eq!(received(&listener), "READY=1");
    }

    #[test]
    fn values_systemd_would_not_set_disable_notification() {
        for value in ["", "relative/notify.sock", "notify.sock"] {
            let notifier = Notifier::from_value(Some(OsStr::new(value)));
            assert!(!notifier.is_enabled(), "{value:?} enabled the notifier");
            notifier.send("READY=1").unwrap();
        }
        assert!(!Notifier::from_value(None).is_enabled());
    }

    #[test]
    fn a_missing_listener_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody-here.sock");
        let notifier = Notifier::from_value(Some(path.as_os_str()));
        assert!(notifier.send("READY=1").is_err());
        // The logging form only warns.
        notifier.ready();
    }

    #[tokio::test]
    async fn stopping_is_sent_once_shutdown_is_raised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let (raise, shutdown) = watch::channel(false);

        Notifier::from_value(Some(path.as_os_str())).stopping_when_raised(shutdown);
        raise.send_replace(true);

        let message = tokio::task::spawn_blocking(move || received(&listener))
            .await
            .unwrap();
        assert_eq!(message, "STOPPING=1\nSTATUS=stopping");
    }
}
