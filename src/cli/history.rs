//! `purgeq history`: the history, read straight from the database
//! (read-only), so it works while the daemon is down: the configured store,
//! a SQLite file or a fleet's PostgreSQL (`store.url`), or `--db`.

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
    /// The database: a SQLite file, or a postgres:// URL (default: the
    /// configuration's store, store.url or store.path).
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where the history is read from.
enum Source {
    File(PathBuf),
    Postgres(Box<crate::store::fleet::DatabaseUrl>),
}

/// `--db`, or the configuration's store: in fleet mode its PostgreSQL
/// (issue 29, item 2: `history` read `./purgeq.db` there, silently).
fn source(args: &HistoryArgs) -> Result<Source, (u8, String)> {
    if let Some(db) = &args.db {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return crate::store::fleet::DatabaseUrl::parse(db)
                .map(|url| Source::Postgres(Box::new(url)))
                .map_err(|e| (super::EXIT_USAGE, format!("--db: {e}")));
        }
        return Ok(Source::File(PathBuf::from(db)));
    }
    let settings = args
        .config
        .load_for_client()
        .map_err(|e| (crate::config::EXIT_CONFIG, e.to_string()))?;
    Ok(match &settings.derived.store_url {
        Some(url) => Source::Postgres(Box::new(url.clone())),
        None => Source::File(settings.store.path.clone()),
    })
}

pub async fn run(args: HistoryArgs) -> u8 {
    let source = match source(&args) {
        Ok(source) => source,
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            return code;
        }
    };
    // The prefix is compared with stored URLs, which are normalized: so is
    // the prefix, when it is a URL (`HTTPS://WWW.Example.com/` matches;
    // a `#` is refused as it is at intake).
    let url_prefix = match args.url_prefix.as_deref() {
        Some(prefix) if prefix.contains("://") => {
            match crate::target::normalize(prefix, usize::MAX / 8) {
                Ok(url) => Some(url.to_string()),
                Err(error @ crate::target::TargetError::Fragment(_)) => {
                    eprintln!("purgeq: --url-prefix {prefix:?}: {error}");
                    return super::EXIT_USAGE;
                }
                Err(_) => Some(prefix.to_owned()),
            }
        }
        other => other.map(str::to_owned),
    };
    let filter = HistoryFilter {
        state: args.state.clone(),
        since: args.since.map(|since| {
            timestamp(
                time::OffsetDateTime::now_utc()
                    - time::Duration::try_from(since).unwrap_or(time::Duration::MAX),
            )
        }),
        url_prefix,
        label: args.label.clone(),
        request_id: args.request.as_deref().map(str::to_ascii_lowercase),
        limit: args.limit,
    };
    let read = match &source {
        Source::File(path) => read_history(path, &filter).await,
        Source::Postgres(url) => crate::store::read_history_postgres(url, &filter).await,
    };
    let entries = match read {
        Ok(entries) => entries,
        Err(error) => {
            // A read-only command: "the store cannot write" was the wrong
            // words (issue 29, item 12).
            let reason = match &error {
                crate::store::StoreError::Unavailable { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            eprintln!("purgeq: cannot read the history: {reason}");
            return EXIT_UNAVAILABLE;
        }
    };
    if entries.is_empty()
        && let Some(id) = &args.request
        && args.state.is_none()
        && args.since.is_none()
        && args.url_prefix.is_none()
        && args.label.is_none()
    {
        // An empty table and exit 0 said nothing of a mistyped id.
        eprintln!("purgeq: no request with id {:?}", printable(id));
        return super::EXIT_NOINPUT;
    }
    if args.json {
        for entry in &entries {
            match serde_json::to_string(entry) {
                Ok(line) => crate::outln!("{line}"),
                Err(error) => eprintln!("purgeq: {error}"),
            }
        }
        return 0;
    }
    // ORIGIN, EDGE and TAG are last: scripts that cut the first columns
    // keep working.
    crate::outln!(
        "RECEIVED\tSTATE\tATTEMPTS\tTASK_TRACK_ID\tURL\tERROR\tVIA\tPRELOAD\tORIGIN\tEDGE\tTAG"
    );
    for entry in &entries {
        crate::outln!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            entry.received_at,
            entry.state,
            entry.attempts,
            entry.task_track_id.as_deref().unwrap_or("-"),
            printable(&entry.url),
            printable(entry.last_error.as_deref().unwrap_or("")),
            via(entry),
            preload(entry),
            printable(entry.origin_caches.as_deref().unwrap_or("-")),
            entry.verification.as_deref().unwrap_or("-"),
            printable(entry.via_tag.as_deref().unwrap_or("-"))
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
