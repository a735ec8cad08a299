//! HTTP routes: the API as documented, and `/_emulator/*` for control.
//!
//! Every API call passes through [`api_gate`], which gives it a correlation
//! id, injects the configured faults, applies the rate limit and counts the
//! outcome, so the handlers themselves only model the service's logic.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;

use super::checks::{self, Rejection};
use super::state::{QuotaCheck, State};
use crate::cdn::client::CORRELATION_HEADER;
use crate::cdn::wire;
use crate::http_server::ConnectionControl;

type Shared = Arc<State>;

/// The label [`api_gate`] counts in `/_emulator/stats`.
#[derive(Clone)]
struct Outcome(String);

#[derive(Clone)]
struct CorrelationId(String);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(wire::ErrorBody::new(&self.error_type, self.message)),
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(Outcome(self.error_type));
        response
    }
}

fn with_outcome(mut response: Response, outcome: &str) -> Response {
    response
        .extensions_mut()
        .insert(Outcome(outcome.to_owned()));
    response
}

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/subscriptions/{sid}/endpoints", get(list_endpoints))
        .route("/subscriptions/{sid}/endpoints/{eid}", get(get_endpoint))
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/purges",
            axum::routing::post(add_purge),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/purges/{tid}",
            get(query_purge),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/preloads",
            axum::routing::post(add_preload),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/preloads/{tid}",
            get(query_preload),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/operations/{oid}",
            get(get_operation),
        )
        .route(
            "/subscriptions/{sid}/endpoints/{eid}/cacherules",
            get(get_cache_rules).put(put_cache_rules),
        )
        // The API's error shape for what it does not serve, never an
        // empty 404 or axum's plain-text 405.
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
        .layer(middleware::from_fn_with_state(state.clone(), api_gate));
    let admin = Router::new()
        .route("/_emulator/knobs", get(get_knobs).patch(patch_knobs))
        .route("/_emulator/journal", get(get_journal))
        .route("/_emulator/stats", get(get_stats));
    api.merge(admin).with_state(state)
}

/// Which injected fault, if any, this call gets.
enum Fault {
    None,
    Error500,
    Error503,
    Slow,
    Drop,
    Malformed,
}

fn pick_fault(knobs: &super::Knobs, roll: f64) -> Fault {
    let mut edge = 0.0;
    for (rate, fault) in [
        (knobs.error_500_rate, Fault::Error500),
        (knobs.error_503_rate, Fault::Error503),
        (knobs.slow_rate, Fault::Slow),
        (knobs.drop_rate, Fault::Drop),
        (knobs.malformed_rate, Fault::Malformed),
    ] {
        edge += rate;
        if roll < edge {
            return fault;
        }
    }
    Fault::None
}

fn html_error(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html><head><title>{} {reason}</title></head><body><h1>{reason}</h1></body></html>",
        status.as_u16()
    );
    let mut response = (status, [("content-type", "text/html")], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(1u64));
    }
    response
}

async fn api_gate(
    AxumState(state): AxumState<Shared>,
    mut request: Request,
    next: Next,
) -> Response {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    request
        .extensions_mut()
        .insert(CorrelationId(correlation_id.clone()));
    let knobs = state.knobs();
    let fault = pick_fault(&knobs, state.fault_roll());

    let mut response = match fault {
        Fault::Error500 => with_outcome(html_error(StatusCode::INTERNAL_SERVER_ERROR), "fault_500"),
        Fault::Error503 => with_outcome(html_error(StatusCode::SERVICE_UNAVAILABLE), "fault_503"),
        Fault::Drop => {
            state.count("fault_drop");
            if let Some(control) = request.extensions().get::<ConnectionControl>() {
                control.drop_connection();
            }
            // The connection task drops this future with the connection.
            std::future::pending::<()>().await;
            unreachable!("a dropped connection never answers")
        }
        Fault::Slow | Fault::Malformed | Fault::None => {
            if matches!(fault, Fault::Slow) {
                state.count("fault_slow");
                tokio::time::sleep(knobs.slow_delay).await;
            }
            match state.take_token() {
                Err(wait) => {
                    let mut rejection = Rejection::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "RequestThrottled",
                        "Request throttled.",
                    );
                    rejection.retry_after_secs = Some(checks::retry_after_secs(wait));
                    rejection.into_response()
                }
                Ok(()) => next.run(request).await,
            }
        }
    };

    if let Some(Outcome(outcome)) = response.extensions().get::<Outcome>().cloned() {
        state.count(&outcome);
    }
    if matches!(fault, Fault::Malformed) {
        state.count("fault_malformed");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let cut = bytes.slice(..bytes.len() / 2);
        response = Response::from_parts(parts, Body::from(cut));
        response
            .headers_mut()
            .remove(axum::http::header::CONTENT_LENGTH);
    }
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    response
}

/// Authentication, API version, subscription and the forced-error knob:
/// what every API call goes through before its own logic.
fn admit(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    subscription_id: &str,
) -> Result<(), Rejection> {
    checks::authenticate(
        &state.config,
        method,
        uri,
        headers,
        std::time::SystemTime::now(),
    )?;
    checks::api_version(uri)?;
    checks::subscription(&state.config, subscription_id)?;
    if let Some(forced) = state.knobs().force_error_type {
        let status = if forced == "RequestThrottled" {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::BAD_REQUEST
        };
        return Err(Rejection::new(
            status,
            &forced,
            format!("{forced} (forced by the emulator)."),
        ));
    }
    Ok(())
}

/// The service's description of an endpoint, for one of its custom
/// domains: the API has one `CustomDomain` per entry.
fn endpoint_body(
    state: &State,
    endpoint: &super::EmulatedEndpoint,
    domain: &str,
) -> wire::EndpointBody {
    let active = !state.knobs().inactive_endpoints.contains(&endpoint.id);
    let domain = domain.to_owned();
    wire::EndpointBody {
        endpoint_id: endpoint.id.clone(),
        setting: wire::EndpointSettingBody {
            host: format!("{}.emulated-cdn.invalid", endpoint.id),
            origin: wire::OriginBody {
                addresses: vec![format!("origin.{domain}")],
            },
            custom_domain: domain,
            service_type: "Web".to_owned(),
        },
        status: wire::EndpointStatusBody {
            enabled: active.to_string(),
            lifetime_status: if active { "Normal" } else { "Disabled" }.to_owned(),
        },
    }
}

async fn list_endpoints(
    AxumState(state): AxumState<Shared>,
    Path(sid): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    let endpoints: Vec<wire::EndpointBody> = state
        .config
        .endpoints
        .iter()
        .filter(|e| e.owner_subscription.is_none())
        // One entry per host: listing only the first dropped the others
        // (issue 12, item 19).
        .flat_map(|e| e.hosts.iter().map(|host| endpoint_body(&state, e, host)))
        .collect();
    Ok(with_outcome(
        Json(endpoints).into_response(),
        "list_endpoints",
    ))
}

async fn get_endpoint(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    // An inactive endpoint can still be described.
    let endpoint = checks::endpoint(&state.config, &eid, &[])?;
    Ok(with_outcome(
        Json(endpoint_body(
            &state,
            endpoint,
            endpoint.hosts.first().map_or("", String::as_str),
        ))
        .into_response(),
        "get_endpoint",
    ))
}

/// The caller's `User-Agent`, for the journal.
fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn add_purge(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid)): Path<(String, String)>,
    Extension(CorrelationId(correlation_id)): Extension<CorrelationId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    let knobs = state.knobs();
    let endpoint = checks::endpoint(&state.config, &eid, &knobs.inactive_endpoints)?;
    let purge = checks::purge_body(&headers, &body, endpoint)?;
    if let QuotaCheck::Exceeded(message) =
        state.check_quota(purge.files.len() as u64, purge.directories.len() as u64)
    {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            &knobs.quota_error_type,
            message,
        ));
    }
    let task_track_id = state.accept(&eid, purge, &correlation_id, user_agent(&headers));
    let accepted = wire::PurgeAcceptedBody {
        succeeded: true,
        is_async: true,
        async_info: wire::AsyncInfo {
            task_track_id,
            task_status: "Processing".to_owned(),
        },
    };
    Ok(with_outcome(
        (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        "accepted",
    ))
}

async fn query_purge(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid, tid)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    checks::endpoint(&state.config, &eid, &state.knobs().inactive_endpoints)?;
    let Some((files, directories)) = state.progress(&eid, &tid) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Purge {tid} not found for endpoint {eid}."),
        ));
    };
    Ok(with_outcome(
        Json(wire::PurgeProgressBody { files, directories }).into_response(),
        "progress",
    ))
}

/// `POST …/preloads`: checked as a purge is, counted against the preload
/// quota, and noted per URL: was its purge finished?
async fn add_preload(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid)): Path<(String, String)>,
    Extension(CorrelationId(correlation_id)): Extension<CorrelationId>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    let knobs = state.knobs();
    let endpoint = checks::endpoint(&state.config, &eid, &knobs.inactive_endpoints)?;
    let files = checks::preload_body(&headers, &body, endpoint)?;
    if let QuotaCheck::Exceeded(message) = state.check_preload_quota(files.len() as u64) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            &knobs.quota_error_type,
            message,
        ));
    }
    let task_track_id = state.accept_preload(&eid, files, &correlation_id, user_agent(&headers));
    let accepted = wire::PurgeAcceptedBody {
        succeeded: true,
        is_async: true,
        async_info: wire::AsyncInfo {
            task_track_id,
            task_status: "Processing".to_owned(),
        },
    };
    Ok(with_outcome(
        (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        "preload_accepted",
    ))
}

async fn query_preload(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid, tid)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    checks::endpoint(&state.config, &eid, &state.knobs().inactive_endpoints)?;
    let Some(files) = state.preload_progress(&eid, &tid) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Preload {tid} not found for endpoint {eid}."),
        ));
    };
    Ok(with_outcome(
        Json(wire::PreloadProgressBody { files }).into_response(),
        "preload_progress",
    ))
}

/// `GET …/operations/{operationId}`: an accepted purge's or preload's
/// `TaskTrackId` is an operation id.
async fn get_operation(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid, oid)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    checks::endpoint(&state.config, &eid, &[])?;
    let Some(operation) = state.operation(&eid, &oid) else {
        return Err(Rejection::new(
            StatusCode::NOT_FOUND,
            "ParameterInvalid",
            format!("Operation {oid} not found for endpoint {eid}."),
        ));
    };
    Ok(with_outcome(Json(operation).into_response(), "operation"))
}

/// `GET …/cacherules`: the endpoint's `CachePolicy` (the default until
/// one is set).
async fn get_cache_rules(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    checks::endpoint(&state.config, &eid, &[])?;
    Ok(with_outcome(
        Json(state.cache_policy(&eid)).into_response(),
        "cache_rules",
    ))
}

/// `PUT …/cacherules`: replaces the policy; `202` with an `APIResponse`.
/// A body the Swagger does not allow is refused as the service refuses
/// parameters (`ParameterInvalid`, naming the field).
async fn put_cache_rules(
    AxumState(state): AxumState<Shared>,
    Path((sid, eid)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    admit(&state, &method, &uri, &headers, &sid)?;
    checks::endpoint(&state.config, &eid, &[])?;
    let policy = checks::cache_policy_body(&headers, &body)?;
    state.set_cache_policy(&eid, policy);
    Ok(with_outcome(
        (
            StatusCode::ACCEPTED,
            Json(wire::ApiResponseBody { succeeded: true }),
        )
            .into_response(),
        "cache_rules_set",
    ))
}

async fn unknown_route(uri: Uri) -> Rejection {
    Rejection::new(
        StatusCode::NOT_FOUND,
        "ParameterInvalid",
        format!("The resource {} is not served by this API.", uri.path()),
    )
}

async fn unknown_method(method: Method, uri: Uri) -> Rejection {
    Rejection::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "ParameterInvalid",
        format!("{method} is not supported on {}.", uri.path()),
    )
}

async fn get_knobs(AxumState(state): AxumState<Shared>) -> Json<super::Knobs> {
    Json(state.knobs())
}

async fn patch_knobs(
    AxumState(state): AxumState<Shared>,
    Json(patch): Json<serde_json::Value>,
) -> Response {
    match state.knobs().patched(&patch) {
        Ok(knobs) => {
            state.set_knobs(knobs.clone());
            Json(knobs).into_response()
        }
        Err(message) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response(),
    }
}

async fn get_journal(AxumState(state): AxumState<Shared>) -> Json<Vec<super::JournalEntry>> {
    Json(state.journal())
}

async fn get_stats(
    AxumState(state): AxumState<Shared>,
) -> Json<std::collections::BTreeMap<String, u64>> {
    Json(state.stats())
}
