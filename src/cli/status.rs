//! `purgeq status` and `purgeq show ID`: the daemon's view, on one screen.

use clap::Args;
use serde_json::Value;

use super::client::{Daemon, DaemonArgs};

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

fn seconds(value: &Value) -> String {
    value.as_f64().map_or_else(
        || "-".to_owned(),
        |s| humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
    )
}

/// The status screen, from `/v1/stats`.
pub fn render_status(stats: &Value) -> String {
    let sender = &stats["sender"];
    let items = &stats["items"];
    let mut out = String::new();
    let state = text(&sender["state"]);
    out.push_str(&format!("sending:   {state}"));
    match state.as_str() {
        "paused" => out.push_str(&format!(" ({})", text(&sender["paused_reason"]))),
        "throttled" => out.push_str(&format!(
            " (for {} more)",
            seconds(&sender["throttled_for_seconds"])
        )),
        _ => {}
    }
    out.push('\n');
    let oldest = if stats["oldest_pending_age_seconds"].is_null() {
        "nothing pending".to_owned()
    } else {
        format!(
            "oldest pending {} old",
            seconds(&stats["oldest_pending_age_seconds"])
        )
    };
    out.push_str(&format!(
        "backlog:   {} pending, {} sending, {} submitted; {oldest}\n",
        text(&items["pending"]),
        text(&items["sending"]),
        text(&items["submitted"]),
    ));
    for wait in stats["waiting"].as_array().into_iter().flatten() {
        out.push_str(&format!("waiting:   {}\n", text(&wait["reason"])));
    }
    let drain = &stats["drain"];
    if drain["calls"].as_u64().unwrap_or(0) > 0 {
        let days = drain["quota_days"].as_u64().unwrap_or(0);
        let calls = drain["calls"].as_u64().unwrap_or(0);
        let time = match drain["seconds"].as_f64() {
            Some(secs) if secs < 1.0 => "under a second".to_owned(),
            _ => format!("about {}", seconds(&drain["seconds"])),
        };
        out.push_str(&format!(
            "drains:    {calls} call{}, {time} of sending{}\n",
            if calls == 1 { "" } else { "s" },
            match days {
                0 => " (within today's quota)".to_owned(),
                1 => "; needs 1 more quota day".to_owned(),
                n => format!("; needs {n} more quota days"),
            }
        ));
    }
    if let Some(endpoints) = stats["backlog_by_endpoint"].as_object() {
        for (endpoint, counts) in endpoints {
            out.push_str(&format!(
                "  {endpoint}: {} pending, {} in flight\n",
                text(&counts["pending"]),
                text(&counts["in_flight"])
            ));
        }
    }
    out.push_str(&format!(
        "finished:  {} succeeded, {} failed, {} merged, {} cancelled\n",
        text(&items["succeeded"]),
        text(&items["failed"]),
        text(&items["merged"]),
        text(&items["cancelled"])
    ));
    let quota = &stats["quota"];
    if quota.is_object() {
        out.push_str(&format!(
            "quota:     {}: {} files and {} directories left (of {} and {})",
            text(&quota["day"]),
            text(&quota["files_left"]),
            text(&quota["directories_left"]),
            text(&quota["files_per_day"]),
            text(&quota["directories_per_day"]),
        ));
        out.push('\n');
    }
    if let Some(paused) = stats["endpoints_paused"].as_object() {
        for (endpoint, pause) in paused {
            out.push_str(&format!(
                "resting:   {endpoint}: {}; tried again in {}\n",
                text(&pause["reason"]),
                seconds(&pause["retry_in_seconds"])
            ));
        }
    }
    if !sender["last_error"].is_null() {
        out.push_str(&format!(
            "last error: {} ({})\n",
            text(&sender["last_error"]),
            text(&sender["last_error_at"])
        ));
    }
    out.push_str(&format!(
        "store:     {}{}\n",
        text(&stats["store"]["path"]),
        if stats["store"]["writable"] == false {
            " (cannot write!)"
        } else {
            ""
        }
    ));
    out
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
async fn fetch_and_print(
    daemon: &DaemonArgs,
    path: &str,
    json: bool,
    render: fn(&Value) -> String,
) -> u8 {
    let result = async { Daemon::locate(daemon)?.get(path).await }.await;
    match result {
        Ok(answer) if json => {
            crate::outln!("{answer}");
            0
        }
        Ok(answer) => {
            crate::cli::out::write(render(&answer).as_bytes());
            0
        }
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
            "sender": {"state": "running", "last_error": null},
            "quota": null,
            "endpoints_paused": {"ep": {"reason": "EndpointNotInActiveState", "retry_in_seconds": 42.0}},
        });
        let text = render_status(&stats);
        assert!(text.contains("; nothing pending\n"), "{text}");
        assert!(!text.contains("- old"), "{text}");
        assert!(
            text.contains("waiting:   waiting for quota: the day's 2 file URLs are spent; the next quota day starts 2026-11-26 00:00 +08:00"),
            "{text}"
        );
        assert!(
            text.contains("drains:    1 call, under a second of sending; needs 1 more quota day"),
            "{text}"
        );
        assert!(
            text.contains("resting:   ep: EndpointNotInActiveState; tried again in 42"),
            "{text}"
        );
    }
}
