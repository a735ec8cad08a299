//! `purgeq history`: the history, read straight from the database file
//! (read-only), so it works while the daemon is down.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::out::printable;
use super::{ConfigArgs, EXIT_UNAVAILABLE};
use crate::store::{HistoryFilter, read_history, timestamp};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only URLs in this state. A URL merged into a directory (or a
    /// newer copy of itself) has that item's state; `merged` lists the
    /// URLs that were merged, whatever became of them.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        ["pending", "sending", "submitted", "succeeded", "failed", "merged", "cancelled"]))]
    pub state: Option<String>,
    /// Only URLs of requests with this label (a deploy id, say).
    #[arg(long)]
    pub label: Option<String>,
    /// Only URLs of this request.
    #[arg(long, value_name = "ID")]
    pub request: Option<String>,
    /// Only requests received within this long, e.g. 1h, 2d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only URLs starting with this text.
    #[arg(long, value_name = "PREFIX")]
    pub url_prefix: Option<String>,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    pub json: bool,
    /// The database (default: store.path of the configuration).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub async fn run(args: HistoryArgs) -> u8 {
    let path = match &args.db {
        Some(path) => path.clone(),
        None => match args.config.load_for_client() {
            Ok(settings) => settings.store.path.clone(),
            Err(error) => {
                eprintln!("purgeq: {error}");
                return crate::config::EXIT_CONFIG;
            }
        },
    };
    let filter = HistoryFilter {
        state: args.state.clone(),
        since: args.since.map(|since| {
            timestamp(
                time::OffsetDateTime::now_utc()
                    - time::Duration::try_from(since).unwrap_or(time::Duration::MAX),
            )
        }),
        url_prefix: args.url_prefix.clone(),
        label: args.label.clone(),
        request_id: args.request.as_deref().map(str::to_ascii_lowercase),
        limit: args.limit,
    };
    let entries = match read_history(&path, &filter).await {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!("purgeq: {error}");
            return EXIT_UNAVAILABLE;
        }
    };
    if args.json {
        for entry in &entries {
            match serde_json::to_string(entry) {
                Ok(line) => crate::outln!("{line}"),
                Err(error) => eprintln!("purgeq: {error}"),
            }
        }
        return 0;
    }
    crate::outln!("RECEIVED\tSTATE\tATTEMPTS\tTASK_TRACK_ID\tURL\tERROR\tVIA\tPRELOAD");
    for entry in &entries {
        crate::outln!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            entry.received_at,
            entry.state,
            entry.attempts,
            entry.task_track_id.as_deref().unwrap_or("-"),
            printable(&entry.url),
            printable(entry.last_error.as_deref().unwrap_or("")),
            via(entry),
            preload(entry)
        );
    }
    0
}

/// The URL's preload: `-` when none was asked for; a preload-only URL
/// says `only`, as its STATE is the preload's.
fn preload(entry: &crate::store::HistoryEntry) -> String {
    match (&entry.preload_state, entry.operation.as_str()) {
        (_, "preload") => "only".to_owned(),
        (Some(state), _) => state.clone(),
        (None, _) => "-".to_owned(),
    }
}

/// The directory (or newer copy) a URL was purged through, and why:
/// `https://h/assets/ (promoted)`; `-` when it was purged as itself.
fn via(entry: &crate::store::HistoryEntry) -> String {
    match (&entry.merged_into_url, &entry.merge_reason) {
        (Some(url), Some(reason)) => format!("{} ({reason})", printable(url)),
        (Some(url), None) => printable(url).into_owned(),
        (None, _) => "-".to_owned(),
    }
}
