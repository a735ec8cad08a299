//! The origin stage: purges each URL at the caches in front of the origin
//! (`[[origin_cache]]`) before its CDN purge may be cut (issue 34).
//!
//! It reads the due `origin_purges` rows, asks each layer with its own
//! bound on requests in flight, and records every answer in one write.
//! An item's last layer done releases it to the batcher, which is woken.
//! A layer that fails keeps its URLs held, retried with back-off, with
//! the reason where every status reads it; nothing is skipped unless an
//! intent said so. It costs no CDN quota and runs beside the batcher, so
//! it never slows intake or sending. Like every pipeline task, it runs on
//! the fleet's leader only, with writes fenced to its term.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::Semaphore;

use super::{AliveGuard, Shared};
use crate::config::OriginCacheSettings;
use crate::origin_cache::{Answer, LayerRequest, answer, request_for, retry_delay};
use crate::store::{DuePurge, OriginOutcome, Timestamp};
use crate::target::Kind;

/// Rows read per pass: one pass's requests run together, each layer
/// within its own `concurrency`.
const PASS_SIZE: usize = 512;

/// At most this many known files are purged for one directory at a layer
/// without directory purges (the rest of the directory is the CDN's).
const KNOWN_FILES_PER_DIRECTORY: usize = 1000;

/// How long the stage sleeps with nothing due, unless woken.
const IDLE_LOOK: Duration = Duration::from_secs(30);

pub(super) async fn run(shared: Arc<Shared>) {
    let _alive = AliveGuard::new(&shared.origin_alive);
    let client = match http_client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the origin caches' HTTP client; origin purges stop");
            return;
        }
    };
    let mut slots: HashMap<String, (usize, Arc<Semaphore>)> = HashMap::new();
    let mut outages = Outages::default();
    // The newest held item whose layers' rows are written: intake leaves
    // them to this stage (see `start_held`).
    let mut started_up_to = 0i64;
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if let Err(error) = start_held(&shared, &mut started_up_to).await {
            tracing::warn!(%error, "origin caches: cannot start the held URLs; trying again");
        }
        let wait = match pass(&shared, &client, &mut slots, &mut outages).await {
            Ok(Some(wait)) => wait,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "origin caches: cannot read or record purges; trying again");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake_origin.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Held items per write of their layers' rows.
const START_BATCH: usize = 1_000;

/// Writes the layers' rows of the URLs intake stored held (one per layer
/// in front of the URL's host), newest first read once: `up_to` is the
/// newest item done, so a pass reads only what arrived since (after a
/// restart or a new leader, every held item once). Intake leaves this
/// here because writing the rows in the statements that accept a URL
/// held batch intake with two layers at 0.56 of the rate without
/// (`PURGEQ_BENCH_ORIGIN_CACHES=2 cargo bench --bench ingest`). A held
/// URL no configured layer holds any more is released.
async fn start_held(shared: &Arc<Shared>, up_to: &mut i64) -> Result<(), crate::store::StoreError> {
    if shared.lease_lapsed() {
        return Ok(());
    }
    loop {
        let held = shared
            .store
            .unstarted_held_items(*up_to, START_BATCH)
            .await?;
        let Some(last) = held.last().map(|(id, _)| *id) else {
            return Ok(());
        };
        let settings = shared.settings();
        let routes = &settings.derived.origin_routes;
        let rows: Vec<(i64, String)> = held
            .iter()
            .flat_map(|(id, url)| {
                routes
                    .for_host(&crate::origin_cache::host_of(url))
                    .into_iter()
                    .map(move |layer| (*id, layer.to_owned()))
            })
            .collect();
        let items = held.iter().map(|(id, _)| *id).collect();
        let released = shared
            .store
            .start_held_items(rows, items, shared.now_ts())
            .await?;
        if released > 0 {
            shared.wake_batcher.notify_one();
        }
        *up_to = last;
        if held.len() < START_BATCH {
            return Ok(());
        }
    }
}

/// The client for every layer: no redirect is followed (a purge answered
/// with a redirect is not done, and never goes to another host), and the
/// `User-Agent` names purgeq.
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!(
            "purgeq/",
            env!("CARGO_PKG_VERSION"),
            " (origin cache purge)"
        ))
        .build()
}

/// Layers found unreachable (refused, timed out): not asked again, and
/// their rows not read, until their back-off ends. One failed connection
/// stands for the layer: with a layer down behind a large deploy, retrying
/// every URL one by one kept the writer busy and halved intake (measured
/// with `PURGEQ_BENCH_ORIGIN_CACHES=2 cargo bench --bench ingest`).
#[derive(Debug, Default)]
struct Outages {
    layers: HashMap<String, (Instant, u32)>,
    /// When rows of removed layers were last looked for.
    swept_at: Option<Instant>,
}

/// How often rows of layers no longer configured are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Outages {
    /// Whether to look for rows of removed layers now (at the first pass,
    /// then every [`SWEEP_EVERY`]).
    fn sweep_due(&mut self) -> bool {
        let due = self.swept_at.is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
        if due {
            self.swept_at = Some(Instant::now());
        }
        due
    }

    /// The layers to leave alone now.
    fn down(&self) -> Vec<String> {
        let now = Instant::now();
        self.layers
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(layer, _)| layer.clone())
            .collect()
    }

    /// How long until the first outage ends.
    fn next_end(&self) -> Option<Duration> {
        let now = Instant::now();
        self.layers
            .values()
            .map(|(until, _)| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .min()
    }

    fn failed(&mut self, layer: &str) {
        let entry = self
            .layers
            .entry(layer.to_owned())
            .or_insert((Instant::now(), 0));
        entry.1 += 1;
        entry.0 = Instant::now() + retry_delay(entry.1);
    }

    fn answered(&mut self, layer: &str) {
        self.layers.remove(layer);
    }
}

/// Why a row is not done this pass.
enum Failure {
    /// The layer could not be reached: it stands for the layer.
    Unreachable(String),
    /// The layer answered, but not "done".
    Answered(String),
    /// Not asked: its layer was found unreachable earlier in this pass.
    NotTried,
}

/// One pass: the due rows, asked and recorded. `Ok(None)`: rows were
/// handled, look again at once; `Ok(Some(wait))`: nothing was due, sleep
/// that long unless woken.
async fn pass(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    slots: &mut HashMap<String, (usize, Arc<Semaphore>)>,
    outages: &mut Outages,
) -> Result<Option<Duration>, crate::store::StoreError> {
    let now = shared.now_ts();
    let settings = shared.settings();
    // The layers to read: configured and not down. A down layer's rows
    // are not read at all until its back-off ends.
    let down = outages.down();
    let up: Vec<String> = settings
        .origin_cache
        .iter()
        .map(|layer| layer.name.clone())
        .filter(|name| !down.contains(name))
        .collect();
    let mut due = shared.store.origin_purges_due(now, PASS_SIZE, &up).await?;
    if outages.sweep_due() {
        // Rows of a layer no longer configured are closed (a walk of the
        // pending rows: now and then, never on every wake).
        let configured: Vec<String> = settings
            .origin_cache
            .iter()
            .map(|l| l.name.clone())
            .collect();
        due.extend(
            shared
                .store
                .orphaned_origin_purges(&configured, PASS_SIZE)
                .await?,
        );
    }
    if due.is_empty() {
        let next = shared.store.next_origin_purge(&up).await?;
        let wait = match next {
            Some(at) => super::batcher::until(shared.now(), at.get())
                .clamp(Duration::from_millis(10), IDLE_LOOK),
            None => IDLE_LOOK,
        };
        return Ok(Some(outages.next_end().map_or(wait, |end| wait.min(end))));
    }
    if shared.lease_lapsed() {
        // A leader that lost its lease asks no layer: the next one will.
        return Ok(Some(Duration::from_secs(1)));
    }
    let unreachable: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    let mut work = FuturesUnordered::new();
    let mut outcomes = Vec::with_capacity(due.len());
    for row in due {
        let Some(layer) = settings.origin_cache.iter().find(|l| l.name == row.layer) else {
            outcomes.push((
                row.id,
                row.item_id,
                OriginOutcome::Skipped {
                    reason: format!("origin cache {} is no longer configured", row.layer),
                },
            ));
            continue;
        };
        if row.item_state != "pending" {
            outcomes.push((
                row.id,
                row.item_id,
                OriginOutcome::Skipped {
                    reason: format!("not needed: the URL is {}", row.item_state),
                },
            ));
            continue;
        }
        let slot = slots
            .entry(layer.name.clone())
            .and_modify(|(size, slot)| {
                if *size != layer.concurrency {
                    *size = layer.concurrency;
                    *slot = Arc::new(Semaphore::new(layer.concurrency.max(1)));
                }
            })
            .or_insert_with(|| {
                (
                    layer.concurrency,
                    Arc::new(Semaphore::new(layer.concurrency.max(1))),
                )
            })
            .1
            .clone();
        let layer = layer.clone();
        let shared = shared.clone();
        let client = client.clone();
        let unreachable = unreachable.clone();
        work.push(async move {
            let outcome = purge_row(&shared, &client, &layer, &slot, &row, &unreachable).await;
            (row, layer.name, outcome)
        });
    }
    let mut failed_layers = std::collections::HashSet::new();
    while let Some((row, layer, outcome)) = work.next().await {
        let reason = match outcome {
            Ok(answer) => {
                crate::metrics::origin_purge(&layer, "done");
                outages.answered(&layer);
                outcomes.push((row.id, row.item_id, OriginOutcome::Done { answer }));
                continue;
            }
            Err(Failure::NotTried) => continue,
            Err(Failure::Unreachable(reason)) => {
                // One back-off step per pass, however many rows saw it.
                if failed_layers.insert(layer.clone()) {
                    outages.failed(&layer);
                }
                reason
            }
            Err(Failure::Answered(reason)) => reason,
        };
        crate::metrics::origin_purge(&layer, "failed");
        let attempts = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
        let at = Timestamp::new(shared.now() + retry_delay(attempts));
        tracing::warn!(layer, url = %row.url, %reason, retry_at = %at, "origin cache purge failed");
        outcomes.push((row.id, row.item_id, OriginOutcome::Retry { reason, at }));
    }
    let released = shared
        .store
        .record_origin_purges(outcomes, shared.now_ts())
        .await?;
    if released > 0 {
        tracing::debug!(released, "origin caches purged; the CDN purges may go");
        shared.wake_batcher.notify_one();
    }
    // More may be due (a full pass, a retry whose time came): look again.
    Ok(None)
}

/// Purges one row's URL at its layer: `Ok(answer)` when done.
async fn purge_row(
    shared: &Shared,
    client: &reqwest::Client,
    layer: &OriginCacheSettings,
    slot: &Semaphore,
    row: &DuePurge,
    unreachable: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<String, Failure> {
    let request = request_for(layer.kind, row.kind, &row.url)
        .map_err(|e| Failure::Answered(e.to_string()))?;
    if let Some(request) = request {
        return send(client, layer, slot, &request, unreachable)
            .await
            .map(str::to_owned);
    }
    // A directory at a layer that purges files only: each file purgeq
    // knows under it.
    let files = shared
        .store
        .known_files_under(row.item_id, KNOWN_FILES_PER_DIRECTORY)
        .await
        .map_err(|e| Failure::Answered(format!("cannot read the files under it: {e}")))?;
    if files.is_empty() {
        return Ok("no file known under it".to_owned());
    }
    let count = files.len();
    let results = futures::stream::iter(files)
        .map(|file| async move {
            match request_for(layer.kind, Kind::File, &file) {
                Ok(Some(request)) => send(client, layer, slot, &request, unreachable)
                    .await
                    .map_err(|failure| match failure {
                        Failure::Answered(e) => Failure::Answered(format!("{file}: {e}")),
                        other => other,
                    }),
                Ok(None) => Ok("purged"),
                Err(error) => Err(Failure::Answered(error.to_string())),
            }
        })
        .buffer_unordered(layer.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    match results.into_iter().find_map(Result::err) {
        Some(failure) => Err(failure),
        None => Ok(format!("{count} known files purged")),
    }
}

/// Sends one request within the layer's bound; `Ok` with the answer's
/// meaning when done. Not sent when the layer was found unreachable
/// earlier in this pass; an unreachable layer is noted for the others.
async fn send(
    client: &reqwest::Client,
    layer: &OriginCacheSettings,
    slot: &Semaphore,
    request: &LayerRequest,
    unreachable: &std::sync::Mutex<std::collections::HashSet<String>>,
) -> Result<&'static str, Failure> {
    let _permit = slot
        .acquire()
        .await
        .map_err(|_| Failure::Answered("shutting down".to_owned()))?;
    let down = |set: &std::sync::Mutex<std::collections::HashSet<String>>| {
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&layer.name)
    };
    if down(unreachable) {
        return Err(Failure::NotTried);
    }
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|e| Failure::Answered(format!("method {}: {e}", request.method)))?;
    let target = format!(
        "{}{}",
        layer.url.trim_end_matches('/'),
        request.path_and_query
    );
    let response = client
        .request(method, &target)
        .header(reqwest::header::HOST, &request.host)
        .timeout(layer.timeout)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(error) if error.is_connect() || error.is_timeout() => {
            unreachable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(layer.name.clone());
            return Err(Failure::Unreachable(describe(&error, layer.timeout)));
        }
        Err(error) => return Err(Failure::Answered(describe(&error, layer.timeout))),
    };
    match answer(layer.kind, response.status().as_u16()) {
        Answer::Done(what) => Ok(what),
        Answer::Retry(reason) => Err(Failure::Answered(reason)),
    }
}

/// A transport error in an operator's words: `connection refused`,
/// `timed out after 5s`.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    let text = source.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    match error.is_connect() {
        true => format!("cannot connect: {}", text.to_ascii_lowercase()),
        false => text.to_owned(),
    }
}
