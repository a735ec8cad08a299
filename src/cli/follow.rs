//! Following a request to its end (`enqueue --wait`, `retry --wait`):
//! progress while it runs, a summary at the end, and exit codes a deploy
//! script can act on.
//!
//! | end | exit |
//! |---|---|
//! | every URL succeeded (or `expired`: no purge was needed) | 0 |
//! | a URL failed or was cancelled | 1 |
//! | every purge succeeded, but a URL ended stale or unverifiable at the edge (`[verify]`) | 4 |
//! | sending is paused (credentials refused): said at once | 75 |
//! | `--timeout` passed: the summary so far | 75 |

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use serde_json::Value;

use super::EXIT_TEMPFAIL;
use super::client::{Daemon, call};
use super::out::printable;

/// How long one long poll holds: how soon a pause is noticed, and how
/// often progress is looked at (a line is printed only when it changed).
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// "1 URL", "3 URLs".
pub fn urls(n: u64) -> String {
    if n == 1 {
        "1 URL".to_owned()
    } else {
        format!("{n} URLs")
    }
}

/// `12 succeeded, 2 failed, 26 pending` from a request's `counts`
/// (states with none left out; `merged` is a subset, shown apart).
pub fn counts_text(status: &Value) -> String {
    let counts: BTreeMap<String, u64> = status["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(state, n)| Some((state.clone(), n.as_u64()?)))
        .filter(|(state, n)| *n > 0 && state != "merged")
        .collect();
    let order = [
        "succeeded",
        "expired",
        "failed",
        "cancelled",
        "pending",
        "sending",
        "submitted",
    ];
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|state| counts.get(*state).map(|n| format!("{n} {state}")))
        .collect();
    if let Some(merged) = status["counts"]["merged"].as_u64().filter(|n| *n > 0) {
        parts.push(format!("{merged} through a directory or a newer copy"));
    }
    parts.join(", ")
}

/// The distinct reasons pending URLs give for waiting.
fn waiting_reasons(status: &Value) -> Vec<String> {
    let mut reasons: Vec<String> = status["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["waiting"].as_str().map(str::to_owned))
        .collect();
    reasons.sort();
    reasons.dedup();
    reasons
}

/// How progress is shown while waiting.
enum Progress {
    /// On a terminal: a live bar (indicatif), redrawn in place.
    Bar(ProgressBar),
    /// On a pipe or a file: a line on standard error when it changes.
    Lines { started: Instant, last: String },
    /// `--json` or `--quiet`: nothing until the end.
    Quiet,
}

impl Progress {
    fn new(json: bool, quiet: bool) -> Progress {
        if json || quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} URLs final; {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                started: Instant::now(),
                last: String::new(),
            }
        }
    }

    /// Shows `status` (a `GET /v1/purges/{id}` answer) and why URLs wait.
    fn show(&mut self, status: &Value, reasons: &[String]) {
        match self {
            Progress::Quiet => {}
            Progress::Bar(bar) => {
                let count = |state: &str| status["counts"][state].as_u64().unwrap_or(0);
                let total = status["items"].as_array().map_or(0, Vec::len) as u64;
                bar.set_length(total);
                bar.set_position(
                    count("succeeded") + count("expired") + count("failed") + count("cancelled"),
                );
                let mut message =
                    format!("{} purged, {} failed", count("succeeded"), count("failed"));
                if let Some(reason) = reasons.first() {
                    message.push_str(&format!("; {}", printable(reason)));
                }
                bar.set_message(message);
            }
            Progress::Lines { started, last } => {
                let mut progress = counts_text(status);
                for reason in reasons {
                    progress.push_str(&format!("; {}", printable(reason)));
                }
                if progress != *last {
                    eprintln!("[{}s] {progress}", started.elapsed().as_secs());
                    *last = progress;
                }
            }
        }
    }

    /// Clears a bar before the summary is printed.
    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Follows request `id` until every URL is final or `deadline` passes
/// (`timeout` is what the user asked for, for the message).
pub async fn follow(
    daemon: &Daemon,
    id: &str,
    deadline: Instant,
    timeout: Duration,
    json: bool,
    quiet: bool,
) -> Result<u8, (u8, String)> {
    let mut progress = Progress::new(json, quiet);
    let result = follow_with(daemon, id, deadline, timeout, json, &mut progress).await;
    progress.finish();
    result.map(|status| report_final(&status, json))
}

/// Polls until the end; returns the final status.
async fn follow_with(
    daemon: &Daemon,
    id: &str,
    deadline: Instant,
    timeout: Duration,
    json: bool,
    progress: &mut Progress,
) -> Result<Value, (u8, String)> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = left.min(PROGRESS_EVERY);
        let status = call(
            daemon,
            daemon
                .client
                .get(format!(
                    "{}/v1/purges/{id}?wait={}",
                    daemon.base,
                    chunk.as_secs_f64()
                ))
                .timeout(chunk + Duration::from_secs(15)),
        )
        .await?;
        let state = status["state"].as_str().unwrap_or("in_progress");
        if state != "in_progress" {
            return Ok(status);
        }
        let reasons = waiting_reasons(&status);
        if let Some(paused) = reasons.iter().find(|r| r.starts_with("sending is paused")) {
            if json {
                crate::outln!("{status}");
            }
            return Err((
                EXIT_TEMPFAIL,
                format!(
                    "request {id} cannot finish now: {} ({})",
                    printable(paused),
                    counts_text(&status)
                ),
            ));
        }
        if left.is_zero() {
            if json {
                crate::outln!("{status}");
            }
            let mut message = format!(
                "request {id} not finished after {}: {}",
                humantime::format_duration(Duration::from_secs_f64(timeout.as_secs_f64().round())),
                counts_text(&status)
            );
            for reason in &reasons {
                message.push_str(&format!("\n  waiting: {}", printable(reason)));
            }
            return Err((EXIT_TEMPFAIL, message));
        }
        progress.show(&status, &reasons);
    }
}

fn report_final(status: &Value, json: bool) -> u8 {
    let state = status["state"].as_str().unwrap_or_default();
    if json {
        crate::outln!("{status}");
    } else {
        let items = status["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let item_state = item["state"].as_str().unwrap_or_default();
            if item_state != "succeeded" {
                crate::outln!(
                    "{item_state}\t{}\t{}",
                    printable(item["url"].as_str().unwrap_or_default()),
                    printable(item["error"].as_str().unwrap_or(""))
                );
            }
        }
        crate::outln!(
            "{} {state}: {} ({})",
            status["id"].as_str().unwrap_or_default(),
            urls(items.len() as u64),
            counts_text(status)
        );
        let promoted = items
            .iter()
            .filter(|item| item["merge_reason"] == "promoted")
            .count();
        if promoted > 0 {
            crate::outln!(
                "  {} purged through a directory the quota planner chose (the day's file quota could not cover them)",
                urls(promoted as u64)
            );
        }
        let preloads: Vec<&Value> = items
            .iter()
            .filter(|item| item["operation"] == "purge" && !item["preload_state"].is_null())
            .collect();
        if !preloads.is_empty() {
            let state = |s: &str| preloads.iter().filter(|i| i["preload_state"] == s).count();
            crate::outln!(
                "  preloads: {} succeeded, {} failed, {} skipped (their purge did not succeed)",
                state("succeeded"),
                state("failed"),
                state("skipped")
            );
            for item in preloads.iter().filter(|i| i["preload_state"] == "failed") {
                crate::outln!(
                    "  preload failed\t{}\t{}",
                    printable(item["url"].as_str().unwrap_or_default()),
                    printable(item["preload_error"].as_str().unwrap_or(""))
                );
            }
        }
        verification_lines(&items);
    }
    match state {
        "succeeded" if !all_fresh(status) => EXIT_NOT_FRESH,
        "succeeded" => 0,
        _ => 1,
    }
}

/// `--wait`'s exit when every purge succeeded but verification at the
/// edge found a URL stale or could not verify it (`[verify]`).
pub const EXIT_NOT_FRESH: u8 = 4;

/// Whether no URL ended stale or unverifiable at the edge (true where
/// verification is off).
fn all_fresh(status: &Value) -> bool {
    status["items"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|item| {
            !matches!(
                item["verification"]["state"].as_str(),
                Some("stale" | "unverifiable")
            )
        })
}

/// The summary of verification at the edge, and each URL not fresh with
/// its edge and what differed.
fn verification_lines(items: &[Value]) {
    let verified: Vec<&Value> = items
        .iter()
        .filter(|item| item["verification"].is_object())
        .collect();
    if verified.is_empty() {
        return;
    }
    let state = |s: &str| {
        verified
            .iter()
            .filter(|i| i["verification"]["state"] == s)
            .count()
    };
    let mut times: Vec<f64> = verified
        .iter()
        .filter_map(|i| i["verification"]["time_to_fresh_seconds"].as_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times
        .get(times.len().saturating_sub(1) / 2)
        .map(|t| format!(" (median {t:.1} s from intent to fresh)"))
        .unwrap_or_default();
    let repurges: i64 = verified
        .iter()
        .filter_map(|i| i["verification"]["repurges"].as_i64())
        .sum();
    crate::outln!(
        "  at the edge: {} fresh{median}, {} stale, {} unverifiable; {repurges} re-purged",
        state("fresh"),
        state("stale"),
        state("unverifiable")
    );
    for item in verified.iter().filter(|i| {
        matches!(
            i["verification"]["state"].as_str(),
            Some("stale" | "unverifiable")
        )
    }) {
        crate::outln!(
            "  {}\t{}\t{}",
            item["verification"]["state"].as_str().unwrap_or_default(),
            printable(item["url"].as_str().unwrap_or_default()),
            printable(item["verification"]["reason"].as_str().unwrap_or(""))
        );
    }
}
