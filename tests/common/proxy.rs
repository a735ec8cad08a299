//! A TCP proxy that can black-hole its traffic: the network fault that
//! neither refuses nor resets (a firewall dropping packets, a partition),
//! where a client's write is accepted by its kernel and its read waits for
//! ever. Put between a daemon and PostgreSQL; the server itself is not
//! touched.
//!
//! Black-holed, no byte moves either way and new connections are held
//! unanswered; healed, held bytes flow again (as TCP's retransmissions
//! would deliver them).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, watching) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watching = watching.clone();
                tokio::spawn(async move {
                    let mut gate = watching.clone();
                    if gate.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, watching.clone()));
                    tokio::spawn(pump(server_read, client_write, watching));
                });
            }
        });
        Proxy { addr, open }
    }

    /// Nothing gets through from now on.
    pub fn black_hole(&self) {
        self.open.send_replace(false);
    }

    /// Traffic flows again.
    pub fn heal(&self) {
        self.open.send_replace(true);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read just before the hole opened: held until it closes.
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
