//! What can go wrong with a CDN call, and what the caller should do about it.
//!
//! The API does not document its status codes, so errors are classified by
//! the `ErrorInfo.Type` in the body, whatever the status. Anything that is not
//! the documented JSON (HTML from a gateway, a truncated body, a timeout, a
//! refused connection) is [`ErrorClass::Transient`]: the outcome is unknown,
//! and because a purge is idempotent the right answer is to send it again.

use std::fmt;
use std::time::Duration;

/// The documented `ErrorInfo.Type` values, plus whatever else the service
/// may send one day (kept verbatim).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    CredentialInvalid,
    ParameterMissing,
    ParameterInvalid,
    MissingAuthorizationHeader,
    InvalidRequestDateHeader,
    MissingRequestDateHeader,
    AuthorizationHeaderExpired,
    InvalidAuthorizationHeader,
    ApiKeyNotFound,
    InvalidApiKey,
    WrongSignature,
    SubscriptionNotFound,
    EndpointDoesNotBelongToSubscription,
    EndpointNotInActiveState,
    EndpointNotFound,
    MaliciousItemPathDetected,
    PermissionDenied,
    RequestThrottled,
    /// A type the documentation does not list, exactly as received.
    Unknown(String),
}

impl ErrorType {
    /// Every documented type, in the documentation's order.
    pub const DOCUMENTED: [ErrorType; 18] = [
        ErrorType::CredentialInvalid,
        ErrorType::ParameterMissing,
        ErrorType::ParameterInvalid,
        ErrorType::MissingAuthorizationHeader,
        ErrorType::InvalidRequestDateHeader,
        ErrorType::MissingRequestDateHeader,
        ErrorType::AuthorizationHeaderExpired,
        ErrorType::InvalidAuthorizationHeader,
        ErrorType::ApiKeyNotFound,
        ErrorType::InvalidApiKey,
        ErrorType::WrongSignature,
        ErrorType::SubscriptionNotFound,
        ErrorType::EndpointDoesNotBelongToSubscription,
        ErrorType::EndpointNotInActiveState,
        ErrorType::EndpointNotFound,
        ErrorType::MaliciousItemPathDetected,
        ErrorType::PermissionDenied,
        ErrorType::RequestThrottled,
    ];

    pub fn parse(name: &str) -> Self {
        Self::DOCUMENTED
            .iter()
            .find(|t| t.as_str() == name)
            .cloned()
            .unwrap_or_else(|| ErrorType::Unknown(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::CredentialInvalid => "CredentialInvalid",
            ErrorType::ParameterMissing => "ParameterMissing",
            ErrorType::ParameterInvalid => "ParameterInvalid",
            ErrorType::MissingAuthorizationHeader => "MissingAuthorizationHeader",
            ErrorType::InvalidRequestDateHeader => "InvalidRequestDateHeader",
            ErrorType::MissingRequestDateHeader => "MissingRequestDateHeader",
            ErrorType::AuthorizationHeaderExpired => "AuthorizationHeaderExpired",
            ErrorType::InvalidAuthorizationHeader => "InvalidAuthorizationHeader",
            ErrorType::ApiKeyNotFound => "ApiKeyNotFound",
            ErrorType::InvalidApiKey => "InvalidApiKey",
            ErrorType::WrongSignature => "WrongSignature",
            ErrorType::SubscriptionNotFound => "SubscriptionNotFound",
            ErrorType::EndpointDoesNotBelongToSubscription => "EndpointDoesNotBelongToSubscription",
            ErrorType::EndpointNotInActiveState => "EndpointNotInActiveState",
            ErrorType::EndpointNotFound => "EndpointNotFound",
            ErrorType::MaliciousItemPathDetected => "MaliciousItemPathDetected",
            ErrorType::PermissionDenied => "PermissionDenied",
            ErrorType::RequestThrottled => "RequestThrottled",
            ErrorType::Unknown(name) => name,
        }
    }

    /// What a sender should do about this type (the reference's table).
    pub fn class(&self) -> ErrorClass {
        use ErrorType::*;
        match self {
            RequestThrottled => ErrorClass::Throttled,
            CredentialInvalid
            | MissingAuthorizationHeader
            | InvalidAuthorizationHeader
            | ApiKeyNotFound
            | InvalidApiKey
            | WrongSignature
            | PermissionDenied
            | SubscriptionNotFound => ErrorClass::Credentials,
            AuthorizationHeaderExpired | InvalidRequestDateHeader | MissingRequestDateHeader => {
                ErrorClass::ClockSkew
            }
            EndpointNotInActiveState => ErrorClass::EndpointInactive,
            EndpointNotFound | EndpointDoesNotBelongToSubscription => {
                ErrorClass::EndpointMisconfigured
            }
            ParameterMissing | ParameterInvalid | MaliciousItemPathDetected => ErrorClass::BadItem,
            // The service's answer to a spent daily quota is not
            // documented; any type that names the quota is read as one
            // (the emulator sends `QuotaExceeded`, configurable).
            Unknown(name) if name.to_ascii_lowercase().contains("quota") => {
                ErrorClass::QuotaExceeded
            }
            Unknown(_) => ErrorClass::Transient,
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a failed call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Back off and slow every sender of the subscription.
    Throttled,
    /// Nothing will succeed until the configuration changes.
    Credentials,
    /// The request date was refused: correct the clock offset and retry.
    ClockSkew,
    /// The endpoint exists but is not active: retry later, slowly.
    EndpointInactive,
    /// The endpoint id is wrong for this subscription: fail its URLs.
    EndpointMisconfigured,
    /// Something in the body was refused: find and fail the offending URLs.
    BadItem,
    /// The subscription's daily quota is spent: the local ledger was wrong.
    /// Wait for the next quota day; never a reason to pause as if the
    /// credentials were bad.
    QuotaExceeded,
    /// Outcome unknown or temporary: retry with back-off.
    Transient,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Credentials => "credentials",
            ErrorClass::ClockSkew => "clock_skew",
            ErrorClass::EndpointInactive => "endpoint_inactive",
            ErrorClass::EndpointMisconfigured => "endpoint_misconfigured",
            ErrorClass::BadItem => "bad_item",
            ErrorClass::QuotaExceeded => "quota_exceeded",
            ErrorClass::Transient => "transient",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the transport failed, for the transient class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    Timeout,
    Connect,
    /// The connection broke mid-request or mid-response.
    Other,
}

/// The snippet of a `202` whose body reads `"Succeeded": false` without an
/// `ErrorInfo`: readable, and not an acceptance.
pub const NOT_SUCCEEDED_202: &str = "202 with \"Succeeded\": false and no ErrorInfo";

/// A failed CDN call. Its text never contains the key value: nothing here
/// ever sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CdnError {
    /// The service answered with the documented error body.
    #[error("{error_type}: {message} (HTTP {status}{})", correlation_suffix(.correlation_id))]
    Api {
        status: u16,
        error_type: ErrorType,
        message: String,
        correlation_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// The service answered, but not with the documented JSON.
    #[error("unexpected response (HTTP {status}): {snippet}{}", correlation_suffix(.correlation_id))]
    MalformedResponse {
        status: u16,
        snippet: String,
        correlation_id: Option<String>,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, timed out or dropped.
    #[error("{kind:?} error talking to the CDN API: {message}")]
    Transport {
        kind: TransportFailure,
        message: String,
    },
}

fn correlation_suffix(id: &Option<String>) -> String {
    id.as_deref()
        .map(|id| format!(", correlation id {id}"))
        .unwrap_or_default()
}

impl CdnError {
    pub fn class(&self) -> ErrorClass {
        match self {
            CdnError::Api { error_type, .. } => error_type.class(),
            CdnError::MalformedResponse { .. } | CdnError::Transport { .. } => {
                ErrorClass::Transient
            }
        }
    }

    /// True when the CDN's answer proves it did not take the call: an
    /// error body, or a connection refused before anything was sent. A
    /// timeout, a broken connection or an answer we cannot read leave it
    /// unknown.
    pub fn proves_not_taken(&self) -> bool {
        matches!(
            self,
            CdnError::Api { .. }
                | CdnError::Transport {
                    kind: TransportFailure::Connect,
                    ..
                }
        )
    }

    /// The documented or verbatim `ErrorInfo.Type`, when the service sent one.
    pub fn error_type(&self) -> Option<&ErrorType> {
        match self {
            CdnError::Api { error_type, .. } => Some(error_type),
            _ => None,
        }
    }

    /// A `202 Accepted` whose body could not be read (cut short, not JSON):
    /// the documentation says `202` means the call was taken, so it was,
    /// and counted; only its `TaskTrackId` is lost. Not a `202` that says
    /// `"Succeeded": false` ([`NOT_SUCCEEDED_202`]).
    pub fn accepted_but_unreadable(&self) -> bool {
        matches!(
            self,
            CdnError::MalformedResponse { status: 202, snippet, .. } if snippet != NOT_SUCCEEDED_202
        )
    }

    /// `ErrorInfo.Message`, when the service sent the documented body: the
    /// quota ledger reads the refused kind and the CDN's count from it.
    pub fn api_message(&self) -> Option<&str> {
        match self {
            CdnError::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The `Retry-After` the service asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CdnError::Api { retry_after, .. } | CdnError::MalformedResponse { retry_after, .. } => {
                *retry_after
            }
            CdnError::Transport { .. } => None,
        }
    }

    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            CdnError::Api { correlation_id, .. }
            | CdnError::MalformedResponse { correlation_id, .. } => correlation_id.as_deref(),
            CdnError::Transport { .. } => None,
        }
    }

    /// A short, stable word for logs and metrics: the error type, or the
    /// kind of transport failure.
    pub fn outcome_label(&self) -> String {
        match self {
            CdnError::Api { error_type, .. } => error_type.as_str().to_owned(),
            CdnError::MalformedResponse { .. } => "MalformedResponse".to_owned(),
            CdnError::Transport { kind, .. } => format!("{kind:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's "Errors" table (`azure-china-cdn-api.md`), row by
    /// row, written out from the document rather than from the code: what
    /// each documented type means to a sender. An unknown type is kept
    /// verbatim and is transient, unless it names the quota (the service's
    /// answer to a spent day is not documented).
    #[test]
    fn every_documented_type_is_classified_as_the_reference_says() {
        let table: [(&str, ErrorClass); 21] = [
            ("RequestThrottled", ErrorClass::Throttled),
            ("CredentialInvalid", ErrorClass::Credentials),
            ("MissingAuthorizationHeader", ErrorClass::Credentials),
            ("InvalidAuthorizationHeader", ErrorClass::Credentials),
            ("ApiKeyNotFound", ErrorClass::Credentials),
            ("InvalidApiKey", ErrorClass::Credentials),
            ("WrongSignature", ErrorClass::Credentials),
            ("PermissionDenied", ErrorClass::Credentials),
            ("SubscriptionNotFound", ErrorClass::Credentials),
            ("AuthorizationHeaderExpired", ErrorClass::ClockSkew),
            ("InvalidRequestDateHeader", ErrorClass::ClockSkew),
            ("MissingRequestDateHeader", ErrorClass::ClockSkew),
            ("EndpointNotInActiveState", ErrorClass::EndpointInactive),
            ("EndpointNotFound", ErrorClass::EndpointMisconfigured),
            (
                "EndpointDoesNotBelongToSubscription",
                ErrorClass::EndpointMisconfigured,
            ),
            ("ParameterMissing", ErrorClass::BadItem),
            ("ParameterInvalid", ErrorClass::BadItem),
            ("MaliciousItemPathDetected", ErrorClass::BadItem),
            ("QuotaExceeded", ErrorClass::QuotaExceeded),
            ("DailyQuotaLimitReached", ErrorClass::QuotaExceeded),
            ("SomethingNew", ErrorClass::Transient),
        ];
        for (name, class) in table {
            let parsed = ErrorType::parse(name);
            assert_eq!(parsed.class(), class, "{name}");
            assert_eq!(parsed.as_str(), name, "kept verbatim");
        }
        // Every documented type has its row.
        for documented in ErrorType::DOCUMENTED {
            assert!(
                table.iter().any(|(name, _)| *name == documented.as_str()),
                "{documented} has no row"
            );
        }
    }
}
