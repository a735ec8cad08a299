//! `purgeq emulate`: the CDN emulator as a standalone server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::cdn::KeyValue;
use crate::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, Knobs};

/// Serve a local stand-in for the Azure China CDN API.
///
/// Every knob below can also be changed while it runs:
/// `curl -X PATCH -H 'content-type: application/json' -d '{"drop_rate": 0.3}'
/// http://ADDR/_emulator/knobs`. `GET /_emulator/journal` lists accepted
/// purges, `GET /_emulator/stats` counts requests by outcome.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Subscription id the emulator serves.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    pub subscription: String,
    /// API key id clients must sign with.
    #[arg(long, default_value = "emulator-key-id")]
    pub key_id: String,
    /// API key value (prefer the environment variable: the command line is
    /// visible to every local user).
    #[arg(
        long,
        env = "PURGEQ_EMULATOR_KEY_VALUE",
        default_value = "emulator-key-value",
        hide_env_values = true
    )]
    pub key_value: String,
    /// An endpoint as ID=host1,host2 (repeatable).
    #[arg(long = "endpoint", value_name = "EID=HOSTS", required = true, value_parser = EmulatedEndpoint::parse_spec)]
    pub endpoints: Vec<EmulatedEndpoint>,
    /// An endpoint that exists under another subscription
    /// (answers EndpointDoesNotBelongToSubscription).
    #[arg(long = "foreign-endpoint", value_name = "EID")]
    pub foreign_endpoints: Vec<String>,
    /// An endpoint id that starts inactive (EndpointNotInActiveState).
    #[arg(long = "inactive-endpoint", value_name = "EID")]
    pub inactive_endpoints: Vec<String>,
    /// Largest accepted request-date skew before AuthorizationHeaderExpired.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
    /// Token-bucket refill rate, calls per second (answers RequestThrottled).
    #[arg(long, default_value_t = Knobs::default().requests_per_second)]
    pub requests_per_second: f64,
    /// Token-bucket size.
    #[arg(long, default_value_t = Knobs::default().burst)]
    pub burst: u32,
    /// Daily file-URL quota per subscription.
    #[arg(long, default_value_t = Knobs::default().files_per_day)]
    pub files_per_day: u64,
    /// Daily directory-URL quota per subscription.
    #[arg(long, default_value_t = Knobs::default().directories_per_day)]
    pub directories_per_day: u64,
    /// Daily preload-URL quota per subscription (undocumented: a guess).
    #[arg(long, default_value_t = Knobs::default().preloads_per_day)]
    pub preloads_per_day: u64,
    /// Minutes east of UTC at which the quota day starts.
    #[arg(long, default_value_t = Knobs::default().quota_utc_offset_minutes, allow_hyphen_values = true)]
    pub quota_utc_offset_minutes: i16,
    /// ErrorInfo.Type answered when a quota is exceeded (undocumented).
    #[arg(long, default_value = "QuotaExceeded")]
    pub quota_error_type: String,
    /// How long a purge reports Running before its final state.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub completion_delay: Duration,
    /// Fraction of URLs whose purge ends Failed.
    #[arg(long, default_value_t = 0.0)]
    pub fail_fraction: f64,
    /// URLs containing this text always end Failed.
    #[arg(long)]
    pub fail_urls_containing: Option<String>,
    /// Preloaded URLs containing this text always end Failed.
    #[arg(long)]
    pub preload_fail_urls_containing: Option<String>,
    /// Probability of a 500 with an HTML body.
    #[arg(long, default_value_t = 0.0)]
    pub error_500_rate: f64,
    /// Probability of a 503 with an HTML body.
    #[arg(long, default_value_t = 0.0)]
    pub error_503_rate: f64,
    /// Probability of a response held for --slow-delay.
    #[arg(long, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// How long a slow response is held.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub slow_delay: Duration,
    /// Probability that the connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Probability that the call is processed but its body is cut short.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Draw the faults from this seed (the same calls get the same faults
    /// on every run) instead of at random.
    #[arg(long)]
    pub fault_seed: Option<u64>,
    /// Be an edge too: nodes that serve the endpoints' hosts from this
    /// origin (`http://127.0.0.1:8080`, answering directly; the site's
    /// host is sent as Host), each purge the API accepts reaching them
    /// after --edge-propagation-delay.
    #[arg(long, value_name = "URL")]
    pub edge_origin: Option<url::Url>,
    /// How many edge nodes.
    #[arg(long, default_value_t = 2)]
    pub edge_nodes: usize,
    /// Where the first edge node listens; node N listens on the port after
    /// node N-1's (port 0: any free ports, logged).
    #[arg(long, default_value = "127.0.0.1:18090")]
    pub edge_listen: SocketAddr,
    /// How long an edge node keeps a copy before fetching it again.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub edge_ttl: Duration,
    /// How long an accepted purge takes to reach each edge node.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub edge_propagation_delay: Duration,
    /// An edge node (from 0) that never receives purges (a fault).
    #[arg(long)]
    pub edge_drop_node: Option<usize>,
    /// With --edge-drop-node: only the purges of URLs containing this text.
    #[arg(long, requires = "edge_drop_node")]
    pub edge_drop_urls_containing: Option<String>,
}

impl EmulateArgs {
    pub fn into_config(self) -> EmulatorConfig {
        let mut endpoints = self.endpoints;
        endpoints.extend(
            self.foreign_endpoints
                .into_iter()
                .map(|id| EmulatedEndpoint {
                    id,
                    hosts: Vec::new(),
                    owner_subscription: Some("another-subscription".to_owned()),
                }),
        );
        let knobs = Knobs {
            requests_per_second: self.requests_per_second,
            burst: self.burst,
            files_per_day: self.files_per_day,
            directories_per_day: self.directories_per_day,
            preloads_per_day: self.preloads_per_day,
            quota_utc_offset_minutes: self.quota_utc_offset_minutes,
            quota_error_type: self.quota_error_type,
            completion_delay: self.completion_delay,
            fail_fraction: self.fail_fraction,
            fail_urls_containing: self.fail_urls_containing,
            preload_fail_urls_containing: self.preload_fail_urls_containing,
            inactive_endpoints: self.inactive_endpoints,
            force_error_type: None,
            error_500_rate: self.error_500_rate,
            error_503_rate: self.error_503_rate,
            slow_rate: self.slow_rate,
            slow_delay: self.slow_delay,
            drop_rate: self.drop_rate,
            malformed_rate: self.malformed_rate,
            fault_seed: self.fault_seed,
            edge_propagation_delay: self.edge_propagation_delay,
            edge_drop_node: self.edge_drop_node,
            edge_drop_urls_containing: self.edge_drop_urls_containing,
        };
        let edge = self
            .edge_origin
            .map(|origin| crate::cdn::emulator::EdgeConfig {
                origin,
                listen: (0..self.edge_nodes.max(1))
                    .map(|n| {
                        let port = match self.edge_listen.port() {
                            0 => 0,
                            port => port.saturating_add(n as u16),
                        };
                        SocketAddr::new(self.edge_listen.ip(), port)
                    })
                    .collect(),
                ttl: self.edge_ttl,
            });
        EmulatorConfig {
            listen: self.listen,
            max_clock_skew: self.max_clock_skew,
            knobs,
            edge,
            ..EmulatorConfig::new(
                self.subscription,
                self.key_id,
                KeyValue::new(self.key_value),
                endpoints,
            )
        }
    }
}

pub async fn run(args: EmulateArgs) -> anyhow::Result<()> {
    let config = args.into_config();
    let subscription = config.subscription_id.clone();
    let handle = Emulator::start(config).await?;
    tracing::info!(
        base_url = %handle.base_url(),
        subscription = %subscription,
        "CDN emulator listening"
    );
    for (node, addr) in handle.edge_addrs().iter().enumerate() {
        tracing::info!(node, %addr, "emulated edge node listening");
    }
    crate::signals::terminated().await?;
    tracing::info!("CDN emulator stopping");
    handle.shutdown().await;
    Ok(())
}
