//! The status page: HTML rendered by the daemon from the same typed status
//! the API answers (`/v1/stats`' [`StatsView`]) and the store's bounded
//! read queries, for people who would rather look than read JSON.
//!
//! Every function here is pure: typed values in, HTML text out, so a test
//! can check what a page says without a server. The handlers that fetch
//! the values live in `ui::handlers`; the page needs nothing from the
//! internet (its stylesheet and script are served from the binary, see
//! [`STYLE`] and [`SCRIPT`]) and its first paint needs no JavaScript: the
//! script only refreshes the page's `<main>` in place every few seconds
//! and shows times in the browser's own zone.
//!
//! Everything taken from the outside world (URLs, labels, error texts) is
//! written through [`escape`]: a label like `<script>` is shown, never run.

mod actions;
mod auth;
mod charts;
mod handlers;
pub mod listing;
mod search;

use std::fmt::Write as _;

pub use handlers::routes_with as routes;
pub use search::{Bulk, SearchForm, bulk_confirm_page, bulk_targets, search_page};

use crate::ingest::v1::StatsView;
use crate::report::{QuotaStatus, SenderState};
use crate::store::{ItemStatus, RequestState, RequestStatus};

/// The page's stylesheet, served at `/ui/style.css`.
pub const STYLE: &str = include_str!("style.css");
/// The page's script, served at `/ui/app.js`.
pub const SCRIPT: &str = include_str!("app.js");
/// The page's icon, served at `/ui/favicon.svg` (without one a browser
/// asks for `/favicon.ico` and logs the 404 as an error).
pub const ICON: &str = include_str!("favicon.svg");

/// Text made safe to put between tags or in a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            // Shown, not obeyed: a stored U+202E would reverse the text
            // after it.
            c if crate::target::is_deceptive(c) => {
                out.push_str(&format!("&lt;U+{:04X}&gt;", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out
}

/// A stored UTC timestamp as a `<time>` the script shows in the browser's
/// zone (with its offset); without the script, as stored (UTC, `Z`).
fn time(stored: &str) -> String {
    let stored = escape(stored);
    format!("<time datetime=\"{stored}\">{stored}</time>")
}

/// `3 s`, `4 min`, `2 h 5 min`, `3 d`: an age or a wait, rounded.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min", s / 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// Who looks at a page: the form token its buttons carry, and whether it
/// was opened in a login session (then the header has a logout button).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub csrf: String,
    pub session: bool,
}

/// A whole page around `main`, refreshed every 5 s by the script.
fn page(title: &str, main: &str, viewer: &Viewer) -> String {
    page_with(title, main, 5, Some(viewer))
}

/// The page that asks for the bearer token (a non-loopback bind): no data
/// at all, only the form.
pub fn login_page(problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"error\">{}</p>\n", escape(p)))
        .unwrap_or_default();
    let main = format!(
        "<section aria-labelledby=\"login\"><h2 id=\"login\">This daemon asks for its token</h2>\n\
         <p>It listens beyond loopback, so the page needs the daemon's <code>ingest.token</code>, \
         as the API does.</p>\n{problem}<form method=\"post\" action=\"/ui/login\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> \
         <button>Open the status page</button></form>\n</section>\n"
    );
    page_with("purgeq: token needed", &main, 0, None)
}

fn page_with(title: &str, main: &str, refresh: u32, viewer: Option<&Viewer>) -> String {
    let logout = viewer
        .filter(|v| v.session)
        .map(|v| {
            format!(
                " <form method=\"post\" action=\"/ui/logout\" class=\"logout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form>",
                escape(&v.csrf)
            )
        })
        .unwrap_or_default();
    // A login session opens the page, never the API (which wants the
    // bearer token): links there would answer 401 (issue 36).
    let footer = if viewer.is_some_and(|v| v.session) {
        "JSON API, with the daemon's token as <code>Authorization: Bearer</code>: \
         <code>/v1/stats</code> · <code>/v1/purges</code> · <code>/v1/openapi.json</code>"
    } else {
        "JSON: <a href=\"/v1/stats\">/v1/stats</a> · <a href=\"/v1/purges\">/v1/purges</a> · \
         <a href=\"/v1/openapi.json\">API</a>"
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<link rel=\"stylesheet\" href=\"/ui/style.css\">\n\
         <link rel=\"icon\" href=\"/ui/favicon.svg\" type=\"image/svg+xml\">\n\
         <script src=\"/ui/app.js\" defer></script>\n</head>\n<body>\n\
         <header><a href=\"/\" class=\"brand\">purgeq</a> <span>cache purges for Azure China CDN</span> \
         <nav><a href=\"/ui/search\">Search the history</a></nav>{logout}</header>\n\
         <main id=\"main\" data-refresh=\"{refresh}\">\n{main}</main>\n\
         <footer>{footer}</footer>\n</body>\n</html>\n",
        escape(title)
    )
}

/// What the charts are drawn from (see `store::charts`).
pub struct ChartData {
    pub now: time::OffsetDateTime,
    /// When today's quota day started.
    pub day_start: time::OffsetDateTime,
    pub urls_hour: crate::store::Counts,
    pub urls_day: crate::store::Counts,
    pub calls_hour: crate::store::Counts,
    pub calls_day: crate::store::Counts,
    /// Today's quota ledger's changes, per hour.
    pub quota_day: crate::store::Counts,
    /// The first minute the charts have a record for.
    pub history_from: Option<String>,
    /// The newest CDN error answers.
    pub errors: Vec<crate::store::RecentError>,
}

/// The front page: is it flowing, what is left of the day, what waits and
/// why, what went wrong, pictures of the last hour and day, and the recent
/// requests.
pub fn status_page(
    stats: &StatsView,
    charts: &ChartData,
    recent: &listing::Listing,
    filter: &listing::Filter,
    policies: &std::collections::BTreeMap<String, crate::cdn::cache_rules::KnownPolicy>,
    hosts: &EndpointHosts,
    viewer: &Viewer,
) -> String {
    let mut main = String::new();
    main.push_str(&sending_section(stats));
    if let Some(fleet) = stats.fleet.as_ref().filter(|f| f.role != "standalone") {
        main.push_str(&fleet_section(fleet));
    }
    if let Some(quota) = &stats.pipeline.quota {
        main.push_str(&quota_section(quota));
    }
    main.push_str(&backlog_section(stats, hosts));
    if !stats.origin_caches.is_empty() {
        main.push_str(&origin_section(&stats.origin_caches));
    }
    if let Some(freshness) = &stats.freshness {
        main.push_str(&freshness_section(freshness));
    }
    if stats.tags.urls > 0 || stats.tags.dropped > 0 {
        main.push_str(&tags_section(&stats.tags));
    }
    main.push_str(&charts_section(charts));
    main.push_str(&errors_section(&charts.errors));
    main.push_str(&cache_rules_section(policies, hosts));
    main.push_str(&requests_section(recent, filter));
    page("purgeq status", &main, viewer)
}

/// `GET /`'s query string as the filter form sends it (see
/// [`listing::Filter`] for what it means).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ListFilter {
    pub state: Option<String>,
    pub label: Option<String>,
    pub url: Option<String>,
    pub before: Option<String>,
}

/// Sending state in words (colour is a second signal, never the only one),
/// with the fix in one sentence when sending is paused.
fn sending_section(stats: &StatsView) -> String {
    let (class, word, detail) = sending_state(stats);
    let mut out = format!(
        "<section aria-labelledby=\"sending\"><h2 id=\"sending\">Sending: \
         <span class=\"state {class}\">{word}</span></h2>\n<p>{}</p>\n",
        escape(&detail)
    );
    if let Some(fleet) = stats.fleet.as_ref().filter(|f| f.role != "standalone") {
        let _ = writeln!(
            out,
            "<p>Fleet: this node is <strong>{}</strong> ({}); the leader is {}{}.</p>",
            escape(&fleet.node),
            escape(&fleet.role),
            fleet
                .leader
                .as_deref()
                .map(escape)
                .unwrap_or_else(|| "none right now".to_owned()),
            fleet
                .term
                .map(|term| format!(", term {term}"))
                .unwrap_or_default()
        );
    }
    // In flight as the backlog counts it (the store's counts, the same on
    // every node), not this node's sender tasks: "0 batches in flight"
    // stood beside 36 URLs in flight (issue 36).
    let items = &stats.items;
    let _ = writeln!(
        out,
        "<p>{} URLs in flight ({} being sent, {} submitted and followed); \
         {} throttled answers so far.</p>",
        items.sending + items.submitted,
        items.sending,
        items.submitted,
        stats.pipeline.sender.throttled_total
    );
    for wait in &stats.waiting {
        let until = wait
            .until
            .as_deref()
            .map(|u| format!(" (until {})", time(u)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<p class=\"wait\">Waiting: {}{until}</p>",
            escape(&wait.reason)
        );
    }
    out.push_str("</section>\n");
    out
}

/// The sending state as a CSS class, a word and a sentence. A fleet
/// follower takes intents and sends nothing: its own sender's state says
/// nothing about the fleet's sending (issue 36), so it names who sends.
fn sending_state(stats: &StatsView) -> (&'static str, &'static str, String) {
    let sender = &stats.pipeline.sender;
    if let Some(fleet) = stats.fleet.as_ref().filter(|fleet| !fleet.sends()) {
        let detail = match &fleet.leader {
            Some(leader) => format!(
                "Not sending: {leader} leads and sends; this node ({}) takes intents.",
                fleet.node
            ),
            None => format!(
                "Not sending: no node leads right now; this node ({}) takes intents and \
                 one of the fleet's nodes will take the lead.",
                fleet.node
            ),
        };
        return ("ok", "not on this node", detail);
    }
    match sender.state {
        SenderState::Running => (
            "ok",
            "running",
            "Calls go out as the rate allows.".to_owned(),
        ),
        SenderState::Throttled => (
            "warn",
            "throttled",
            format!(
                "The CDN asked us to slow down: every call waits {} more.",
                duration(sender.throttled_for_seconds.unwrap_or(0.0))
            ),
        ),
        SenderState::Paused => (
            "bad",
            "paused",
            sender
                .paused_reason
                .clone()
                .unwrap_or_else(|| "sending is paused".to_owned()),
        ),
    }
}

/// A fleet at a glance (issue 36): this node, who leads under which
/// term, and every node with its last heartbeat and version, the silent
/// ones marked stale. The same on every node: read from the shared store.
fn fleet_section(fleet: &crate::fleet::FleetStatus) -> String {
    let mut out = String::from("<section aria-labelledby=\"fleet\"><h2 id=\"fleet\">Fleet</h2>\n");
    let _ = writeln!(
        out,
        "<p id=\"leader\">{}</p>",
        match (&fleet.leader, fleet.term) {
            (Some(leader), Some(term)) => format!(
                "<strong>{}</strong> leads and sends (term {term}).",
                escape(leader)
            ),
            _ => "No node leads right now: one will take the lead within seconds.".to_owned(),
        }
    );
    if fleet.nodes.is_empty() {
        out.push_str("<p>No node's heartbeat has been read yet.</p>\n</section>\n");
        return out;
    }
    out.push_str(
        "<table class=\"nodes\"><thead><tr><th scope=\"col\">Node</th><th scope=\"col\">Role</th>\
         <th scope=\"col\">Term</th><th scope=\"col\">Version</th><th scope=\"col\">Last heartbeat</th>\
         <th scope=\"col\">State</th></tr></thead><tbody>\n",
    );
    for node in &fleet.nodes {
        let this = if node.node == fleet.node {
            " <span class=\"this\">(this node)</span>"
        } else {
            ""
        };
        let (class, state) = if node.stale {
            ("bad", "stale")
        } else {
            ("ok", "alive")
        };
        let _ = writeln!(
            out,
            "<tr><td>{}{this}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{} ago</td>\
             <td><span class=\"state {class}\">{state}</span></td></tr>",
            escape(&node.node),
            escape(&node.role),
            node.term.map(|t| t.to_string()).unwrap_or_default(),
            escape(&node.version),
            duration(node.heartbeat_age_seconds),
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
    out
}

/// A labelled bar: `used` of `total`, as a `<meter>` (which screen readers
/// read out) and in words.
fn bar(label: &str, used: u64, total: u64) -> String {
    let left = total.saturating_sub(used);
    format!(
        "<div class=\"bar\"><label>{label}: <meter min=\"0\" max=\"{total}\" value=\"{used}\" \
         high=\"{high}\">{used} of {total}</meter> <span class=\"figure\">{used} of {total} used, \
         <strong>{left} left</strong></span></label></div>\n",
        label = escape(label),
        high = total.saturating_mul(9) / 10,
    )
}

/// Today's quota as bars, what waits for the next quota day and when that
/// day starts.
fn quota_section(quota: &QuotaStatus) -> String {
    let mut out = format!(
        "<section aria-labelledby=\"quota\"><h2 id=\"quota\">Today's quota ({}, UTC{})</h2>\n",
        escape(&quota.day),
        escape(&quota.utc_offset)
    );
    out.push_str(&bar("Files", quota.files_used, quota.files_per_day));
    out.push_str(&bar(
        "Directories",
        quota.directories_used,
        quota.directories_per_day,
    ));
    out.push_str(&bar(
        "Preloads",
        quota.preloads_used,
        quota.preloads_per_day,
    ));
    if quota.files_waiting + quota.directories_waiting > 0 {
        let _ = writeln!(
            out,
            "<p class=\"wait\">{} files and {} directories wait for the next quota day, \
             which starts {}.</p>",
            quota.files_waiting,
            quota.directories_waiting,
            time(&quota.next_day_at)
        );
    } else {
        let _ = writeln!(
            out,
            "<p>The next quota day starts {}.</p>",
            time(&quota.next_day_at)
        );
    }
    out.push_str("</section>\n");
    out
}

/// Each endpoint's cache rules as last read, and what purgeq assumes from
/// them (query variants purged once; copies expired by TTL).
fn cache_rules_section(
    policies: &std::collections::BTreeMap<String, crate::cdn::cache_rules::KnownPolicy>,
    hosts: &EndpointHosts,
) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"cache-rules\"><h2 id=\"cache-rules\">Cache rules</h2>\n",
    );
    if policies.is_empty() {
        out.push_str("<p>No endpoint's cache policy has been read yet: nothing is assumed, every URL is purged.</p>\n");
    } else {
        out.push_str(
            "<table><caption>Per endpoint, as the CDN last answered</caption><thead><tr>\
             <th scope=\"col\">Endpoint</th><th scope=\"col\">Policy</th>\
             <th scope=\"col\">Read</th></tr></thead><tbody>\n",
        );
        for (endpoint, known) in policies {
            let read = match &known.refresh_error {
                Some(error) => format!("{} (the last refresh failed: {error})", known.fetched_at),
                None => known.fetched_at.clone(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                endpoint_cell(endpoint, hosts),
                escape(&known.policy.to_string()),
                escape(&read)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
    out
}

/// The caches in front of the origin: what each has yet to purge before
/// the CDN may, and why it fails when it does (issue 34).
fn origin_section(layers: &[crate::store::OriginLayerCounts]) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"origin-caches\"><h2 id=\"origin-caches\">Origin caches</h2>\n\
         <table><caption>Purged before the CDN: a URL's CDN purge waits for every layer in front of \
         its origin</caption><thead><tr><th scope=\"col\">Layer</th>\
         <th scope=\"col\">URLs to purge</th><th scope=\"col\">Failing</th>\
         <th scope=\"col\">Last failure</th></tr></thead><tbody>\n",
    );
    for layer in layers {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&layer.layer),
            layer.pending,
            layer.failing,
            escape(layer.last_error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
    out
}

/// The tag registry (issue 35): how many URLs a purge by tag can reach,
/// and what the bound dropped.
fn tags_section(tags: &crate::store::TagRegistryCounts) -> String {
    let dropped = match tags.dropped {
        0 => String::new(),
        n => format!("; {n} least recently seen dropped to stay within <code>tags.max_urls</code>"),
    };
    format!(
        "<section aria-labelledby=\"tags\"><h2 id=\"tags\">Tags</h2>\n<p>The tag registry knows \
         the tags of {} URLs{dropped}.</p>\n</section>\n",
        tags.urls
    )
}

/// Verification at the edge: time from intent to fresh, and what is
/// stale now (issue 33).
fn freshness_section(freshness: &crate::store::FreshnessSummary) -> String {
    let seconds = |s: Option<f64>| s.map_or_else(|| "–".to_owned(), |s| format!("{s:.1} s"));
    let mut out = String::from(
        "<section aria-labelledby=\"freshness\"><h2 id=\"freshness\">Fresh at the edge</h2>\n",
    );
    let _ = writeln!(
        out,
        "<p>{} URLs being verified now.</p>\n<table><caption>From the intent to every edge serving \
         the new content</caption><thead><tr><th scope=\"col\">Span</th><th scope=\"col\">Fresh</th>\
         <th scope=\"col\">Median</th><th scope=\"col\">p95</th><th scope=\"col\">Stale</th>\
         <th scope=\"col\">Unverifiable</th></tr></thead><tbody>",
        freshness.pending
    );
    for (span, t) in [("Last hour", &freshness.hour), ("Last day", &freshness.day)] {
        let _ = writeln!(
            out,
            "<tr><td>{span}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            t.fresh,
            seconds(t.median_seconds),
            seconds(t.p95_seconds),
            t.stale,
            t.unverifiable
        );
    }
    out.push_str("</tbody></table>\n");
    if freshness.stale_now.is_empty() {
        out.push_str("<p>No URL is stale at the edge now.</p>\n");
    } else {
        out.push_str("<h3>Stale now</h3>\n<ul>\n");
        for stale in &freshness.stale_now {
            let _ = writeln!(
                out,
                "<li><span class=\"url\">{}</span>: {} ({})</li>",
                escape(&stale.url),
                escape(&stale.reason),
                time(&stale.at)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
    out
}

/// How long the backlog takes, and what of it today's quota takes: the
/// rest waits for the next quota day (at `next_day_at`, when known). HTML:
/// numbers, fixed words and a `<time>`.
fn drain_words(drain: &crate::quota::Drain, next_day_at: Option<&str>) -> String {
    let urls = |files: u64, directories: u64| match (files, directories) {
        (f, 0) => plural(f, "file"),
        (0, d) => plural(d, "directory"),
        (f, d) => format!("{} and {}", plural(f, "file"), plural(d, "directory")),
    };
    let sending = |seconds: f64, calls: u64| {
        format!(
            "{} ({})",
            if seconds < 1.0 {
                "under a second".to_owned()
            } else {
                format!("about {}", duration(seconds))
            },
            plural(calls, "call")
        )
    };
    if drain.calls == 0 {
        return "Nothing waits to be sent.".to_owned();
    }
    if drain.quota_days == 0 {
        return format!(
            "Sending it all takes {}, within today's quota.",
            sending(drain.seconds, drain.calls)
        );
    }
    let waiting = urls(
        drain.pending_files - drain.files_today,
        drain.pending_directories - drain.directories_today,
    );
    let when = next_day_at
        .map(|at| format!(" at {}", time(at)))
        .unwrap_or_default();
    let days = if drain.quota_days > 1 {
        format!(" ({} quota days at the current quota)", drain.quota_days)
    } else {
        String::new()
    };
    let wait = match (drain.pending_files - drain.files_today)
        + (drain.pending_directories - drain.directories_today)
    {
        1 => "waits",
        _ => "wait",
    };
    if drain.calls_today == 0 {
        format!(
            "Today's quota takes none of it: {waiting} {wait} for the next quota day{when}{days}."
        )
    } else {
        format!(
            "Today's quota takes {}: {}. The other {waiting} {wait} for the next quota day{when}{days}.",
            urls(drain.files_today, drain.directories_today),
            sending(drain.seconds_today, drain.calls_today)
        )
    }
}

/// `1 file`, `2 files`; `1 directory`, `3 directories`.
fn plural(n: u64, noun: &str) -> String {
    match (n, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (n, Some(stem)) => format!("{n} {stem}ies"),
        (n, None) => format!("{n} {noun}s"),
    }
}

/// Each configured endpoint's hosts, by endpoint id: operators know
/// their endpoints by the hosts they serve, not by GUID.
pub type EndpointHosts = std::collections::BTreeMap<String, Vec<String>>;

/// An endpoint as its hosts (the first three, and how many more), its id
/// on hover; an endpoint no longer configured as its id.
fn endpoint_cell(endpoint: &str, hosts: &EndpointHosts) -> String {
    match hosts.get(endpoint).filter(|h| !h.is_empty()) {
        Some(hosts) => {
            let shown: Vec<&str> = hosts.iter().take(3).map(String::as_str).collect();
            let more = match hosts.len().saturating_sub(3) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            format!(
                "<span class=\"endpoint\" title=\"endpoint {}: {}\">{}{more}</span>",
                escape(endpoint),
                escape(&hosts.join(", ")),
                escape(&shown.join(", "))
            )
        }
        None => format!("<code class=\"id\">{}</code>", escape(endpoint)),
    }
}

/// What is waiting, per endpoint, and how old the oldest is.
fn backlog_section(stats: &StatsView, hosts: &EndpointHosts) -> String {
    let items = &stats.items;
    let mut out =
        String::from("<section aria-labelledby=\"backlog\"><h2 id=\"backlog\">Backlog</h2>\n");
    let oldest = stats
        .oldest_pending_age_seconds
        .map_or("nothing pending".to_owned(), |age| {
            format!("the oldest has waited {}", duration(age))
        });
    let _ = writeln!(
        out,
        "<p><span class=\"figure\" id=\"pending\">{}</span> pending, {} in flight \
         ({} sending, {} submitted); {oldest}.</p>\n<p id=\"drain\">{}</p>",
        items.pending,
        items.sending + items.submitted,
        items.sending,
        items.submitted,
        drain_words(
            &stats.drain,
            stats
                .pipeline
                .quota
                .as_ref()
                .map(|q| q.next_day_at.as_str())
        ),
    );
    let p = &stats.preloads;
    let _ = writeln!(
        out,
        "<p>Preloads: {} waiting for their purge, {} pending, {} in flight.</p>",
        p.waiting,
        p.pending,
        p.sending + p.submitted,
    );
    if !stats.backlog_by_endpoint.is_empty() {
        out.push_str(
            "<table><caption>By endpoint</caption><thead><tr><th scope=\"col\">Endpoint</th>\
             <th scope=\"col\">Pending</th><th scope=\"col\">In flight</th><th scope=\"col\">State</th>\
             </tr></thead><tbody>\n",
        );
        for (endpoint, backlog) in &stats.backlog_by_endpoint {
            let rest =
                stats
                    .pipeline
                    .endpoints_paused
                    .get(endpoint)
                    .map_or("sending".to_owned(), |r| {
                        format!(
                            "resting: {} (again in {})",
                            r.reason,
                            duration(r.retry_in_seconds)
                        )
                    });
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                endpoint_cell(endpoint, hosts),
                backlog.pending,
                backlog.in_flight,
                escape(&rest)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
    out
}

/// URLs and calls over the last hour (per minute) and day (per hour), and
/// the quota used through the day, from the ledger the quota bars read.
fn charts_section(data: &ChartData) -> String {
    use crate::store::Slot;
    use charts::{CALLS, Chart, Layout, QUOTA, URLS, draw, into_slots, slots};
    let hour = slots(data.now, Slot::Minute, 60);
    let day = slots(data.now, Slot::Hour, 24);
    let hours_today = ((data.now - data.day_start).whole_hours() + 1).clamp(1, 24) as usize;
    let today = slots(data.now, Slot::Hour, hours_today);
    let quota = into_slots(data.quota_day.clone(), &today);
    let history_from = data.history_from.as_deref();
    let over = |id, title, unit, slots, series, counts, layout| Chart {
        id,
        title,
        unit,
        slots,
        series,
        counts,
        layout,
        cumulative: false,
        history_from,
    };
    let charts = [
        over(
            "urls-hour",
            "URLs",
            "per minute, last hour",
            &hour,
            &URLS[..],
            &data.urls_hour,
            Layout::Grouped,
        ),
        over(
            "urls-day",
            "URLs",
            "per hour, last day",
            &day,
            &URLS[..],
            &data.urls_day,
            Layout::Grouped,
        ),
        over(
            "calls-hour",
            "API calls",
            "per minute, last hour",
            &hour,
            &CALLS[..],
            &data.calls_hour,
            Layout::Stacked,
        ),
        over(
            "calls-day",
            "API calls",
            "per hour, last day",
            &day,
            &CALLS[..],
            &data.calls_day,
            Layout::Stacked,
        ),
        Chart {
            id: "quota-today",
            title: "Quota used today",
            unit: "URLs charged to today's quota, running total",
            slots: &today,
            series: &QUOTA,
            counts: &quota,
            layout: Layout::Grouped,
            cumulative: true,
            history_from: None,
        },
    ];
    let mut out = String::from(
        "<section aria-labelledby=\"charts\"><h2 id=\"charts\">The last hour and day</h2>\n<div class=\"charts\">\n",
    );
    for chart in &charts {
        out.push_str(&draw(chart));
    }
    out.push_str("</div>\n</section>\n");
    out
}

/// The newest CDN error answers: when, which call, the error's type and
/// message, and the correlation id to quote to support.
fn errors_section(errors: &[crate::store::RecentError]) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"errors\"><h2 id=\"errors\">Recent CDN errors</h2>\n",
    );
    if errors.is_empty() {
        out.push_str("<p>None recorded.</p>\n</section>\n");
        return out;
    }
    out.push_str(
        "<table class=\"errors\"><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Call</th>\
         <th scope=\"col\">Type</th><th scope=\"col\">Message</th><th scope=\"col\">Correlation id</th>\
         </tr></thead><tbody>\n",
    );
    for e in errors {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(&e.at),
            escape(&e.operation),
            escape(&e.error.error_type),
            escape(&e.error.message),
            escape(e.error.correlation_id.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
    out
}

/// The recent requests, newest first, with a filter form (works without
/// JavaScript: a plain GET) and a link to the older ones.
fn requests_section(recent: &listing::Listing, filter: &listing::Filter) -> String {
    let selected = |state: RequestState| {
        if filter.state == Some(state) {
            " selected"
        } else {
            ""
        }
    };
    let mut out = format!(
        "<section aria-labelledby=\"requests\"><h2 id=\"requests\">Recent requests</h2>\n\
         <form method=\"get\" action=\"/\" class=\"filter\"><label>State <select name=\"state\">\
         <option value=\"\">any</option><option{}>in_progress</option><option{}>succeeded</option>\
         <option{}>failed</option><option{}>cancelled</option></select></label> \
         <label>Label <input name=\"label\" value=\"{}\"></label> \
         <label>URL starts with <input name=\"url\" type=\"url\" value=\"{}\"></label> \
         <button>Filter</button></form>\n",
        selected(RequestState::InProgress),
        selected(RequestState::Succeeded),
        selected(RequestState::Failed),
        selected(RequestState::Cancelled),
        escape(filter.label.as_deref().unwrap_or_default()),
        escape(filter.url.as_deref().unwrap_or_default()),
    );
    if recent.rows.is_empty() {
        out.push_str(if filter.narrows() || filter.before.is_some() {
            "<p>No request matches here.</p>\n"
        } else {
            "<p>No request yet.</p>\n"
        });
    } else {
        out.push_str(
            "<table class=\"requests\"><thead><tr><th scope=\"col\">Request</th><th scope=\"col\">Label</th>\
             <th scope=\"col\">Source</th><th scope=\"col\">URLs</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Received</th></tr></thead><tbody>\n",
        );
        for request in &recent.rows {
            let _ = writeln!(
                out,
                "<tr><td><a href=\"/ui/requests/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
                 <td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(request.label.as_deref().unwrap_or("")),
                escape(&request.source),
                request.urls,
                request_state(request.state),
                time(&request.received_at),
                id = escape(&request.id),
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let mut nav = Vec::new();
    if filter.before.is_some() {
        nav.push("<a href=\"/\">Newest</a>".to_owned());
    }
    if let Some(cursor) = &recent.older {
        if filter.narrows() {
            nav.push(format!(
                "{} matching of {} requests searched.",
                recent.rows.len(),
                recent.searched
            ));
        }
        nav.push(format!(
            "<a href=\"/?{}\" rel=\"next\">Older requests</a>",
            escape(&filter.older(cursor))
        ));
    }
    if !nav.is_empty() {
        let _ = writeln!(
            out,
            "<nav class=\"pages\" aria-label=\"pages\"><p>{}</p></nav>",
            nav.join(" ")
        );
    }
    out.push_str("</section>\n");
    out
}

/// A request's state in words, marked for the stylesheet.
fn request_state(state: RequestState) -> String {
    let (class, word) = match state {
        RequestState::InProgress => ("warn", "in progress"),
        RequestState::Succeeded => ("ok", "succeeded"),
        RequestState::Failed => ("bad", "failed"),
        RequestState::Cancelled => ("muted", "cancelled"),
    };
    format!("<span class=\"state {class}\">{word}</span>")
}

/// What a request's buttons may act on: failed URLs (or preloads) to
/// retry, pending ones to cancel.
fn actionable(request: &RequestStatus) -> (usize, usize) {
    use crate::store::{ItemState, PreloadState};
    let count = |item: ItemState, preload: PreloadState| {
        request
            .items
            .iter()
            .filter(|i| i.state == item || i.preload_state == Some(preload))
            .count()
    };
    (
        count(ItemState::Failed, PreloadState::Failed),
        count(ItemState::Pending, PreloadState::Pending),
    )
}

/// The request page's buttons: each leads to its confirmation page (a
/// GET: nothing happens until the POST there).
fn action_buttons(request: &RequestStatus) -> String {
    let (failed, pending) = actionable(request);
    let link = |action: &str, label: String| {
        format!(
            "<a class=\"button\" href=\"/ui/requests/{}/{action}\">{label}…</a>\n",
            escape(&request.id),
        )
    };
    let mut out = String::new();
    if failed > 0 {
        out.push_str(&link("retry", format!("Retry the failed URLs ({failed})")));
    }
    if pending > 0 {
        out.push_str(&link(
            "cancel",
            format!("Cancel the pending URLs ({pending})"),
        ));
    }
    if out.is_empty() {
        return out;
    }
    format!("<div class=\"actions\">{out}</div>\n")
}

/// What a button did, as the redirect after it says (`?done=cancelled&n=3&kept=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Done {
    pub done: Option<DoneAction>,
    pub n: Option<u64>,
    pub kept: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneAction {
    Retried,
    Cancelled,
}

/// The result message of a button, in words; empty without one.
fn done_message(done: &Done) -> String {
    let n = done.n.unwrap_or(0);
    let text = match done.done {
        None => return String::new(),
        Some(DoneAction::Retried) if n == 0 => "Nothing to retry: no URL had failed.".to_owned(),
        Some(DoneAction::Retried) => format!(
            "Retried: {} pending again, to be sent as the rate and quota allow.",
            plural(n, "URL")
        ),
        Some(DoneAction::Cancelled) => {
            let kept = match done.kept.unwrap_or(0) {
                0 => String::new(),
                1 => " 1 stays pending: another request also asked for it.".to_owned(),
                k => format!(" {k} stay pending: other requests also asked for them."),
            };
            match n {
                0 => format!("Nothing was cancelled: no URL was still pending.{kept}"),
                n => format!("Cancelled {}.{kept}", plural(n, "pending URL")),
            }
        }
    };
    format!("<p class=\"done\" role=\"status\">{}</p>\n", escape(&text))
}

/// `GET /ui/requests/{id}/retry` or `/cancel`: what the button will do,
/// the POST that does it, and the way back.
pub fn confirm_page(request: &RequestStatus, retry: bool, viewer: &Viewer) -> String {
    let (failed, pending) = actionable(request);
    let (action, question, button, none) = if retry {
        (
            "retry",
            format!(
                "Send the {} of request {} again?",
                plural(failed as u64, "failed URL"),
                request.id
            ),
            "Yes, retry them",
            "No URL of this request has failed: there is nothing to retry.",
        )
    } else {
        (
            "cancel",
            format!(
                "Cancel the {} of request {}? Cancelled URLs are not purged; \
                 URLs already sent are not called back.",
                plural(pending as u64, "pending URL"),
                request.id
            ),
            "Yes, cancel them",
            "No URL of this request is pending: there is nothing to cancel.",
        )
    };
    let body = if (retry && failed == 0) || (!retry && pending == 0) {
        format!("<p>{}</p>\n", escape(none))
    } else {
        format!(
            "<p>{}</p>\n<form method=\"post\" action=\"/ui/requests/{id}/{action}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>{button}</button> \
             <a href=\"/ui/requests/{id}\">No, go back</a></form>\n",
            escape(&question),
            escape(&viewer.csrf),
            id = escape(&request.id),
        )
    };
    let main = format!(
        "<p><a href=\"/ui/requests/{id}\">← request {id}</a></p>\n<section aria-labelledby=\"confirm\">\
         <h2 id=\"confirm\">{title}</h2>\n{body}</section>\n",
        id = escape(&request.id),
        title = if retry { "Retry" } else { "Cancel" },
    );
    page(
        &format!("purgeq: {action} request {}", request.id),
        &main,
        viewer,
    )
}

/// One request: every URL's fate, and (unless `read_only`) the buttons.
pub fn request_page(
    request: &RequestStatus,
    read_only: bool,
    done: &Done,
    viewer: &Viewer,
) -> String {
    let mut main = format!(
        "<p><a href=\"/\">← status</a></p>\n<section aria-labelledby=\"request\">\
         <h2 id=\"request\">Request {}</h2>\n<p>{} · received {} from {}{} · {} URLs</p>\n",
        escape(&request.id),
        request_state(request.state),
        time(&request.received_at),
        escape(&request.source),
        request
            .label
            .as_deref()
            .map(|l| format!(" · label “{}”", escape(l)))
            .unwrap_or_default(),
        request.items.len(),
    );
    if !request.tags.is_empty() {
        main.push_str(&format!("<p>Tags: {}</p>\n", tags_line(&request.tags)));
    }
    main.push_str(&done_message(done));
    if !read_only {
        main.push_str(&action_buttons(request));
    }
    // The origin caches' column only where some URL has layers in front
    // of its origin (issue 34): each layer's purge, before the CDN's.
    let layers = request.items.iter().any(|i| !i.origin_caches.is_empty());
    let verified = request.items.iter().any(|i| i.verification.is_some());
    main.push_str(&format!(
        "<table class=\"items\"><thead><tr><th scope=\"col\">URL</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Via</th><th scope=\"col\">TaskTrackId</th><th scope=\"col\">Correlation id</th>\
         <th scope=\"col\">Attempts</th><th scope=\"col\">Error or wait</th><th scope=\"col\">Preload</th>\
         {}{}</tr></thead><tbody>\n",
        if layers {
            "<th scope=\"col\">Origin caches</th>"
        } else {
            ""
        },
        if verified {
            "<th scope=\"col\">At the edge</th>"
        } else {
            ""
        }
    ));
    for item in &request.items {
        main.push_str(&item_row(item, layers, verified));
    }
    main.push_str("</tbody></table>\n</section>\n");
    page(&format!("purgeq request {}", request.id), &main, viewer)
}

/// A request's tags with what each gave: `product-42 (12 URLs), ghost
/// (not in the registry)`.
fn tags_line(tags: &std::collections::BTreeMap<String, u64>) -> String {
    tags.iter()
        .map(|(tag, urls)| match urls {
            0 => format!("<code>{}</code> (not in the registry)", escape(tag)),
            1 => format!("<code>{}</code> (1 URL)", escape(tag)),
            n => format!("<code>{}</code> ({n} URLs)", escape(tag)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One URL's purges at the caches in front of its origin, a line each:
/// `varnish-1 done 10:00:01 (purged)`.
fn origin_cell(item: &ItemStatus) -> String {
    item.origin_caches
        .iter()
        .map(|layer| {
            let detail = match layer.state {
                crate::store::OriginPurgeState::Done => format!(
                    " {} ({})",
                    layer.done_at.as_deref().map(time).unwrap_or_default(),
                    escape(layer.answer.as_deref().unwrap_or("purged"))
                ),
                _ => layer
                    .error
                    .as_deref()
                    .map(|e| format!(": {}", escape(e)))
                    .unwrap_or_default(),
            };
            format!(
                "{} <span class=\"state s-{state}\">{state}</span>{detail}",
                escape(&layer.layer),
                state = layer.state.as_str()
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// A URL that wraps after its slashes, not inside its host (the request
/// page showed "www.exa" / "mple.com").
fn breakable_url(url: &str) -> String {
    escape(url).replace('/', "/<wbr>")
}

/// A long id in a narrow cell: the whole id is in the page (copying it
/// copies all of it, the tooltip shows it), CSS shows its start.
fn short_id(id: Option<&str>) -> String {
    match id {
        Some(id) if !id.is_empty() => {
            let id = escape(id);
            format!("<span class=\"id\" title=\"{id}\">{id}</span>")
        }
        _ => String::new(),
    }
}

fn item_row(item: &ItemStatus, layers: bool, verified: bool) -> String {
    let mut via = match (&item.merged_into, &item.merge_reason) {
        (Some(into), Some(reason)) => format!("{} ({})", escape(into), escape(reason)),
        (Some(into), None) => escape(into),
        (None, _) => String::new(),
    };
    if let Some(tag) = &item.via_tag {
        if !via.is_empty() {
            via.push_str("<br>");
        }
        via.push_str(&format!("tag <code>{}</code>", escape(tag)));
    }
    let note = item
        .error
        .as_deref()
        .or(item.waiting.as_deref())
        .map(escape)
        .unwrap_or_default();
    let preload = match (item.operation, item.preload_state) {
        (crate::store::Operation::Preload, _) => "preload only".to_owned(),
        (_, Some(state)) => {
            let error = item
                .preload_error
                .as_deref()
                .map(|e| format!(": {}", escape(e)))
                .unwrap_or_default();
            format!("{}{error}", state.as_str())
        }
        (_, None) => String::new(),
    };
    format!(
        "<tr><td class=\"url\">{}</td><td><span class=\"state s-{state}\">{state}</span></td><td>{via}</td>\
         <td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{note}</td><td>{preload}</td>{origin}{edge}</tr>\n",
        breakable_url(&item.url),
        short_id(item.task_track_id.as_deref()),
        short_id(item.correlation_id.as_deref()),
        item.attempts,
        state = item.state.as_str(),
        origin = if layers {
            format!("<td>{}</td>", origin_cell(item))
        } else {
            String::new()
        },
        edge = if verified {
            format!("<td>{}</td>", edge_cell(item))
        } else {
            String::new()
        },
    )
}

/// Whether the edge serves the new content: the state, the time to fresh
/// or the reason, and each edge.
fn edge_cell(item: &ItemStatus) -> String {
    let Some(v) = &item.verification else {
        return String::new();
    };
    let detail = match (v.time_to_fresh_seconds, &v.reason) {
        (Some(seconds), _) => format!(" in {seconds:.1} s"),
        (None, Some(reason)) => format!(": {}", escape(reason)),
        (None, None) => String::new(),
    };
    let edges: Vec<String> = v
        .edges
        .iter()
        .map(|e| {
            format!(
                "{} {} ({})",
                escape(&e.edge),
                e.state.as_str(),
                escape(&e.served)
            )
        })
        .collect();
    format!(
        "<span class=\"state s-{state}\">{state}</span>{detail}{}",
        if edges.is_empty() {
            String::new()
        } else {
            format!("<br>{}", edges.join("<br>"))
        },
        state = v.state.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_comes_from_outside_is_shown_never_run() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("a\u{1b}[31mb"), "a\u{fffd}[31mb");
        assert_eq!(escape("gpj.\u{202e}exe"), "gpj.&lt;U+202E&gt;exe");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.4), "0 s");
        assert_eq!(duration(59.0), "59 s");
        assert_eq!(duration(61.0), "1 min");
        assert_eq!(duration(3_725.0), "1 h 2 min");
        assert_eq!(duration(200_000.0), "2 d");
    }

    #[test]
    fn the_drain_says_what_today_takes_and_what_waits() {
        let at = "2026-12-06T16:00:00.000Z";
        let when = format!("at {}", time(at));
        for (pending, waiting, expected) in [
            ((0, 0), (0, 0), "Nothing waits to be sent.".to_owned()),
            (
                (250, 0),
                (0, 0),
                "Sending it all takes under a second (3 calls), within today's quota.".to_owned(),
            ),
            (
                (1_267, 0),
                (1_267, 0),
                format!(
                    "Today's quota takes none of it: 1267 files wait for the next quota day {when}."
                ),
            ),
            (
                (5_000, 2),
                (3_500, 0),
                format!(
                    "Today's quota takes 1500 files and 2 directories: about 3 s (15 calls). \
                     The other 3500 files wait for the next quota day {when} \
                     (2 quota days at the current quota)."
                ),
            ),
            (
                (1, 1),
                (0, 1),
                format!(
                    "Today's quota takes 1 file: under a second (1 call). \
                     The other 1 directory waits for the next quota day {when}."
                ),
            ),
        ] {
            let drain = crate::quota::drain(pending, (100, 50), 5.0, waiting, (2_000, 500));
            assert_eq!(
                drain_words(&drain, Some(at)),
                expected,
                "{pending:?} {waiting:?}"
            );
        }
    }

    #[test]
    fn endpoints_show_as_their_hosts_with_the_id_on_hover() {
        let hosts: EndpointHosts = [
            ("a".to_owned(), vec!["www.example.com".to_owned()]),
            (
                "b".to_owned(),
                ["a.cn", "b.cn", "c.cn", "d.cn", "e.cn"]
                    .map(String::from)
                    .to_vec(),
            ),
        ]
        .into();
        assert_eq!(
            endpoint_cell("a", &hosts),
            "<span class=\"endpoint\" title=\"endpoint a: www.example.com\">www.example.com</span>"
        );
        assert!(
            endpoint_cell("b", &hosts).contains(">a.cn, b.cn, c.cn and 2 more</span>"),
            "{}",
            endpoint_cell("b", &hosts)
        );
        assert_eq!(
            endpoint_cell("<gone>", &hosts),
            "<code class=\"id\">&lt;gone&gt;</code>"
        );
    }

    #[test]
    fn a_button_says_what_it_did() {
        let done = |action, n, kept| Done {
            done: Some(action),
            n: Some(n),
            kept,
        };
        for (given, said) in [
            (Done::default(), ""),
            (
                done(DoneAction::Retried, 2, None),
                "Retried: 2 URLs pending again, to be sent as the rate and quota allow.",
            ),
            (
                done(DoneAction::Retried, 0, None),
                "Nothing to retry: no URL had failed.",
            ),
            (
                done(DoneAction::Cancelled, 1, Some(0)),
                "Cancelled 1 pending URL.",
            ),
            (
                done(DoneAction::Cancelled, 3, Some(2)),
                "Cancelled 3 pending URLs. 2 stay pending: other requests also asked for them.",
            ),
            (
                done(DoneAction::Cancelled, 0, Some(1)),
                "Nothing was cancelled: no URL was still pending. 1 stays pending: another request also asked for it.",
            ),
        ] {
            let html = done_message(&given);
            assert!(html.contains(said), "{given:?}: {html}");
            assert_eq!(html.is_empty(), said.is_empty());
        }
    }

    #[test]
    fn urls_wrap_after_slashes_and_ids_stay_whole() {
        assert_eq!(
            breakable_url("http://www.example.com/a/b.js?x=<1>"),
            "http:/<wbr>/<wbr>www.example.com/<wbr>a/<wbr>b.js?x=&lt;1&gt;"
        );
        assert_eq!(
            short_id(Some("0f1e2d3c-aaaa")),
            "<span class=\"id\" title=\"0f1e2d3c-aaaa\">0f1e2d3c-aaaa</span>"
        );
        assert_eq!(short_id(None), "");
    }

    #[test]
    fn a_bar_says_its_figures_in_words_too() {
        let html = bar("Files", 1_500, 2_000);
        assert!(html.contains("value=\"1500\""), "{html}");
        assert!(
            html.contains("1500 of 2000 used, <strong>500 left</strong>"),
            "{html}"
        );
    }
}
