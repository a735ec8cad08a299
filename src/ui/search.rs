//! The search page (`GET /ui/search`, issue 36): any URL ever purged,
//! with its fate, over the whole retained history. The form's fields are
//! parsed here into a [`Search`] (naming the field that is wrong), and a
//! page of results is drawn; the store reads each search as one index
//! range (see `store::search`).

use std::fmt::Write as _;

use crate::store::{Cursor, ItemState, Search, SearchPage, UrlMatch};

use super::{Viewer, escape, page, plural, short_id, time};

/// The form as the browser sends it (`?url=&match=&label=&request=
/// &task=&state=&since=&until=&after=`); empty fields mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct SearchForm {
    pub url: Option<String>,
    /// `prefix` (the default) or `exact`.
    #[serde(rename = "match")]
    pub url_match: Option<String>,
    pub label: Option<String>,
    pub request: Option<String>,
    pub task: Option<String>,
    pub state: Option<String>,
    /// `YYYY-MM-DD` (UTC), from that day on.
    pub since: Option<String>,
    /// `YYYY-MM-DD` (UTC), through that day.
    pub until: Option<String>,
    pub after: Option<String>,
    /// What a bulk action just did (the redirect after it says).
    pub done: Option<super::DoneAction>,
    pub n: Option<u64>,
    pub kept: Option<u64>,
}

impl SearchForm {
    /// Whether anything was asked (an empty form shows only the form).
    pub fn is_empty(&self) -> bool {
        [
            &self.url,
            &self.label,
            &self.request,
            &self.task,
            &self.state,
            &self.since,
            &self.until,
        ]
        .iter()
        .all(|value| field(value).is_none())
    }

    /// The search the form asks for, or what is wrong with which field.
    pub fn parse(&self) -> Result<Search, String> {
        let since = day("since", field(&self.since), false)?;
        let until = day("until", field(&self.until), true)?;
        if let (Some(since), Some(until)) = (&since, &until)
            && since >= until
        {
            return Err("until: the range ends before it starts".to_owned());
        }
        let after = match field(&self.after) {
            None => None,
            Some(text) => Some(Cursor::parse(&text).ok_or("after: not a page of this search")?),
        };
        Ok(Search {
            url: url_match(field(&self.url), field(&self.url_match))?,
            request_id: field(&self.request).map(|id| id.to_ascii_lowercase()),
            task_track_id: field(&self.task),
            label: field(&self.label),
            state: state(field(&self.state))?,
            since,
            until,
            after,
        })
    }

    /// The query string of the page after `cursor`, with the same fields.
    fn next(&self, cursor: &Cursor) -> String {
        let mut query = self.query();
        query.append_pair("after", &cursor.to_param());
        query.finish()
    }

    /// The query string of this very page (the search and its cursor),
    /// which a bulk action's confirmation and POST carry.
    pub fn this_page(&self) -> String {
        let mut query = self.query();
        if let Some(after) = self.after.as_deref().filter(|a| !a.is_empty()) {
            query.append_pair("after", after);
        }
        query.finish()
    }

    fn query(&self) -> url::form_urlencoded::Serializer<'static, String> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("url", &self.url),
            ("match", &self.url_match),
            ("label", &self.label),
            ("request", &self.request),
            ("task", &self.task),
            ("state", &self.state),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                query.append_pair(name, value);
            }
        }
        query
    }
}

/// A form field as given, trimmed; empty means not given.
fn field(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// The URL field and how it matches (a prefix unless `exact`).
fn url_match(url: Option<String>, how: Option<String>) -> Result<Option<UrlMatch>, String> {
    Ok(match (url, how.as_deref()) {
        (None, _) => None,
        (Some(url), None | Some("prefix")) => Some(UrlMatch::Prefix(lower_scheme_and_host(&url))),
        (Some(url), Some("exact")) => Some(UrlMatch::Exact(lower_scheme_and_host(&url))),
        (Some(_), Some(other)) => {
            return Err(format!("match: {other:?} is not one of prefix, exact"));
        }
    })
}

/// An item state by its name.
fn state(text: Option<String>) -> Result<Option<String>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    match ItemState::parse(&text) {
        Some(state) => Ok(Some(state.as_str().to_owned())),
        None => Err(format!(
            "state: {text:?} is not one of {}",
            ItemState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A `YYYY-MM-DD` (UTC) field as the stored timestamp of its midnight,
/// or of the next day's (`next`: "through that day").
fn day(name: &str, text: Option<String>, next: bool) -> Result<Option<String>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(&text, format)
        .map_err(|_| format!("{name}: {text:?} is not a date (YYYY-MM-DD)"))?;
    let date = if next {
        date.next_day()
            .ok_or_else(|| format!("{name}: {text:?} is the last day there is"))?
    } else {
        date
    };
    Ok(Some(
        crate::store::Timestamp::new(date.midnight().assume_utc()).to_string(),
    ))
}

/// URLs are stored with their scheme and host in lower case: a search
/// for `HTTPS://WWW.Example.com/A.js` means `https://www.example.com/A.js`.
fn lower_scheme_and_host(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        rest[..host_end].to_ascii_lowercase(),
        &rest[host_end..]
    )
}

/// The form, filled with what was asked.
fn form(asked: &SearchForm) -> String {
    let value = |v: &Option<String>| escape(v.as_deref().unwrap_or(""));
    let selected = |v: &Option<String>, option: &str| {
        if v.as_deref() == Some(option) {
            " selected"
        } else {
            ""
        }
    };
    let mut states = String::from("<option value=\"\">any</option>");
    for state in ItemState::ALL {
        let _ = write!(
            states,
            "<option{}>{}</option>",
            selected(&asked.state, state.as_str()),
            state.as_str()
        );
    }
    format!(
        "<form method=\"get\" action=\"/ui/search\" class=\"filter search\" role=\"search\">\
         <label>URL <input name=\"url\" value=\"{}\" size=\"48\" placeholder=\"https://www.example.com/app/\"></label> \
         <label>Match <select name=\"match\"><option value=\"prefix\"{}>starts with</option>\
         <option value=\"exact\"{}>exactly</option></select></label> \
         <label>Label <input name=\"label\" value=\"{}\"></label> \
         <label>Request id <input name=\"request\" value=\"{}\"></label> \
         <label>TaskTrackId <input name=\"task\" value=\"{}\"></label> \
         <label>State <select name=\"state\">{states}</select></label> \
         <label>From <input type=\"date\" name=\"since\" value=\"{}\"></label> \
         <label>Through <input type=\"date\" name=\"until\" value=\"{}\"></label> \
         <button>Search</button></form>\n",
        value(&asked.url),
        selected(&asked.url_match, "prefix"),
        selected(&asked.url_match, "exact"),
        value(&asked.label),
        value(&asked.request),
        value(&asked.task),
        value(&asked.since),
        value(&asked.until),
    )
}

/// What a bulk action on a page of results acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// The failed URLs shown: their items (a merged URL's directory) go
    /// back to pending.
    Retry,
    /// The requests shown with a pending URL: each is cancelled whole,
    /// as its own page's Cancel does (a cancel belongs to a request).
    Cancel,
}

impl Bulk {
    pub fn as_str(self) -> &'static str {
        match self {
            Bulk::Retry => "retry",
            Bulk::Cancel => "cancel",
        }
    }
}

/// The failed items shown (each once), and the requests shown with a
/// pending URL (each once), in the page's order.
pub fn bulk_targets(found: &SearchPage) -> (Vec<i64>, Vec<String>) {
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for row in &found.rows {
        if row.state == "failed" && !failed.contains(&row.item_id) {
            failed.push(row.item_id);
        }
        if row.state == "pending" && !pending.contains(&row.request_id) {
            pending.push(row.request_id.clone());
        }
    }
    (failed, pending)
}

/// The links to a page's bulk actions, each to its confirmation.
fn bulk_links(asked: &SearchForm, found: &SearchPage) -> String {
    let (failed, pending) = bulk_targets(found);
    let query = escape(&asked.this_page());
    let mut out = String::new();
    if !failed.is_empty() {
        let _ = write!(
            out,
            "<a class=\"button\" href=\"/ui/search/retry?{query}\">Retry the {} shown…</a>",
            plural(failed.len() as u64, "failed URL")
        );
    }
    if !pending.is_empty() {
        let _ = write!(
            out,
            "<a class=\"button\" href=\"/ui/search/cancel?{query}\">Cancel the {} with pending URLs shown…</a>",
            plural(pending.len() as u64, "request")
        );
    }
    if out.is_empty() {
        out
    } else {
        format!("<div class=\"actions\">{out}</div>\n")
    }
}

/// What a bulk action asks, the URLs or requests it lists, and its
/// button's words.
fn bulk_question(found: &SearchPage, action: Bulk) -> (String, Vec<String>, &'static str) {
    let (failed, pending) = bulk_targets(found);
    match action {
        Bulk::Retry => (
            format!(
                "Send the {} shown on this page of results again?",
                plural(failed.len() as u64, "failed URL")
            ),
            found
                .rows
                .iter()
                .filter(|r| r.state == "failed")
                .map(|r| super::breakable_url(&r.url))
                .collect::<Vec<_>>(),
            "Yes, retry them",
        ),
        Bulk::Cancel => (
            format!(
                "Cancel the {} shown with pending URLs? Each is cancelled whole, as its own \
                 page's Cancel does: every URL of it still pending, not only those shown; \
                 URLs other requests also asked for stay pending.",
                plural(pending.len() as u64, "request")
            ),
            pending
                .iter()
                .map(|id| format!("request <code>{}</code>", escape(id)))
                .collect(),
            "Yes, cancel them",
        ),
    }
}

/// `GET /ui/search/retry|cancel?…`: what the bulk action will do to this
/// page of results, and the POST that does it.
pub fn bulk_confirm_page(
    asked: &SearchForm,
    found: &SearchPage,
    action: Bulk,
    viewer: &Viewer,
) -> String {
    let back = format!("/ui/search?{}", asked.this_page());
    let (question, listed, button) = bulk_question(found, action);
    let body = if listed.is_empty() {
        format!(
            "<p>Nothing on this page to {}.</p>\n",
            match action {
                Bulk::Retry => "retry",
                Bulk::Cancel => "cancel",
            }
        )
    } else {
        format!(
            "<p>{}</p>\n<ul class=\"bulk\">{}</ul>\n<form method=\"post\" action=\"/ui/search/{}?{}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>{button}</button> \
             <a href=\"{}\">No, go back</a></form>\n",
            escape(&question),
            listed
                .iter()
                .map(|l| format!("<li>{l}</li>"))
                .collect::<String>(),
            action.as_str(),
            escape(&asked.this_page()),
            escape(&viewer.csrf),
            escape(&back),
        )
    };
    let main = format!(
        "<p><a href=\"{}\">← the search</a></p>\n<section aria-labelledby=\"confirm\">\
         <h2 id=\"confirm\">{}</h2>\n{body}</section>\n",
        escape(&back),
        match action {
            Bulk::Retry => "Retry from a search",
            Bulk::Cancel => "Cancel from a search",
        }
    );
    page("purgeq: act on a search", &main, viewer)
}

/// The search page: the form, and for a search, a page of results.
pub fn search_page(
    asked: &SearchForm,
    found: Option<&SearchPage>,
    read_only: bool,
    viewer: &Viewer,
) -> String {
    let mut main = String::from(
        "<p><a href=\"/\">← status</a></p>\n<section aria-labelledby=\"search\">\
         <h2 id=\"search\">Search the history</h2>\n\
         <p>Every URL a request asked for, as long as the history keeps it \
         (<code>retention</code>), newest first. The dates of the form are UTC days.</p>\n",
    );
    main.push_str(&form(asked));
    main.push_str(&super::done_message(&super::Done {
        done: asked.done,
        n: asked.n,
        kept: asked.kept,
    }));
    if let Some(found) = found {
        if !read_only {
            main.push_str(&bulk_links(asked, found));
        }
        main.push_str(&results(asked, found));
    }
    main.push_str("</section>\n");
    page("purgeq search", &main, viewer)
}

fn results(asked: &SearchForm, found: &SearchPage) -> String {
    let mut out = String::new();
    if found.capped {
        out.push_str(
            "<p class=\"wait\">More URLs start with this than one search reads: these are \
             among the first 500 of them in URL order. Make the prefix longer, or search \
             the exact URL.</p>\n",
        );
    }
    if found.rows.is_empty() {
        out.push_str("<p id=\"found\">Nothing found.</p>\n");
    } else {
        let _ = writeln!(
            out,
            "<p id=\"found\">{} URL{} on this page.</p>",
            found.rows.len(),
            if found.rows.len() == 1 { "" } else { "s" }
        );
        out.push_str(
            "<table class=\"items found\"><thead><tr><th scope=\"col\">URL</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Request</th><th scope=\"col\">Label</th>\
             <th scope=\"col\">Received</th><th scope=\"col\">Finished</th>\
             <th scope=\"col\">TaskTrackId</th><th scope=\"col\">Error or via</th></tr></thead><tbody>\n",
        );
        for row in &found.rows {
            let note = match (&row.last_error, &row.merged_into_url) {
                (Some(error), _) => escape(error),
                (None, Some(into)) => format!("via {}", escape(into)),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "<tr><td class=\"url\">{url}</td><td><span class=\"state s-{state}\">{state}</span></td>\
                 <td><a href=\"/ui/requests/{id}\">{short}</a></td><td>{label}</td><td>{received}</td>\
                 <td>{finished}</td><td>{task}</td><td>{note}</td></tr>",
                url = super::breakable_url(&row.url),
                state = escape(&row.state),
                id = escape(&row.request_id),
                short = short_id(Some(&row.request_id)),
                label = escape(row.label.as_deref().unwrap_or("")),
                received = time(&row.received_at),
                finished = row.finished_at.as_deref().map(time).unwrap_or_default(),
                task = short_id(row.task_track_id.as_deref()),
            );
        }
        out.push_str("</tbody></table>\n");
    }
    if let Some(next) = &found.next {
        let _ = writeln!(
            out,
            "<p><a rel=\"next\" href=\"/ui/search?{}\">Older results →</a></p>",
            escape(&asked.next(next))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> SearchForm {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        serde_urlencoded_form(&query)
    }

    fn serde_urlencoded_form(query: &str) -> SearchForm {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(map)).expect("form")
    }

    #[test]
    fn the_form_becomes_a_search_or_says_which_field_is_wrong() {
        let ok = |fields: &[(&str, &str)]| form(fields).parse().expect("a search");
        assert_eq!(ok(&[]), Search::default());
        assert_eq!(
            ok(&[
                ("url", " HTTPS://WWW.Example.com/A.js "),
                ("match", "exact")
            ])
            .url,
            Some(UrlMatch::Exact("https://www.example.com/A.js".into()))
        );
        assert_eq!(
            ok(&[("url", "https://a.com/app/")]).url,
            Some(UrlMatch::Prefix("https://a.com/app/".into()))
        );
        assert_eq!(
            ok(&[("url", "/app/")]).url,
            Some(UrlMatch::Prefix("/app/".into()))
        );
        let dated = ok(&[
            ("since", "2026-11-10"),
            ("until", "2026-11-10"),
            ("state", "failed"),
        ]);
        assert_eq!(dated.since.as_deref(), Some("2026-11-10T00:00:00.000Z"));
        assert_eq!(
            dated.until.as_deref(),
            Some("2026-11-11T00:00:00.000Z"),
            "through the day"
        );
        assert_eq!(dated.state.as_deref(), Some("failed"));
        assert_eq!(
            ok(&[("request", "01A2B3"), ("label", "")])
                .request_id
                .as_deref(),
            Some("01a2b3")
        );
        let after = ok(&[("after", "2026-11-10T00:00:00.000Z|r1|3")]).after;
        assert_eq!(
            after.map(|a| (a.request_id, a.position)),
            Some(("r1".into(), 3))
        );
        for (fields, error) in [
            (
                vec![("state", "gone")],
                "state: \"gone\" is not one of pending",
            ),
            (vec![("url", "x"), ("match", "regex")], "match: \"regex\""),
            (
                vec![("since", "10/11/2026")],
                "since: \"10/11/2026\" is not a date",
            ),
            (
                vec![("since", "2026-11-12"), ("until", "2026-11-10")],
                "until: the range ends before it starts",
            ),
            (vec![("after", "x")], "after: not a page of this search"),
        ] {
            let got = form(&fields).parse().expect_err("refused");
            assert!(got.starts_with(error), "{fields:?}: {got}");
        }
    }

    #[test]
    fn the_next_page_keeps_the_search() {
        let asked = form(&[
            ("url", "https://a.com/x y"),
            ("state", "failed"),
            ("label", ""),
        ]);
        let next = asked.next(&Cursor {
            received_at: "2026-11-10T00:00:00.000Z".into(),
            request_id: "r1".into(),
            position: 2,
        });
        assert_eq!(
            next,
            "url=https%3A%2F%2Fa.com%2Fx+y&state=failed&after=2026-11-10T00%3A00%3A00.000Z%7Cr1%7C2"
        );
        let again = serde_urlencoded_form(&next);
        assert_eq!(
            again.parse().expect("search").after.map(|a| a.position),
            Some(2)
        );
        assert!(!asked.is_empty());
        assert!(form(&[("label", " ")]).is_empty());
    }

    fn row(request: &str, item: i64, state: &str) -> crate::store::Found {
        crate::store::Found {
            received_at: "2026-11-10T00:00:00.000Z".into(),
            request_id: request.into(),
            position: 0,
            label: None,
            url: format!("https://a.com/{item}"),
            kind: "file".into(),
            endpoint_id: "e".into(),
            state: state.into(),
            merged_into_url: None,
            task_track_id: None,
            last_error: None,
            finished_at: None,
            item_id: item,
        }
    }

    #[test]
    fn a_bulk_action_takes_each_failed_item_and_each_pending_request_once() {
        let found = SearchPage {
            rows: vec![
                row("r2", 7, "failed"),
                row("r1", 7, "failed"),
                row("r1", 8, "pending"),
                row("r1", 9, "pending"),
                row("r3", 10, "succeeded"),
                row("r0", 11, "pending"),
            ],
            next: None,
            capped: false,
        };
        assert_eq!(
            bulk_targets(&found),
            (vec![7], vec!["r1".to_owned(), "r0".to_owned()])
        );
        let asked = form(&[("label", "x")]);
        let viewer = Viewer::default();
        let html = search_page(&asked, Some(&found), false, &viewer);
        assert!(html.contains("Retry the 1 failed URL shown…"), "{html}");
        assert!(
            html.contains("Cancel the 2 requests with pending URLs shown…"),
            "{html}"
        );
        let read_only = search_page(&asked, Some(&found), true, &viewer);
        assert!(!read_only.contains("class=\"button\""), "{read_only}");
        let confirm = bulk_confirm_page(&asked, &found, Bulk::Cancel, &viewer);
        assert!(
            confirm.contains("action=\"/ui/search/cancel?label=x\""),
            "{confirm}"
        );
        let none = SearchPage {
            rows: vec![row("r3", 10, "succeeded")],
            next: None,
            capped: false,
        };
        let confirm = bulk_confirm_page(&asked, &none, Bulk::Retry, &viewer);
        assert!(
            confirm.contains("Nothing on this page to retry."),
            "{confirm}"
        );
        assert!(!confirm.contains("<form method=\"post\""), "{confirm}");
    }

    #[test]
    fn results_link_their_requests_and_escape_what_came_from_outside() {
        let found = SearchPage {
            rows: vec![crate::store::Found {
                received_at: "2026-11-10T00:00:00.000Z".into(),
                request_id: "r1".into(),
                position: 0,
                label: Some("<b>".into()),
                url: "https://a.com/x".into(),
                kind: "file".into(),
                endpoint_id: "e".into(),
                state: "succeeded".into(),
                merged_into_url: None,
                task_track_id: Some("t-1".into()),
                last_error: None,
                finished_at: None,
                item_id: 1,
            }],
            next: None,
            capped: true,
        };
        let html = results(&SearchForm::default(), &found);
        assert!(html.contains("href=\"/ui/requests/r1\""), "{html}");
        assert!(
            html.contains("&lt;b&gt;") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("first 500"), "{html}");
        assert!(!html.contains("Older results"), "{html}");
    }
}
