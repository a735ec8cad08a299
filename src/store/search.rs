//! Search over the whole retained history (issue 36): every URL a request
//! asked for, found by its URL (exact or prefix), its request, the
//! TaskTrackId of the call that purged it, its request's label, its state
//! and a time range; newest first, a page at a time.
//!
//! Each search is driven by one index range ([`Driver`], chosen by a pure
//! rule), and the other conditions filter what that range gives: a URL is
//! found in a million-item history without walking it. Where a range can
//! be large (a URL prefix, a label, a time range) it is read in bounded
//! windows, and the page says where the next window starts.

use serde::Serialize;

use super::db::on_pool;
use super::{Store, StoreError};

/// How many candidates one page reads at most from a range that can be
/// large: URLs under a prefix, requests of a label or a time range.
pub const WINDOW: u32 = 500;

/// Results on a page.
pub const PAGE: u32 = 50;

/// How a search matches URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlMatch {
    Exact(String),
    Prefix(String),
}

/// Where a page starts: after this row of the previous one (newest first:
/// received_at, then request id, descending; then position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cursor {
    pub received_at: String,
    pub request_id: String,
    pub position: i64,
}

impl Cursor {
    /// `received_at|request_id|position`, as links carry it.
    pub fn to_param(&self) -> String {
        format!("{}|{}|{}", self.received_at, self.request_id, self.position)
    }

    pub fn parse(text: &str) -> Option<Cursor> {
        let (received_at, rest) = text.split_once('|')?;
        let (request_id, position) = rest.rsplit_once('|')?;
        Some(Cursor {
            received_at: received_at.to_owned(),
            request_id: request_id.to_owned(),
            position: position.parse().ok()?,
        })
    }
}

/// What to look for; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub url: Option<UrlMatch>,
    pub request_id: Option<String>,
    pub task_track_id: Option<String>,
    pub label: Option<String>,
    /// The URL's state as its request shows it (a URL merged into a
    /// directory has the directory's); `merged`: the URLs that were
    /// merged (into a directory or a newer copy), whatever became of them,
    /// as `purgeq history --state merged` means it.
    pub state: Option<String>,
    /// Requests received at or after / before these stored timestamps.
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<Cursor>,
}

/// Which index range a search reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// One request's links (its primary key).
    Request,
    /// The items of the call a TaskTrackId names, and what was merged
    /// into them.
    TaskTrackId,
    /// Items and links whose URL is, or starts with, the text.
    Url,
    /// The requests of a label, newest first, a window at a time.
    Label,
    /// Requests newest first within the time range, a window at a time.
    Time,
}

impl Search {
    /// The narrowest index range the search names: a request, a call, a
    /// URL, a label, else time.
    pub fn driver(&self) -> Driver {
        if self.request_id.is_some() {
            Driver::Request
        } else if self.task_track_id.is_some() {
            Driver::TaskTrackId
        } else if self.url.is_some() {
            Driver::Url
        } else if self.label.is_some() {
            Driver::Label
        } else {
            Driver::Time
        }
    }

    /// `(low, high)` of the URL range: `(url, None)` for an exact URL; a
    /// prefix's range ends past any text that starts with it.
    fn url_range(&self) -> (Option<String>, Option<String>) {
        match &self.url {
            None => (None, None),
            Some(UrlMatch::Exact(url)) => (Some(url.clone()), None),
            Some(UrlMatch::Prefix(prefix)) => {
                (Some(prefix.clone()), Some(format!("{prefix}\u{10FFFF}")))
            }
        }
    }
}

/// The time range and the cursor as ranges of the requests' index: an
/// absent bound is the end of the range ("" below every stored
/// timestamp, "~" above every timestamp and id), so each is a range the
/// index can search, not a condition to test on every row.
struct Bounds {
    since: String,
    until: String,
    received_at: String,
    request_id: String,
    position: i64,
}

impl Search {
    fn bounds(&self) -> Bounds {
        const TOP: &str = "~";
        let after = self.after.as_ref();
        Bounds {
            since: self.since.clone().unwrap_or_default(),
            until: self.until.clone().unwrap_or_else(|| TOP.to_owned()),
            received_at: after.map_or(TOP.to_owned(), |a| a.received_at.clone()),
            request_id: after.map_or(TOP.to_owned(), |a| a.request_id.clone()),
            position: after.map_or(-1, |a| a.position),
        }
    }
}

/// One URL of one request, as a search shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Found {
    pub received_at: String,
    pub request_id: String,
    pub position: i64,
    pub label: Option<String>,
    pub url: String,
    pub kind: String,
    pub endpoint_id: String,
    pub state: String,
    /// The directory (or newer copy) it was merged into, if it was.
    pub merged_into_url: Option<String>,
    pub task_track_id: Option<String>,
    pub last_error: Option<String>,
    pub finished_at: Option<String>,
    /// The item whose fate this is (the directory's, when merged).
    #[serde(skip)]
    pub item_id: i64,
}

/// A page of results, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchPage {
    pub rows: Vec<Found>,
    /// More may follow: search again `after` this.
    pub next: Option<Cursor>,
    /// A URL prefix matched more URLs than one search reads ([`WINDOW`]):
    /// the results are among the first of them in URL order.
    pub capped: bool,
}

/// The rows of a search, with the driver's links as `links(request_id,
/// item_id, position, requested_url)`. Parameters: `$1`/`$2` the URL range
/// (`$2` NULL: exactly `$1`), `$3` request id, `$4` TaskTrackId, `$5`
/// label, `$6` state, `$7`/`$8` since/until, `$9`-`$11` the cursor, `$12`
/// the page's limit, `$13` the window.
macro_rules! search_select {
    ($links:expr, $url:expr) => {
        concat!(
            "WITH links AS (",
            $links,
            ")
SELECT r.received_at, l.request_id, l.position, r.label,
       COALESCE(l.requested_url, i.url) AS url,
       COALESCE(ri.requested_kind, i.kind) AS kind,
       i.endpoint_id,
       COALESCE(m.state, i.state) AS state,
       CASE WHEN l.requested_url IS NULL THEN m.url ELSE i.url END AS merged_into_url,
       b.task_track_id,
       COALESCE(m.last_error, i.last_error) AS last_error,
       COALESCE(m.finished_at, i.finished_at) AS finished_at,
       COALESCE(m.id, i.id) AS item_id
FROM links l
JOIN request_items ri ON ri.request_id = l.request_id AND ri.item_id = l.item_id
                     AND ri.position = l.position
JOIN requests r ON r.id = l.request_id
JOIN items i ON i.id = l.item_id
LEFT JOIN items m ON m.id = i.merged_into
LEFT JOIN batches b ON b.id = COALESCE(m.batch_id, i.batch_id)
WHERE (CAST($1 AS TEXT) IS NULL OR ",
            $url,
            ")
  AND (CAST($3 AS TEXT) IS NULL OR l.request_id = CAST($3 AS TEXT))
  AND (CAST($4 AS TEXT) IS NULL OR b.task_track_id = CAST($4 AS TEXT))
  AND (CAST($5 AS TEXT) IS NULL OR r.label = CAST($5 AS TEXT))
  AND (CAST($6 AS TEXT) IS NULL
       OR (CAST($6 AS TEXT) = 'merged' AND (i.merged_into IS NOT NULL OR l.requested_url IS NOT NULL))
       OR COALESCE(m.state, i.state) = CAST($6 AS TEXT))
  AND (CAST($7 AS TEXT) IS NULL OR r.received_at >= CAST($7 AS TEXT))
  AND (CAST($8 AS TEXT) IS NULL OR r.received_at < CAST($8 AS TEXT))
  AND (CAST($9 AS TEXT) IS NULL OR r.received_at < CAST($9 AS TEXT)
       OR (r.received_at = CAST($9 AS TEXT)
           AND (l.request_id < CAST($10 AS TEXT)
                OR (l.request_id = CAST($10 AS TEXT) AND l.position > $11))))
  AND $13 > 0
ORDER BY r.received_at DESC, l.request_id DESC, l.position
LIMIT $12"
        )
    };
}

/// The URL asked for against `$1`/`$2`.
macro_rules! url_sqlite {
    () => {
        "CASE WHEN CAST($2 AS TEXT) IS NULL
              THEN COALESCE(l.requested_url, i.url) = CAST($1 AS TEXT)
              ELSE substr(COALESCE(l.requested_url, i.url), 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT) END"
    };
}
macro_rules! url_postgres {
    () => {
        "CASE WHEN CAST($2 AS TEXT) IS NULL
              THEN COALESCE(l.requested_url, i.url) = CAST($1 AS TEXT)
              ELSE left(COALESCE(l.requested_url, i.url), length(CAST($1 AS TEXT))) = CAST($1 AS TEXT) END"
    };
}

/// A window of requests newest first (`$13` of them) after the cursor,
/// within the time range; `$label` narrows them to a label's.
macro_rules! request_window {
    ($table:literal, $label:literal) => {
        concat!(
            "SELECT ri.request_id, ri.item_id, ri.position, ri.requested_url
             FROM request_items ri
             WHERE ri.request_id IN (
                 SELECT id FROM ",
            $table,
            " WHERE ",
            $label,
            "
                   AND received_at >= CAST($7 AS TEXT) AND received_at < CAST($8 AS TEXT)
                   AND received_at <= CAST($9 AS TEXT)
                   AND (received_at < CAST($9 AS TEXT) OR id <= CAST($10 AS TEXT))
                 ORDER BY received_at DESC, id DESC LIMIT $13)"
        )
    };
}

macro_rules! by_request {
    () => {
        "SELECT request_id, item_id, position, requested_url
         FROM request_items WHERE request_id = CAST($3 AS TEXT)"
    };
}
macro_rules! by_task {
    () => {
        "SELECT ri.request_id, ri.item_id, ri.position, ri.requested_url
     FROM request_items ri
     WHERE ri.item_id IN (
         SELECT i.id FROM batches b JOIN items i ON i.batch_id = b.id
         WHERE b.task_track_id = CAST($4 AS TEXT)
         UNION
         SELECT x.id FROM items x
         WHERE x.merged_into IN (SELECT i.id FROM batches b JOIN items i ON i.batch_id = b.id
                                 WHERE b.task_track_id = CAST($4 AS TEXT)))"
    };
}

/// Items whose URL is in the range, and links that asked for a URL in it
/// (a file covered by a directory): at most `$13` of each, in URL order.
macro_rules! by_url {
    ($collate:literal) => {
        concat!(
            "SELECT ri.request_id, ri.item_id, ri.position, ri.requested_url
             FROM request_items ri
             WHERE ri.item_id IN (
                 SELECT id FROM items
                 WHERE url",
            $collate,
            " >= CAST($1 AS TEXT) AND url",
            $collate,
            " <= COALESCE(CAST($2 AS TEXT), CAST($1 AS TEXT))
                 ORDER BY url",
            $collate,
            " LIMIT $13)
             UNION
             SELECT ri.request_id, ri.item_id, ri.position, ri.requested_url
             FROM request_items ri
             WHERE ri.requested_url IS NOT NULL
               AND ri.requested_url",
            $collate,
            " IN (SELECT requested_url FROM request_items
                  WHERE requested_url IS NOT NULL
                    AND requested_url",
            $collate,
            " >= CAST($1 AS TEXT) AND requested_url",
            $collate,
            " <= COALESCE(CAST($2 AS TEXT), CAST($1 AS TEXT))
                  ORDER BY requested_url",
            $collate,
            " LIMIT $13)"
        )
    };
}

pub(crate) const SEARCH_BY_REQUEST_SQLITE: &str = search_select!(by_request!(), url_sqlite!());
pub(crate) const SEARCH_BY_REQUEST_POSTGRES: &str = search_select!(by_request!(), url_postgres!());
pub(crate) const SEARCH_BY_TASK_SQLITE: &str = search_select!(by_task!(), url_sqlite!());
pub(crate) const SEARCH_BY_TASK_POSTGRES: &str = search_select!(by_task!(), url_postgres!());
pub(crate) const SEARCH_BY_URL_SQLITE: &str = search_select!(by_url!(""), url_sqlite!());
pub(crate) const SEARCH_BY_URL_POSTGRES: &str =
    search_select!(by_url!(" COLLATE \"C\""), url_postgres!());
pub(crate) const SEARCH_BY_LABEL_SQLITE: &str = search_select!(
    request_window!(
        "requests INDEXED BY requests_label",
        "label = CAST($5 AS TEXT)"
    ),
    url_sqlite!()
);
pub(crate) const SEARCH_BY_LABEL_POSTGRES: &str = search_select!(
    request_window!("requests", "label = CAST($5 AS TEXT)"),
    url_postgres!()
);
pub(crate) const SEARCH_BY_TIME_SQLITE: &str = search_select!(
    request_window!("requests INDEXED BY requests_received", "1 = 1"),
    url_sqlite!()
);
pub(crate) const SEARCH_BY_TIME_POSTGRES: &str =
    search_select!(request_window!("requests", "1 = 1"), url_postgres!());

/// The last request of a full window (label or time), if the window was
/// full: the next page starts after it even when few of its URLs matched.
macro_rules! window_end {
    ($table:literal, $label:literal) => {
        concat!(
            "SELECT received_at, id FROM ",
            $table,
            " WHERE ",
            $label,
            "
               AND received_at >= CAST($2 AS TEXT) AND received_at < CAST($3 AS TEXT)
               AND received_at <= CAST($4 AS TEXT)
               AND (received_at < CAST($4 AS TEXT) OR id <= CAST($5 AS TEXT))
             ORDER BY received_at DESC, id DESC LIMIT 1 OFFSET $6"
        )
    };
}
pub(crate) const WINDOW_END_LABEL_SQLITE: &str = window_end!(
    "requests INDEXED BY requests_label",
    "label = CAST($1 AS TEXT)"
);
pub(crate) const WINDOW_END_LABEL_POSTGRES: &str =
    window_end!("requests", "label = CAST($1 AS TEXT)");
pub(crate) const WINDOW_END_TIME_SQLITE: &str = window_end!(
    "requests INDEXED BY requests_received",
    "(CAST($1 AS TEXT) IS NULL OR 1 = 1)"
);
pub(crate) const WINDOW_END_TIME_POSTGRES: &str =
    window_end!("requests", "(CAST($1 AS TEXT) IS NULL OR 1 = 1)");

impl Store {
    /// A page of `search`: at most [`PAGE`] rows, newest first.
    pub async fn search(&self, search: &Search) -> Result<SearchPage, StoreError> {
        let backend = self.reader.backend();
        let driver = search.driver();
        let sql = match driver {
            Driver::Request => backend.pick(SEARCH_BY_REQUEST_SQLITE, SEARCH_BY_REQUEST_POSTGRES),
            Driver::TaskTrackId => backend.pick(SEARCH_BY_TASK_SQLITE, SEARCH_BY_TASK_POSTGRES),
            Driver::Url => backend.pick(SEARCH_BY_URL_SQLITE, SEARCH_BY_URL_POSTGRES),
            Driver::Label => backend.pick(SEARCH_BY_LABEL_SQLITE, SEARCH_BY_LABEL_POSTGRES),
            Driver::Time => backend.pick(SEARCH_BY_TIME_SQLITE, SEARCH_BY_TIME_POSTGRES),
        };
        let (low, high) = search.url_range();
        let bounds = search.bounds();
        let mut rows: Vec<Found> = on_pool!(&self.reader, c => sqlx::query_as(sql)
            .bind(&low)
            .bind(&high)
            .bind(&search.request_id)
            .bind(&search.task_track_id)
            .bind(&search.label)
            .bind(&search.state)
            .bind(&bounds.since)
            .bind(&bounds.until)
            .bind(&bounds.received_at)
            .bind(&bounds.request_id)
            .bind(bounds.position)
            .bind(i64::from(PAGE) + 1)
            .bind(i64::from(WINDOW))
            .fetch_all(c).await)?;
        let full_page = rows.len() > PAGE as usize;
        rows.truncate(PAGE as usize);
        let last_shown = rows.last().map(|r| Cursor {
            received_at: r.received_at.clone(),
            request_id: r.request_id.clone(),
            position: r.position,
        });
        let (next, capped) = match driver {
            _ if full_page => (last_shown, false),
            Driver::Label | Driver::Time => (self.window_end(search, driver).await?, false),
            Driver::Url => (None, self.url_capped(search).await?),
            Driver::Request | Driver::TaskTrackId => (None, false),
        };
        Ok(SearchPage { rows, next, capped })
    }

    /// After a window of requests that was full: its last request (all of
    /// its URLs read), where the next window starts.
    async fn window_end(
        &self,
        search: &Search,
        driver: Driver,
    ) -> Result<Option<Cursor>, StoreError> {
        let backend = self.reader.backend();
        let sql = match driver {
            Driver::Label => backend.pick(WINDOW_END_LABEL_SQLITE, WINDOW_END_LABEL_POSTGRES),
            _ => backend.pick(WINDOW_END_TIME_SQLITE, WINDOW_END_TIME_POSTGRES),
        };
        let bounds = search.bounds();
        let end: Option<(String, String)> = on_pool!(&self.reader, c => sqlx::query_as(sql)
            .bind(&search.label)
            .bind(&bounds.since)
            .bind(&bounds.until)
            .bind(&bounds.received_at)
            .bind(&bounds.request_id)
            .bind(i64::from(WINDOW) - 1)
            .fetch_optional(c).await)?;
        Ok(end.map(|(received_at, request_id)| Cursor {
            received_at,
            request_id,
            position: i64::MAX,
        }))
    }

    /// Whether a URL prefix matched more items than one search reads.
    async fn url_capped(&self, search: &Search) -> Result<bool, StoreError> {
        let (Some(low), Some(high)) = search.url_range() else {
            return Ok(false);
        };
        let sql = self.reader.backend().pick(
            "SELECT count(*) FROM (SELECT 1 FROM items WHERE url >= $1 AND url <= $2 LIMIT $3) AS s",
            "SELECT count(*) FROM (SELECT 1 FROM items WHERE url COLLATE \"C\" >= $1
                                   AND url COLLATE \"C\" <= $2 LIMIT $3) AS s",
        );
        let n: i64 = on_pool!(&self.reader, c => sqlx::query_scalar(sql)
            .bind(&low)
            .bind(&high)
            .bind(i64::from(WINDOW) + 1)
            .fetch_one(c).await)?;
        Ok(n > i64::from(WINDOW))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_narrowest_range_drives() {
        let base = Search::default();
        let with = |f: fn(&mut Search)| {
            let mut s = base.clone();
            f(&mut s);
            s.driver()
        };
        assert_eq!(base.driver(), Driver::Time);
        assert_eq!(with(|s| s.state = Some("failed".into())), Driver::Time);
        assert_eq!(with(|s| s.label = Some("deploy".into())), Driver::Label);
        assert_eq!(
            with(|s| {
                s.label = Some("deploy".into());
                s.url = Some(UrlMatch::Prefix("http://a/".into()));
            }),
            Driver::Url
        );
        assert_eq!(
            with(|s| {
                s.url = Some(UrlMatch::Exact("http://a/".into()));
                s.task_track_id = Some("t".into());
            }),
            Driver::TaskTrackId
        );
        assert_eq!(
            with(|s| {
                s.task_track_id = Some("t".into());
                s.request_id = Some("r".into());
            }),
            Driver::Request
        );
    }

    #[test]
    fn a_prefix_is_a_range_and_an_exact_url_a_point() {
        let mut s = Search {
            url: Some(UrlMatch::Prefix("http://a/x".into())),
            ..Search::default()
        };
        let (low, high) = s.url_range();
        let (low, high) = (low.expect("low"), high.expect("high"));
        for inside in [
            "http://a/x",
            "http://a/x/",
            "http://a/xyz?q=1",
            "http://a/x\u{7f}",
        ] {
            assert!(
                low.as_str() <= inside && inside <= high.as_str(),
                "{inside}"
            );
        }
        for outside in ["http://a/", "http://a/w", "http://a/y", "http://b/x"] {
            assert!(
                !(low.as_str() <= outside && outside <= high.as_str()),
                "{outside}"
            );
        }
        s.url = Some(UrlMatch::Exact("http://a/x".into()));
        assert_eq!(s.url_range(), (Some("http://a/x".into()), None));
    }

    #[test]
    fn a_cursor_reads_back_what_it_wrote() {
        let cursor = Cursor {
            received_at: "2026-12-05T10:00:00.000Z".into(),
            request_id: "01a2|odd".into(),
            position: 7,
        };
        assert_eq!(Cursor::parse(&cursor.to_param()), Some(cursor));
        assert_eq!(Cursor::parse("nonsense"), None);
        assert_eq!(Cursor::parse("a|b|c"), None);
    }
}
