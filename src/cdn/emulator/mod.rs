//! A local stand-in for the Azure China CDN API.
//!
//! It checks every request the way the service does (date, signature, key,
//! subscription, endpoint, body, URLs), answers in the documented shapes,
//! enforces a token-bucket rate limit and daily quotas, and can be told to
//! misbehave: 500/503 answers, responses slower than any timeout, dropped
//! connections and bodies cut short. Every accepted purge is journaled.
//!
//! It runs in-process ([`Emulator::start`], for tests and `serve --emulator`)
//! or on its own (`purgeq emulate`), on the same connection server as the
//! daemon ([`crate::http_server`]), which lets a handler drop its own
//! connection to simulate a network fault.

mod checks;
mod config;
mod edge;
mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::http_server::{self, Listener, ServeOptions};

pub use checks::has_dot_dot_segment;
pub use config::{EmulatedEndpoint, EmulatorConfig, Knobs};
pub use edge::EdgeConfig;
pub use state::{JournalEntry, TaskKind};

pub struct Emulator;

impl Emulator {
    /// Binds `config.listen` and serves until the handle is shut down or
    /// dropped.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
        config
            .knobs
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let edge = match &config.edge {
            Some(edge) => Some(
                edge::EdgeHandle::start(edge.clone(), config.endpoints.clone(), shutdown.clone())
                    .await?,
            ),
            None => None,
        };
        let state = Arc::new(state::State::new(
            config,
            edge.as_ref().map(|e| e.edge.clone()),
        ));
        let options = ServeOptions {
            // A test throttle storm opens many connections; a dropped
            // connection must not wait for a graceful close.
            max_connections: 4096,
            graceful: false,
            ..ServeOptions::default()
        };
        let task = tokio::spawn(http_server::serve(
            Listener::Tcp(listener),
            routes::router(state.clone()),
            options,
            shutdown.clone(),
        ));
        Ok(EmulatorHandle {
            addr,
            state,
            shutdown,
            task: Some(task),
            edge,
        })
    }
}

/// A running emulator. Dropping it stops the server.
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<state::State>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    edge: Option<edge::EdgeHandle>,
}

impl EmulatorHandle {
    /// The emulated edge's nodes, in order (empty without an edge).
    pub fn edge_addrs(&self) -> Vec<SocketAddr> {
        self.edge
            .as_ref()
            .map(|e| e.addrs.clone())
            .unwrap_or_default()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, ready for [`crate::cdn::ClientSettings`].
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr))
            .unwrap_or_else(|_| unreachable!("a socket address is a valid URL host"))
    }

    pub fn subscription_id(&self) -> &str {
        &self.state.config.subscription_id
    }

    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.journal()
    }

    pub fn stats(&self) -> std::collections::BTreeMap<String, u64> {
        self.state.stats()
    }

    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    /// Changes the knobs while serving (same as `PATCH /_emulator/knobs`).
    pub fn set_knobs(&self, knobs: Knobs) -> Result<(), String> {
        knobs.validate()?;
        self.state.set_knobs(knobs);
        Ok(())
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
