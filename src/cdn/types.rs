//! purgeq's own view of CDN answers, converted from the wire types once.

use super::wire;

/// Any successful answer, with the `X-Correlation-Id` operators quote to
/// support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Called<T> {
    pub value: T,
    pub correlation_id: Option<String>,
}

/// A purge the service accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeAccepted {
    pub task_track_id: String,
    /// `NotSet`, `Processing`, `Succeeded` or `Failed` as sent.
    pub task_status: String,
}

/// Where one URL of a purge stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlState {
    /// A preload not started yet (preloads only).
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// A status the documentation does not list, kept verbatim; treated as
    /// still running.
    Other(String),
}

impl UrlState {
    pub fn parse(status: &str) -> Self {
        match status {
            "Waiting" => UrlState::Waiting,
            "Running" => UrlState::Running,
            "Succeed" => UrlState::Succeeded,
            "Failed" => UrlState::Failed,
            other => UrlState::Other(other.to_owned()),
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, UrlState::Succeeded | UrlState::Failed)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlProgress {
    pub url: String,
    pub state: UrlState,
}

/// The answer to a progress query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeProgress {
    pub files: Vec<UrlProgress>,
    pub directories: Vec<UrlProgress>,
}

impl PurgeProgress {
    /// True when every URL has a final state.
    pub fn is_final(&self) -> bool {
        self.files
            .iter()
            .chain(&self.directories)
            .all(|u| u.state.is_final())
    }
}

/// A preload's progress reads as a purge's with files only.
impl From<wire::PreloadProgressBody> for PurgeProgress {
    fn from(body: wire::PreloadProgressBody) -> Self {
        PurgeProgress::from(wire::PurgeProgressBody {
            files: body.files,
            directories: Vec::new(),
        })
    }
}

impl From<wire::PurgeProgressBody> for PurgeProgress {
    fn from(body: wire::PurgeProgressBody) -> Self {
        let convert = |list: Vec<wire::UrlStatusBody>| {
            list.into_iter()
                .map(|u| UrlProgress {
                    state: UrlState::parse(&u.status),
                    url: u.url,
                })
                .collect()
        };
        PurgeProgress {
            files: convert(body.files),
            directories: convert(body.directories),
        }
    }
}

/// One endpoint of the subscription, as the list-endpoints call reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    /// The host name purge URLs must carry for this endpoint.
    pub custom_domain: String,
    pub host: String,
    pub enabled: bool,
    pub lifetime_status: String,
}

impl From<wire::EndpointBody> for Endpoint {
    fn from(body: wire::EndpointBody) -> Self {
        Endpoint {
            id: body.endpoint_id,
            custom_domain: body.setting.custom_domain,
            host: body.setting.host,
            enabled: body.status.enabled.eq_ignore_ascii_case("true"),
            lifetime_status: body.status.lifetime_status,
        }
    }
}
