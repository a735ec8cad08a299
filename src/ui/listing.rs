//! Which requests the front page lists, and where its next page starts.
//!
//! The page must cost the same with a history of millions of rows, so it
//! never asks the database for "the next 50 failed requests labelled X"
//! (a scan as long as the history when none are). It reads a fixed window
//! of requests, newest first before a cursor, filters that window here,
//! and when the window ran out before the page filled, says how far it
//! searched and links to the next window. Each page load is then one
//! bounded read, whatever the filter.

use crate::store::{RequestState, RequestSummary};

/// Rows on one page.
pub const PAGE: usize = 50;

/// Requests read per page when a filter is set (without one, the window
/// is the page itself).
pub const WINDOW: u32 = 500;

/// The list's filter, as parsed from the query string (`?state=&label=
/// &url=&before=`); empty fields mean no filter, as a plain HTML form
/// sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<RequestState>,
    pub label: Option<String>,
    /// A URL prefix: requests with at least one URL starting with it.
    pub url: Option<String>,
    /// Requests older than this request id (the cursor).
    pub before: Option<String>,
}

impl Filter {
    /// Parses the form's fields, naming the one that is wrong.
    pub fn parse(form: &super::ListFilter) -> Result<Filter, String> {
        let field = |value: &Option<String>| value.clone().filter(|text| !text.is_empty());
        let state = match field(&form.state) {
            None => None,
            Some(text) => Some(
                serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
                    format!(
                        "state: {text:?} is not one of in_progress, succeeded, failed, cancelled"
                    )
                })?,
            ),
        };
        Ok(Filter {
            state,
            label: field(&form.label),
            url: field(&form.url),
            before: field(&form.before).map(|id| id.to_ascii_lowercase()),
        })
    }

    /// Whether anything narrows the list (then a wider window is read).
    pub fn narrows(&self) -> bool {
        self.state.is_some() || self.label.is_some() || self.url.is_some()
    }

    /// How many requests to read for one page.
    pub fn window(&self) -> u32 {
        if self.narrows() { WINDOW } else { PAGE as u32 }
    }

    /// The query string of the page after `cursor`, with the same filter.
    pub fn older(&self, cursor: &str) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(state) = self.state {
            query.append_pair("state", state.as_str());
        }
        if let Some(label) = &self.label {
            query.append_pair("label", label);
        }
        if let Some(url) = &self.url {
            query.append_pair("url", url);
        }
        query.append_pair("before", cursor);
        query.finish()
    }

    fn keeps(&self, summary: &RequestSummary, url_matches: bool) -> bool {
        url_matches
            && self.state.is_none_or(|state| summary.state == state)
            && self
                .label
                .as_ref()
                .is_none_or(|label| summary.label.as_ref() == Some(label))
    }
}

/// One page of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub rows: Vec<RequestSummary>,
    /// Requests read to fill it.
    pub searched: usize,
    /// Where the next page starts, when there may be more.
    pub older: Option<String>,
}

/// Filters a window read with [`Filter::window`] (newest first; each
/// request with whether a URL matched the prefix) into a page.
pub fn select(window: Vec<(RequestSummary, bool)>, filter: &Filter) -> Listing {
    let full = window.len() >= filter.window() as usize;
    let mut rows = Vec::new();
    let mut searched = 0;
    let mut last_read = None;
    for (summary, url_matches) in window {
        searched += 1;
        last_read = Some(summary.id.clone());
        if filter.keeps(&summary, url_matches) {
            rows.push(summary);
            if rows.len() == PAGE {
                break;
            }
        }
    }
    // The next page starts after the last request read: after the last
    // row when the page filled, else after the window, if it was full
    // (there may be older requests).
    let older = if rows.len() == PAGE || full {
        last_read
    } else {
        None
    };
    Listing {
        rows,
        searched,
        older,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize, state: RequestState, label: Option<&str>) -> RequestSummary {
        RequestSummary {
            id: format!("r{n:05}"),
            received_at: "2026-12-02T10:00:00.000Z".to_owned(),
            source: "test".to_owned(),
            label: label.map(str::to_owned),
            urls: 1,
            state,
        }
    }

    /// `count` requests, newest first (descending ids), every tenth
    /// failed, every `url_every`th with a URL matching the prefix.
    fn window(count: usize, url_every: usize) -> Vec<(RequestSummary, bool)> {
        (0..count)
            .rev()
            .map(|n| {
                let state = if n % 10 == 0 {
                    RequestState::Failed
                } else {
                    RequestState::Succeeded
                };
                (
                    request(n, state, Some(if n % 2 == 0 { "even" } else { "odd" })),
                    n % url_every == 0,
                )
            })
            .collect()
    }

    #[test]
    fn without_a_filter_a_page_is_the_window_and_the_next_starts_after_it() {
        let filter = Filter::default();
        let listing = select(window(PAGE, 1), &filter);
        assert_eq!(listing.rows.len(), PAGE);
        assert_eq!(listing.older.as_deref(), Some("r00000"));
        let last = select(window(7, 1), &filter);
        assert_eq!(last.rows.len(), 7);
        assert_eq!(last.older, None, "a short window is the end of the history");
    }

    #[test]
    fn a_filter_keeps_only_what_matches_and_the_next_page_starts_after_the_last_row() {
        let filter = Filter {
            label: Some("odd".to_owned()),
            ..Filter::default()
        };
        let listing = select(window(WINDOW as usize, 1), &filter);
        assert_eq!(listing.rows.len(), PAGE);
        assert!(
            listing
                .rows
                .iter()
                .all(|r| r.label.as_deref() == Some("odd"))
        );
        assert_eq!(listing.older.as_deref(), Some("r00401"), "the 50th odd one");
        assert_eq!(listing.searched, 99);
    }

    #[test]
    fn a_rare_match_searches_one_window_then_offers_the_next() {
        let filter = Filter {
            label: Some("even".to_owned()),
            url: Some("http://x/".to_owned()),
            state: Some(RequestState::Failed),
            before: None,
        };
        let listing = select(window(WINDOW as usize, 3), &filter);
        // Failed, even and a URL match: n % 30 == 0 below 500, 17 of them.
        assert_eq!(listing.rows.len(), 17);
        assert_eq!(listing.searched, WINDOW as usize);
        assert_eq!(listing.older.as_deref(), Some("r00000"));
    }

    #[test]
    fn the_next_page_keeps_the_filter_and_encodes_it() {
        let filter = Filter {
            state: Some(RequestState::InProgress),
            label: Some("deploy #4 & co".to_owned()),
            url: Some("https://www.example.com/a b".to_owned()),
            before: Some("r1".to_owned()),
        };
        assert_eq!(
            filter.older("r00042"),
            "state=in_progress&label=deploy+%234+%26+co&url=https%3A%2F%2Fwww.example.com%2Fa+b&before=r00042"
        );
    }

    #[test]
    fn a_wrong_state_is_named_and_empty_fields_are_no_filter() {
        let form = super::super::ListFilter {
            state: Some("done".to_owned()),
            ..Default::default()
        };
        let error = Filter::parse(&form).expect_err("bad state");
        assert!(error.contains("\"done\""), "{error}");
        let empty = super::super::ListFilter {
            state: Some(String::new()),
            label: Some(String::new()),
            url: Some(String::new()),
            before: Some(String::new()),
        };
        assert_eq!(Filter::parse(&empty), Ok(Filter::default()));
    }
}
