//! What the emulator serves (fixed at start) and how it misbehaves
//! (knobs, changeable while it runs).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cdn::KeyValue;

/// One endpoint the emulator knows.
#[derive(Debug, Clone)]
pub struct EmulatedEndpoint {
    pub id: String,
    /// Host names purge URLs may carry for this endpoint (case-insensitive);
    /// `*.example.com` stands for every sub-domain.
    pub hosts: Vec<String>,
    /// `None`: belongs to the emulated subscription. `Some(other)`: exists,
    /// but under another subscription, so calls for it are refused with
    /// `EndpointDoesNotBelongToSubscription`.
    pub owner_subscription: Option<String>,
}

impl EmulatedEndpoint {
    pub fn new(id: impl Into<String>, hosts: &[&str]) -> Self {
        Self {
            id: id.into(),
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            owner_subscription: None,
        }
    }

    /// True when a purge URL for `host` belongs to this endpoint.
    pub fn serves(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|pattern| match pattern.strip_prefix('*') {
                Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
                None => *pattern == host,
            })
    }

    /// Parses the command line's `EID=host1,host2`.
    pub fn parse_spec(spec: &str) -> Result<Self, String> {
        let (id, hosts) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected EID=host1,host2"))?;
        let hosts: Vec<String> = hosts
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if id.trim().is_empty() || hosts.is_empty() {
            return Err(format!("{spec:?}: expected EID=host1,host2"));
        }
        Ok(Self {
            id: id.trim().to_owned(),
            hosts,
            owner_subscription: None,
        })
    }
}

/// The fixed part of the emulator's setup.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub subscription_id: String,
    pub key_id: String,
    pub key_value: KeyValue,
    pub endpoints: Vec<EmulatedEndpoint>,
    /// Largest accepted difference between `x-azurecdn-request-date` and the
    /// emulator's clock before `AuthorizationHeaderExpired`.
    pub max_clock_skew: Duration,
    pub knobs: Knobs,
    /// Where to keep accepted tasks and the day's quota count across
    /// restarts (the built-in emulator keeps it beside the database).
    /// `None`: in memory only.
    pub state_file: Option<std::path::PathBuf>,
    /// The emulated edge: nodes serving the endpoints' hosts from an
    /// origin, purged by what the API accepts. `None`: no edge.
    pub edge: Option<super::edge::EdgeConfig>,
}

impl EmulatorConfig {
    /// A config on a random loopback port with the given identity and
    /// default knobs.
    pub fn new(
        subscription_id: impl Into<String>,
        key_id: impl Into<String>,
        key_value: KeyValue,
        endpoints: Vec<EmulatedEndpoint>,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            subscription_id: subscription_id.into(),
            key_id: key_id.into(),
            key_value,
            endpoints,
            max_clock_skew: Duration::from_secs(15 * 60),
            knobs: Knobs::default(),
            state_file: None,
            edge: None,
        }
    }
}

/// Behaviour that tests and operators may change while the emulator runs
/// (`PATCH /_emulator/knobs` with any subset of these fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Token-bucket refill rate for API calls (all kinds together).
    pub requests_per_second: f64,
    /// Token-bucket size: calls allowed back to back.
    pub burst: u32,
    /// Daily quota of file URLs per subscription.
    pub files_per_day: u64,
    /// Daily quota of directory URLs per subscription.
    pub directories_per_day: u64,
    /// Daily quota of preload URLs per subscription. The documentation
    /// names none: a guess, kept configurable (as the daemon's).
    pub preloads_per_day: u64,
    /// Offset from UTC, in minutes, at which the quota day starts
    /// (480 = China Standard Time).
    pub quota_utc_offset_minutes: i16,
    /// `ErrorInfo.Type` sent when a quota is exceeded. The documentation
    /// names none, so this is a guess, kept configurable.
    pub quota_error_type: String,
    /// How long a purge reports `Running` before its final state.
    #[serde(with = "humantime_serde")]
    pub completion_delay: Duration,
    /// Fraction (0..=1) of URLs whose purge ends `Failed`.
    pub fail_fraction: f64,
    /// URLs containing this text always end `Failed` (deterministic tests).
    pub fail_urls_containing: Option<String>,
    /// Preloaded URLs containing this text always end `Failed` (their
    /// purge is unaffected).
    pub preload_fail_urls_containing: Option<String>,
    /// Endpoint ids currently not active (`EndpointNotInActiveState`).
    pub inactive_endpoints: Vec<String>,
    /// When set, every authenticated API call is refused with this
    /// `ErrorInfo.Type` (to exercise e.g. `PermissionDenied`).
    pub force_error_type: Option<String>,
    /// Probability of a 500 with an HTML body.
    pub error_500_rate: f64,
    /// Probability of a 503 with an HTML body and `Retry-After: 1`.
    pub error_503_rate: f64,
    /// Probability of a response held for `slow_delay`.
    pub slow_rate: f64,
    #[serde(with = "humantime_serde")]
    pub slow_delay: Duration,
    /// Probability that the connection is closed without an answer.
    pub drop_rate: f64,
    /// Probability that the call is processed but the body is cut short
    /// (the caller cannot know whether it was accepted).
    pub malformed_rate: f64,
    /// When set, the n-th API call's fault is drawn from this seed and n
    /// alone, so a test that asserts on the faults cannot fail by chance
    /// (CI must be deterministic); unset, faults are random.
    pub fault_seed: Option<u64>,
    /// How long an accepted purge takes to reach each node of the
    /// emulated edge (when it has one): until then, the node serves its
    /// old copy.
    #[serde(with = "humantime_serde")]
    pub edge_propagation_delay: Duration,
    /// An edge node (from 0) that never receives purges: the fault edge
    /// verification catches. With `edge_drop_urls_containing`, only the
    /// purges of URLs containing that text.
    pub edge_drop_node: Option<usize>,
    pub edge_drop_urls_containing: Option<String>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            requests_per_second: 10.0,
            burst: 20,
            files_per_day: 2_000,
            directories_per_day: 500,
            preloads_per_day: 1_000,
            quota_utc_offset_minutes: 8 * 60,
            quota_error_type: "QuotaExceeded".to_owned(),
            completion_delay: Duration::from_secs(2),
            fail_fraction: 0.0,
            fail_urls_containing: None,
            preload_fail_urls_containing: None,
            inactive_endpoints: Vec::new(),
            force_error_type: None,
            error_500_rate: 0.0,
            error_503_rate: 0.0,
            slow_rate: 0.0,
            slow_delay: Duration::from_secs(120),
            drop_rate: 0.0,
            malformed_rate: 0.0,
            fault_seed: None,
            edge_propagation_delay: Duration::from_secs(1),
            edge_drop_node: None,
            edge_drop_urls_containing: None,
        }
    }
}

impl Knobs {
    /// Refuses values that make no sense, naming the knob.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("fail_fraction", self.fail_fraction),
            ("error_500_rate", self.error_500_rate),
            ("error_503_rate", self.error_503_rate),
            ("slow_rate", self.slow_rate),
            ("drop_rate", self.drop_rate),
            ("malformed_rate", self.malformed_rate),
        ];
        for (name, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name}: {value} is not between 0 and 1"));
            }
        }
        let faults = self.error_500_rate
            + self.error_503_rate
            + self.slow_rate
            + self.drop_rate
            + self.malformed_rate;
        if faults > 1.0 {
            return Err(format!("the fault rates add up to {faults}, more than 1"));
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return Err("requests_per_second: must be a positive number".to_owned());
        }
        if self.burst == 0 {
            return Err("burst: must be at least 1".to_owned());
        }
        if self.quota_utc_offset_minutes.abs() > 14 * 60 {
            return Err("quota_utc_offset_minutes: must be within ±840".to_owned());
        }
        Ok(())
    }

    /// Applies a partial update given as JSON, keeping every field not named.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Knobs, String> {
        let serde_json::Value::Object(changes) = patch else {
            return Err("the knobs patch must be a JSON object".to_owned());
        };
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let serde_json::Value::Object(fields) = &mut current {
            for (name, value) in changes {
                if !fields.contains_key(name) {
                    return Err(format!("unknown knob {name:?}"));
                }
                fields.insert(name.clone(), value.clone());
            }
        }
        let knobs: Knobs = serde_json::from_value(current).map_err(|e| e.to_string())?;
        knobs.validate()?;
        Ok(knobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_keep_unnamed_knobs() {
        let knobs = Knobs::default();
        let patched = knobs
            .patched(&serde_json::json!({"error_500_rate": 0.5, "completion_delay": "10ms"}))
            .expect("valid patch");
        assert_eq!(patched.error_500_rate, 0.5);
        assert_eq!(patched.completion_delay, Duration::from_millis(10));
        assert_eq!(patched.burst, knobs.burst);
    }

    #[test]
    fn bad_patches_name_the_knob() {
        let knobs = Knobs::default();
        let err = knobs.patched(&serde_json::json!({"nope": 1})).unwrap_err();
        assert!(err.contains("nope"));
        let err = knobs
            .patched(&serde_json::json!({"drop_rate": 2.0}))
            .unwrap_err();
        assert!(err.contains("drop_rate"));
    }

    #[test]
    fn wildcard_hosts_match_sub_domains_only() {
        let e = EmulatedEndpoint::new("e", &["*.example.com", "exact.org"]);
        assert!(e.serves("www.example.com"));
        assert!(e.serves("A.B.Example.com"));
        assert!(!e.serves("example.com"));
        assert!(!e.serves("badexample.com"));
        assert!(e.serves("exact.org"));
        assert!(!e.serves("www.exact.org"));
    }

    #[test]
    fn endpoint_specs_parse() {
        let e = EmulatedEndpoint::parse_spec("ep1=A.example.com, b.example.com").expect("spec");
        assert_eq!(e.id, "ep1");
        assert_eq!(e.hosts, ["a.example.com", "b.example.com"]);
        assert!(EmulatedEndpoint::parse_spec("ep1").is_err());
        assert!(EmulatedEndpoint::parse_spec("ep1=").is_err());
    }
}
