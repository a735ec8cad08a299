//! The CDN client against the emulator, over real HTTP on loopback.
//!
//! Each path the daemon will meet is driven here: success, progress,
//! throttling, quotas, bad credentials, clock skew, bad endpoints, bad URLs
//! and every injected fault; and each check of the emulator is proven with a
//! deliberately wrong request.

mod common;

use std::time::Duration;

use purgeq::cdn::emulator::{EmulatedEndpoint, Emulator, EmulatorConfig, EmulatorHandle, Knobs};
use purgeq::cdn::{
    CdnClient, CdnError, ClientSettings, Credentials, ErrorClass, ErrorType, KeyId, KeyValue,
    TransportFailure, UrlState, signing,
};
use purgeq::clock::ShiftedClock;

const SUBSCRIPTION: &str = "5dd0413d-a2f9-442a-b836-128d87753fa9";
const KEY_ID: &str = "test-key";
const KEY_VALUE: &str = "s3cr3t-value-never-shown";
const EP_A: &str = "46fecf3c-e874-49aa-891d-0d4dc93213e0";
const EP_B: &str = "7b5d1a3e-0000-4000-8000-00000000000b";
const EP_FOREIGN: &str = "ffffffff-0000-4000-8000-0000000000ff";

async fn emulator_with(knobs: Knobs) -> EmulatorHandle {
    let mut foreign = EmulatedEndpoint::new(EP_FOREIGN, &["x.example.com"]);
    foreign.owner_subscription = Some("someone-else".into());
    let mut config = EmulatorConfig::new(
        SUBSCRIPTION,
        KEY_ID,
        KeyValue::new(KEY_VALUE),
        vec![
            EmulatedEndpoint::new(EP_A, &["a.example.com", "www.a.example.com"]),
            EmulatedEndpoint::new(EP_B, &["b.example.com"]),
            foreign,
        ],
    );
    config.knobs = Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        completion_delay: Duration::from_millis(200),
        ..knobs
    };
    Emulator::start(config).await.expect("emulator starts")
}

async fn emulator() -> EmulatorHandle {
    emulator_with(Knobs::default()).await
}

fn settings(emulator: &EmulatorHandle) -> ClientSettings {
    let mut settings = ClientSettings::new(
        emulator.base_url(),
        SUBSCRIPTION,
        Credentials {
            key_id: KeyId::new(KEY_ID),
            key_value: KeyValue::new(KEY_VALUE),
        },
    );
    settings.request_timeout = Duration::from_secs(5);
    settings
}

fn client(emulator: &EmulatorHandle) -> CdnClient {
    CdnClient::new(settings(emulator)).expect("client")
}

fn urls(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn api_error(result: Result<impl std::fmt::Debug, CdnError>) -> CdnError {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(error) => error,
    }
}

fn error_type(error: &CdnError) -> &str {
    error
        .error_type()
        .map(ErrorType::as_str)
        .unwrap_or("(none)")
}

#[tokio::test]
async fn accepted_purge_runs_then_succeeds() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let files = urls(&["http://a.example.com/pictures/city.png"]);
    let dirs = urls(&["http://www.a.example.com/pictures/"]);
    let accepted = client
        .add_purge(EP_A, &files, &dirs)
        .await
        .expect("accepted");
    assert_eq!(accepted.value.task_status, "Processing");
    assert!(accepted.correlation_id.is_some());

    let journal = emulator.journal();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].task_track_id, accepted.value.task_track_id);
    assert_eq!(journal[0].files, files);
    assert_eq!(journal[0].directories, dirs);
    assert_eq!(
        Some(&journal[0].correlation_id),
        accepted.correlation_id.as_ref()
    );

    let progress = client
        .query_purge(EP_A, &accepted.value.task_track_id)
        .await
        .expect("progress");
    assert!(progress.correlation_id.is_some());
    assert_eq!(progress.value.files[0].state, UrlState::Running);
    assert!(!progress.value.is_final());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = client
        .query_purge(EP_A, &accepted.value.task_track_id)
        .await
        .expect("progress");
    assert_eq!(done.value.files[0].url, files[0]);
    assert_eq!(done.value.files[0].state, UrlState::Succeeded);
    assert_eq!(done.value.directories[0].state, UrlState::Succeeded);
    assert!(done.value.is_final());

    let stats = emulator.stats();
    assert_eq!(stats.get("accepted"), Some(&1));
    assert_eq!(stats.get("progress"), Some(&2));
}

#[tokio::test]
async fn configured_failures_end_failed() {
    let emulator = emulator_with(Knobs {
        fail_urls_containing: Some("broken".into()),
        ..Knobs::default()
    })
    .await;
    let client = client(&emulator);
    let files = urls(&[
        "http://a.example.com/ok.png",
        "http://a.example.com/broken.png",
    ]);
    let accepted = client.add_purge(EP_A, &files, &[]).await.expect("accepted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = client
        .query_purge(EP_A, &accepted.value.task_track_id)
        .await
        .expect("progress");
    assert_eq!(done.value.files[0].state, UrlState::Succeeded);
    assert_eq!(done.value.files[1].state, UrlState::Failed);

    let mut knobs = emulator.knobs();
    knobs.fail_fraction = 1.0;
    emulator.set_knobs(knobs).expect("knobs");
    let accepted = client
        .add_purge(EP_A, &files[..1], &[])
        .await
        .expect("accepted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = client
        .query_purge(EP_A, &accepted.value.task_track_id)
        .await
        .expect("progress");
    assert_eq!(done.value.files[0].state, UrlState::Failed);
}

#[tokio::test]
async fn unknown_task_and_wrong_endpoint_are_refused() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let accepted = client
        .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
        .await
        .expect("accepted");
    let error = api_error(
        client
            .query_purge(EP_B, &accepted.value.task_track_id)
            .await,
    );
    assert_eq!(error_type(&error), "ParameterInvalid");
    let error = api_error(client.query_purge(EP_A, "no-such-task").await);
    assert_eq!(error_type(&error), "ParameterInvalid");
}

#[tokio::test]
async fn lists_endpoints_of_the_subscription() {
    let emulator = emulator().await;
    let listed = client(&emulator).list_endpoints().await.expect("list");
    // One entry per custom domain, as the API shapes an endpoint: every
    // host of EP_A is listed (only the first was: issue 12, item 19).
    let entries: Vec<(&str, &str)> = listed
        .value
        .iter()
        .map(|e| (e.id.as_str(), e.custom_domain.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            (EP_A, "a.example.com"),
            (EP_A, "www.a.example.com"),
            (EP_B, "b.example.com")
        ],
        "foreign endpoints are not listed"
    );
    assert!(listed.value[0].enabled);
    assert!(listed.correlation_id.is_some());
}

#[tokio::test]
async fn throttles_beyond_the_token_bucket() {
    let emulator = emulator().await;
    let mut knobs = emulator.knobs();
    knobs.requests_per_second = 0.5;
    knobs.burst = 2;
    emulator.set_knobs(knobs).expect("knobs");
    let client = client(&emulator);
    let files = urls(&["http://a.example.com/x"]);
    client.add_purge(EP_A, &files, &[]).await.expect("first");
    client.add_purge(EP_A, &files, &[]).await.expect("second");
    let error = api_error(client.add_purge(EP_A, &files, &[]).await);
    assert_eq!(error.class(), ErrorClass::Throttled);
    assert_eq!(error_type(&error), "RequestThrottled");
    let retry_after = error.retry_after().expect("Retry-After surfaced");
    assert!(retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(2));
    assert!(matches!(error, CdnError::Api { status: 429, .. }));
    assert_eq!(emulator.journal().len(), 2);
    assert_eq!(emulator.stats().get("RequestThrottled"), Some(&1));
}

#[tokio::test]
async fn daily_quotas_refuse_once_exceeded() {
    let emulator = emulator_with(Knobs {
        files_per_day: 3,
        directories_per_day: 1,
        ..Knobs::default()
    })
    .await;
    let client = client(&emulator);
    let two = urls(&["http://a.example.com/1", "http://a.example.com/2"]);
    client
        .add_purge(EP_A, &two, &[])
        .await
        .expect("within quota");
    let error = api_error(
        client
            .add_purge(
                EP_B,
                &urls(&["http://b.example.com/1", "http://b.example.com/2"]),
                &[],
            )
            .await,
    );
    assert_eq!(error_type(&error), "QuotaExceeded");
    assert_eq!(
        error.class(),
        ErrorClass::QuotaExceeded,
        "an undocumented type that names the quota is read as a spent day"
    );
    client
        .add_purge(
            EP_B,
            &urls(&["http://b.example.com/1"]),
            &urls(&["http://b.example.com/d/"]),
        )
        .await
        .expect("exactly fills the quota");
    let error = api_error(
        client
            .add_purge(EP_A, &[], &urls(&["http://a.example.com/d/"]))
            .await,
    );
    assert!(error.to_string().contains("directory quota"), "{error}");
    assert_eq!(emulator.journal().len(), 2);
}

#[tokio::test]
async fn wrong_credentials_are_refused_and_never_leak() {
    let emulator = emulator().await;
    let mut wrong_value = settings(&emulator);
    wrong_value.credentials.key_value = KeyValue::new("the-wrong-secret");
    let client = CdnClient::new(wrong_value).expect("client");
    let error = api_error(
        client
            .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
            .await,
    );
    assert_eq!(error_type(&error), "WrongSignature");
    assert_eq!(error.class(), ErrorClass::Credentials);
    for text in [
        error.to_string(),
        format!("{error:?}"),
        format!("{client:?}"),
    ] {
        assert!(!text.contains("the-wrong-secret"), "secret leaked: {text}");
        assert!(!text.contains(KEY_VALUE), "secret leaked: {text}");
    }

    let mut wrong_id = settings(&emulator);
    wrong_id.credentials.key_id = KeyId::new("nobody");
    let error = api_error(
        CdnClient::new(wrong_id)
            .expect("client")
            .list_endpoints()
            .await,
    );
    assert_eq!(error_type(&error), "ApiKeyNotFound");

    let mut wrong_subscription = settings(&emulator);
    wrong_subscription.subscription_id = "00000000-0000-0000-0000-000000000000".into();
    let error = api_error(
        CdnClient::new(wrong_subscription)
            .expect("client")
            .list_endpoints()
            .await,
    );
    assert_eq!(error_type(&error), "SubscriptionNotFound");
    assert_eq!(error.class(), ErrorClass::Credentials);
    assert!(emulator.journal().is_empty());
}

#[tokio::test]
async fn clock_skew_is_corrected_from_the_date_header_and_retried_once() {
    let emulator = emulator().await;
    let clock = ShiftedClock::new(time::Duration::hours(-1));
    let client = CdnClient::with_clock(settings(&emulator), clock).expect("client");
    let accepted = client
        .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
        .await
        .expect("accepted after the correction");
    assert!(!accepted.value.task_track_id.is_empty());
    let offset = client.clock_offset();
    assert!(
        (offset - time::Duration::hours(1)).abs() < time::Duration::seconds(3),
        "offset {offset}"
    );
    let stats = emulator.stats();
    assert_eq!(stats.get("AuthorizationHeaderExpired"), Some(&1));
    assert_eq!(stats.get("accepted"), Some(&1));

    // Later calls use the learned offset straight away.
    client.list_endpoints().await.expect("list");
    assert_eq!(emulator.stats().get("AuthorizationHeaderExpired"), Some(&1));
}

#[tokio::test]
async fn endpoint_problems_have_their_own_types() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let files = urls(&["http://a.example.com/x"]);

    let error = api_error(client.add_purge("no-such-endpoint", &files, &[]).await);
    assert_eq!(error_type(&error), "EndpointNotFound");
    assert_eq!(error.class(), ErrorClass::EndpointMisconfigured);

    let error = api_error(
        client
            .add_purge(EP_FOREIGN, &urls(&["http://x.example.com/x"]), &[])
            .await,
    );
    assert_eq!(error_type(&error), "EndpointDoesNotBelongToSubscription");
    assert_eq!(error.class(), ErrorClass::EndpointMisconfigured);

    // Switched off through the admin route, as an operator would.
    let admin = reqwest::Client::new();
    let knobs_url = emulator.base_url().join("/_emulator/knobs").expect("url");
    let response = admin
        .patch(knobs_url.clone())
        .json(&serde_json::json!({ "inactive_endpoints": [EP_A] }))
        .send()
        .await
        .expect("admin");
    assert_eq!(response.status(), 200);
    let error = api_error(client.add_purge(EP_A, &files, &[]).await);
    assert_eq!(error_type(&error), "EndpointNotInActiveState");
    assert_eq!(error.class(), ErrorClass::EndpointInactive);
    let listed = client.list_endpoints().await.expect("list");
    assert!(!listed.value[0].enabled);

    let response = admin
        .patch(knobs_url)
        .json(&serde_json::json!({ "no_such_knob": 1 }))
        .send()
        .await
        .expect("admin");
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .expect("body")
            .contains("no_such_knob")
    );
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_documented_types() {
    let emulator = emulator().await;
    let client = client(&emulator);
    let cases: [(&[&str], &[&str], &str, &str); 6] = [
        (
            &["/relative/path.png"],
            &[],
            "ParameterInvalid",
            "not an absolute URL",
        ),
        (
            &["ftp://a.example.com/x"],
            &[],
            "ParameterInvalid",
            "scheme",
        ),
        (
            &["http://elsewhere.example.com/x"],
            &[],
            "ParameterInvalid",
            "not a domain",
        ),
        (
            &[],
            &["http://a.example.com/dir"],
            "ParameterInvalid",
            "must end with '/'",
        ),
        (
            &["http://a.example.com/a/../etc/passwd"],
            &[],
            "MaliciousItemPathDetected",
            "'..'",
        ),
        (&[], &[], "ParameterMissing", "missing"),
    ];
    for (files, dirs, expected_type, expected_text) in cases {
        let error = api_error(client.add_purge(EP_A, &urls(files), &urls(dirs)).await);
        assert_eq!(error_type(&error), expected_type, "{files:?} {dirs:?}");
        assert_eq!(error.class(), ErrorClass::BadItem);
        assert!(error.to_string().contains(expected_text), "{error}");
    }
    // The message names the offending entry.
    let error = api_error(
        client
            .add_purge(
                EP_A,
                &urls(&["http://a.example.com/ok", "http://evil.example.com/x"]),
                &[],
            )
            .await,
    );
    assert!(error.to_string().contains("Files[1]"), "{error}");
    assert!(emulator.journal().is_empty());
}

#[tokio::test]
async fn forced_errors_exercise_any_documented_type() {
    let emulator = emulator_with(Knobs {
        force_error_type: Some("PermissionDenied".into()),
        ..Knobs::default()
    })
    .await;
    let error = api_error(client(&emulator).list_endpoints().await);
    assert_eq!(error_type(&error), "PermissionDenied");
    assert_eq!(error.class(), ErrorClass::Credentials);
}

#[tokio::test]
async fn server_errors_are_transient_html() {
    let emulator = emulator_with(Knobs {
        error_500_rate: 1.0,
        ..Knobs::default()
    })
    .await;
    let client = client(&emulator);
    let error = api_error(
        client
            .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
            .await,
    );
    assert!(
        matches!(error, CdnError::MalformedResponse { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(error.correlation_id().is_some());

    let mut knobs = emulator.knobs();
    knobs.error_500_rate = 0.0;
    knobs.error_503_rate = 1.0;
    emulator.set_knobs(knobs).expect("knobs");
    let error = api_error(client.list_endpoints().await);
    assert!(matches!(
        error,
        CdnError::MalformedResponse { status: 503, .. }
    ));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    assert!(emulator.journal().is_empty());
    assert_eq!(emulator.stats().get("fault_500"), Some(&1));
    assert_eq!(emulator.stats().get("fault_503"), Some(&1));
}

#[tokio::test]
async fn dropped_connections_are_transient() {
    let emulator = emulator_with(Knobs {
        drop_rate: 1.0,
        ..Knobs::default()
    })
    .await;
    let error = api_error(
        client(&emulator)
            .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
            .await,
    );
    assert!(
        matches!(
            error,
            CdnError::Transport {
                kind: TransportFailure::Other,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(emulator.journal().is_empty());
}

#[tokio::test]
async fn slow_responses_time_out() {
    let emulator = emulator_with(Knobs {
        slow_rate: 1.0,
        slow_delay: Duration::from_secs(30),
        ..Knobs::default()
    })
    .await;
    let mut settings = settings(&emulator);
    settings.request_timeout = Duration::from_millis(300);
    let client = CdnClient::new(settings).expect("client");
    let error = api_error(client.list_endpoints().await);
    assert!(
        matches!(
            error,
            CdnError::Transport {
                kind: TransportFailure::Timeout,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn truncated_bodies_leave_the_outcome_unknown() {
    let emulator = emulator_with(Knobs {
        malformed_rate: 1.0,
        ..Knobs::default()
    })
    .await;
    let error = api_error(
        client(&emulator)
            .add_purge(EP_A, &urls(&["http://a.example.com/x"]), &[])
            .await,
    );
    assert!(
        matches!(error, CdnError::MalformedResponse { status: 202, .. }),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    // The purge was in fact accepted: this is why the sender re-sends.
    assert_eq!(emulator.journal().len(), 1);
}

#[tokio::test]
async fn refused_connections_are_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let settings = ClientSettings::new(
        url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
        SUBSCRIPTION,
        Credentials {
            key_id: KeyId::new(KEY_ID),
            key_value: KeyValue::new(KEY_VALUE),
        },
    );
    let error = api_error(
        CdnClient::new(settings)
            .expect("client")
            .list_endpoints()
            .await,
    );
    assert!(
        matches!(
            error,
            CdnError::Transport {
                kind: TransportFailure::Connect,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(!error.to_string().contains(KEY_VALUE));
}

/// Deliberately wrong requests, built by hand, one check at a time.
mod hand_made_requests {
    use super::*;

    struct Request {
        method: reqwest::Method,
        path: String,
        query: String,
        date: Option<String>,
        authorization: Option<String>,
        content_type: Option<&'static str>,
        body: Option<String>,
    }

    impl Request {
        /// A correct, signed purge request.
        fn purge(body: &str) -> Self {
            let path = format!("/subscriptions/{SUBSCRIPTION}/endpoints/{EP_A}/purges");
            let mut request = Self {
                method: reqwest::Method::POST,
                path,
                query: "apiVersion=1.0".into(),
                date: None,
                authorization: None,
                content_type: Some("application/json"),
                body: Some(body.into()),
            };
            request.sign_now();
            request
        }

        fn sign_now(&mut self) {
            let date = signing::format_request_date(time::OffsetDateTime::now_utc());
            self.sign_at(&date);
        }

        fn sign_at(&mut self, date: &str) {
            let to_sign = signing::string_to_sign_parts(
                self.method.as_str(),
                &self.path,
                Some(&self.query),
                date,
            );
            self.authorization = Some(signing::authorization(
                &KeyId::new(KEY_ID),
                &KeyValue::new(KEY_VALUE),
                &to_sign,
            ));
            self.date = Some(date.to_owned());
        }

        async fn send(self, emulator: &EmulatorHandle) -> (u16, String, String) {
            let url = format!(
                "{}{}?{}",
                emulator.base_url().as_str().trim_end_matches('/'),
                self.path,
                self.query
            );
            let mut builder = reqwest::Client::new().request(self.method, url);
            if let Some(date) = self.date {
                builder = builder.header(signing::DATE_HEADER, date);
            }
            if let Some(authorization) = self.authorization {
                builder = builder.header("authorization", authorization);
            }
            if let Some(content_type) = self.content_type {
                builder = builder.header("content-type", content_type);
            }
            if let Some(body) = self.body {
                builder = builder.body(body);
            }
            let response = builder.send().await.expect("response");
            let status = response.status().as_u16();
            assert!(response.headers().contains_key("x-correlation-id"));
            let body: serde_json::Value = response.json().await.expect("JSON error body");
            assert_eq!(body["Succeeded"], false);
            let error_type = body["ErrorInfo"]["Type"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let message = body["ErrorInfo"]["Message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (status, error_type, message)
        }
    }

    const BODY: &str = r#"{"Files": ["http://a.example.com/x"]}"#;

    async fn expect(request: Request, expected: &str) -> String {
        let emulator = emulator().await;
        let (status, error_type, message) = request.send(&emulator).await;
        assert_eq!(error_type, expected, "status {status}: {message}");
        assert!(emulator.journal().is_empty());
        message
    }

    #[tokio::test]
    async fn missing_date_header() {
        let mut request = Request::purge(BODY);
        request.date = None;
        expect(request, "MissingRequestDateHeader").await;
    }

    #[tokio::test]
    async fn malformed_date_header() {
        let mut request = Request::purge(BODY);
        request.sign_at("Tue, 24 Nov 2026 08:05:09 GMT");
        expect(request, "InvalidRequestDateHeader").await;
    }

    #[tokio::test]
    async fn date_too_far_from_the_server_clock() {
        let mut request = Request::purge(BODY);
        let old = time::OffsetDateTime::now_utc() - time::Duration::minutes(16);
        request.sign_at(&signing::format_request_date(old));
        expect(request, "AuthorizationHeaderExpired").await;
    }

    #[tokio::test]
    async fn date_within_the_allowed_skew_passes() {
        let emulator = emulator().await;
        let mut request = Request::purge(BODY);
        let near = time::OffsetDateTime::now_utc() - time::Duration::minutes(14);
        request.sign_at(&signing::format_request_date(near));
        let url = format!(
            "{}subscriptions/{SUBSCRIPTION}/endpoints/{EP_A}/purges?apiVersion=1.0",
            emulator.base_url()
        );
        let response = reqwest::Client::new()
            .post(url)
            .header(signing::DATE_HEADER, request.date.expect("date"))
            .header("authorization", request.authorization.expect("auth"))
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), 202);
    }

    #[tokio::test]
    async fn missing_authorization() {
        let mut request = Request::purge(BODY);
        request.authorization = None;
        expect(request, "MissingAuthorizationHeader").await;
    }

    #[tokio::test]
    async fn malformed_authorization() {
        for bad in [
            "Bearer abc",
            "AzureCDN no-colon",
            "AzureCDN id:not-hex!",
            "AzureCDN :ABCD",
        ] {
            let mut request = Request::purge(BODY);
            request.authorization = Some(bad.into());
            expect(request, "InvalidAuthorizationHeader").await;
        }
    }

    #[tokio::test]
    async fn signature_over_another_method_is_wrong() {
        let mut request = Request::purge(BODY);
        request.method = reqwest::Method::GET;
        request.sign_now();
        request.method = reqwest::Method::POST;
        expect(request, "WrongSignature").await;
    }

    #[tokio::test]
    async fn wrong_content_type() {
        let mut request = Request::purge(BODY);
        request.content_type = Some("text/plain");
        let message = expect(request, "ParameterInvalid").await;
        assert!(message.contains("Content-Type"), "{message}");
    }

    #[tokio::test]
    async fn body_not_of_the_documented_shape() {
        for body in [
            r#"{"Files": "http://a.example.com/x"}"#,
            "[1, 2]",
            "not json",
            r#"{"Files": [1]}"#,
        ] {
            let message = expect(Request::purge(body), "ParameterInvalid").await;
            assert!(message.contains("Files"), "{message}");
        }
        expect(Request::purge("{}"), "ParameterMissing").await;
    }

    #[tokio::test]
    async fn missing_api_version() {
        let mut request = Request::purge(BODY);
        request.query = "other=1".into();
        request.sign_now();
        expect(request, "ParameterMissing").await;
        let mut request = Request::purge(BODY);
        request.query = "apiVersion=2.0".into();
        request.sign_now();
        expect(request, "ParameterInvalid").await;
    }

    #[tokio::test]
    async fn percent_encoded_dot_dot_is_malicious() {
        expect(
            Request::purge(r#"{"Directories": ["http://a.example.com/a/%2e%2E/"]}"#),
            "MaliciousItemPathDetected",
        )
        .await;
    }
}

/// A signed request with a body of our choosing (for bodies the typed
/// client cannot write).
async fn signed_raw(
    emulator: &EmulatorHandle,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut url = emulator.base_url();
    url.set_path(path);
    url.set_query(Some("apiVersion=1.0"));
    let date = signing::format_request_date(time::OffsetDateTime::now_utc());
    let authorization = signing::authorization(
        &KeyId::new(KEY_ID),
        &KeyValue::new(KEY_VALUE),
        &signing::string_to_sign(method, &url, &date),
    );
    let response = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .header(signing::DATE_HEADER, date)
        .header("authorization", authorization)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Issue 32: an endpoint's cache policy, as the Swagger's `CachePolicy`:
/// a default until one is set, `PUT` replaces it (`202`), `GET` answers
/// it with booleans and numbers as strings; a body the Swagger does not
/// allow is refused naming the field, and changes nothing.
#[tokio::test]
async fn cache_policies_are_served_and_replaced_as_documented() {
    use purgeq::cdn::cache_rules::{CachePolicy, CacheRule, RuleType};
    let emulator = emulator().await;
    let client = client(&emulator);
    let default = client.get_cache_policy(EP_A).await.expect("get").value;
    assert!(!default.ignore_cache_control && !default.ignore_query_string);
    assert!(!default.rules.is_empty());

    let policy = CachePolicy {
        rules: vec![CacheRule {
            rule_type: RuleType::Dir,
            items: vec!["/static/".into()],
            ttl_secs: 600,
        }],
        ignore_cache_control: true,
        ignore_query_string: true,
        ignore_cookie: false,
    };
    client.put_cache_policy(EP_A, &policy).await.expect("put");
    assert_eq!(
        client.get_cache_policy(EP_A).await.expect("get").value,
        policy
    );
    // The other endpoint keeps its own.
    assert_eq!(
        client.get_cache_policy(EP_B).await.expect("get").value,
        default
    );
    // On the wire: strings, as the Swagger has them.
    let path = format!("/subscriptions/{SUBSCRIPTION}/endpoints/{EP_A}/cacherules");
    let (status, body) = signed_raw(&emulator, "GET", &path, "").await;
    assert_eq!(status, 200, "{body}");
    let wire: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(wire["IgnoreQueryString"], "true", "{body}");
    assert_eq!(wire["Rules"][0]["TTL"], "600", "{body}");

    for (bad, field) in [
        (
            r#"{"Rules": [{"Items": ["/a/"], "TTL": "60", "Type": "Prefix"}]}"#,
            "Rules[0].Type",
        ),
        (
            r#"{"Rules": [{"Items": ["/a/"], "TTL": "soon", "Type": "Dir"}]}"#,
            "Rules[0].TTL",
        ),
        (r#"{"IgnoreQueryString": "maybe"}"#, "IgnoreQueryString"),
        (r#"{"IgnoreCookie": null}"#, "IgnoreCookie"),
        (r#"{"Rules": "all"}"#, "not a CachePolicy"),
    ] {
        let (status, body) = signed_raw(&emulator, "PUT", &path, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body.contains("ParameterInvalid") && body.contains(field),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        client.get_cache_policy(EP_A).await.expect("get").value,
        policy
    );
    // Unknown endpoints are refused as elsewhere.
    let error = api_error(
        client
            .get_cache_policy("00000000-0000-4000-8000-000000000000")
            .await,
    );
    assert_eq!(error_type(&error), "EndpointNotFound");
}

/// Issue 33: the emulator is an edge too. Two nodes serve the endpoint's
/// hosts from a test origin and keep what they fetched; an accepted purge
/// reaches each node after the propagation delay (a file, or everything
/// under a directory, scheme aside); a node the fault knob names keeps
/// the old copy of the URLs it matches.
#[tokio::test(flavor = "multi_thread")]
async fn the_edge_serves_copies_until_a_purge_reaches_it() {
    let origin = common::caches::TestOrigin::start().await;
    let mut config = EmulatorConfig::new(
        SUBSCRIPTION,
        KEY_ID,
        KeyValue::new(KEY_VALUE),
        vec![EmulatedEndpoint::new(EP_A, &["a.example.com"])],
    );
    config.knobs = Knobs {
        requests_per_second: 1000.0,
        burst: 1000,
        completion_delay: Duration::from_millis(100),
        edge_propagation_delay: Duration::from_millis(300),
        edge_drop_node: Some(1),
        edge_drop_urls_containing: Some("dropped".into()),
        ..Knobs::default()
    };
    config.edge = Some(purgeq::cdn::emulator::EdgeConfig {
        origin: url::Url::parse(&format!("http://{}", origin.addr)).expect("url"),
        listen: vec!["127.0.0.1:0".parse().expect("addr"); 2],
        ttl: Duration::from_secs(3600),
    });
    let emulator = Emulator::start(config).await.expect("emulator");
    let nodes = emulator.edge_addrs();
    assert_eq!(nodes.len(), 2);
    let http = reqwest::Client::new();
    let get = |node: std::net::SocketAddr, path: &'static str| {
        let http = http.clone();
        async move {
            let response = http
                .get(format!("http://{node}{path}"))
                .header(reqwest::header::HOST, "a.example.com")
                .send()
                .await
                .expect("GET at the edge");
            let cache = response.headers()["x-cache"]
                .to_str()
                .expect("x-cache")
                .to_owned();
            (cache, response.text().await.expect("body"))
        }
    };
    let paths = ["/a.css", "/dropped.css", "/d/x.js"];
    for node in &nodes {
        for path in paths {
            assert_eq!(
                get(*node, path).await,
                ("MISS".into(), format!("v1 {path}"))
            );
            assert_eq!(get(*node, path).await, ("HIT".into(), format!("v1 {path}")));
        }
    }
    // Another host is not the edge's.
    let foreign = http
        .get(format!("http://{}/a.css", nodes[0]))
        .header(reqwest::header::HOST, "b.example.com")
        .send()
        .await
        .expect("GET");
    assert_eq!(foreign.status(), 404);

    origin.set_version(2);
    let client = client(&emulator);
    client
        .add_purge(
            EP_A,
            &urls(&[
                "https://a.example.com/a.css",
                "https://a.example.com/dropped.css",
            ]),
            &urls(&["https://a.example.com/d/"]),
        )
        .await
        .expect("accepted");
    // Not yet arrived: the old copies.
    assert_eq!(get(nodes[0], "/a.css").await.1, "v1 /a.css");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for (node, path, expected) in [
        (0, "/a.css", "v2"),
        (1, "/a.css", "v2"),
        (0, "/d/x.js", "v2"),
        (1, "/d/x.js", "v2"),
        (0, "/dropped.css", "v2"),
        // The fault: node 1 never got the purge of this URL.
        (1, "/dropped.css", "v1"),
    ] {
        assert_eq!(
            get(nodes[node], path).await.1,
            format!("{expected} {path}"),
            "node {node}"
        );
    }
}

/// The README's `purgeq emulate --edge-origin …` example does what it
/// says: node 1 serves the site from the origin, and keeps the old copy of
/// the URL its drop knob names after a purge reached node 0.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_edge_example_runs() {
    let readme = include_str!("../README.md");
    let block = readme
        .split("**The emulator as an edge.**")
        .nth(1)
        .and_then(|rest| rest.split("```sh\n").nth(1))
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README's edge example");
    let command = block
        .lines()
        .take_while(|line| !line.starts_with("curl"))
        .map(|line| line.trim_end_matches('\\').trim())
        .collect::<Vec<_>>()
        .join(" ");
    let origin = common::caches::TestOrigin::start().await;
    let (api, edge) = (common::caches::free_port(), common::caches::free_port());
    let mut args: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(|arg| arg.replace("http://127.0.0.1:8080", &format!("http://{}", origin.addr)))
        .collect();
    // The README's two seconds, made shorter for the test.
    let delay = args
        .iter()
        .position(|a| a == "--edge-propagation-delay")
        .expect("the example sets a propagation delay");
    args[delay + 1] = "200ms".into();
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{api}"),
        "--edge-listen".into(),
        format!("127.0.0.1:{edge}"),
    ]);
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _emulator = Stop(
        std::process::Command::new(common::BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("purgeq emulate"),
    );
    let http = reqwest::Client::new();
    let get = |port: u16, path: &'static str| {
        let http = http.clone();
        async move {
            for _ in 0..200 {
                if let Ok(response) = http
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .header(reqwest::header::HOST, "www.example.com")
                    .send()
                    .await
                {
                    return response.text().await.expect("body");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("node on port {port} never answered");
        }
    };
    for port in [edge, edge + 1] {
        assert_eq!(get(port, "/app.js").await, "v1 /app.js");
        assert_eq!(get(port, "/site.css").await, "v1 /site.css");
    }
    origin.set_version(2);
    let mut settings = ClientSettings::new(
        url::Url::parse(&format!("http://127.0.0.1:{api}")).expect("url"),
        "00000000-0000-0000-0000-000000000001",
        Credentials {
            key_id: KeyId::new("emulator-key-id"),
            key_value: KeyValue::new("emulator-key-value"),
        },
    );
    settings.request_timeout = Duration::from_secs(5);
    CdnClient::new(settings)
        .expect("client")
        .add_purge(
            "46fecf3c-e874-49aa-891d-0d4dc93213e0",
            &urls(&[
                "http://www.example.com/app.js",
                "http://www.example.com/site.css",
            ]),
            &[],
        )
        .await
        .expect("accepted");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(edge, "/app.js").await, "v2 /app.js");
    assert_eq!(
        get(edge + 1, "/app.js").await,
        "v1 /app.js",
        "node 1 dropped it"
    );
    assert_eq!(get(edge + 1, "/site.css").await, "v2 /site.css");
}
