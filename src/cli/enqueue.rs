//! `purgeq enqueue`: post URLs to the daemon, optionally wait for the end.

use std::io::Read;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::client::{Daemon, DaemonArgs, call};
use super::{EXIT_DATAERR, EXIT_USAGE};
use super::{follow, paths};
use crate::forecast::{Expected, Forecast};
use crate::target::{Kind, Requested};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Treat every URL as a directory (a trailing / is added). Otherwise a
    /// URL ending in / is a directory and any other is a file.
    #[arg(long, short = 'd')]
    pub directory: bool,
    /// Follow the request until every URL has a final state; exit 1 if
    /// any failed. With [verify] on, until every URL is verified at the
    /// edge: exit 4 if one ended stale or unverifiable.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: no progress while waiting (on a terminal, a live bar;
    /// elsewhere, a line when it changes), only the summary.
    #[arg(long, short = 'q', requires = "wait")]
    pub quiet: bool,
    /// With --wait: give up after this many seconds (exit 75).
    #[arg(long, value_name = "SECS", default_value_t = 600.0, requires = "wait")]
    pub timeout: f64,
    /// With --wait: when the daemon forecasts that some URLs wait for the
    /// next quota day, say so and exit 3 at once instead of waiting hours.
    #[arg(long, requires = "wait")]
    pub until_today: bool,
    /// Print the daemon's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Free text stored with the request (a deploy id, say).
    #[arg(long)]
    pub label: Option<String>,
    /// A hotfix: cut before normal work, and may use the quota held back
    /// by quota.urgent_reserve_files and _directories.
    #[arg(long)]
    pub urgent: bool,
    /// Preload each file once its purge has succeeded (never before), so
    /// the first visitor gets the new file from the edge. Directories are
    /// purged, not preloaded. --wait then waits for the preloads too.
    #[arg(long)]
    pub preload: bool,
    /// Do not purge these URLs at this origin cache (an [[origin_cache]]
    /// name; repeat for several): their CDN purge no longer waits for it.
    /// Recorded as skipped in the history, with this request named.
    #[arg(long = "skip-origin-cache", value_name = "NAME")]
    pub skip_origin_caches: Vec<String>,
    /// Store nothing: print the plan (as `purgeq plan`) as if these URLs
    /// were added.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// The arguments (or the lines of standard input) are file paths, each
    /// purged as its URL under --base-url, percent-encoded. Git's quoted
    /// names (`"docs/\344\270\255.js"`) are unquoted.
    #[arg(long, requires = "base_url")]
    pub paths: bool,
    /// With --paths or --manifest: the directory URL the paths are
    /// relative to, e.g. https://www.example.com/
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// With --paths and -: standard input holds NUL-separated paths, as
    /// `git diff --name-only -z` writes them.
    #[arg(long, short = 'z', requires = "paths")]
    pub null: bool,
    /// The files changed between two revisions (`OLD..NEW`: the whole
    /// range, merges included; added, modified, deleted, and both names of
    /// a rename), mapped to URLs by the configuration's [[deploy.map]]
    /// tables. The label defaults to `git OLD..NEW`.
    #[arg(long, value_name = "OLD..NEW", conflicts_with_all = ["urls", "paths", "manifest"])]
    pub git: Option<String>,
    /// Two build manifests: the paths whose content hash changed or that
    /// are gone, or the emitted files the new build no longer has (webpack
    /// and Vite asset manifests), purged under --base-url, or else through
    /// the [[deploy.map]] tables.
    #[arg(
        long,
        num_args = 2,
        value_names = ["OLD.json", "NEW.json"],
        conflicts_with_all = ["urls", "paths"]
    )]
    pub manifest: Option<Vec<std::path::PathBuf>>,
    /// With --git: the repository (default: the current directory).
    #[arg(long, value_name = "DIR", requires = "git", default_value = ".")]
    pub repo: std::path::PathBuf,
    /// With --git or --manifest: list every URL, and every changed file no
    /// map covers, on standard error.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Purge the URLs that carry this tag in the tag registry (repeat for
    /// several; `purgeq tag` and POST /v1/tags feed it). With --dry-run:
    /// list them.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// URLs to purge (or paths, with --paths), or - to read them from
    /// standard input, one per line; `#` starts a comment.
    #[arg(required_unless_present_any = ["git", "manifest", "tags"], value_name = "URL")]
    pub urls: Vec<String>,
}

/// The URLs of the files `--git OLD..NEW` changed, through the
/// configuration's deploy maps. Files no map covers are counted (and with
/// --verbose listed), never silently dropped.
fn git_urls(args: &EnqueueArgs, range: &str) -> Result<Vec<String>, (u8, String)> {
    let files = super::git::changed_files(&args.repo, range)?;
    through_maps(args, range, &files)
}

/// `files` through the configuration's deploy maps; `what` names the
/// source in the counts printed on stderr.
fn through_maps(
    args: &EnqueueArgs,
    what: &str,
    files: &[String],
) -> Result<Vec<String>, (u8, String)> {
    let settings = args
        .daemon
        .config
        .load_for_client()
        .map_err(|e| (crate::config::EXIT_CONFIG, e.to_string()))?;
    if settings.deploy.map.is_empty() {
        return Err((
            crate::config::EXIT_CONFIG,
            format!(
                "{what} needs [[deploy.map]] tables in the configuration (or --base-url with \
                 --manifest): which directory is served at which URL (see `purgeq man enqueue`)"
            ),
        ));
    }
    let mapped =
        super::deploy::map_paths(&settings.deploy.map, files).map_err(|e| (EXIT_DATAERR, e))?;
    if !args.json {
        eprintln!(
            "{what}: {} changed files, {} URLs; {} files outside every [[deploy.map]]{}",
            files.len(),
            mapped.urls.len(),
            mapped.unmapped.len(),
            if mapped.unmapped.is_empty() || args.verbose {
                ""
            } else {
                " (--verbose lists them)"
            }
        );
    }
    if args.verbose {
        for url in &mapped.urls {
            eprintln!("  purge    {url}");
        }
        for file in &mapped.unmapped {
            eprintln!("  no map   {}", super::out::printable(file));
        }
    }
    Ok(mapped.urls)
}

/// The URLs of what changed between two build manifests, under
/// --base-url.
fn manifest_urls(
    args: &EnqueueArgs,
    manifests: &[std::path::PathBuf],
) -> Result<Vec<String>, (u8, String)> {
    let read = |path: &std::path::PathBuf| -> Result<serde_json::Value, (u8, String)> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| (super::EXIT_NOINPUT, format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| (EXIT_DATAERR, format!("{}: not JSON: {e}", path.display())))
    };
    let [old, new] = manifests else {
        return Err((EXIT_USAGE, "--manifest takes OLD.json NEW.json".to_owned()));
    };
    let paths =
        super::manifest::changed(&read(old)?, &read(new)?).map_err(|e| (EXIT_DATAERR, e))?;
    let Some(base) = args.base_url.as_deref() else {
        return through_maps(args, "--manifest", &paths);
    };
    let base =
        url::Url::parse(base).map_err(|e| (EXIT_USAGE, format!("--base-url {base:?}: {e}")))?;
    let urls = paths
        .iter()
        .map(|path| paths::url_for_path(&base, path).map_err(|e| (EXIT_DATAERR, e)))
        .collect::<Result<Vec<_>, _>>()?;
    if !args.json {
        eprintln!(
            "--manifest: {} changed paths, {} URLs",
            paths.len(),
            urls.len()
        );
    }
    if args.verbose {
        for url in &urls {
            eprintln!("  purge    {url}");
        }
    }
    Ok(urls)
}

/// What the arguments name: the URLs to post.
fn read_urls(args: &EnqueueArgs) -> Result<Vec<String>, (u8, String)> {
    if let Some(range) = &args.git {
        return git_urls(args, range);
    }
    if let Some(manifests) = &args.manifest {
        return manifest_urls(args, manifests);
    }
    if args.base_url.is_some() && !args.paths {
        return Err((
            EXIT_USAGE,
            "--base-url goes with --paths or --manifest".to_owned(),
        ));
    }
    let from_stdin = args.urls.len() == 1 && args.urls[0] == "-";
    let mut input = String::new();
    if from_stdin {
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| (EXIT_USAGE, format!("reading standard input: {e}")))?;
    }
    let usage = |message: String| (EXIT_USAGE, message);
    // What the input says is wrong: bad data, as the daemon's refusals.
    let bad_data = |message: String| (EXIT_DATAERR, message);
    if args.paths {
        let base = args.base_url.as_deref().unwrap_or_default();
        let base = url::Url::parse(base).map_err(|e| usage(format!("--base-url {base:?}: {e}")))?;
        let names: Vec<String> = if !from_stdin {
            args.urls.clone()
        } else if args.null {
            input.split('\0').map(str::to_owned).collect()
        } else {
            input
                .lines()
                .map(|line| paths::unquote_git(line.trim_end_matches('\r')).map_err(bad_data))
                .collect::<Result<_, _>>()?
        };
        return names
            .iter()
            .filter(|name| !name.is_empty())
            .map(|name| paths::url_for_path(&base, name).map_err(bad_data))
            .collect();
    }
    if !from_stdin {
        // As on standard input (one argument `'…/a b.js'` was accepted
        // here and refused there, issue 29).
        for url in &args.urls {
            paths::no_white_space(url.trim()).map_err(bad_data)?;
        }
        return Ok(args.urls.clone());
    }
    let mut urls = Vec::new();
    for (number, line) in input.lines().enumerate() {
        if let Some(url) = paths::url_from_line(line)
            .map_err(|e| bad_data(format!("standard input, line {}: {e}", number + 1)))?
        {
            urls.push(url);
        }
    }
    Ok(urls)
}

/// How the daemon is to read the URLs of this invocation.
///
/// What `--git` and `--manifest` produce are files, every one, the URL of
/// an index file's directory included: the page at `https://h/docs/` is
/// one cached object, and posting it under `urls` made it a *directory*
/// purge of the whole subtree (at the root, the whole site; issue 29,
/// item 1).
fn requested(args: &EnqueueArgs) -> Requested {
    if args.directory {
        Requested::Directory
    } else if args.git.is_some() || args.manifest.is_some() {
        Requested::File
    } else {
        Requested::ByTrailingSlash
    }
}

/// The kind the daemon will give `url` when asked as `requested` (the
/// rule of `target::classify`): what `--dry-run` prints beside each URL.
fn kind_of(url: &str, requested: Requested) -> Kind {
    requested.kind(
        url.split('?')
            .next()
            .is_some_and(|path| path.ends_with('/')),
    )
}

/// Returns the process exit code.
pub async fn run(args: EnqueueArgs) -> u8 {
    match enqueue(&args).await {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

async fn enqueue(args: &EnqueueArgs) -> Result<u8, (u8, String)> {
    let urls = match args.urls.is_empty() && !args.tags.is_empty() {
        true => Vec::new(),
        false => read_urls(args)?,
    };
    if !args.tags.is_empty() {
        return enqueue_tags(args, urls).await;
    }
    if urls.is_empty() {
        if args.git.is_some() || args.manifest.is_some() {
            // Nothing this deploy changed is served by a map: not an error.
            return Ok(0);
        }
        return Err((EXIT_USAGE, "no URL given".to_owned()));
    }
    let parts = split_for_the_daemon(args, &urls)?;
    let daemon = Daemon::locate(&args.daemon)?;
    if args.dry_run {
        return dry_run(args, &daemon, &parts).await;
    }
    let bodies = parts.iter().map(|part| intent(args, part)).collect();
    post_and_follow(args, &daemon, bodies).await
}

/// Posts each body as a purge request, says what was accepted, and with
/// --wait follows them one after the other: the worst end decides the
/// exit code.
async fn post_and_follow(
    args: &EnqueueArgs,
    daemon: &Daemon,
    bodies: Vec<serde_json::Value>,
) -> Result<u8, (u8, String)> {
    let mut ids = Vec::with_capacity(bodies.len());
    let mut not_today = false;
    for body in bodies {
        let accepted = call(
            daemon,
            daemon
                .client
                .post(format!("{}/v1/purges", daemon.base))
                .json(&body),
        )
        .await?;
        let id = accepted["id"].as_str().unwrap_or_default().to_owned();
        not_today |= announce(args, &id, &accepted);
        ids.push(id);
    }
    if !args.wait {
        return Ok(0);
    }
    if args.until_today && not_today {
        eprintln!(
            "purgeq: some URLs wait for the next quota day; not waiting (--until-today). \
             Follow them with `purgeq status` or GET /v1/purges/ID"
        );
        return Ok(EXIT_NOT_TODAY);
    }
    if !args.json && !args.quiet {
        eprintln!("waiting for the CDN…");
    }
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.0, 1e9));
    let deadline = std::time::Instant::now() + timeout;
    let mut worst = 0;
    for id in &ids {
        let code = follow::follow(daemon, id, deadline, timeout, args.json, args.quiet).await?;
        worst = worst.max(code);
    }
    Ok(worst)
}

/// `--tag`: one request with the tags (and any URLs given beside them);
/// the daemon expands the tags. With --dry-run, each tag's URLs now are
/// listed, and planned as files.
async fn enqueue_tags(args: &EnqueueArgs, urls: Vec<String>) -> Result<u8, (u8, String)> {
    let daemon = Daemon::locate(&args.daemon)?;
    if args.dry_run {
        let mut all = urls;
        for tag in &args.tags {
            let (tagged, truncated) = super::tag::urls_of_tag(&daemon, tag).await?;
            if !args.json {
                eprintln!(
                    "tag {}: {}{}",
                    super::out::printable(tag),
                    follow::urls(tagged.len() as u64),
                    if truncated {
                        " (the first; more carry it)"
                    } else {
                        ""
                    }
                );
            }
            for url in tagged {
                if !all.contains(&url) {
                    all.push(url);
                }
            }
        }
        if all.is_empty() {
            crate::outln!("no URL carries these tags: nothing would be purged");
            return Ok(0);
        }
        return dry_run(args, &daemon, &[all]).await;
    }
    let mut body = intent(args, &urls);
    body["tags"] = json!(args.tags);
    post_and_follow(args, &daemon, vec![body]).await
}

/// Says what was accepted as `id`: the id (or the JSON) without `--wait`,
/// a line on stderr with it; a purge by tag's counts and warning, and the
/// forecast, on stderr. Returns whether the forecast has URLs waiting for
/// the next quota day.
fn announce(args: &EnqueueArgs, id: &str, accepted: &serde_json::Value) -> bool {
    // A purge by tag: what each tag gave, and tags nobody carries.
    if let Some(warning) = accepted["warning"].as_str().filter(|_| !args.json) {
        eprintln!("purgeq: warning: {}", super::out::printable(warning));
    }
    if let Some(tags) = accepted["tags"]
        .as_object()
        .filter(|_| !args.json && !args.quiet)
    {
        for (tag, count) in tags {
            eprintln!(
                "tag {}: {}",
                super::out::printable(tag),
                follow::urls(count.as_u64().unwrap_or(0))
            );
        }
    }
    let forecast = accepted
        .get("forecast")
        .and_then(|f| serde_json::from_value::<Forecast>(f.clone()).ok());
    if !args.wait {
        if args.json {
            crate::outln!("{accepted}");
        } else {
            crate::outln!("{id}");
        }
    } else if !args.json {
        eprintln!(
            "accepted {} ({} new) as {id}",
            follow::urls(accepted["urls"].as_u64().unwrap_or(0)),
            accepted["new"]
        );
    }
    let not_today = forecast
        .as_ref()
        .is_some_and(|f| f.expected == Expected::NextQuotaDay);
    if let Some(forecast) = forecast.filter(|_| !args.json && !args.quiet) {
        eprintln!("{}", super::plan::describe(&forecast));
    }
    not_today
}

/// `enqueue --wait --until-today`: the daemon forecasts that some URLs
/// wait for the next quota day.
pub const EXIT_NOT_TODAY: u8 = 3;

/// The `POST /v1/purges` body for `urls`.
fn intent(args: &EnqueueArgs, urls: &[String]) -> serde_json::Value {
    let mut body = match requested(args) {
        // Tags only: no URL list.
        _ if urls.is_empty() => json!({}),
        Requested::Directory => json!({ "directories": urls }),
        Requested::File => json!({ "files": urls }),
        Requested::ByTrailingSlash => json!({ "urls": urls }),
    };
    let label = args.label.clone().or_else(|| default_label(args));
    if let Some(label) = label {
        body["label"] = json!(label);
    }
    if args.urgent {
        body["priority"] = json!("urgent");
    }
    if args.preload {
        body["preload"] = json!(true);
    }
    if !args.skip_origin_caches.is_empty() {
        body["skip_origin_caches"] = json!(args.skip_origin_caches);
    }
    body
}

/// `purgeq preload`: warm the edge with files, without purging them.
#[derive(Debug, Args)]
pub struct PreloadArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Follow the request until every preload has a final state; exit 1
    /// if any failed.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: only the summary.
    #[arg(long, short = 'q', requires = "wait")]
    pub quiet: bool,
    /// With --wait: give up after this many seconds (exit 75).
    #[arg(long, value_name = "SECS", default_value_t = 600.0, requires = "wait")]
    pub timeout: f64,
    /// Print the daemon's JSON answer instead of the request id.
    #[arg(long)]
    pub json: bool,
    /// Free text stored with the request.
    #[arg(long)]
    pub label: Option<String>,
    /// File URLs to preload, or - to read them from standard input, one
    /// per line; `#` starts a comment.
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
}

/// Returns the process exit code.
pub async fn preload(args: PreloadArgs) -> u8 {
    match post_preloads(&args).await {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

async fn post_preloads(args: &PreloadArgs) -> Result<u8, (u8, String)> {
    let urls = if args.urls.len() == 1 && args.urls[0] == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .map_err(|e| (EXIT_USAGE, format!("reading standard input: {e}")))?;
        let mut urls = Vec::new();
        for (number, line) in input.lines().enumerate() {
            if let Some(url) = paths::url_from_line(line).map_err(|e| {
                (
                    EXIT_DATAERR,
                    format!("standard input, line {}: {e}", number + 1),
                )
            })? {
                urls.push(url);
            }
        }
        urls
    } else {
        args.urls.clone()
    };
    if urls.is_empty() {
        return Err((EXIT_USAGE, "no URL given".to_owned()));
    }
    let daemon = Daemon::locate(&args.daemon)?;
    let mut body = json!({ "files": urls });
    if let Some(label) = &args.label {
        body["label"] = json!(label);
    }
    let accepted = call(
        &daemon,
        daemon
            .client
            .post(format!("{}/v1/preloads", daemon.base))
            .json(&body),
    )
    .await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    if !args.wait {
        if args.json {
            crate::outln!("{accepted}");
        } else {
            crate::outln!("{id}");
        }
        return Ok(0);
    }
    if !args.json {
        eprintln!(
            "accepted {} to preload as {id}; waiting for the CDN…",
            follow::urls(accepted["urls"].as_u64().unwrap_or(0))
        );
    }
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.0, 1e9));
    let deadline = std::time::Instant::now() + timeout;
    follow::follow(&daemon, &id, deadline, timeout, args.json, args.quiet).await
}

/// What a deploy's request is labelled when `--label` is not given, so
/// `history --label` finds it: `git OLD..NEW`, or `manifest OLD -> NEW`.
fn default_label(args: &EnqueueArgs) -> Option<String> {
    if let Some(range) = &args.git {
        return Some(format!("git {range}"));
    }
    let [old, new] = args.manifest.as_deref()? else {
        return None;
    };
    let mut label = format!("manifest {} -> {}", old.display(), new.display());
    // Labels are at most 256 bytes: keep the end, where the names differ.
    while label.len() > 256 {
        label.remove(0);
    }
    Some(label)
}

/// `--dry-run`: the plan as if the URLs were added; nothing is stored.
async fn dry_run(
    args: &EnqueueArgs,
    daemon: &Daemon,
    parts: &[Vec<String>],
) -> Result<u8, (u8, String)> {
    let [urls] = parts else {
        return Err((
            EXIT_USAGE,
            "--dry-run plans one request: at most ingest.max_urls_per_request URLs".to_owned(),
        ));
    };
    let plan = call(
        daemon,
        daemon
            .client
            .post(format!("{}/v1/plan", daemon.base))
            .json(&intent(args, urls)),
    )
    .await?;
    if !args.json {
        // Every URL with the kind it would be purged as, before the plan's
        // counts: "1 directories" alone hid a whole-site purge.
        let requested = requested(args);
        let mut listing = format!("would post {}:\n", follow::urls(urls.len() as u64));
        for url in urls {
            listing.push_str(&format!(
                "  {:<9}  {}\n",
                kind_of(url, requested).as_str(),
                super::out::printable(url)
            ));
        }
        super::out::write(listing.as_bytes());
    }
    Ok(super::plan::print(plan, args.json))
}

/// A list longer than `ingest.max_urls_per_request` is posted as several
/// requests (a 10,001-line deploy used to exit 65 with "split it"). Every
/// URL is checked first against the configuration, with the daemon's own
/// rules, so that a bad URL in the last part cannot leave the first
/// accepted: all of the list is taken, or none of it.
fn split_for_the_daemon(
    args: &EnqueueArgs,
    urls: &[String],
) -> Result<Vec<Vec<String>>, (u8, String)> {
    // Routed as the daemon routes: without credentials, it serves the
    // built-in emulator's endpoints.
    let settings = args.daemon.config.load_for_client().ok().map(|s| {
        if s.has_credentials() {
            s
        } else {
            s.with_demo_endpoint()
        }
    });
    let max = settings
        .as_ref()
        .map_or(10_000, |s| s.ingest.max_urls_per_request)
        .max(1);
    if urls.len() <= max {
        return Ok(vec![urls.to_vec()]);
    }
    let Some(settings) = settings else {
        return Err((
            EXIT_USAGE,
            format!(
                "{} URLs are more than one request takes ({max}), and the configuration (needed to check \
                 them all before posting any) cannot be read: pass --config, or split the list",
                urls.len()
            ),
        ));
    };
    let requested = requested(args);
    let refused: Vec<String> = urls
        .iter()
        .enumerate()
        .filter_map(|(index, url)| {
            settings
                .derived
                .router
                .target(url, requested, settings.ingest.max_url_length)
                .err()
                .map(|e| format!("  URL {} {url:?}: {e}", index + 1))
        })
        .collect();
    if !refused.is_empty() {
        return Err((
            EXIT_DATAERR,
            format!(
                "{} of {} URLs refused, nothing was posted:\n{}",
                refused.len(),
                urls.len(),
                refused.join("\n")
            ),
        ));
    }
    if !args.json {
        eprintln!(
            "{} URLs: posting them as {} requests of at most {max} (ingest.max_urls_per_request)",
            urls.len(),
            urls.len().div_ceil(max)
        );
    }
    Ok(urls.chunks(max).map(<[String]>::to_vec).collect())
}
