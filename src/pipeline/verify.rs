//! The verify stage (issue 33): after a URL's purge (and preload)
//! succeeded, probe every edge and the origin, compare what identifies
//! the content ([`crate::verify`]), and keep the result.
//!
//! Its own stage after the tracker, with its own concurrency and probe
//! rate (`governor`), so it never holds up sending or intake. Everything
//! it knows is in the store (`verifications`): after a `kill -9` the next
//! start probes on where it stopped, and a re-purge is counted before it
//! is asked for, so none is made twice. Like every pipeline task it runs
//! on the fleet's leader only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::Digest;

use super::Shared;
use crate::config::VerifySettings;
use crate::store::{
    DueVerification, EdgeRecord, NewRequest, REPURGE_SOURCE, RequestId, RoundOutcome, Timestamp,
    VerificationState,
};
use crate::target::{Kind, Priority, PurgeTarget};
use crate::verify::{EdgeVerdict, Next, Probe, Progress, Seen, compare, decide, parse_edge};

/// How often succeeded purges are looked for, and how long the stage
/// sleeps when disabled.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Items started per look.
const START_BATCH: usize = 500;

/// The largest body read to hash (a larger one is hashed on its first
/// bytes: both sides are read the same way).
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(super) async fn run(shared: Arc<Shared>) {
    let mut limiter: Option<(f64, Arc<governor::DefaultDirectRateLimiter>)> = None;
    let clients = Clients::default();
    loop {
        let settings = shared.settings();
        let wait = if !settings.verify.enabled || shared.lease_lapsed() {
            LOOK_EVERY
        } else {
            let rate = settings.verify.probes_per_second;
            let limiter = match &limiter {
                Some((r, l)) if *r == rate => l.clone(),
                _ => {
                    let burst = rate.ceil().clamp(1.0, 1000.0) as u32;
                    let fresh = Arc::new(crate::rate::token_bucket(rate, burst));
                    limiter = Some((rate, fresh.clone()));
                    fresh
                }
            };
            match pass(&shared, &settings.verify, &limiter, &clients).await {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::warn!(%error, "verification: cannot read or record; trying again");
                    LOOK_EVERY
                }
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Starts what succeeded, runs the rounds that are due; returns how long
/// to sleep.
async fn pass(
    shared: &Arc<Shared>,
    verify: &VerifySettings,
    limiter: &Arc<governor::DefaultDirectRateLimiter>,
    clients: &Clients,
) -> Result<Duration, crate::store::StoreError> {
    let now = shared.now();
    let since = Timestamp::new(now - verify.window());
    shared
        .store
        .start_verifications(since, Timestamp::new(now), verify.sample, START_BATCH)
        .await?;
    let due = shared
        .store
        .verifications_due(Timestamp::new(now), verify.concurrency.max(1) * 4)
        .await?;
    if due.is_empty() {
        return Ok(LOOK_EVERY);
    }
    let results: Vec<Result<(), crate::store::StoreError>> = futures::stream::iter(due)
        .map(|row| round(shared, verify, limiter, clients, row))
        .buffer_unordered(verify.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(Duration::from_millis(50))
}

/// One round for one URL: the origin, then each edge; recorded.
async fn round(
    shared: &Arc<Shared>,
    verify: &VerifySettings,
    limiter: &governor::DefaultDirectRateLimiter,
    clients: &Clients,
    row: DueVerification,
) -> Result<(), crate::store::StoreError> {
    let Ok(url) = url::Url::parse(&row.url) else {
        return end(
            shared,
            &row,
            Vec::new(),
            VerificationState::Unverifiable,
            format!("{:?} is not a URL", row.url),
        )
        .await;
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let Some(origin) = verify
        .origins
        .get(&host)
        .or((!verify.origin.is_empty()).then_some(&verify.origin))
    else {
        return end(
            shared,
            &row,
            Vec::new(),
            VerificationState::Unverifiable,
            format!("no origin is configured for {host} (verify.origin, verify.origins)"),
        )
        .await;
    };
    let edges = edges_for(shared, verify, &url).await;
    limiter.until_ready().await;
    let tag_headers = shared.settings().tags.headers.clone();
    let origin_seen =
        probe_origin(clients, origin, &url, &host, verify.timeout, &tag_headers).await;
    learn_tags(shared, &row.url, &origin_seen).await;
    let now = shared.now();
    let mut verdicts = Vec::with_capacity(edges.len());
    let mut records = Vec::with_capacity(edges.len());
    for edge in &edges {
        limiter.until_ready().await;
        let seen = probe_edge(clients, *edge, &url, &host, verify.timeout).await;
        let verdict = compare(&origin_seen, &seen);
        let edge_name = edge.to_string();
        let before = row.edges.iter().find(|r| r.edge == edge_name);
        records.push(EdgeRecord {
            edge: edge_name.clone(),
            state: match &verdict {
                EdgeVerdict::Fresh => VerificationState::Fresh,
                EdgeVerdict::Stale(_) => VerificationState::Stale,
                EdgeVerdict::Unverifiable(_) => VerificationState::Unverifiable,
            },
            served: describe(&seen),
            origin: describe(&origin_seen),
            fresh_at: (verdict == EdgeVerdict::Fresh).then(|| {
                before
                    .and_then(|b| b.fresh_at.clone())
                    .unwrap_or_else(|| Timestamp::new(now).to_string())
            }),
        });
        verdicts.push((edge_name, verdict));
    }
    let next = decide(
        &verdicts,
        Progress {
            elapsed: super::batcher::until(row.started_at.get(), now),
            deadline: verify.deadline,
            repurges: u32::try_from(row.repurges).unwrap_or(u32::MAX),
            max_repurges: verify.repurge,
            attempts: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
        },
    );
    let stamp = Timestamp::new(now);
    match next {
        Next::Fresh => {
            crate::metrics::verified(
                "fresh",
                Some((now - row.enqueued_at.get()).as_seconds_f64().max(0.0)),
            );
            shared
                .store
                .record_round(
                    row.id,
                    records,
                    RoundOutcome::Ended {
                        state: VerificationState::Fresh,
                        reason: None,
                    },
                    stamp,
                )
                .await
        }
        Next::Probe(delay) => {
            shared
                .store
                .record_round(
                    row.id,
                    records,
                    RoundOutcome::Again {
                        at: Timestamp::new(now + delay),
                    },
                    stamp,
                )
                .await
        }
        Next::Repurge(why) => {
            // Counted first: a crash before the intent is stored loses this
            // re-purge, and never makes two.
            let at = Timestamp::new(now + Duration::from_secs(2));
            shared
                .store
                .record_round(row.id, records, RoundOutcome::Repurged { at }, stamp)
                .await?;
            repurge(shared, &row, &host, &why).await
        }
        Next::Stale(why) => end(shared, &row, records, VerificationState::Stale, why).await,
        Next::Unverifiable(why) => {
            end(shared, &row, records, VerificationState::Unverifiable, why).await
        }
    }
}

async fn end(
    shared: &Shared,
    row: &DueVerification,
    records: Vec<EdgeRecord>,
    state: VerificationState,
    reason: String,
) -> Result<(), crate::store::StoreError> {
    tracing::warn!(url = %row.url, state = state.as_str(), %reason, "verification at the edge ended");
    crate::metrics::verified(state.as_str(), None);
    shared
        .store
        .record_round(
            row.id,
            records,
            RoundOutcome::Ended {
                state,
                reason: Some(reason),
            },
            Timestamp::new(shared.now()),
        )
        .await
}

/// Purges a URL found stale again: an intent like any other (the origin
/// caches in front of its host first), counted against the day's quota.
async fn repurge(
    shared: &Arc<Shared>,
    row: &DueVerification,
    host: &str,
    why: &str,
) -> Result<(), crate::store::StoreError> {
    let settings = shared.settings();
    let mut request = NewRequest::purge(
        RequestId::generate(),
        shared.now(),
        REPURGE_SOURCE.to_owned(),
        Some(format!("re-purge: {}", truncate(why, 200))),
        Priority::Normal,
        vec![PurgeTarget {
            endpoint_id: row.endpoint_id.clone(),
            kind: Kind::File,
            url: row.url.clone(),
        }],
    );
    request.origin_purges = settings
        .derived
        .origin_routes
        .for_host(host)
        .into_iter()
        .map(|layer| (0, layer.to_owned()))
        .collect();
    let outcome = shared.store.enqueue(request).await?;
    tracing::info!(url = %row.url, request = %outcome.id, %why, "stale at the edge: purged again");
    crate::metrics::enqueued(1);
    shared.added(outcome.new);
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The edges to probe: the configured ones, else the built-in emulator's,
/// else what the URL's host resolves to.
async fn edges_for(shared: &Shared, verify: &VerifySettings, url: &url::Url) -> Vec<SocketAddr> {
    let configured: Vec<SocketAddr> = verify.edges.iter().filter_map(|e| parse_edge(e)).collect();
    if !configured.is_empty() {
        return configured;
    }
    let emulated = shared.emulated_edges();
    if !emulated.is_empty() {
        return emulated;
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let mut addrs: Vec<SocketAddr> = addrs.collect();
            addrs.sort();
            addrs.dedup();
            addrs
        }
        Err(_) => Vec::new(),
    }
}

fn client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!(
            "purgeq/",
            env!("CARGO_PKG_VERSION"),
            " (edge verification)"
        ))
}

/// The probes' HTTP clients, kept between rounds (building one sets up
/// TLS): one for the origins, one per host and edge address (a client
/// sends a host to one address through `resolve`). Emptied when it grows
/// past [`Clients::MAX`], and when the timeout setting changes.
/// Clients by edge (`None`: the origins').
type ClientMap = HashMap<Option<(String, SocketAddr)>, reqwest::Client>;

#[derive(Default)]
struct Clients {
    kept: std::sync::Mutex<(Option<Duration>, ClientMap)>,
}

impl Clients {
    const MAX: usize = 1024;

    fn get(&self, timeout: Duration, edge: Option<(&str, SocketAddr)>) -> Option<reqwest::Client> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.0 != Some(timeout) || kept.1.len() >= Self::MAX {
            *kept = (Some(timeout), HashMap::new());
        }
        let key = edge.map(|(host, addr)| (host.to_owned(), addr));
        if let Some(client) = kept.1.get(&key) {
            return Some(client.clone());
        }
        let builder = match edge {
            Some((host, addr)) => client(timeout).resolve(host, addr),
            None => client(timeout),
        };
        let built = builder.build().ok()?;
        kept.1.insert(key, built.clone());
        Some(built)
    }
}

/// The tags the origin's answer named go to the tag registry (issue 35):
/// a 2xx answer that names none teaches nothing (the header may be set
/// only on some answers). A registry that cannot be written is logged,
/// and the verification goes on.
async fn learn_tags(shared: &Arc<Shared>, url: &str, seen: &Probe) {
    let Probe::Answered(seen) = seen else { return };
    if !(200..300).contains(&seen.status) || seen.tags.is_empty() {
        return;
    }
    let settings = shared.settings();
    let mut tags = seen.tags.clone();
    crate::tags::bound_tags(&mut tags, settings.tags.max_tags_per_url);
    let feed = vec![crate::store::TagFeed {
        url: url.to_owned(),
        tags,
    }];
    match shared
        .store
        .feed_tags(
            feed,
            crate::store::TagSource::Header,
            settings.tags.max_urls,
            Timestamp::new(shared.now()),
        )
        .await
    {
        Ok(outcome) => crate::metrics::tags_learned("header", &outcome),
        Err(error) => tracing::warn!(%error, url, "cannot record the tags the origin named"),
    }
}

/// GET from the origin directly, with the URL's host as `Host`; the
/// headers of `tag_headers` are read for tags.
async fn probe_origin(
    clients: &Clients,
    origin: &str,
    url: &url::Url,
    host: &str,
    timeout: Duration,
    tag_headers: &[String],
) -> Probe {
    let mut target = format!("{}{}", origin.trim_end_matches('/'), url.path());
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let Some(client) = clients.get(timeout, None) else {
        return Probe::Failed("cannot build an HTTP client".to_owned());
    };
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    read(
        client
            .get(&target)
            .header(reqwest::header::HOST, host)
            .send()
            .await,
        tag_headers,
    )
    .await
}

/// GET the URL itself at one edge address (TLS, when the URL is https,
/// with the URL's host as its name).
async fn probe_edge(
    clients: &Clients,
    edge: SocketAddr,
    url: &url::Url,
    host: &str,
    timeout: Duration,
) -> Probe {
    let Some(client) = clients.get(timeout, Some((host, edge))) else {
        return Probe::Failed("cannot build an HTTP client".to_owned());
    };
    read(client.get(url.as_str()).send().await, &[]).await
}

async fn read(response: reqwest::Result<reqwest::Response>, tag_headers: &[String]) -> Probe {
    let response = match response {
        Ok(response) => response,
        Err(error) if error.is_timeout() => return Probe::Failed("timed out".to_owned()),
        Err(error) if error.is_connect() => return Probe::Failed("cannot connect".to_owned()),
        Err(error) => return Probe::Failed(error.to_string()),
    };
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let tags = crate::tags::tags_in_headers(
        response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
        tag_headers,
    );
    let (status, etag, last_modified) = (
        response.status().as_u16(),
        header(reqwest::header::ETAG),
        header(reqwest::header::LAST_MODIFIED),
    );
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return Probe::Failed(format!("the body could not be read: {error}")),
    };
    let body = &body[..body.len().min(MAX_BODY)];
    let hash = hex::encode(sha2::Sha256::digest(body));
    Probe::Answered(Seen {
        status,
        etag,
        last_modified,
        length: Some(body.len() as u64),
        hash: Some(hash[..16].to_owned()),
        tags,
    })
}

fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Answered(seen) => seen.describe(),
        Probe::Failed(why) => why.clone(),
    }
}
