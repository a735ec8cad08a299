//! systemd integration: `sd_notify` messages and socket activation.
//!
//! Everything here is a no-op outside systemd: without `NOTIFY_SOCKET` the
//! notifications go nowhere, without `LISTEN_FDS` the daemon binds its own
//! listeners. The `sd-notify` crate reads those protocol variables itself;
//! they are the service manager's protocol, not configuration, which is why
//! they are not in `config`.

use std::net::TcpListener as StdTcpListener;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::net::{TcpListener, UnixListener};

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` (with the monotonic timestamp systemd's notify-reload
/// wants); follow with [`ready`].
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog (half its timeout), when systemd runs one.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// Listeners passed by the service manager (`purgeq.socket`).
#[derive(Debug, Default)]
pub struct Activated {
    pub unix: Option<UnixListener>,
    pub tcp: Option<TcpListener>,
}

impl Activated {
    pub fn is_empty(&self) -> bool {
        self.unix.is_none() && self.tcp.is_none()
    }
}

/// Takes the listening sockets passed with `LISTEN_FDS`, if any: at most
/// one Unix and one TCP listener.
pub fn activated_listeners() -> std::io::Result<Activated> {
    let mut activated = Activated::default();
    for fd in sd_notify::listen_fds()? {
        match classify(fd)? {
            Passed::Unix(listener) if activated.unix.is_none() => {
                listener.set_nonblocking(true)?;
                activated.unix = Some(UnixListener::from_std(listener)?);
            }
            Passed::Tcp(listener) if activated.tcp.is_none() => {
                listener.set_nonblocking(true)?;
                activated.tcp = Some(TcpListener::from_std(listener)?);
            }
            _ => tracing::warn!(fd, "ignoring an extra socket passed by the service manager"),
        }
    }
    Ok(activated)
}

enum Passed {
    Unix(StdUnixListener),
    Tcp(StdTcpListener),
}

fn classify(fd: RawFd) -> std::io::Result<Passed> {
    // Look before taking ownership: wrapping a descriptor that is not ours
    // (LISTEN_FDS wrong) and dropping the wrapper would close it under
    // whoever does own it.
    // SAFETY: the descriptor is only borrowed for the calls below, while
    // this process is running and before anything could close it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    let family = socket.local_addr()?.family();
    if !socket.is_listener()? {
        return Err(std::io::Error::other(format!(
            "descriptor {fd} is not a listening socket"
        )));
    }
    // SAFETY: by the socket-activation protocol, descriptors from
    // SD_LISTEN_FDS_START on belong to this process alone (`listen_fds`
    // checked LISTEN_PID), and this one was just seen to be a listening
    // socket; it is wrapped exactly once.
    match i32::from(family) {
        libc::AF_UNIX => Ok(Passed::Unix(unsafe { StdUnixListener::from_raw_fd(fd) })),
        libc::AF_INET | libc::AF_INET6 => {
            Ok(Passed::Tcp(unsafe { StdTcpListener::from_raw_fd(fd) }))
        }
        other => Err(std::io::Error::other(format!(
            "descriptor {fd} has address family {other}"
        ))),
    }
}
