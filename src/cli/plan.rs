//! `purgeq plan`: what today's quota will be spent on, per endpoint, and
//! what waits for the next quota day (`GET /v1/plan`). `purgeq enqueue
//! --dry-run` prints the same for the queue with its URLs added.

use clap::Args;

use super::client::{Daemon, DaemonArgs};
use crate::forecast::{Expected, Forecast};
use crate::ingest::PlanView;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the daemon's JSON instead.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: PlanArgs) -> u8 {
    let result = async { Daemon::locate(&args.daemon)?.get("/v1/plan").await }.await;
    match result {
        Ok(answer) => print(answer, args.json),
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

/// Prints a `/v1/plan` answer as JSON or as text; the exit code.
pub fn print(answer: serde_json::Value, json: bool) -> u8 {
    if json {
        crate::outln!("{answer}");
        return 0;
    }
    match serde_json::from_value::<PlanView>(answer) {
        Ok(plan) => {
            super::out::write(render(&plan).as_bytes());
            0
        }
        Err(error) => {
            eprintln!(
                "purgeq: the daemon's plan is not what this purgeq reads (is it another version?): {error}"
            );
            1
        }
    }
}

/// The forecast in one line, for the person who just posted.
pub fn describe(forecast: &Forecast) -> String {
    let starts = &forecast.next_quota_day_at;
    let mut line = match forecast.expected {
        Expected::Today => match &forecast.estimated_done_at {
            Some(at) => format!("forecast: done today, by about {at}"),
            None => "forecast: nothing to send".to_owned(),
        },
        Expected::NextQuotaDay => format!(
            "forecast: {} {} for the next quota day (it starts {starts}); {} today",
            super::follow::urls(forecast.urls_next_quota_day),
            if forecast.urls_next_quota_day == 1 {
                "waits"
            } else {
                "wait"
            },
            super::follow::urls(forecast.urls_today)
        ),
    };
    if forecast.urls_promoted > 0 {
        line.push_str(&format!(
            "; {} through directories the planner promotes",
            super::follow::urls(forecast.urls_promoted)
        ));
    }
    if forecast.urls_expiring > 0 {
        line.push_str(&format!(
            "; {} need no purge (cached copies expire before the next quota day)",
            super::follow::urls(forecast.urls_expiring)
        ));
    }
    line
}

/// What the cache rules saved, and the dry run's forecast.
fn savings(view: &PlanView) -> String {
    let plan = &view.plan;
    let mut out = String::new();
    for (endpoint, today) in &plan.endpoints {
        if today.expiring_files > 0 {
            out.push_str(&format!(
                "endpoint {endpoint}: saved by the cache rules: {} files expire before the next quota day (no purge needed)\n",
                today.expiring_files
            ));
        }
    }
    if let Some(forecast) = &view.forecast {
        out.push_str(&format!(
            "{}\n",
            describe(forecast).replacen("forecast:", "forecast for these URLs:", 1)
        ));
    }
    if plan.coalesced_urls > 0 {
        out.push_str(&format!(
            "saved by ignored query strings: {} URLs are purged as the cached object they share\n",
            plan.coalesced_urls
        ));
    }
    out
}

/// The plan as a person reads it.
pub fn render(view: &PlanView) -> String {
    let plan = &view.plan;
    let starts = crate::config::parse_utc_offset(&view.utc_offset)
        .zip(crate::store::Timestamp::parse(&view.next_day_at))
        .map_or_else(
            || view.next_day_at.clone(),
            |(offset, at)| crate::quota::local_text(at.get(), offset),
        );
    let mut out = format!(
        "{} for quota day {} (the next starts {starts})\n",
        if view.dry_run {
            "plan, if these URLs were added (nothing was stored),"
        } else {
            "plan"
        },
        view.day
    );
    out.push_str(&format!(
        "quota left: {} files, {} directories; after today's sends: {} files, {} directories\n",
        plan.left.files, plan.left.directories, plan.left_after.files, plan.left_after.directories
    ));
    if plan.endpoints.is_empty() {
        out.push_str("nothing pending\n");
    }
    for (endpoint, today) in &plan.endpoints {
        out.push_str(&format!(
            "endpoint {endpoint}: {} call{} today, {} files, {} directories\n",
            today.calls,
            if today.calls == 1 { "" } else { "s" },
            today.files,
            today.directories
        ));
        for promotion in &today.promotions {
            out.push_str(&format!(
                "  promoted: {} (instead of {} pending files under it)\n",
                super::out::printable(&promotion.directory),
                promotion.files
            ));
        }
        if today.waiting_files + today.waiting_directories > 0 {
            out.push_str(&format!(
                "  waiting for the next quota day: {} files, {} directories\n",
                today.waiting_files, today.waiting_directories
            ));
        }
    }
    out.push_str(&savings(view));
    out
}
