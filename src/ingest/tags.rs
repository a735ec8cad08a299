//! The tag registry over HTTP (issue 35): `POST /v1/tags` feeds it,
//! `GET /v1/tags/{tag}` lists a tag's URLs, and a purge intent's `"tags"`
//! are expanded here, at the door, into the request's files.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::IngestState;
use super::error::{ApiError, Detail};
use super::intake;
use super::v1::body_or_error;
use crate::config::Settings;
use crate::store::{FeedOutcome, TagFeed, TagSource, Timestamp};
use crate::tags::{Expansion, check_tag};
use crate::target::{PurgeTarget, Requested};

/// Tags one purge request may name.
pub const MAX_TAGS_PER_REQUEST: usize = 100;

/// `POST /v1/tags` body: each URL's tags, replacing what the registry
/// held; an empty list forgets the URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsBody {
    pub urls: BTreeMap<String, Vec<String>>,
}

/// `POST /v1/tags` answer.
#[derive(Debug, Serialize)]
pub struct TagsFed {
    #[serde(flatten)]
    pub outcome: FeedOutcome,
    /// Tags past `tags.max_tags_per_url`, left out (the first are kept).
    pub tags_dropped: u64,
}

/// `GET /v1/tags/{tag}` answer.
#[derive(Debug, Serialize)]
pub struct TagUrls {
    pub tag: String,
    pub urls: Vec<String>,
    /// More URLs carry the tag than one request may hold
    /// (`ingest.max_urls_per_request`); `urls` is the first of them.
    pub truncated: bool,
}

/// Checks a tag list of a body, naming the field of each refusal.
pub fn check_tags(field: &str, tags: &[String]) -> Result<(), ApiError> {
    let details: Vec<Detail> = invalid_tags(tags, |index| format!("{field}[{index}]")).collect();
    refuse(details, tags.len())
}

/// A refusal for each tag of `tags` that is not one, in the field
/// `field(index)` names.
fn invalid_tags<'t>(
    tags: &'t [String],
    field: impl Fn(usize) -> String + 't,
) -> impl Iterator<Item = Detail> + 't {
    tags.iter().enumerate().filter_map(move |(index, tag)| {
        check_tag(tag).err().map(|error| Detail {
            field: field(index),
            url: tag.chars().take(MAX_SHOWN).collect(),
            code: "InvalidTag",
            reason: error.to_string(),
        })
    })
}

/// Characters of a refused value repeated in an error.
const MAX_SHOWN: usize = 200;

fn refuse(details: Vec<Detail>, total: usize) -> Result<(), ApiError> {
    let Some(first) = details.first() else {
        return Ok(());
    };
    let message = format!(
        "{} of {total} refused, nothing was accepted; first: {} {:?}: {}",
        details.len(),
        first.field,
        first.url,
        first.reason
    );
    Err(ApiError {
        details,
        ..ApiError::new(StatusCode::BAD_REQUEST, "InvalidTag", message)
    })
}

/// Reads a `POST /v1/tags` body: every URL valid and routed and every
/// tag valid, or nothing is taken. Returns the feed and the tags dropped
/// by `tags.max_tags_per_url`.
pub fn parse_tags_body(settings: &Settings, body: &[u8]) -> Result<(Vec<TagFeed>, u64), ApiError> {
    let body: TagsBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a valid tags request: {e}")))?;
    let urls: Vec<String> = body.urls.keys().cloned().collect();
    let targets = intake::targets(
        settings,
        &[intake::UrlList {
            field: "urls",
            urls: &urls,
            requested: Requested::File,
        }],
    )?;
    let total: usize = body.urls.values().map(Vec::len).sum();
    let details: Vec<Detail> = body
        .urls
        .iter()
        .flat_map(|(url, tags)| invalid_tags(tags, move |_| format!("urls[{url:?}]")))
        .collect();
    refuse(details, total)?;
    let mut dropped = 0;
    let feed = targets
        .into_iter()
        .zip(body.urls.into_values())
        .map(|(target, mut tags)| {
            dropped += crate::tags::bound_tags(&mut tags, settings.tags.max_tags_per_url) as u64;
            TagFeed {
                url: target.url,
                tags,
            }
        })
        .collect();
    Ok((feed, dropped))
}

/// `POST /v1/tags`.
pub async fn post_tags(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let settings = state.settings();
    intake::require_json(&headers)?;
    let body = body_or_error(body, settings.ingest.max_body_bytes)?;
    let (feed, tags_dropped) = parse_tags_body(&settings, &body)?;
    let outcome = state
        .store
        .feed_tags(
            feed,
            TagSource::Api,
            settings.tags.max_urls,
            Timestamp::new(state.clock.now_utc()),
        )
        .await?;
    crate::metrics::tags_fed(&outcome);
    Ok((
        StatusCode::OK,
        Json(TagsFed {
            outcome,
            tags_dropped,
        }),
    )
        .into_response())
}

/// `GET /v1/tags/{tag}`: the URLs a purge of the tag would name now.
pub async fn get_tag(
    State(state): State<IngestState>,
    Path(tag): Path<String>,
) -> Result<Response, ApiError> {
    check_tag(&tag).map_err(|e| ApiError::bad_request(format!("tag {tag:?}: {e}")))?;
    let limit = state.settings().ingest.max_urls_per_request;
    let mut found = state
        .store
        .urls_of_tags(std::slice::from_ref(&tag), limit + 1)
        .await?;
    let mut urls = found.remove(&tag).unwrap_or_default();
    let truncated = urls.len() > limit;
    urls.truncate(limit);
    Ok(Json(TagUrls {
        tag,
        urls,
        truncated,
    })
    .into_response())
}

/// A request's tags turned into files, ready to add to its targets.
#[derive(Debug, Default)]
pub struct TaggedTargets {
    pub targets: Vec<PurgeTarget>,
    /// The tag of each of `targets`, by index in it.
    pub via: Vec<String>,
    pub per_tag: BTreeMap<String, usize>,
    pub unknown: Vec<String>,
}

/// Expands `tags` through the registry into files not among `explicit`.
/// A URL whose host no endpoint serves any more is left out and counted
/// in the warning; more URLs than a request may hold is refused (413),
/// as a request naming them would be.
pub async fn expand_tags(
    state: &IngestState,
    settings: &Settings,
    tags: &[String],
    explicit: &[PurgeTarget],
) -> Result<(TaggedTargets, Option<String>), ApiError> {
    let room = settings
        .ingest
        .max_urls_per_request
        .saturating_sub(explicit.len());
    let found = state.store.urls_of_tags(tags, room + 1).await?;
    let names: HashSet<&str> = explicit.iter().map(|t| t.url.as_str()).collect();
    let Expansion {
        urls,
        per_tag,
        unknown,
    } = crate::tags::expand(tags, &found, &names);
    if urls.len() > room {
        return Err(ApiError::too_large(format!(
            "the tags expand to more than {room} URLs, which with the request's own {} is more \
             than ingest.max_urls_per_request ({}); purge fewer tags at once",
            explicit.len(),
            settings.ingest.max_urls_per_request
        )));
    }
    let router = &settings.derived.router;
    let mut expanded = TaggedTargets {
        per_tag,
        unknown,
        ..TaggedTargets::default()
    };
    let mut unroutable = 0usize;
    for (url, tag) in urls {
        match router.target(&url, Requested::File, settings.ingest.max_url_length) {
            Ok(target) => {
                expanded.targets.push(target);
                expanded.via.push(tag);
            }
            Err(_) => unroutable += 1,
        }
    }
    let mut warnings: Vec<String> = crate::tags::unknown_warning(&expanded.unknown)
        .into_iter()
        .collect();
    if unroutable > 0 {
        warnings.push(format!(
            "{unroutable} URLs of these tags are on hosts no endpoint serves any more; left out"
        ));
    }
    let warning = (!warnings.is_empty()).then(|| warnings.join("; "));
    Ok((expanded, warning))
}
