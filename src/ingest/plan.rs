//! `GET /v1/plan` and `POST /v1/plan`: what today's quota will be spent
//! on, computed by the planner the batcher runs ([`crate::planner`]).
//! A POST shows the plan as if its intent were added (`purgeq enqueue
//! --dry-run`) and stores nothing.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::IngestState;
use super::error::ApiError;
use super::intake;
use super::v1::{body_or_error, parse_intent};
use crate::planner::{self, Left, Pending, PerCall, Plan};

/// The plan, with the day it is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanView {
    /// The quota day (`YYYY-MM-DD` at `quota.utc_offset`).
    pub day: String,
    pub utc_offset: String,
    /// When the next quota day starts (what waits goes then).
    pub next_day_at: String,
    /// True for `POST /v1/plan`: the intent was not stored.
    pub dry_run: bool,
    /// For `POST /v1/plan`: when the intent would be done, were it posted
    /// now (what `POST /v1/purges` would answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::Forecast>,
    #[serde(flatten)]
    pub plan: Plan,
}

pub async fn get_plan(State(state): State<IngestState>) -> Result<Json<PlanView>, ApiError> {
    let settings = state.settings();
    let plan = state
        .store
        .plan(
            left_today(&state),
            &settings.quota,
            per_call(&settings),
            next_day(&state),
        )
        .await?;
    Ok(Json(view(&state, plan, false)))
}

/// A dry run holds the queue in memory (to add the intent to it as the
/// store would); past this many pending items it is refused rather than
/// let a deploy script's question cost the daemon hundreds of megabytes.
const DRY_RUN_MAX_PENDING: u64 = 200_000;

pub async fn post_plan(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PlanView>, ApiError> {
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let mut intent = parse_intent(&settings, &body)?;
    // As intake will read them: query variants as their cached object,
    // and whether their old copies expire before the next quota day.
    let facts = state
        .policies
        .facts(&mut intent.targets, state.clock.now_utc());
    let added = state.planned(&intent.targets, &facts, intent.priority);
    let coalesced = facts.values().filter(|f| f.asked_as.is_some()).count() as u64;
    let mut view = plan_with(&state, &added, coalesced, true).await?;
    view.forecast = state.forecast(&added).await;
    Ok(Json(view))
}

/// The plan for the queue as it is plus `added`, in memory.
async fn plan_with(
    state: &IngestState,
    added: &[Pending],
    coalesced_added: u64,
    dry_run: bool,
) -> Result<PlanView, ApiError> {
    let pending = state.store.pending_count().await?;
    if pending > DRY_RUN_MAX_PENDING {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "QueueTooLarge",
            format!(
                "{pending} items are pending; a dry run plans at most {DRY_RUN_MAX_PENDING}. \
                 GET /v1/plan (purgeq plan) shows today's plan for the queue as it is"
            ),
        ));
    }
    let settings = state.settings();
    let queue = planner::with_added(&state.store.pending_for_plan(next_day(state)).await?, added);
    let mut plan = planner::plan(
        &queue,
        left_today(state),
        &settings.quota,
        per_call(&settings),
    );
    plan.coalesced_urls = state.store.coalesced_pending().await? + coalesced_added;
    Ok(view(state, plan, dry_run))
}

/// When the next quota day starts, as the store compares times.
fn next_day(state: &IngestState) -> crate::store::Timestamp {
    crate::store::Timestamp::new(state.next_day_at())
}

/// What is left today as the batcher last read it (a whole day before its
/// first look).
fn left_today(state: &IngestState) -> Left {
    let settings = state.settings();
    state.pipeline_status().quota.map_or(
        Left {
            files: settings.quota.files_per_day,
            directories: settings.quota.directories_per_day,
        },
        |q| Left {
            files: q.files_left,
            directories: q.directories_left,
        },
    )
}

fn per_call(settings: &crate::config::Settings) -> PerCall {
    PerCall {
        files: settings.batch.max_files,
        directories: settings.batch.max_directories,
    }
}

fn view(state: &IngestState, plan: Plan, dry_run: bool) -> PlanView {
    let settings = state.settings();
    let now = state.clock.now_utc();
    let offset = settings.derived.quota_offset.get();
    PlanView {
        day: crate::quota::day_of(now, offset),
        utc_offset: settings.quota.utc_offset.clone(),
        next_day_at: crate::store::timestamp(crate::quota::next_day_start(now, offset)),
        dry_run,
        forecast: None,
        plan,
    }
}
