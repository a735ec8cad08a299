//! `purgeq status` and `purgeq show ID`: the daemon's view, on one screen.

use clap::Args;
use serde_json::Value;

use super::client::{Daemon, DaemonArgs};
use crate::ingest::StatsView;
use crate::report::{QuotaStatus, SenderState, SenderStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the daemon's /v1/stats JSON instead.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The request id (as printed by `purgeq enqueue`).
    pub id: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the daemon's JSON instead.
    #[arg(long)]
    pub json: bool,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => super::out::printable(s).into_owned(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The status screen, from `/v1/stats` read back into its own type.
pub fn render_status(stats: &StatsView) -> String {
    let mut out = String::new();
    if let Some(fleet) = &stats.fleet {
        out.push_str(&fleet_line(fleet));
    }
    out.push_str(&sending_line(&stats.pipeline.sender));
    out.push_str(&backlog_lines(stats));
    out.push_str(&drain_line(&stats.drain));
    let items = &stats.items;
    // Merged URLs follow another item, which may still be in flight: not
    // "finished" (issue 29, item 10).
    out.push_str(&format!(
        "finished:  {} succeeded, {} failed, {} cancelled\n",
        items.succeeded, items.failed, items.cancelled
    ));
    if items.merged > 0 {
        out.push_str(&format!(
            "merged:    {} URLs purged through another item (a directory, or a newer copy)\n",
            items.merged
        ));
    }
    out.push_str(&preload_line(&stats.preloads));
    if let Some(quota) = &stats.pipeline.quota {
        out.push_str(&quota_lines(quota));
    }
    for (endpoint, rest) in &stats.pipeline.endpoints_paused {
        out.push_str(&format!(
            "resting:   {endpoint}: {}; tried again in {}\n",
            printable(&rest.reason),
            duration(Some(rest.retry_in_seconds))
        ));
    }
    let sender = &stats.pipeline.sender;
    if let Some(error) = &sender.last_error {
        out.push_str(&format!(
            "last error: {} ({})\n",
            printable(error),
            sender.last_error_at.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&format!(
        "store:     {}{}\n",
        printable(&stats.store.path),
        if stats.store.writable {
            ""
        } else {
            " (cannot write!)"
        }
    ));
    out
}

fn printable(text: &str) -> String {
    super::out::printable(text).into_owned()
}

fn duration(seconds: Option<f64>) -> String {
    seconds.map_or_else(
        || "-".to_owned(),
        |s| humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    )
}

/// `node:` this node's name and role, and who sends when it does not.
fn fleet_line(fleet: &crate::fleet::FleetStatus) -> String {
    let node = printable(&fleet.node);
    let term = fleet
        .term
        .map(|t| format!(", term {t}"))
        .unwrap_or_default();
    let mut line = match (fleet.role.as_str(), fleet.leader.as_deref()) {
        ("follower", Some(leader)) => format!(
            "node:      {node}, follower: {} sends{term}\n",
            printable(leader)
        ),
        ("follower", None) => {
            format!("node:      {node}, follower: no node leads now (an election is due)\n")
        }
        (role, _) => format!("node:      {node}, {}{term}\n", printable(role)),
    };
    // Every node as the shared store knows it (issue 36).
    if !fleet.nodes.is_empty() {
        let nodes: Vec<String> = fleet
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} {}{}",
                    printable(&n.node),
                    printable(&n.role),
                    if n.stale {
                        format!(
                            " (stale: silent for {})",
                            duration(Some(n.heartbeat_age_seconds))
                        )
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        line.push_str(&format!("fleet:     {}\n", nodes.join(", ")));
    }
    line
}

/// `sending:` with why it is not running, if it is not.
fn sending_line(sender: &SenderStatus) -> String {
    let detail = match sender.state {
        SenderState::Paused => format!(
            " ({})",
            printable(sender.paused_reason.as_deref().unwrap_or("-"))
        ),
        SenderState::Throttled => {
            format!(" (for {} more)", duration(sender.throttled_for_seconds))
        }
        SenderState::Running => String::new(),
    };
    let state = match sender.state {
        SenderState::Running => "running",
        SenderState::Throttled => "throttled",
        SenderState::Paused => "paused",
    };
    format!("sending:   {state}{detail}\n")
}

/// `backlog:`, why it waits, and each endpoint's share.
fn backlog_lines(stats: &StatsView) -> String {
    let oldest = match stats.oldest_pending_age_seconds {
        None => "nothing pending".to_owned(),
        age => format!("oldest pending {} old", duration(age)),
    };
    let items = &stats.items;
    let mut out = format!(
        "backlog:   {} pending, {} sending, {} submitted; {oldest}\n",
        items.pending, items.sending, items.submitted,
    );
    for wait in &stats.waiting {
        out.push_str(&format!("waiting:   {}\n", printable(&wait.reason)));
    }
    for (endpoint, backlog) in &stats.backlog_by_endpoint {
        out.push_str(&format!(
            "  {endpoint}: {} pending, {} in flight\n",
            backlog.pending, backlog.in_flight
        ));
    }
    for layer in &stats.origin_caches {
        out.push_str(&origin_line(layer));
    }
    out
}

/// `origin:` one cache in front of the origin, and what it holds back.
fn origin_line(layer: &crate::store::OriginLayerCounts) -> String {
    let failing = match (&layer.last_error, layer.failing) {
        (Some(error), failing) if failing > 0 => {
            format!("; {failing} failing, last: {}", printable(error))
        }
        _ => String::new(),
    };
    format!(
        "origin:    {}: {} URLs to purge before their CDN purge{failing}\n",
        printable(&layer.layer),
        layer.pending
    )
}

/// `preloads:` counted apart from the purges; nothing when none was ever
/// asked for.
fn preload_line(p: &crate::store::PreloadCounts) -> String {
    let total =
        p.waiting + p.pending + p.sending + p.submitted + p.succeeded + p.failed + p.cancelled;
    if total == 0 {
        return String::new();
    }
    format!(
        "preloads:  {} waiting for their purge, {} pending, {} in flight; {} succeeded, {} failed, {} cancelled\n",
        p.waiting,
        p.pending,
        p.sending + p.submitted,
        p.succeeded,
        p.failed,
        p.cancelled
    )
}

/// `quota:` what is left today, the reserve, and what waits for the next
/// quota day and when it starts.
fn quota_lines(quota: &QuotaStatus) -> String {
    let mut out = format!(
        "quota:     {}: {} files and {} directories left (of {} and {}); {} preloads left (of {})\n",
        quota.day,
        quota.files_left,
        quota.directories_left,
        quota.files_per_day,
        quota.directories_per_day,
        quota.preloads_left,
        quota.preloads_per_day,
    );
    if quota.urgent_reserve_files + quota.urgent_reserve_directories > 0 {
        out.push_str(&format!(
            "           {} files and {} directories held back each day for urgent intents\n",
            quota.urgent_reserve_files, quota.urgent_reserve_directories
        ));
    }
    if quota.files_waiting + quota.directories_waiting > 0 {
        let starts = crate::config::parse_utc_offset(&quota.utc_offset)
            .zip(crate::store::Timestamp::parse(&quota.next_day_at))
            .map_or_else(
                || quota.next_day_at.clone(),
                |(offset, at)| crate::quota::local_text(at.get(), offset),
            );
        out.push_str(&format!(
            "           {} files and {} directories wait for the next quota day (starts {starts})\n",
            quota.files_waiting, quota.directories_waiting
        ));
    }
    out
}

/// `drains:` how long the backlog takes, and on how many quota days.
fn drain_line(drain: &crate::quota::Drain) -> String {
    if drain.calls == 0 {
        return String::new();
    }
    let time = if drain.seconds < 1.0 {
        "under a second".to_owned()
    } else {
        format!("about {}", duration(Some(drain.seconds)))
    };
    let today = match (drain.files_today, drain.directories_today) {
        (0, 0) => "today's quota takes none of it".to_owned(),
        (f, d) => format!(
            "today's quota takes {f} file{} and {d} director{} ({} call{})",
            if f == 1 { "" } else { "s" },
            if d == 1 { "y" } else { "ies" },
            drain.calls_today,
            if drain.calls_today == 1 { "" } else { "s" },
        ),
    };
    format!(
        "drains:    {} call{}, {time} of sending{}\n",
        drain.calls,
        if drain.calls == 1 { "" } else { "s" },
        match drain.quota_days {
            0 => " (within today's quota)".to_owned(),
            1 => format!("; {today}, the rest needs 1 more quota day"),
            n => format!("; {today}, the rest needs {n} more quota days"),
        }
    )
}

/// One request, from `/v1/purges/{id}`.
pub fn render_request(view: &Value) -> String {
    let mut out = format!(
        "request {} ({}), received {} from {}\n",
        text(&view["id"]),
        text(&view["state"]),
        text(&view["received_at"]),
        text(&view["source"])
    );
    if !view["label"].is_null() {
        out.push_str(&format!("label: {}\n", text(&view["label"])));
    }
    out.push_str("STATE\tATTEMPTS\tTASK_TRACK_ID\tURL\tERROR\n");
    for item in view["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let mut url = text(&item["url"]);
        if !item["merged_into"].is_null() {
            url.push_str(&format!(" (in {})", text(&item["merged_into"])));
        }
        out.push_str(&format!(
            "{}\t{}\t{}\t{url}\t{}\n",
            text(&item["state"]),
            text(&item["attempts"]),
            text(&item["task_track_id"]),
            item["error"].as_str().unwrap_or("")
        ));
    }
    out
}

/// Fetches `path` from the daemon and prints it: raw JSON, or rendered.
async fn fetch_and_print<T: serde::de::DeserializeOwned>(
    daemon: &DaemonArgs,
    path: &str,
    json: bool,
    render: fn(&T) -> String,
) -> u8 {
    let result = async { Daemon::locate(daemon)?.get(path).await }.await;
    match result {
        Ok(answer) if json => {
            crate::outln!("{answer}");
            0
        }
        Ok(answer) => match serde_json::from_value::<T>(answer) {
            Ok(typed) => {
                crate::cli::out::write(render(&typed).as_bytes());
                0
            }
            Err(error) => {
                eprintln!(
                    "purgeq: the daemon's answer to {path} is not what this purgeq reads \
                     (is it another version?): {error}"
                );
                1
            }
        },
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

pub async fn status(args: StatusArgs) -> u8 {
    fetch_and_print(&args.daemon, "/v1/stats", args.json, render_status).await
}

pub async fn show(args: ShowArgs) -> u8 {
    fetch_and_print(
        &args.daemon,
        &format!("/v1/purges/{}", args.id),
        args.json,
        render_request,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, items 6, 15 and 20: what the status screen says.
    #[test]
    fn the_status_screen_says_why_and_when() {
        let stats = serde_json::json!({
            "items": {"pending": 0, "sending": 0, "submitted": 0, "succeeded": 1,
                      "failed": 0, "merged": 0, "cancelled": 0},
            "oldest_pending_at": null,
            "oldest_pending_age_seconds": null,
            "backlog_by_endpoint": {},
            "store": {"path": "purgeq.db", "writable": true},
            "waiting": [{"scope": "quota:file", "reason": "waiting for quota: the day's 2 file URLs are spent; the next quota day starts 2026-11-26 00:00 +08:00", "until": "2026-11-25T16:00:00.000Z"}],
            "drain": {"pending_files": 3, "pending_directories": 0, "calls": 1, "seconds": 0.2, "quota_days": 1},
            "sender": {"state": "running", "paused_reason": null, "paused_for_seconds": null,
                       "throttled_for_seconds": null, "throttled_total": 0, "batches_in_flight": 0,
                       "last_error": null, "last_error_at": null, "calls": {}},
            "quota": null,
            "endpoints_paused": {"ep": {"reason": "EndpointNotInActiveState", "retry_in_seconds": 42.0}},
        });
        let stats: StatsView = serde_json::from_value(stats).expect("the /v1/stats shape");
        let text = render_status(&stats);
        assert!(text.contains("; nothing pending\n"), "{text}");
        assert!(!text.contains("- old"), "{text}");
        assert!(
            text.contains("waiting:   waiting for quota: the day's 2 file URLs are spent; the next quota day starts 2026-11-26 00:00 +08:00"),
            "{text}"
        );
        assert!(
            text.contains(
                "drains:    1 call, under a second of sending; today's quota takes none of it, \
                 the rest needs 1 more quota day"
            ),
            "{text}"
        );
        assert!(
            text.contains("resting:   ep: EndpointNotInActiveState; tried again in 42"),
            "{text}"
        );
        assert!(!text.contains("node:"), "no fleet object, no line: {text}");
    }

    /// Issue 18: the fleet line, for each role.
    #[test]
    fn the_status_screen_names_who_sends() {
        let line = |role: &str, leader: Option<&str>, term: Option<i64>| {
            fleet_line(&crate::fleet::FleetStatus {
                role: role.to_owned(),
                node: "deploy-1".to_owned(),
                leader: leader.map(str::to_owned),
                term,
                nodes: Vec::new(),
            })
        };
        assert_eq!(
            line("standalone", Some("deploy-1"), None),
            "node:      deploy-1, standalone\n"
        );
        assert_eq!(
            line("leader", Some("deploy-1"), Some(4)),
            "node:      deploy-1, leader, term 4\n"
        );
        assert_eq!(
            line("follower", Some("deploy-2"), Some(4)),
            "node:      deploy-1, follower: deploy-2 sends, term 4\n"
        );
        assert!(line("follower", None, None).contains("no node leads now"));
        let node = |name: &str, role: &str, stale: bool| crate::fleet::FleetNode {
            node: name.to_owned(),
            role: role.to_owned(),
            term: None,
            version: "0.1.0".to_owned(),
            started_at: "2026-12-05T10:00:00.000Z".to_owned(),
            heartbeat_age_seconds: if stale { 42.0 } else { 0.5 },
            stale,
        };
        let fleet = crate::fleet::FleetStatus {
            role: "follower".to_owned(),
            node: "deploy-2".to_owned(),
            leader: Some("deploy-3".to_owned()),
            term: Some(5),
            nodes: vec![
                node("deploy-1", "leader", true),
                node("deploy-2", "follower", false),
                node("deploy-3", "leader", false),
            ],
        };
        assert_eq!(
            fleet_line(&fleet),
            "node:      deploy-2, follower: deploy-3 sends, term 5\n\
             fleet:     deploy-1 leader (stale: silent for 42s), deploy-2 follower, deploy-3 leader\n"
        );
    }
}
