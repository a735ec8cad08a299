//! `purgeq serve`: wiring the parts together, and their lifecycle.
//!
//! [`Daemon::start`] opens the store (migrating it), chooses the CDN (the
//! configured service, or the built-in emulator when no credentials are
//! set), starts the pipeline (which first recovers what a previous run left
//! in flight), binds the listeners and serves. It returns a [`Daemon`]: a
//! handle that says which addresses it bound (port 0 works) and can be told
//! to reload and to stop, each returning once done. Tests hold one in their
//! own process; [`run`], the binary's `serve`, is a thin shell that wires
//! signals to it:
//!
//! - SIGHUP: [`Daemon::reload`] reads the configuration again; if it is
//!   valid, it is applied (endpoints, limits, credentials, log level)
//!   without dropping anything; if not, the running one is kept and what is
//!   wrong is logged.
//! - SIGTERM/SIGINT: [`Daemon::stop`] stops accepting, lets open requests
//!   finish, lets calls on the wire finish within `daemon.shutdown_timeout`,
//!   and waits for the store's last commit.
//!
//! Settings reach every part through one `watch` channel: each reads the
//! current value when it needs it. What must react to a change at once
//! (the rate gate, a credentials pause, the log level, the store's size
//! limit) is told by the reload itself, before it returns.

mod cache_rules;
mod cdn;
mod count_fold;
mod fleet_nodes;
mod heartbeat;
mod leader;
pub mod listeners;
mod memory;
pub mod systemd;
pub mod tag_log;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{self, SharedClock};
use crate::config::{Process, Settings};
use crate::http_server::{self, Listener, ServeOptions};
use crate::ingest::{self, IngestState};
use crate::logging::{self, LogHandle};
use crate::pipeline::Pipeline;
use crate::store::Store;
use cdn::BuiltInEmulator;

pub use crate::config::{DEMO_ENDPOINT_ID, DEMO_HOSTS};

/// How the daemon was asked to run: facts of the process, not settings.
#[derive(Default)]
pub struct RunOptions {
    /// The file to read again on reload (`None`: the embedded defaults and
    /// the environment only).
    pub config_path: Option<PathBuf>,
    /// Use the built-in emulator even when credentials are configured.
    pub force_emulator: bool,
    /// The log filter to change when `log.level` is reloaded (`None` when
    /// the caller owns logging, as a test does).
    pub log: Option<LogHandle>,
    /// Sockets passed by the service manager: used instead of binding.
    pub activated: systemd::Activated,
    /// The clock every part reads (`None`: the system clock).
    pub clock: Option<SharedClock>,
    /// What the environment says about the process (journal, systemd).
    pub process: Process,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Listen(#[from] listeners::ListenError),
    #[error("{0}")]
    Other(String),
}

/// Where a started daemon listens.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// The Unix socket's path.
    pub socket: Option<PathBuf>,
    /// The TCP address actually bound (the real port when 0 was asked).
    pub http: Option<SocketAddr>,
}

/// A running daemon.
pub struct Daemon {
    settings: watch::Sender<Arc<Settings>>,
    /// The settings the daemon started with: what the restart-only keys
    /// still are, however many reloads came since.
    started_with: Arc<Settings>,
    config_path: Option<PathBuf>,
    log: Option<LogHandle>,
    process: Process,
    use_emulator: bool,
    emulator: Option<BuiltInEmulator>,
    store: Store,
    pipeline: Sender,
    addresses: Addresses,
    stop_serving: CancellationToken,
    servers: TaskTracker,
    background: Vec<JoinHandle<()>>,
    /// Wakes the cache-policy refresher (a reload reads them again).
    refresh_policies: Arc<tokio::sync::Notify>,
    /// Our own socket file, removed at exit (a socket passed by systemd
    /// belongs to it and is left alone).
    socket_to_remove: Option<PathBuf>,
}

impl Daemon {
    /// Starts every part; returns once the listeners accept.
    pub async fn start(settings: Settings, options: RunOptions) -> Result<Daemon, DaemonError> {
        let use_emulator = options.force_emulator || !settings.has_credentials();
        let settings = Arc::new(if use_emulator {
            settings.with_demo_endpoint()
        } else {
            settings
        });
        let (store, fleet_db) = match &settings.derived.store_url {
            Some(url) => {
                let db = crate::store::fleet::FleetDb::connect(url).await?;
                (Store::open_postgres(&db).await?, Some(db))
            }
            None => (Store::open(&settings.store).await?, None),
        };
        tracing::info!(location = %store.location(), "store open");
        let emulator = if use_emulator {
            Some(announce_emulator(
                cdn::start_emulator(&settings).await?,
                &settings,
                &options,
            ))
        } else {
            None
        };
        let clients = cdn::ClientSource::new(emulator.as_ref());
        let policy_clients = clients.clone();
        // One clock for every part that reads the time.
        let clock = options.clock.unwrap_or_else(clock::system);
        let (settings_tx, settings_rx) = watch::channel(settings.clone());
        let node = settings.node_name();
        let (pipeline, fleet) = match fleet_db {
            // One host on SQLite: it always sends. The sender side of the
            // fleet status is dropped; the receiver keeps its value.
            None => {
                let client = clients.build(&settings)?;
                let pipeline =
                    Pipeline::start(store.clone(), settings_rx.clone(), client, clock.clone())
                        .await?;
                if let Some(emulator) = &emulator {
                    pipeline.use_emulated_edges(emulator.handle.edge_addrs());
                }
                let (_, fleet) = watch::channel(crate::fleet::FleetStatus::of(
                    &node,
                    &crate::fleet::Role::Standalone,
                ));
                (Sender::Standalone(pipeline), fleet)
            }
            // A fleet: the leader loop starts the pipeline if and while
            // this node leads.
            Some(db) => {
                let (fleet_tx, fleet) = watch::channel(crate::fleet::FleetStatus::of(
                    &node,
                    &crate::fleet::Role::Follower { leader: None },
                ));
                let sending = Arc::new(leader::Sending::default());
                let current = Arc::new(tokio::sync::Mutex::new(None));
                let stop = CancellationToken::new();
                let task = tokio::spawn(leader::run(
                    leader::LeaderParts {
                        db,
                        store: store.clone(),
                        node: node.clone(),
                        timing: crate::fleet::LeaseTiming::DEFAULT,
                        settings: settings_rx.clone(),
                        clients,
                        clock: clock.clone(),
                        sending: sending.clone(),
                        fleet: fleet_tx,
                        pipeline: current.clone(),
                    },
                    stop.clone(),
                ));
                tokio::spawn(fleet_nodes::run(
                    store.clone(),
                    fleet.clone(),
                    crate::fleet::LeaseTiming::DEFAULT.renew_every,
                    stop.clone(),
                ));
                tracing::info!(node = %node, "fleet mode: this node ingests; it sends while it leads");
                (
                    Sender::Fleet {
                        sending,
                        current,
                        stop,
                        task,
                    },
                    fleet,
                )
            }
        };
        let policies = Arc::new(crate::cdn::cache_rules::Policies::default());
        cache_rules::load_kept(&store, &policies).await;
        let refresh_policies = Arc::new(tokio::sync::Notify::new());
        let fleet_for_policies = fleet.clone();
        let state = IngestState {
            policies: policies.clone(),
            fleet,
            store: store.clone(),
            settings: settings_rx.clone(),
            pipeline: pipeline.report(),
            metrics: crate::metrics::install(),
            backlog: Default::default(),
            clock: clock.clone(),
            sessions: Default::default(),
        };
        let router = ingest::router(state.clone(), crate::ui::routes(state));

        let bound = bind(&settings, options.activated).await?;
        let stop_serving = CancellationToken::new();
        let servers = TaskTracker::new();
        for listener in bound.listeners {
            tracing::info!(listener = %listener.describe(), "listening");
            let serve = ServeOptions {
                max_connections: settings.ingest.max_connections,
                header_read_timeout: settings.ingest.header_timeout,
                graceful: true,
            };
            servers.spawn(http_server::serve(
                listener,
                router.clone(),
                serve,
                stop_serving.clone(),
            ));
        }
        let background = spawn_background(
            cache_rules::Refresher {
                policies,
                store: store.clone(),
                settings: settings_rx.clone(),
                clients: policy_clients,
                clock: clock.clone(),
                now: refresh_policies.clone(),
                fleet: fleet_for_policies,
            },
            clock,
            (options.process.notify_socket || systemd::watchdog_interval().is_some())
                .then(|| pipeline.report()),
            &stop_serving,
        );
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "purgeq ready");
        Ok(Daemon {
            started_with: settings.clone(),
            settings: settings_tx,
            config_path: options.config_path,
            log: options.log,
            process: options.process,
            use_emulator,
            emulator,
            store,
            pipeline,
            addresses: bound.addresses,
            stop_serving,
            servers,
            background,
            refresh_policies,
            socket_to_remove: bound.socket_to_remove,
        })
    }

    /// Where it listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// The one-line status systemd shows (`STATUS=`).
    pub async fn status_line(&self) -> String {
        heartbeat::status_line(&self.store, self.pipeline.report().as_ref()).await
    }

    /// Reads the configuration file and the environment again and applies
    /// them, as SIGHUP does.
    pub async fn reload(&self) -> Result<(), String> {
        let next = Settings::load(self.config_path.as_deref(), &crate::config::process_env())
            .map_err(|e| e.to_string())?;
        self.reload_with(next).await
    }

    /// Applies `next`; every part uses it once this returns. On an error
    /// the running settings are kept.
    pub async fn reload_with(&self, next: Settings) -> Result<(), String> {
        let current = self.settings();
        let next = if self.use_emulator {
            next.with_demo_endpoint()
        } else {
            next
        };
        if !self.use_emulator && !next.has_credentials() {
            return Err("the new configuration has no CDN credentials".to_owned());
        }
        // Against the settings in effect for them, not the last reload's:
        // reverting a change said it changed again (issue 29, item 12).
        warn_restart_only(&self.started_with, &next);
        let client = cdn::build_client(&next, self.emulator.as_ref()).map_err(|e| e.to_string())?;
        if let Some(log) = &self.log {
            log.set_level(&logging::filter_of(&next, &self.process));
        }
        if next.store.max_size_bytes != current.store.max_size_bytes
            && let Err(error) = self.store.set_max_size(next.store.max_size_bytes).await
        {
            tracing::error!(%error, "could not apply store.max_size_bytes");
        }
        let next = Arc::new(next);
        self.settings.send_replace(next.clone());
        self.pipeline
            .settings_changed(&current, &next, client)
            .await;
        self.refresh_policies.notify_one();
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Stops: no new connections, open requests finish, calls on the wire
    /// finish within `daemon.shutdown_timeout`, then the store's last
    /// commit. Returns when all of that is done.
    pub async fn stop(self) {
        let timeout = self.settings().daemon.shutdown_timeout;
        self.stop_serving.cancel();
        // Each retention batch is its own transaction: stopping mid-pass is
        // safe, and the heartbeat holds nothing.
        for task in &self.background {
            task.abort();
        }
        self.servers.close();
        if tokio::time::timeout(timeout, self.servers.wait())
            .await
            .is_err()
        {
            tracing::warn!("some client connections were still open at the shutdown timeout");
        }
        self.pipeline.shutdown(timeout).await;
        self.store.close().await;
        if let Some(path) = &self.socket_to_remove {
            listeners::remove_socket(path);
        }
        if let Some(emulator) = self.emulator {
            emulator.handle.shutdown().await;
        }
        tracing::info!("stopped");
    }
}

/// The tasks beside serving and sending, on every node: the cache-policy
/// refresher, retention, the access-log follower of the tag registry, and
/// the systemd heartbeat when systemd listens (`report`).
fn spawn_background(
    refresher: cache_rules::Refresher,
    clock: crate::clock::SharedClock,
    report: Option<Arc<dyn crate::report::PipelineReport>>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let (store, settings) = (refresher.store.clone(), refresher.settings.clone());
    let mut background = vec![tokio::spawn(crate::retention::run(
        store.clone(),
        settings,
        clock,
        stop.clone(),
    ))];
    if let Some(report) = report {
        background.push(tokio::spawn(heartbeat::run(store, report, stop.clone())));
    }
    background.push(tokio::spawn(count_fold::run(
        refresher.store.clone(),
        stop.clone(),
    )));
    background.push(tokio::spawn(memory::run(stop.clone())));
    background.push(tokio::spawn(tag_log::run(
        refresher.store.clone(),
        refresher.settings.clone(),
        refresher.clock.clone(),
        stop.clone(),
    )));
    background.push(tokio::spawn(cache_rules::run(refresher, stop.clone())));
    background
}

/// Runs the daemon until SIGTERM or SIGINT: the binary's `serve`.
pub async fn run(settings: Settings, mut options: RunOptions) -> Result<(), DaemonError> {
    options.activated = systemd::activated_listeners().map_err(|e| {
        DaemonError::Other(format!("cannot take the sockets passed by systemd: {e}"))
    })?;
    if !options.activated.is_empty() {
        tracing::info!("using the sockets passed by the service manager (socket activation)");
    }
    // Installed before start, so a signal that comes early is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Other(format!("cannot install signal handlers: {e}")))?;
    let daemon = Daemon::start(settings, options).await?;
    systemd::ready(&daemon.status_line().await);
    while let Some(signal) = signals.next().await {
        if signal != SIGHUP {
            tracing::info!(
                signal,
                "stopping: no new requests; finishing what is under way"
            );
            break;
        }
        systemd::reloading();
        if let Err(problem) = daemon.reload().await {
            tracing::error!("reload refused, the running configuration is kept: {problem}");
        }
        systemd::ready(&daemon.status_line().await);
    }
    signals.handle().close();
    systemd::stopping();
    daemon.stop().await;
    Ok(())
}

fn announce_emulator(
    emulator: BuiltInEmulator,
    settings: &Settings,
    options: &RunOptions,
) -> BuiltInEmulator {
    let base_url = emulator.handle.base_url();
    if options.force_emulator {
        tracing::info!(%base_url, "using the built-in CDN emulator (--emulator)");
    } else {
        tracing::warn!(
            %base_url,
            "no CDN credentials configured: purges go to the built-in emulator, not to Azure; \
             set cdn.subscription_id, cdn.key_id and cdn.key_value to purge for real"
        );
    }
    let router = &settings.derived.router;
    for id in router.endpoint_ids() {
        tracing::info!(endpoint = %id, hosts = ?router.hosts_of(&id), "emulated endpoint");
    }
    for (node, addr) in emulator.handle.edge_addrs().iter().enumerate() {
        tracing::info!(node, %addr, origin = %settings.verify.origin, "emulated edge node (verification probes it)");
    }
    emulator
}

/// The listeners to serve on, and where they are.
struct Bound {
    listeners: Vec<Listener>,
    addresses: Addresses,
    socket_to_remove: Option<PathBuf>,
}

/// Binds the configured socket and TCP address, or takes the ones systemd
/// passed instead.
async fn bind(settings: &Settings, activated: systemd::Activated) -> Result<Bound, DaemonError> {
    let mut socket_to_remove = None;
    let unix = match activated.unix {
        Some(listener) => Some(listener),
        None => match &settings.derived.socket_path {
            Some(path) => {
                let listener = listeners::bind_unix(path, settings.derived.socket_mode)?;
                socket_to_remove = Some(path.clone());
                Some(listener)
            }
            None => None,
        },
    };
    let tcp = match activated.tcp {
        Some(listener) => Some(listener),
        None => match settings.derived.http_addr {
            Some(addr) => Some(listeners::bind_tcp(addr).await?),
            None => None,
        },
    };
    if unix.is_none() && tcp.is_none() {
        return Err(DaemonError::Other(
            "no listener: ingest.socket and ingest.http are both empty and no socket was passed by \
             systemd; nothing could post intents"
                .to_owned(),
        ));
    }
    let addresses = Addresses {
        socket: unix
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .and_then(|a| a.as_pathname().map(PathBuf::from)),
        http: tcp.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let listeners = [unix.map(Listener::Unix), tcp.map(Listener::Tcp)]
        .into_iter()
        .flatten()
        .collect();
    Ok(Bound {
        listeners,
        addresses,
        socket_to_remove,
    })
}

/// What sends: the pipeline of a standalone host, or a fleet node's
/// leader loop, which runs one while this node leads.
enum Sender {
    Standalone(Pipeline),
    Fleet {
        sending: Arc<leader::Sending>,
        current: Arc<tokio::sync::Mutex<Option<Pipeline>>>,
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
}

impl Sender {
    fn report(&self) -> Arc<dyn crate::report::PipelineReport> {
        match self {
            Sender::Standalone(pipeline) => pipeline.report(),
            Sender::Fleet { sending, .. } => sending.clone(),
        }
    }

    /// A reload reaches the pipeline running now; a pipeline started
    /// later reads the new settings itself.
    async fn settings_changed(
        &self,
        old: &Settings,
        new: &Settings,
        client: crate::cdn::CdnClient,
    ) {
        match self {
            Sender::Standalone(pipeline) => pipeline.settings_changed(old, new, client),
            Sender::Fleet { current, .. } => {
                if let Some(pipeline) = current.lock().await.as_ref() {
                    pipeline.settings_changed(old, new, client);
                }
            }
        }
    }

    /// Stops sending; a fleet node then gives the lease back.
    async fn shutdown(self, timeout: std::time::Duration) {
        match self {
            Sender::Standalone(pipeline) => pipeline.shutdown(timeout).await,
            Sender::Fleet { stop, task, .. } => {
                stop.cancel();
                let _ = task.await;
            }
        }
    }
}

/// Keys a reload cannot apply: said, not silently ignored.
fn warn_restart_only(started_with: &Settings, next: &Settings) {
    for what in restart_only_changes(started_with, next) {
        tracing::warn!("{what} changed: it takes effect at the next restart");
    }
}

/// The restart-only keys whose value in `next` differs from the one the
/// daemon runs with.
fn restart_only_changes(started_with: &Settings, next: &Settings) -> Vec<&'static str> {
    let current = started_with;
    [
        ("store.path", next.store.path != current.store.path),
        (
            "store.url",
            next.derived.store_url.as_ref().map(ToString::to_string)
                != current.derived.store_url.as_ref().map(ToString::to_string),
        ),
        (
            "fleet.node_name",
            next.fleet.node_name != current.fleet.node_name,
        ),
        ("ingest.socket", next.ingest.socket != current.ingest.socket),
        ("ingest.http", next.ingest.http != current.ingest.http),
        (
            "ingest.max_body_bytes_in_flight",
            next.ingest.max_body_bytes_in_flight != current.ingest.max_body_bytes_in_flight,
        ),
    ]
    .into_iter()
    .filter_map(|(what, changed)| changed.then_some(what))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29, item 12: a reload compares with what runs, so a change
    /// reverted by a second reload is no longer reported.
    #[test]
    fn a_reverted_change_is_not_reported() {
        let started = Settings::default();
        let mut moved = Settings::default();
        moved.ingest.http = "127.0.0.1:9999".to_owned();
        assert_eq!(restart_only_changes(&started, &moved), ["ingest.http"]);
        assert!(restart_only_changes(&started, &Settings::default()).is_empty());
    }
}
