//! `purgeq serve`: wiring the parts together, and their lifecycle.
//!
//! Start: open the store (migrating it), choose the CDN (the configured
//! service, or the built-in emulator when no credentials are set), start
//! the pipeline (which first recovers what a previous run left in flight),
//! bind the listeners, then serve.
//!
//! Stop (SIGTERM/SIGINT): stop accepting, let open requests finish, let
//! calls on the wire finish within `daemon.shutdown_timeout`, exit 0.
//! Reload (SIGHUP): read the configuration again; if it is valid, apply it
//! (endpoints, limits, credentials, log level) without dropping anything;
//! if not, keep the running one and log what is wrong.

pub mod listeners;
pub mod systemd;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, EmulatorHandle};
use crate::cdn::{CdnClient, ClientSettings, Credentials, DEFAULT_BASE_URL, KeyId, KeyValue};
use crate::clock;
use crate::config::Settings;
use crate::http_server::{self, Listener, ServeOptions};
use crate::ingest::{self, IngestState, PipelineReport};
use crate::logging::{self, LogHandle};
use crate::pipeline::Pipeline;
use crate::store::Store;

pub use crate::config::{DEMO_ENDPOINT_ID, DEMO_HOSTS};
const EMULATOR_SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000e01";
const EMULATOR_KEY_ID: &str = "purgeq-built-in-emulator";

/// How `serve` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The file to read again on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Use the built-in emulator even when credentials are configured.
    pub force_emulator: bool,
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

/// The emulator in use, when it is.
struct BuiltInEmulator {
    handle: EmulatorHandle,
    credentials: Credentials,
}

async fn start_emulator(settings: &Settings) -> Result<BuiltInEmulator, DaemonError> {
    let key_value = uuid::Uuid::new_v4().simple().to_string();
    let router = &settings.derived.router;
    let endpoints = router
        .endpoint_ids()
        .into_iter()
        .map(|id| {
            let hosts = router.hosts_of(&id);
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            EmulatedEndpoint::new(id.clone(), &hosts)
        })
        .collect();
    let subscription = if settings.cdn.subscription_id.is_empty() {
        EMULATOR_SUBSCRIPTION.to_owned()
    } else {
        settings.cdn.subscription_id.clone()
    };
    let mut config = EmulatorConfig::new(
        subscription,
        EMULATOR_KEY_ID,
        KeyValue::new(key_value.clone()),
        endpoints,
    );
    // Never the bottleneck, and quotas as configured.
    config.knobs.requests_per_second = (settings.sender.requests_per_second * 2.0).max(10.0);
    config.knobs.burst = (settings.sender.burst * 2).max(20);
    config.knobs.files_per_day = settings.quota.files_per_day;
    config.knobs.directories_per_day = settings.quota.directories_per_day;
    // Its tasks outlive a restart of the daemon, as the service's do.
    let mut state_file = settings.store.path.clone().into_os_string();
    state_file.push(".emulator.json");
    config.state_file = Some(state_file.into());
    let handle = Emulator::start(config)
        .await
        .map_err(|e| DaemonError::Other(format!("cannot start the built-in CDN emulator: {e}")))?;
    Ok(BuiltInEmulator {
        handle,
        credentials: Credentials {
            key_id: KeyId::new(EMULATOR_KEY_ID),
            key_value: KeyValue::new(key_value),
        },
    })
}

fn build_client(
    settings: &Settings,
    emulator: Option<&BuiltInEmulator>,
) -> Result<CdnClient, DaemonError> {
    let (base_url, subscription_id, credentials) =
        match emulator {
            Some(emulator) => (
                emulator.handle.base_url(),
                emulator.handle.subscription_id().to_owned(),
                emulator.credentials.clone(),
            ),
            None => (
                settings.derived.base_url.clone().unwrap_or_else(|| {
                    Url::parse(DEFAULT_BASE_URL).unwrap_or_else(|_| unreachable!("constant URL"))
                }),
                settings.cdn.subscription_id.clone(),
                settings.derived.credentials.clone().ok_or_else(|| {
                    DaemonError::Other("no CDN credentials configured".to_owned())
                })?,
            ),
        };
    let mut client_settings = ClientSettings::new(base_url, subscription_id, credentials);
    client_settings.request_timeout = settings.cdn.request_timeout;
    client_settings.connect_timeout = settings.cdn.connect_timeout;
    CdnClient::new(client_settings).map_err(|e| DaemonError::Other(e.to_string()))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    settings: Settings,
    log: LogHandle,
    options: RunOptions,
) -> Result<(), DaemonError> {
    let use_emulator = options.force_emulator || !settings.has_credentials();
    let settings = if use_emulator {
        settings.with_demo_endpoint()
    } else {
        settings
    };
    let settings = Arc::new(settings);

    let store = Store::open(&settings.store).await?;
    tracing::info!(path = %settings.store.path.display(), "store open");

    let emulator = if use_emulator {
        let emulator = start_emulator(&settings).await?;
        if options.force_emulator {
            tracing::info!(base_url = %emulator.handle.base_url(), "using the built-in CDN emulator (--emulator)");
        } else {
            tracing::warn!(
                base_url = %emulator.handle.base_url(),
                "no CDN credentials configured: purges go to the built-in emulator, not to Azure; \
                 set cdn.subscription_id, cdn.key_id and cdn.key_value to purge for real"
            );
        }
        for id in settings.derived.router.endpoint_ids() {
            tracing::info!(endpoint = %id, hosts = ?settings.derived.router.hosts_of(&id), "emulated endpoint");
        }
        Some(emulator)
    } else {
        None
    };

    let client = build_client(&settings, emulator.as_ref())?;
    // One clock for every part that reads the time.
    let clock = clock::system();
    let pipeline = Pipeline::start(store.clone(), settings.clone(), client, clock.clone()).await?;

    let (settings_tx, settings_rx) = watch::channel(settings.clone());
    let router = ingest::router(IngestState {
        store: store.clone(),
        settings: settings_rx,
        pipeline: pipeline.report(),
        metrics: crate::metrics::install(),
        backlog: Default::default(),
        clock: clock.clone(),
    });

    let stop_serving = CancellationToken::new();
    let servers = TaskTracker::new();
    let activated = systemd::activated_listeners().map_err(|e| {
        DaemonError::Other(format!("cannot take the sockets passed by systemd: {e}"))
    })?;
    if !activated.is_empty() {
        tracing::info!("using the sockets passed by the service manager (socket activation)");
    }
    // A socket passed by systemd belongs to it: never removed at exit.
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
    for listener in [unix.map(Listener::Unix), tcp.map(Listener::Tcp)]
        .into_iter()
        .flatten()
    {
        tracing::info!(listener = %listener.describe(), "listening");
        let options = ServeOptions {
            max_connections: settings.ingest.max_connections,
            header_read_timeout: settings.ingest.header_timeout,
            graceful: true,
        };
        servers.spawn(http_server::serve(
            listener,
            router.clone(),
            options,
            stop_serving.clone(),
        ));
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "purgeq ready");
    let report = pipeline.report();
    systemd::ready(&status_line(&store, report.as_ref()).await);
    let retention = tokio::spawn(crate::retention::run(
        store.clone(),
        settings_tx.subscribe(),
        clock,
        stop_serving.clone(),
    ));
    let heartbeat = (settings.derived.notify_socket || systemd::watchdog_interval().is_some())
        .then(|| {
            tokio::spawn(heartbeat(
                store.clone(),
                pipeline.report(),
                stop_serving.clone(),
            ))
        });

    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| DaemonError::Other(format!("cannot install signal handlers: {e}")))?;
    let mut current = settings;
    while let Some(signal) = signals.next().await {
        if signal != SIGHUP {
            tracing::info!(
                signal,
                "stopping: no new requests; finishing what is under way"
            );
            break;
        }
        systemd::reloading();
        match reload(&options, &current, emulator.as_ref(), use_emulator) {
            Ok((next, client)) => {
                log.set_level(&logging::filter_of(&next));
                if next.store.max_size_bytes != current.store.max_size_bytes
                    && let Err(error) = store.set_max_size(next.store.max_size_bytes).await
                {
                    tracing::error!(%error, "could not apply store.max_size_bytes");
                }
                pipeline.reload(next.clone(), Some(client));
                settings_tx.send_replace(next.clone());
                current = next;
                tracing::info!("configuration reloaded");
            }
            Err(problem) => {
                tracing::error!("reload refused, the running configuration is kept: {problem}")
            }
        }
        systemd::ready(&status_line(&store, report.as_ref()).await);
    }
    signals.handle().close();

    systemd::stopping();
    let timeout = current.daemon.shutdown_timeout;
    stop_serving.cancel();
    if let Some(heartbeat) = heartbeat {
        heartbeat.abort();
    }
    // Each retention batch is its own transaction: stopping mid-pass is safe.
    retention.abort();
    servers.close();
    if tokio::time::timeout(timeout, servers.wait()).await.is_err() {
        tracing::warn!("some client connections were still open at the shutdown timeout");
    }
    pipeline.shutdown(timeout).await;
    store.close().await;
    if let Some(path) = socket_to_remove {
        listeners::remove_socket(&path);
    }
    if let Some(emulator) = emulator {
        emulator.handle.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The one-line `STATUS=` for systemd: backlog, and why sending is
/// paused if it is.
async fn status_line(store: &Store, report: &dyn PipelineReport) -> String {
    let backlog = match store.state_counts().await {
        Ok(counts) => format!(
            "{} pending, {} in flight",
            counts.pending,
            counts.sending + counts.submitted
        ),
        Err(error) => format!("store unreadable: {error}"),
    };
    match report.status().not_ready_reason() {
        Some(reason) => format!("{backlog}; {reason}"),
        None => backlog,
    }
}

/// Under systemd: `WATCHDOG=1` while the store's writer answers and the
/// batcher and tracker loops run (a stuck writer or a dead loop stops the
/// pings, and systemd restarts us), and a fresh `STATUS=` line.
///
/// A writer that answers with an error (disk full, file removed or made
/// read-only) still gets its pings: a restart would not fix the disk, and
/// restarting on it would be a crash loop. /readyz reports it instead.
async fn heartbeat(store: Store, report: Arc<dyn PipelineReport>, stop: CancellationToken) {
    let interval = systemd::watchdog_interval()
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let answered = tokio::time::timeout(interval, store.probe_writer()).await;
        if answered.is_err() {
            tracing::warn!("the store writer did not answer in time; not pinging the watchdog");
        } else if !report.alive() {
            tracing::error!("the batcher or the tracker has stopped; not pinging the watchdog");
        } else {
            systemd::watchdog();
        }
        systemd::status(&status_line(&store, report.as_ref()).await);
    }
}

/// Reads and checks the configuration again; returns it with a client
/// built from it.
fn reload(
    options: &RunOptions,
    current: &Settings,
    emulator: Option<&BuiltInEmulator>,
    use_emulator: bool,
) -> Result<(Arc<Settings>, CdnClient), String> {
    let next = Settings::load(
        options.config_path.as_deref(),
        &crate::config::process_env(),
    )
    .map_err(|e| e.to_string())?;
    let next = if use_emulator {
        next.with_demo_endpoint()
    } else {
        next
    };
    if !use_emulator && !next.has_credentials() {
        return Err("the new configuration has no CDN credentials".to_owned());
    }
    for (what, changed) in [
        ("store.path", next.store.path != current.store.path),
        ("ingest.socket", next.ingest.socket != current.ingest.socket),
        ("ingest.http", next.ingest.http != current.ingest.http),
    ] {
        if changed {
            tracing::warn!("{what} changed: it takes effect at the next restart");
        }
    }
    let client = build_client(&next, emulator).map_err(|e| e.to_string())?;
    Ok((Arc::new(next), client))
}
