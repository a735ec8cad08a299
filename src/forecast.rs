//! When a request is expected to be done: today, or at the next quota day.
//!
//! A deploy script posting 2,600 files under a 2,000-file day wants to
//! know at once, not after hours of `--wait`, whether its purge lands
//! today. [`forecast`] answers from what the daemon already knows: what
//! is left of the day for the request's lane, what is queued ahead of it
//! (as of the planner's last look), what the endpoints' cache rules make
//! unnecessary, and what the planner would promote into directories.
//! Pure: the intake gathers the inputs and puts the answer in the `202`.
//!
//! It is an estimate. Other requests arriving before this one is sent, a
//! quota refusal, a pause or an outage change the outcome; the request's
//! own state (`GET /v1/purges/{id}`) is the truth.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Promote, QuotaSettings};
use crate::planner::{Left, Pending, Survey};
use crate::quota::lanes;
use crate::target::Kind;

/// The expected outcome's moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Within today's quota and the send rate.
    Today,
    /// Some of its URLs wait for the next quota day.
    NextQuotaDay,
}

/// The forecast of one request, as the `202` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    pub expected: Expected,
    /// URLs expected to be purged today (as themselves, or through a
    /// directory the planner promotes).
    pub urls_today: u64,
    /// URLs expected to wait for the next quota day.
    pub urls_next_quota_day: u64,
    /// URLs expected to end `expired` without a purge: their copies expire
    /// before the next quota day and the day's quota does not reach them.
    pub urls_expiring: u64,
    /// URLs the planner is expected to purge through a directory.
    pub urls_promoted: u64,
    /// When the last URL expected today should be done (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_done_at: Option<String>,
    /// When the next quota day starts (RFC 3339, UTC).
    pub next_quota_day_at: String,
}

/// What the forecast is made from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub now: OffsetDateTime,
    pub next_day_at: OffsetDateTime,
    pub rules: &'a QuotaSettings,
    /// What is left of today's quota.
    pub left: Left,
    /// Pending files (all, and how many urgent) before this request.
    pub files_pending: u64,
    pub urgent_files_pending: u64,
    /// Pending directories before this request.
    pub directories_pending: u64,
    /// The request's URLs as the planner sees them.
    pub urls: &'a [Pending],
    /// Purge calls per second the sender may make, and URLs per call.
    pub calls_per_second: f64,
    pub files_per_call: usize,
    /// How long a batch that is not full waits (`batch.linger`), and how
    /// long the CDN takes to finish a purge (a guess: the tracker's poll).
    pub linger: Duration,
    pub completion: Duration,
}

/// The forecast for `inputs.urls`.
pub fn forecast(inputs: &Inputs<'_>) -> Forecast {
    let (lane, ahead) = lane_and_ahead(inputs);
    let mut room = lane.saturating_sub(ahead);
    let (files, expiring): (Vec<&Pending>, Vec<&Pending>) = inputs
        .urls
        .iter()
        .filter(|u| u.kind == Kind::File)
        .partition(|u| !u.expires_soon || u.urgent);
    let directories = inputs
        .urls
        .iter()
        .filter(|u| u.kind == Kind::Directory)
        .count() as u64;

    let sent_as_files = (files.len() as u64).min(room);
    room -= sent_as_files;
    let mut waiting = files.len() as u64 - sent_as_files;
    let directory_room = inputs
        .left
        .directories
        .saturating_sub(inputs.directories_pending);
    let directories_today = directories.min(directory_room);
    waiting += directories - directories_today;
    let promoted = if waiting > 0 {
        promoted(
            inputs.rules,
            &files,
            Left {
                files: sent_as_files,
                directories: directory_room - directories_today,
            },
        )
        .min(files.len() as u64 - sent_as_files)
    } else {
        0
    };
    waiting -= promoted;
    // Files whose copies expire before the day turns take what is left.
    let expiring_sent = (expiring.len() as u64).min(room);
    let urls_today = sent_as_files + directories_today + promoted + expiring_sent;
    Forecast {
        expected: if waiting > 0 {
            Expected::NextQuotaDay
        } else {
            Expected::Today
        },
        urls_today,
        urls_next_quota_day: waiting,
        urls_expiring: expiring.len() as u64 - expiring_sent,
        urls_promoted: promoted,
        estimated_done_at: (urls_today > 0)
            .then(|| done_at(inputs, ahead.min(lane) + sent_as_files + expiring_sent)),
        next_quota_day_at: crate::store::timestamp(inputs.next_day_at),
    }
}

/// The request's lane of today's file quota (urgent files may use the
/// reserve) and the files queued ahead of it in that lane.
fn lane_and_ahead(inputs: &Inputs<'_>) -> (u64, u64) {
    let file_lanes = lanes(
        inputs.left.files,
        inputs.rules.urgent_reserve_files,
        inputs.urgent_files_pending,
    );
    if inputs.urls.iter().any(|u| u.urgent) {
        (file_lanes.urgent, inputs.urgent_files_pending)
    } else {
        (
            file_lanes.normal,
            inputs
                .files_pending
                .saturating_sub(inputs.urgent_files_pending),
        )
    }
}

/// How many of `files` the planner would purge through directories, given
/// what is `left` for them (none with `quota.promote = "never"`).
fn promoted(rules: &QuotaSettings, files: &[&Pending], left: Left) -> u64 {
    if rules.promote != Promote::Auto {
        return 0;
    }
    let mut survey = Survey::new(rules);
    for file in files {
        survey.add(file);
    }
    survey.promotions(left).iter().map(|p| p.files as u64).sum()
}

/// When `files` more files (those ahead included) are sent at the
/// configured rate and batch size, and the last call is done.
fn done_at(inputs: &Inputs<'_>, files: u64) -> String {
    let calls = files.div_ceil(inputs.files_per_call.max(1) as u64) + 1;
    let sending = Duration::from_secs_f64(calls as f64 / inputs.calls_per_second.max(0.001));
    crate::store::timestamp(inputs.now + sending + inputs.linger + inputs.completion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(url: &str) -> Pending {
        Pending {
            endpoint_id: "ep".into(),
            kind: Kind::File,
            url: url.into(),
            urgent: false,
            expires_soon: false,
        }
    }

    fn inputs<'a>(
        rules: &'a QuotaSettings,
        urls: &'a [Pending],
        left: u64,
        pending: u64,
    ) -> Inputs<'a> {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Inputs {
            now,
            next_day_at: now + time::Duration::hours(10),
            rules,
            left: Left {
                files: left,
                directories: 500,
            },
            files_pending: pending,
            urgent_files_pending: 0,
            directories_pending: 0,
            urls,
            calls_per_second: 10.0,
            files_per_call: 100,
            linger: Duration::from_secs(2),
            completion: Duration::from_secs(5),
        }
    }

    /// `n` files in directories of 20 under /assets/.
    fn deploy(n: usize) -> Vec<Pending> {
        (0..n)
            .map(|i| file(&format!("https://h/assets/d{}/f{i}.js", i / 20)))
            .collect()
    }

    #[test]
    fn a_request_learns_whether_it_lands_today() {
        let never = QuotaSettings {
            promote: Promote::Never,
            ..QuotaSettings::default()
        };
        let auto = QuotaSettings::default();
        // (rules, files, left, pending ahead, expected, today, next day, promoted)
        type Row<'r> = (&'r QuotaSettings, usize, u64, u64, Expected, u64, u64, u64);
        let table: [Row<'_>; 5] = [
            (&never, 100, 2000, 0, Expected::Today, 100, 0, 0),
            (&never, 2600, 2000, 0, Expected::NextQuotaDay, 2000, 600, 0),
            (&never, 100, 2000, 1950, Expected::NextQuotaDay, 50, 50, 0),
            (&never, 100, 2000, 5000, Expected::NextQuotaDay, 0, 100, 0),
            (&auto, 2600, 2000, 0, Expected::Today, 2600, 0, 600),
        ];
        for (rules, n, left, ahead, expected, today, next, promoted) in table {
            let urls = deploy(n);
            let forecast = forecast(&inputs(rules, &urls, left, ahead));
            let row = (n, left, ahead);
            assert_eq!(forecast.expected, expected, "{row:?}: {forecast:?}");
            assert_eq!(forecast.urls_today, today, "{row:?}: {forecast:?}");
            assert_eq!(forecast.urls_next_quota_day, next, "{row:?}");
            assert_eq!(forecast.urls_promoted, promoted, "{row:?}");
            assert_eq!(forecast.estimated_done_at.is_some(), today > 0, "{row:?}");
        }
    }

    #[test]
    fn files_that_expire_before_the_day_turns_never_wait_for_it() {
        let rules = QuotaSettings {
            promote: Promote::Never,
            ..QuotaSettings::default()
        };
        let mut urls = deploy(10);
        urls.extend((0..5).map(|i| Pending {
            expires_soon: true,
            ..file(&format!("https://h/p/{i}.html"))
        }));
        // 12 left: the 10 files, then 2 of the 5 expiring; 3 expire.
        let forecast = forecast(&inputs(&rules, &urls, 12, 0));
        assert_eq!(forecast.expected, Expected::Today);
        assert_eq!(
            (
                forecast.urls_today,
                forecast.urls_expiring,
                forecast.urls_next_quota_day
            ),
            (12, 3, 0)
        );
    }

    #[test]
    fn the_estimate_counts_the_calls_ahead() {
        let rules = QuotaSettings::default();
        let urls = deploy(100);
        // 900 ahead + 100: 10 calls, +1 for the partial one, at 10/s.
        let forecast = forecast(&inputs(&rules, &urls, 2000, 900));
        assert_eq!(
            forecast.estimated_done_at.as_deref(),
            Some("2027-01-15T08:00:08.100Z")
        );
    }
}
