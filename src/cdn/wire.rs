//! JSON bodies exactly as the API spells them (PascalCase).
//!
//! These types are the wire format and nothing else: the client converts them
//! into purgeq's own snake_case types in [`super::types`], and the emulator
//! serializes the very same structs, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

/// The API version every path carries (`?apiVersion=1.0`).
pub const API_VERSION: &str = "1.0";

/// Body of `POST …/purges`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PurgeBody {
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub directories: Vec<String>,
}

/// Body of `POST …/preloads`: files only, and `Files` is required (the
/// official description's `PreloadParameters`). `None` when a body
/// lacks it, so a reader can say which parameter is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreloadBody {
    #[serde(rename = "Files", default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

/// Body of `GET …/preloads/{preloadId}` (HTTP 200): `PreloadResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreloadProgressBody {
    #[serde(default)]
    pub files: Vec<UrlStatusBody>,
}

/// Body of `GET …/operations/{operationId}` (HTTP 200): `Operation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperationBody {
    pub id: String,
    /// `Purge` or `Preload`.
    #[serde(rename = "Type")]
    pub operation_type: String,
    /// `NotSet`, `Processing`, `Succeed` or `Failed` (the description's
    /// enum; the documentation page's example spells `Succeeded`).
    pub status: String,
    pub message: String,
    /// RFC 3339 date-times.
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    pub endpoint_id: String,
    pub subscription_id: String,
}

/// Success body of `POST …/purges` (HTTP 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PurgeAcceptedBody {
    pub succeeded: bool,
    pub is_async: bool,
    pub async_info: AsyncInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsyncInfo {
    pub task_track_id: String,
    /// `NotSet`, `Processing`, `Succeeded` or `Failed`; kept as text because
    /// the client only records it.
    pub task_status: String,
}

/// Body of `GET …/purges/{TaskTrackId}` (HTTP 200).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PurgeProgressBody {
    #[serde(default)]
    pub files: Vec<UrlStatusBody>,
    #[serde(default)]
    pub directories: Vec<UrlStatusBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UrlStatusBody {
    pub url: String,
    /// `Running`, `Succeed` or `Failed` (sic: `Succeed`); a preload may
    /// also be `Waiting`.
    pub status: String,
}

/// Every error answer: `{"Succeeded": false, "ErrorInfo": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    pub succeeded: bool,
    pub error_info: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorInfo {
    #[serde(rename = "Type")]
    pub error_type: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            error_info: ErrorInfo {
                error_type: error_type.into(),
                message: message.into(),
            },
        }
    }
}

/// One element of `GET /subscriptions/{sid}/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointBody {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Setting")]
    pub setting: EndpointSettingBody,
    #[serde(rename = "Status")]
    pub status: EndpointStatusBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettingBody {
    #[serde(default)]
    pub custom_domain: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub origin: OriginBody,
    #[serde(default)]
    pub service_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OriginBody {
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStatusBody {
    /// `"true"` or `"false"`: the API sends a string, not a boolean.
    #[serde(default)]
    pub enabled: String,
    #[serde(default)]
    pub lifetime_status: String,
}

/// What is wrong with a request's `apiVersion`, if anything: the error
/// type and message the service answers. Every path carries
/// `?apiVersion=1.0`; the emulator and the daemon's CDN-shaped routes
/// check it the same way.
pub fn api_version_problem(query: Option<&str>) -> Option<(&'static str, String)> {
    let version = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "apiVersion")
            .map(|(_, v)| v.into_owned())
    });
    match version.as_deref() {
        None => Some((
            "ParameterMissing",
            "Parameter 'apiVersion' is missing.".to_owned(),
        )),
        Some(API_VERSION) => None,
        Some(other) => Some((
            "ParameterInvalid",
            format!("apiVersion {other:?} is not supported."),
        )),
    }
}

/// Body of `GET …/endpoints/{eid}/cacherules` (HTTP 200) and of its `PUT`:
/// the Swagger's `CachePolicy`. Booleans and numbers travel as JSON
/// strings there (`"true"`, `"300"`); [`crate::cdn::cache_rules`] reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CachePolicyBody {
    #[serde(default)]
    pub rules: Vec<CacheRuleBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_query_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_cookie: Option<String>,
}

/// One `CacheRule`: `Type` is `Suffix`, `Dir` or `FullUri`; `TTL` seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRuleBody {
    #[serde(rename = "Items", default)]
    pub items: Vec<String>,
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    #[serde(rename = "Type", default)]
    pub rule_type: String,
}

/// An `APIResponse` that says only that the call was taken (the `202` of
/// `PUT …/cacherules`: the change is synchronous, no task to follow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiResponseBody {
    pub succeeded: bool,
}
