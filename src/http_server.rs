//! Serving an axum router on a Unix socket or TCP listener, one hyper
//! connection task per client.
//!
//! Written out rather than `axum::serve` for what a long-running daemon
//! needs from its accept loop: each request learns its peer (uid and pid on
//! the socket, address on TCP) for the `requests.source` column; the number
//! of open connections is capped; a client that never finishes its headers
//! is cut off; on shutdown, connections finish the request they are
//! serving and then close; and a handler can drop its own connection
//! (the emulator's dropped-connection fault).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Unix { uid: Option<u32>, pid: Option<i32> },
    Tcp(SocketAddr),
}

impl Peer {
    /// The `requests.source` text: `uds:uid=1000,pid=42` or `tcp:127.0.0.1`.
    pub fn source(&self) -> String {
        match self {
            Peer::Unix { uid, pid } => {
                let show = |v: Option<String>| v.unwrap_or_else(|| "?".to_owned());
                format!(
                    "uds:uid={},pid={}",
                    show(uid.map(|u| u.to_string())),
                    show(pid.map(|p| p.to_string()))
                )
            }
            Peer::Tcp(addr) => format!("tcp:{}", addr.ip()),
        }
    }
}

/// Put into every request's extensions: `drop_connection` closes the
/// connection the request came on, without an answer.
#[derive(Clone)]
pub struct ConnectionControl(Arc<Notify>);

impl ConnectionControl {
    pub fn drop_connection(&self) {
        self.0.notify_one();
    }
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Connections beyond this wait in the kernel's backlog.
    pub max_connections: usize,
    /// A client must send its complete headers within this time.
    pub header_read_timeout: Duration,
    /// On shutdown: let the current request of each connection finish
    /// (true), or close at once (false).
    pub graceful: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            graceful: true,
        }
    }
}

/// A listener of either kind.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| format!("tcp:{a}"))
                .unwrap_or_else(|_| "tcp:?".to_owned()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix:?".to_owned()),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits
/// for open connections to close (each finishes its current request when
/// `options.graceful`).
pub async fn serve(
    listener: Listener,
    router: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let router = router.clone();
        let options = options.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            match io {
                Accepted::Tcp(stream) => {
                    serve_connection(stream, peer, router, &options, shutdown).await
                }
                Accepted::Unix(stream) => {
                    serve_connection(stream, peer, router, &options, shutdown).await
                }
            }
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Accepted::Tcp(stream), Peer::Tcp(addr)))
        }
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let credentials = stream.peer_cred().ok();
            let peer = Peer::Unix {
                uid: credentials.map(|c| c.uid()),
                pid: credentials.and_then(|c| c.pid()),
            };
            Ok((Accepted::Unix(stream), peer))
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: Peer,
    router: Router,
    options: &ServeOptions,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let router = router
        .layer(axum::Extension(peer))
        .layer(axum::Extension(ConnectionControl(kill.clone())));
    let service = TowerToHyperService::new(router);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = kill.notified() => return,
        _ = shutdown.cancelled() => {}
    }
    if options.graceful {
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection => {}
            _ = kill.notified() => {}
        }
    }
}
