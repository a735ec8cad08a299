//! Which CDN the daemon talks to: the configured service, or the built-in
//! emulator when no credentials are set (or `serve --emulator`), and the
//! signed client for it.

use url::Url;

use super::DaemonError;
use crate::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, EmulatorHandle};
use crate::cdn::{CdnClient, ClientSettings, Credentials, DEFAULT_BASE_URL, KeyId, KeyValue};
use crate::config::Settings;

const EMULATOR_SUBSCRIPTION: &str = "00000000-0000-4000-8000-000000000e01";
const EMULATOR_KEY_ID: &str = "purgeq-built-in-emulator";

/// The emulator in use, when it is.
pub(super) struct BuiltInEmulator {
    pub(super) handle: EmulatorHandle,
    credentials: Credentials,
}

pub(super) async fn start_emulator(settings: &Settings) -> Result<BuiltInEmulator, DaemonError> {
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
    // With verification on, the emulator is the edge too (two nodes on
    // free ports, fetching from verify.origin), so the whole path, purge
    // to fresh at the edge, can be seen on one machine.
    if settings.verify.enabled
        && let Ok(origin) = url::Url::parse(&settings.verify.origin)
    {
        config.edge = Some(crate::cdn::emulator::EdgeConfig {
            origin,
            listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0)); 2],
            ttl: std::time::Duration::from_secs(3600),
        });
    }
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

pub(super) fn build_client(
    settings: &Settings,
    emulator: Option<&BuiltInEmulator>,
) -> Result<CdnClient, DaemonError> {
    ClientSource::new(emulator).build(settings)
}

/// What a CDN client is built from: the built-in emulator's address and
/// credentials, fixed for the process, or the configured service's, read
/// from the settings of the moment. Cloneable, so a fleet's leader loop
/// builds a client of its own at each election.
#[derive(Clone)]
pub(super) struct ClientSource {
    emulator: Option<(Url, String, Credentials)>,
}

impl ClientSource {
    pub(super) fn new(emulator: Option<&BuiltInEmulator>) -> ClientSource {
        ClientSource {
            emulator: emulator.map(|e| {
                (
                    e.handle.base_url(),
                    e.handle.subscription_id().to_owned(),
                    e.credentials.clone(),
                )
            }),
        }
    }

    pub(super) fn build(&self, settings: &Settings) -> Result<CdnClient, DaemonError> {
        let (base_url, subscription_id, credentials) = match &self.emulator {
            Some((url, subscription, credentials)) => {
                (url.clone(), subscription.clone(), credentials.clone())
            }
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
        client_settings.user_agent = format!(
            "purgeq/{} (node {})",
            env!("CARGO_PKG_VERSION"),
            settings.node_name()
        );
        CdnClient::new(client_settings).map_err(|e| DaemonError::Other(e.to_string()))
    }
}
