//! Fleet mode: which node sends, and the pipeline only while it may.
//!
//! Every node of a fleet ingests and answers reads; one, the leader, runs
//! the batcher, sender and tracker, because the CDN's rate limit and daily
//! quota belong to the subscription. [`run`] is the loop that decides it:
//! every `renew_every` it claims the lease (`store::fleet`), applies
//! [`transition`] and acts on the answer:
//!
//! - **Elected**: a pipeline starts with a store handle fenced to the new
//!   term (`Store::fenced`: each of its writes commits only while the
//!   lease row names this node and *that* term) and a [`Trust`] that ends
//!   with the lease; it first recovers what a former leader left
//!   `sending` or `submitted`, exactly as a restart.
//! - **Renewed**: the lease, and the pipeline's trust, last `ttl - margin`
//!   more. A renewal is waited for no longer than the lease is trusted.
//! - **Deposed**, or the lease no longer trusted (PostgreSQL unreachable,
//!   the process paused): the trust is revoked (the sender and tracker ask
//!   it just before every call, so a paused process that resumes makes no
//!   call even before this loop runs again) and the pipeline stops. A write
//!   it still makes (a call that was on the wire) is refused by the
//!   database for its term, whatever this node leads by then; the next
//!   leader sends that call's batch again.
//!
//! The loop also publishes the node's [`FleetStatus`] (`/v1/stats`,
//! `/metrics`, `purgeq status`), and [`Sending`] is the pipeline report
//! the rest of the daemon holds, whoever leads.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cdn::ClientSource;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::fleet::{
    FleetStatus, Lease, LeaseTiming, NodeName, Role, Term, Transition, Trust, transition,
};
use crate::pipeline::Pipeline;
use crate::report::{PipelineReport, PipelineStatus, SenderState, SenderStatus};
use crate::store::Store;
use crate::store::fleet::FleetDb;

/// The pipeline report of a fleet node: the running pipeline's while this
/// node leads, a quiet one while it follows (it is ready, and sends
/// nothing; `fleet` in `/v1/stats` says who does).
#[derive(Default)]
pub(crate) struct Sending {
    current: Mutex<Option<Arc<dyn PipelineReport>>>,
}

impl Sending {
    fn set(&self, report: Option<Arc<dyn PipelineReport>>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = report;
    }

    fn current(&self) -> Option<Arc<dyn PipelineReport>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl PipelineReport for Sending {
    fn status(&self) -> PipelineStatus {
        match self.current() {
            Some(report) => report.status(),
            None => PipelineStatus {
                sender: SenderStatus {
                    state: SenderState::Running,
                    paused_reason: None,
                    paused_for_seconds: None,
                    throttled_for_seconds: None,
                    throttled_total: 0,
                    batches_in_flight: 0,
                    last_error: None,
                    last_error_at: None,
                    calls: Default::default(),
                },
                quota: None,
                endpoints_paused: Default::default(),
            },
        }
    }

    /// The leader hears of intents ingested elsewhere through the store's
    /// change signal (`NOTIFY`); here only this node's own.
    fn wake(&self) {
        if let Some(report) = self.current() {
            report.wake();
        }
    }

    fn added(&self, count: usize) {
        if let Some(report) = self.current() {
            report.added(count);
        }
    }

    fn alive(&self) -> bool {
        self.current().is_none_or(|report| report.alive())
    }
}

/// What the loop needs: the fleet's database, the node, and what a
/// pipeline is started with.
pub(crate) struct LeaderParts {
    pub db: FleetDb,
    pub store: Store,
    pub node: NodeName,
    pub timing: LeaseTiming,
    pub settings: watch::Receiver<Arc<Settings>>,
    pub clients: ClientSource,
    pub clock: SharedClock,
    pub sending: Arc<Sending>,
    pub fleet: watch::Sender<FleetStatus>,
    /// The running pipeline, shared with the daemon (a reload reaches it).
    pub pipeline: Arc<tokio::sync::Mutex<Option<Pipeline>>>,
}

/// Claims, renews, and starts or stops the pipeline, until `stop`; then
/// stops the pipeline gracefully (within `shutdown_timeout`) and gives
/// the lease back, so another node takes over without waiting for it to
/// lapse.
pub(crate) async fn run(parts: LeaderParts, stop: CancellationToken) {
    let mut lease: Option<Lease> = None;
    // The running pipeline's right to call the CDN (see `Trust`).
    let mut trust: Option<Arc<Trust>> = None;
    let mut changes = parts.store.subscribe();
    loop {
        let asked_at = Instant::now();
        let held = lease.map(|l| l.term);
        // A leader waits for its renewal no longer than it trusts its
        // lease: a claim stuck in a pool or a dead connection must not
        // keep it leading past its deadline (it overlapped its successor
        // by 0.9 s, issue 28).
        let claim = parts.db.claim(&parts.node, held, parts.timing.ttl);
        let claimed = match lease {
            Some(current) => tokio::time::timeout_at(current.trusted_until().into(), claim)
                .await
                .ok(),
            None => Some(claim.await),
        };
        match claimed {
            Some(Ok(claim)) => match transition(held, &claim) {
                Transition::Elected { term } => {
                    if let Some(old) = held {
                        stop_sending(
                            &parts,
                            old,
                            trust.take(),
                            "the lease was taken over in between",
                        )
                        .await;
                    }
                    let won = Lease::new(term, asked_at, parts.timing);
                    lease = Some(won);
                    match start_sending(&parts, &won).await {
                        Ok(right) => trust = Some(right),
                        Err(error) => {
                            // Not leading after all: give the lease back so
                            // that a node that can lead does.
                            tracing::error!(%error, term = term.get(), "cannot start sending as the fleet's leader");
                            let _ = parts.db.release(&parts.node, term).await;
                            lease = None;
                            publish(&parts, Role::Follower { leader: None });
                        }
                    }
                }
                Transition::Renewed { term } => {
                    let renewed = Lease::new(term, asked_at, parts.timing);
                    if let Some(right) = &trust {
                        right.renew(&renewed);
                    }
                    lease = Some(renewed);
                }
                Transition::Deposed { holder } => {
                    tracing::warn!(
                        leader = ?holder.as_ref().map(|(n, t)| (n.as_str(), t.get())),
                        "another node leads the fleet now: stopped sending"
                    );
                    if let Some(old) = held {
                        stop_sending(&parts, old, trust.take(), "deposed").await;
                    }
                    lease = None;
                    publish(&parts, Role::Follower { leader: holder });
                }
                Transition::Following { holder } => {
                    publish(&parts, Role::Follower { leader: holder });
                }
            },
            Some(Err(error)) => tracing::warn!(%error, "cannot reach the fleet's lease"),
            None => tracing::warn!("the fleet's lease was not renewed before its trust deadline"),
        }
        // Until the next claim: wake the leader's batcher on other nodes'
        // commits, and stop sending the moment the lease is not trusted.
        let next = asked_at + parts.timing.renew_every;
        loop {
            let wake_at = lease.map_or(next, |l| l.trusted_until().min(next));
            tokio::select! {
                () = stop.cancelled() => {
                    leave(&parts, lease).await;
                    return;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        leave(&parts, lease).await;
                        return;
                    }
                    parts.sending.wake();
                    continue;
                }
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
            if let Some(current) = lease
                && !current.is_trusted(Instant::now())
            {
                tracing::error!(
                    term = current.term.get(),
                    "the fleet's lease could not be renewed in time: stopped sending"
                );
                lease = None;
                stop_sending(&parts, current.term, trust.take(), "lease not renewed").await;
                publish(&parts, Role::Follower { leader: None });
            }
            if Instant::now() >= next {
                break;
            }
        }
    }
}

/// Leads under `lease`: the pipeline gets a store fenced to the term (its
/// first write, recovering a former leader's batches, is already checked)
/// and a [`Trust`] that ends with the lease. Returns that trust.
async fn start_sending(parts: &LeaderParts, lease: &Lease) -> Result<Arc<Trust>, String> {
    let term = lease.term;
    let trust = Trust::of(lease);
    let settings = parts.settings.borrow().clone();
    let client = parts.clients.build(&settings).map_err(|e| e.to_string())?;
    let pipeline = Pipeline::start_with_trust(
        parts.store.fenced(&parts.node, term),
        parts.settings.clone(),
        client,
        parts.clock.clone(),
        trust.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    parts.sending.set(Some(pipeline.report()));
    *parts.pipeline.lock().await = Some(pipeline);
    tracing::info!(term = term.get(), node = %parts.node, "this node leads the fleet: sending");
    publish(parts, Role::Leader { term });
    Ok(trust)
}

/// Stops the pipeline at once: its trust is revoked first, so no call
/// starts from here on, then its tasks are stopped. Calls already on the
/// wire are not waited for; whatever they bring back cannot be recorded,
/// because every write of that pipeline is fenced to `term`, which has
/// ended. The next leader sends their batches again.
async fn stop_sending(parts: &LeaderParts, term: Term, trust: Option<Arc<Trust>>, why: &str) {
    if let Some(trust) = trust {
        trust.revoke();
    }
    parts.sending.set(None);
    let Some(pipeline) = parts.pipeline.lock().await.take() else {
        return;
    };
    tracing::info!(
        why,
        term = term.get(),
        "stopping the pipeline: this node no longer leads"
    );
    let timeout = parts.settings.borrow().daemon.shutdown_timeout;
    tokio::spawn(async move {
        pipeline.shutdown(timeout).await;
    });
}

/// At shutdown: the pipeline stops as on a standalone host (calls on the
/// wire finish and are recorded), then the lease is given back.
async fn leave(parts: &LeaderParts, lease: Option<Lease>) {
    parts.sending.set(None);
    let timeout = parts.settings.borrow().daemon.shutdown_timeout;
    if let Some(pipeline) = parts.pipeline.lock().await.take() {
        pipeline.shutdown(timeout).await;
    }
    if let Some(lease) = lease {
        match parts.db.release(&parts.node, lease.term).await {
            Ok(_) => tracing::info!("gave the fleet's lease back"),
            Err(error) => tracing::warn!(%error, "could not give the fleet's lease back"),
        }
    }
}

fn publish(parts: &LeaderParts, role: Role) {
    parts
        .fleet
        .send_replace(FleetStatus::of(&parts.node, &role));
}
