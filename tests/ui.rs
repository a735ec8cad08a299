//! The status page over real HTTP (issue 19), without a browser: what it
//! says agrees with `/v1/stats`, a request page lists its URLs, what comes
//! from clients is escaped, the page is self-contained, and
//! `ui.enabled = false` turns it off.

mod common;

use std::time::Duration;

use common::*;
use purgeq::cdn::emulator::Knobs;
use serde_json::json;

/// GET over the socket: status, a header, the body as text.
async fn page(client: &reqwest::Client, path: &str) -> (u16, String, String) {
    let response = client
        .get(format!("http://localhost{path}"))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, csp, response.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_says_what_the_stats_say_and_lists_a_requests_urls() {
    let emulator = emulator(Knobs {
        completion_delay: Duration::from_millis(200),
        ..fast_knobs()
    })
    .await;
    let config = format!(
        "{}[batch]\nlinger = \"1h\"\nmax_files = 1000\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let urls: Vec<String> = (0..7)
        .map(|i| format!("http://{}/ui/{i}.js", ENDPOINTS[i % 3].1))
        .collect();
    let (status, accepted) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": urls, "label": "<script>alert(1)</script>" }),
        )
        .await;
    assert_eq!(status, 202);
    let id = accepted["id"].as_str().expect("id");

    let client = daemon.client();
    let (status, csp, html) = page(&client, "/").await;
    assert_eq!(status, 200);
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let stats = daemon.stats().await;
    let pending = stats["items"]["pending"].as_u64().expect("pending");
    assert_eq!(pending, 7);
    assert!(
        html.contains(&format!(
            "<span class=\"figure\" id=\"pending\">{pending}</span> pending"
        )),
        "{html}"
    );
    let left = stats["quota"]["files_left"].as_u64().expect("left");
    assert!(
        html.contains(&format!("<strong>{left} left</strong>")),
        "{html}"
    );
    assert!(html.contains(&format!("href=\"/ui/requests/{id}\"")));
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert"),
        "a label is shown, never run"
    );
    // Self-contained: every asset is the daemon's own.
    for asset in ["/ui/style.css", "/ui/app.js"] {
        assert!(html.contains(asset));
        let (status, _, body) = page(&client, asset).await;
        assert_eq!(status, 200, "{asset}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset}"
        );
    }
    assert!(!html.contains("https://"), "no outside resource: {html}");

    let (status, _, request) = page(&client, &format!("/ui/requests/{id}")).await;
    assert_eq!(status, 200);
    // URLs may wrap after their slashes (`<wbr>`), never inside a host.
    let shown = request.replace("<wbr>", "");
    for url in &urls {
        assert!(shown.contains(url), "{url} in the request page");
    }
    let (status, _, filtered) = page(&client, "/?state=succeeded&label=").await;
    assert_eq!(status, 200);
    assert!(!filtered.contains(id), "only succeeded requests listed");
    let (status, _, _) = page(&client, "/?state=bogus").await;
    assert_eq!(status, 400);

    daemon
        .reload_with(&[("ui.enabled", "false")])
        .await
        .expect("reload");
    assert_eq!(page(&client, "/").await.0, 404);
    assert_eq!(page(&client, "/ui/app.js").await.0, 404);
    // The API is untouched.
    assert_eq!(daemon.get("/v1/stats").await.0, 200);
    daemon.stop().await;
}

/// The total a chart's legend gives for one series (`data-total`).
fn chart_total(html: &str, chart: &str, series: &str) -> i64 {
    let figure = html
        .split(&format!("data-chart=\"{chart}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("chart {chart} in {html}"));
    let figure = &figure[..figure.find("</figure>").expect("figure end")];
    let marker = format!("data-series=\"{series}\" data-total=\"");
    let at = figure
        .find(&marker)
        .unwrap_or_else(|| panic!("{series} in {figure}"))
        + marker.len();
    figure[at..]
        .split('"')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a total for {series} in {figure}"))
}

/// Issue 36: the charts count what `/v1/stats` and the quota bars count.
/// 23 URLs posted (one twice, in two requests), purged in calls of at
/// most 5: "enqueued" is every URL asked for, "purged" every purge that
/// succeeded, and the quota chart ends at the quota bar's figure.
#[tokio::test(flavor = "multi_thread")]
async fn the_charts_agree_with_the_stats_and_the_quota_bars() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\nmax_files = 5\n[tracker]\npoll_interval = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let urls: Vec<String> = (0..22)
        .map(|i| format!("http://{}/charts/{i}.js", ENDPOINTS[i % 3].1))
        .collect();
    let (status, first) = daemon.post("/v1/purges", &json!({ "urls": urls })).await;
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_str().expect("id").to_owned();
    daemon.get(&format!("/v1/purges/{first}?wait=30")).await;
    let (status, again) = daemon
        .post("/v1/purges", &json!({ "urls": [urls[0]] }))
        .await;
    assert_eq!(status, 202, "{again}");
    let again = again["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{again}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view}");

    let stats = daemon.stats().await;
    let succeeded = common::items(&stats, "succeeded") as i64;
    assert_eq!(succeeded, 23, "{stats}");
    let files_used = stats["quota"]["files_used"].as_i64().expect("files used");
    assert_eq!(files_used, 23, "{stats}");
    let (_, _, html) = page(&daemon.client(), "/").await;
    for chart in ["urls-hour", "urls-day"] {
        assert_eq!(chart_total(&html, chart, "enqueued"), 23, "{chart}");
        assert_eq!(chart_total(&html, chart, "purged"), succeeded, "{chart}");
    }
    assert_eq!(chart_total(&html, "quota-today", "files"), files_used);
    assert_eq!(chart_total(&html, "quota-today", "directories"), 0);
    assert!(
        html.contains(&format!("{files_used} of 2000 used")),
        "the bar says the same: {html}"
    );
    // Every call was accepted: 3 endpoints, at most 5 files a call.
    let calls = chart_total(&html, "calls-hour", "accepted");
    assert!((5..=23).contains(&calls), "{calls} calls");
    assert_eq!(chart_total(&html, "calls-hour", "refused"), 0);
    daemon.stop().await;
}

/// Issue 36: the search page finds a URL by what an operator knows of
/// it, leads to its request, pages, and says which field is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn the_search_page_finds_a_url_and_leads_to_its_request() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n[tracker]\npoll_interval = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let client = daemon.client();
    let host = ENDPOINTS[0].1;
    let (_, first) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{host}/s/app.js"), format!("http://{host}/s/app.css")],
                     "label": "release-7" }),
        )
        .await;
    let first = first["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{first}?wait=30")).await;
    assert_eq!(view["state"], "succeeded", "{view}");
    let task = view["items"][0]["task_track_id"]
        .as_str()
        .expect("task")
        .to_owned();
    let (_, second) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{host}/s/app.js")] }),
        )
        .await;
    let second = second["id"].as_str().expect("id").to_owned();

    // The form alone; no search yet.
    let (status, _, html) = page(&client, "/ui/search").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("role=\"search\"") && !html.contains("id=\"found\""),
        "{html}"
    );
    // Exactly this URL (its host typed in capitals): both requests,
    // newest first, each a link to its request.
    let (status, _, html) = page(
        &client,
        &format!(
            "/ui/search?url=http%3A%2F%2F{}%2Fs%2Fapp.js&match=exact",
            host.to_uppercase()
        ),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let links: Vec<&str> = html
        .split("href=\"/ui/requests/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(links, [second.as_str(), first.as_str()], "{html}");
    assert!(html.contains("2 URLs on this page."), "{html}");
    // A prefix and a label; a TaskTrackId; a state.
    let (_, _, html) = page(
        &client,
        &format!("/ui/search?url=http%3A%2F%2F{host}%2Fs%2F&label=release-7"),
    )
    .await;
    assert!(html.contains("2 URLs on this page."), "{html}");
    let (_, _, html) = page(&client, &format!("/ui/search?task={task}")).await;
    assert!(html.contains(&first) && !html.contains(&second), "{html}");
    let (_, _, html) = page(&client, "/ui/search?state=failed").await;
    assert!(html.contains("Nothing found."), "{html}");
    // A wrong field is named.
    let (status, _, body) = page(&client, "/ui/search?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("since: ") && body.contains("is not a date"),
        "{body}"
    );
    // The status page links to it.
    let (_, _, html) = page(&client, "/").await;
    assert!(html.contains("href=\"/ui/search\""), "{html}");
    daemon.stop().await;
}

/// A daemon whose CDN fails every URL containing "flaky", each sent once
/// (no retry), batches cut at once: what the buttons act on.
async fn daemon_with_a_flaky_cdn() -> (
    purgeq::cdn::emulator::EmulatorHandle,
    common::held::HeldDaemon,
) {
    let emulator = emulator(Knobs {
        fail_urls_containing: Some("flaky".into()),
        ..fast_knobs()
    })
    .await;
    let config = format!(
        "{}[batch]\nlinger = \"100ms\"\n[sender]\nmax_attempts = 1\n[tracker]\npoll_interval = \"100ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    (emulator, daemon)
}

/// Issue 36: bulk actions from a search: retry the failed URLs shown,
/// cancel the requests shown with pending URLs; each asks first, is a
/// CSRF-safe POST, says what it did, and is refused read-only.
#[tokio::test(flavor = "multi_thread")]
async fn a_search_retries_the_failed_and_cancels_the_pending_it_shows() {
    let (emulator, daemon) = daemon_with_a_flaky_cdn().await;
    let client = daemon.client();
    let host = ENDPOINTS[0].1;
    let (_, failing) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{host}/bulk/flaky-1.js"), format!("http://{host}/bulk/ok.js")],
                     "label": "bulk-a" }),
        )
        .await;
    let failing = failing["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{failing}?wait=30")).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(emulator.journal().len(), 1);

    // The failed URL by a search; the action asks first.
    let search = "/ui/search?url=http%3A%2F%2Fa.example.com%2Fbulk%2F&state=failed";
    let (_, _, html) = page(&client, search).await;
    assert!(html.contains("Retry the 1 failed URL shown…"), "{html}");
    let confirm = "/ui/search/retry?url=http%3A%2F%2Fa.example.com%2Fbulk%2F&state=failed";
    assert!(
        html.contains(&format!("href=\"{}\"", confirm.replace('&', "&amp;"))),
        "{html}"
    );
    let (status, _, html) = page(&client, confirm).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Send the 1 failed URL shown on this page of results again?")
            && html.contains("flaky-1.js"),
        "{html}"
    );
    let token = form_token(&html);
    assert_eq!(press(&client, confirm, &token, "cross-site").await.0, 403);
    assert_eq!(
        emulator.journal().len(),
        1,
        "asking and a foreign page send nothing"
    );
    let (status, body) = press(&client, confirm, &token, "same-origin").await;
    assert_eq!(status, 200, "the 303 back to the search, followed");
    assert!(body.contains("Retried: 1 URL pending again"), "{body}");
    let (_, view) = daemon.get(&format!("/v1/purges/{failing}?wait=30")).await;
    assert_eq!(
        view["state"], "failed",
        "failed again, by the emulator: {view}"
    );
    assert_eq!(emulator.journal().len(), 2, "sent again once");

    // Pending requests by their label; cancel is per request.
    daemon
        .reload_with(&[("batch.linger", "1h"), ("batch.max_files", "1000")])
        .await
        .expect("reload");
    let mut held = Vec::new();
    for n in 0..2 {
        let (_, accepted) = daemon
            .post(
                "/v1/purges",
                &json!({ "urls": [format!("http://{host}/bulk/held-{n}.js")], "label": "bulk-b" }),
            )
            .await;
        held.push(accepted["id"].as_str().expect("id").to_owned());
    }
    let (_, _, html) = page(&client, "/ui/search?label=bulk-b").await;
    assert!(
        html.contains("Cancel the 2 requests with pending URLs shown…"),
        "{html}"
    );
    let cancel = "/ui/search/cancel?label=bulk-b";
    let (_, _, html) = page(&client, cancel).await;
    assert!(html.contains("Each is cancelled whole"), "{html}");
    for id in &held {
        assert!(html.contains(id.as_str()), "{id} listed: {html}");
    }
    let (status, body) = press(&client, cancel, &form_token(&html), "same-origin").await;
    assert_eq!(status, 200);
    assert!(body.contains("Cancelled 2 pending URLs."), "{body}");
    for id in &held {
        let (_, view) = daemon.get(&format!("/v1/purges/{id}")).await;
        assert_eq!(view["state"], "cancelled", "{view}");
    }
    // Nothing left to cancel: no link.
    let (_, _, html) = page(&client, "/ui/search?label=bulk-b").await;
    assert!(!html.contains("Cancel the"), "{html}");

    // Read-only: no links; asking and pressing refused.
    daemon
        .reload_with(&[("ui.read_only", "true")])
        .await
        .expect("reload");
    let (_, _, html) = page(&client, search).await;
    assert!(!html.contains("class=\"button\""), "{html}");
    assert_eq!(page(&client, confirm).await.0, 403);
    assert_eq!(press(&client, confirm, &token, "same-origin").await.0, 403);
    // A bulk action needs a search.
    daemon
        .reload_with(&[("ui.read_only", "false")])
        .await
        .expect("reload");
    assert_eq!(page(&client, "/ui/search/retry").await.0, 400);
    daemon.stop().await;
}

/// The CSRF token of the first action form on a page.
fn form_token(html: &str) -> String {
    let start = html.find("name=\"csrf\" value=\"").expect("an action form") + 19;
    html[start..].split('"').next().expect("token").to_owned()
}

async fn press(client: &reqwest::Client, path: &str, token: &str, site: &str) -> (u16, String) {
    let response = client
        .post(format!("http://localhost{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", site)
        .body(format!("csrf={token}"))
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_buttons_retry_and_cancel_and_nothing_else_can_press_them() {
    let (emulator, daemon) = daemon_with_a_flaky_cdn().await;
    let client = daemon.client();
    let flaky = format!("http://{}/flaky.js", ENDPOINTS[0].1);
    let (_, accepted) = daemon.post("/v1/purges", &json!({ "urls": [flaky] })).await;
    let id = accepted["id"].as_str().expect("id").to_owned();
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "failed", "{view}");

    let (_, _, html) = page(&client, &format!("/ui/requests/{id}")).await;
    assert!(html.contains("Retry the failed URLs (1)"), "{html}");
    assert!(!html.contains("Cancel the pending URLs"));
    // The button asks first (a page of its own: no script needed); the
    // form there does it.
    let retry = format!("/ui/requests/{id}/retry");
    assert!(html.contains(&format!("href=\"{retry}\"")), "{html}");
    let (status, _, html) = page(&client, &retry).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("Send the 1 failed URL of request {id} again?")),
        "{html}"
    );
    let token = form_token(&html);
    // A foreign page, or a wrong token: refused, nothing sent.
    assert_eq!(press(&client, &retry, &token, "cross-site").await.0, 403);
    assert_eq!(press(&client, &retry, "0123", "same-origin").await.0, 403);
    assert_eq!(emulator.journal().len(), 1);
    // Our own page's button: 303 to the request's page (followed).
    let (status, body) = press(&client, &retry, &token, "same-origin").await;
    assert_eq!(status, 200);
    assert!(body.contains(&format!("Request {id}")), "{body}");
    assert!(
        body.contains("Retried: 1 URL pending again"),
        "the result said: {body}"
    );
    let (_, view) = daemon.get(&format!("/v1/purges/{id}?wait=30")).await;
    assert_eq!(view["state"], "failed", "{view}");
    assert_eq!(emulator.journal().len(), 2, "sent again once");

    // The charts show those calls, from the database (written every 2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, html) = page(&client, "/").await;
        assert_eq!(html.matches("<svg").count(), 5, "five charts");
        let drawn = chart_total(&html, "calls-hour", "accepted") > 0
            && html.contains("<rect class=\"c-ok\"");
        if drawn && html.contains("refused 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no call drawn: {html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: i64 = {
        use sqlx::Connection;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", daemon.db_path().display()))
                .await
                .expect("open");
        sqlx::query_scalar("SELECT count(*) FROM calls WHERE outcome = 'accepted'")
            .fetch_one(&mut conn)
            .await
            .expect("calls")
    };
    assert!(
        rows >= 2,
        "the purges and progress answers are in `calls`: {rows}"
    );

    // Cancel: a request held pending for an hour.
    daemon
        .reload_with(&[("batch.linger", "1h"), ("batch.max_files", "1000")])
        .await
        .expect("reload");
    let (_, accepted) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{}/later.js", ENDPOINTS[1].1)] }),
        )
        .await;
    let later = accepted["id"].as_str().expect("id").to_owned();
    let (_, _, html) = page(&client, &format!("/ui/requests/{later}")).await;
    assert!(html.contains("Cancel the pending URLs (1)"), "{html}");
    let cancel = format!("/ui/requests/{later}/cancel");
    let (_, _, html) = page(&client, &cancel).await;
    let (_, view) = daemon.get(&format!("/v1/purges/{later}")).await;
    assert_eq!(
        view["state"], "in_progress",
        "asking is not cancelling: {view}"
    );
    let (status, body) = press(&client, &cancel, &form_token(&html), "same-origin").await;
    assert_eq!(status, 200);
    assert!(body.contains("Cancelled 1 pending URL."), "{body}");
    let (_, view) = daemon.get(&format!("/v1/purges/{later}")).await;
    assert_eq!(view["state"], "cancelled", "{view}");
    // Nothing left to cancel: the confirmation says so, with no button.
    let (status, _, html) = page(&client, &cancel).await;
    assert_eq!(status, 200);
    assert!(html.contains("nothing to cancel"), "{html}");
    assert!(!html.contains("<form method=\"post\""), "{html}");
    // A made-up result is refused, not shown.
    assert_eq!(
        page(&client, &format!("/ui/requests/{later}?done=exploded"))
            .await
            .0,
        400
    );

    // Read-only: no buttons, and the actions are refused.
    daemon
        .reload_with(&[("ui.read_only", "true")])
        .await
        .expect("reload");
    let (_, _, html) = page(&client, &format!("/ui/requests/{id}")).await;
    assert!(!html.contains("<form method=\"post\""), "{html}");
    assert!(!html.contains("class=\"button\""), "{html}");
    assert_eq!(page(&client, &retry).await.0, 403, "no confirmation either");
    let (status, body) = press(&client, &retry, &token, "same-origin").await;
    assert_eq!(status, 403);
    assert!(body.contains("read-only"), "{body}");
    daemon.stop().await;
}

/// Over TCP with `ingest.token`, a browser (no bearer header) gets a login
/// page with no data; the right token sets a session cookie that opens
/// the page, never the API.
#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_the_page_asks_for_it_and_shows_nothing_before() {
    let token = "a-long-test-token-for-the-status-page";
    let daemon = common::held::HeldDaemon::start("", &[("ingest.token", token)]).await;
    let base = format!("http://{}", daemon.http());
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    for path in ["/", "/ui/app.js", "/ui/style.css", "/ui/requests/x"] {
        let response = browser
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 401, "{path}");
        let body = response.text().await.expect("body");
        assert!(body.contains("asks for its token"), "{path}: {body}");
        assert!(
            !body.contains("Backlog") && !body.contains("quota"),
            "no data: {body}"
        );
    }
    let login = |value: &str| {
        browser
            .post(format!("{base}/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(format!("token={value}"))
            .send()
    };
    let wrong = login("nope").await.expect("POST");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = login(token).await.expect("POST");
    assert_eq!(right.status(), 303);
    let cookie = right
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token),
        "the cookie never carries the token"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();

    let opened = browser
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(opened.status(), 200);
    let body = opened.text().await.expect("body");
    assert!(body.contains("Backlog"));
    // No link the session cannot follow (issue 36: the footer's JSON
    // links answered 401): the page names them and the token they need.
    assert!(!body.contains("href=\"/v1/"), "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    // The cookie opens the page, not the API: that still wants the bearer.
    let api = browser
        .get(format!("{base}/v1/stats"))
        .header("cookie", &session)
        .send()
        .await
        .expect("GET");
    assert_eq!(api.status(), 401);
    let api = browser
        .get(format!("{base}/v1/stats"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    assert_eq!(api.status(), 200);
    // The socket is trusted as before.
    let (status, _, _) = page(&daemon.client(), "/").await;
    assert_eq!(status, 200);
    daemon.stop().await;
}

/// Issue 28: the session cookie was a fixed HMAC of the token (the same
/// for every login, no expiry, no logout), the form token one per process,
/// and 300 wrong tokens took 2.7 s. Now each login gets a random session,
/// a logout ends it, a form token works only in its own session, and
/// wrong tokens are throttled (429 with Retry-After), the right one too
/// while the address waits.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_per_login_end_at_logout_and_wrong_tokens_are_throttled() {
    let token = "another-long-test-token-for-the-page";
    let daemon = common::held::HeldDaemon::start("", &[("ingest.token", token)]).await;
    let base = format!("http://{}", daemon.http());
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = |value: &str| {
        browser
            .post(format!("{base}/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(format!("token={value}"))
            .send()
    };
    let session_of = |response: &reqwest::Response| {
        response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_owned()
    };
    let first = session_of(&login(token).await.expect("POST"));
    let second = session_of(&login(token).await.expect("POST"));
    assert_ne!(first, second, "a new session per login");
    let open = |session: String| {
        browser
            .get(format!("{base}/"))
            .header("cookie", session)
            .send()
    };
    let page = open(first.clone()).await.expect("GET");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the logout form's token")
        .to_owned();
    assert!(html.contains("Log out"), "{html}");
    // The logout button, pressed in `session` with the form token `csrf`.
    let log_out = |session: &str| {
        browser
            .post(format!("{base}/ui/logout"))
            .header("cookie", session)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}"))
            .send()
    };
    // The first session's token does not act in the second.
    let crossed = log_out(&second).await.expect("POST");
    assert_eq!(crossed.status(), 403);
    assert_eq!(open(second.clone()).await.expect("GET").status(), 200);
    // Logging out ends that session only.
    let out = log_out(&first).await.expect("POST");
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.contains("Max-Age=0")),
        "the cookie is forgotten"
    );
    assert_eq!(open(first).await.expect("GET").status(), 401);
    assert_eq!(open(second).await.expect("GET").status(), 200);

    // Wrong tokens: five a minute from one address, then 429.
    for _ in 0..5 {
        assert_eq!(login("wrong").await.expect("POST").status(), 401);
    }
    let throttled = login("wrong").await.expect("POST");
    assert_eq!(throttled.status(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert_eq!(
        login(token).await.expect("POST").status(),
        429,
        "the right token waits too: the throttle does not reveal it"
    );
    daemon.stop().await;
}

/// The CDN's error answers are listed with their type, message and
/// correlation id (from the `calls` table, so they outlive a restart).
#[tokio::test(flavor = "multi_thread")]
async fn recent_cdn_errors_are_listed_with_their_correlation_id() {
    let emulator = emulator(Knobs {
        force_error_type: Some("PermissionDenied".into()),
        ..fast_knobs()
    })
    .await;
    let config = format!(
        "{}[batch]\nlinger = \"50ms\"\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let (status, _) = daemon
        .post(
            "/v1/purges",
            &json!({ "urls": [format!("http://{}/denied.js", ENDPOINTS[0].1)] }),
        )
        .await;
    assert_eq!(status, 202);
    let client = daemon.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let html = loop {
        let (_, _, html) = page(&client, "/").await;
        if html.contains("<table class=\"errors\">") {
            break html;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no error listed: {html}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let errors = &html[html.find("<table class=\"errors\">").expect("table")..];
    let row = &errors[..errors.find("</tr>\n").expect("header")];
    assert!(row.contains("Correlation id"), "{row}");
    let first = errors.split("<tr>").nth(2).expect("a row");
    assert!(
        first.contains("<td>purge</td><td>PermissionDenied</td>"),
        "{first}"
    );
    assert!(first.contains("forced by the emulator"), "{first}");
    // The emulator's X-Correlation-Id (a UUID) is quoted in a cell of its own.
    let row = &first[..first.find("</tr>").expect("row end")];
    let correlation = row
        .rsplit("<td>")
        .next()
        .expect("cell")
        .trim_end_matches("</td>");
    assert_eq!(correlation.len(), 36, "{row}");
    daemon.stop().await;
}

/// The request links a list page shows, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("<a href=\"/ui/requests/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect()
}

/// The "Older requests" link's query string, unescaped.
fn older_link(html: &str) -> Option<String> {
    let (_, rest) = html.split_once("<a href=\"/?")?;
    let (query, rest) = rest.split_once('"')?;
    rest.contains(">Older requests</a>")
        .then(|| query.replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_pages_back_and_filters_by_label_and_url_prefix() {
    let emulator = emulator(fast_knobs()).await;
    let config = format!(
        "{}[batch]\nlinger = \"1h\"\nmax_files = 1000\n",
        cdn_section(&emulator, KEY_VALUE)
    );
    let daemon = common::held::HeldDaemon::start(&config, &[]).await;
    let host = ENDPOINTS[0].1;
    let mut ids = Vec::new();
    for i in 0..60 {
        let (label, dir) = if i % 4 == 0 {
            ("deploy-a", "assets")
        } else {
            ("deploy-b", "pages")
        };
        let urls = vec![
            format!("http://{host}/{dir}/{i}.js"),
            format!("http://{host}/{dir}/{i}.css"),
        ];
        let (status, accepted) = daemon
            .post("/v1/purges", &json!({ "urls": urls, "label": label }))
            .await;
        assert_eq!(status, 202, "{accepted}");
        ids.push(accepted["id"].as_str().expect("id").to_owned());
    }
    ids.reverse(); // newest first, as listed
    let client = daemon.client();

    // Two pages: the 50 newest, then the 10 before them, and no more.
    let (status, _, first) = page(&client, "/").await;
    assert_eq!(status, 200);
    assert_eq!(listed(&first), ids[..50]);
    let older = older_link(&first).expect("a link to the older requests");
    let (status, _, second) = page(&client, &format!("/?{older}")).await;
    assert_eq!(status, 200);
    assert_eq!(listed(&second), ids[50..]);
    assert_eq!(older_link(&second), None, "the end of the history");
    assert!(second.contains("<a href=\"/\">Newest</a>"));

    // A label, and a URL prefix (with the label kept in the next page's
    // link): only what matches, newest first.
    let wanted: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| (59 - n) % 4 == 0)
        .map(|(_, id)| id.clone())
        .collect();
    let (_, _, by_label) = page(&client, "/?label=deploy-a").await;
    assert_eq!(listed(&by_label), wanted);
    let prefix = format!("http://{host}/assets/");
    let (_, _, by_url) = page(&client, &format!("/?url={prefix}&state=in_progress")).await;
    assert_eq!(listed(&by_url), wanted);
    assert!(
        by_url.contains(&format!("value=\"{prefix}\"")),
        "the form keeps the filter"
    );
    let (_, _, none) = page(&client, &format!("/?url=http://{host}/nothing/")).await;
    assert!(listed(&none).is_empty() && none.contains("No request matches"));

    // The API's list reads the same summaries.
    let (status, list) = daemon.get("/v1/purges?limit=3").await;
    assert_eq!(status, 200);
    let requests = list["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 3);
    for (request, id) in requests.iter().zip(&ids) {
        assert_eq!(request["id"], json!(id));
        assert_eq!(request["urls"], json!(2));
        assert_eq!(request["state"], json!("in_progress"));
    }
    daemon.stop().await;
}
