//! `purgeq tag`: set the tags of URLs in the daemon's tag registry
//! (issue 35), one URL from the arguments or many from standard input.

use std::io::Read;

use clap::Args;
use serde_json::{Value, json};

use super::EXIT_USAGE;
use super::client::{Daemon, DaemonArgs, call};

/// URLs posted per `POST /v1/tags`.
const PER_CALL: usize = 1_000;

#[derive(Debug, Args)]
pub struct TagArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Read `URL TAG…` lines from standard input (blank lines and lines
    /// starting with # are skipped; a URL alone forgets it).
    #[arg(long, conflicts_with_all = ["url", "tags"])]
    pub stdin: bool,
    /// Print the daemon's JSON answers instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The URL whose tags to set.
    #[arg(required_unless_present = "stdin", value_name = "URL")]
    pub url: Option<String>,
    /// Its tags, replacing those the registry held; none forgets the URL.
    #[arg(value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Returns the process exit code.
pub async fn run(args: TagArgs) -> u8 {
    match tag(&args).await {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

/// `URL TAG…` lines as (URL, tags).
pub fn parse_lines(input: &str) -> Vec<(String, Vec<String>)> {
    input
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut words = line.split_ascii_whitespace().map(str::to_owned);
            let url = words.next().unwrap_or_default();
            (url, words.collect())
        })
        .collect()
}

async fn tag(args: &TagArgs) -> Result<u8, (u8, String)> {
    let entries = match (&args.url, args.stdin) {
        (Some(url), false) => vec![(url.clone(), args.tags.clone())],
        _ => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| (EXIT_USAGE, format!("reading standard input: {e}")))?;
            parse_lines(&input)
        }
    };
    if entries.is_empty() {
        return Err((EXIT_USAGE, "no URL given".to_owned()));
    }
    let daemon = Daemon::locate(&args.daemon)?;
    let (mut tagged, mut forgotten, mut dropped) = (0, 0, 0);
    for chunk in entries.chunks(PER_CALL) {
        let urls: serde_json::Map<String, Value> = chunk
            .iter()
            .map(|(url, tags)| (url.clone(), json!(tags)))
            .collect();
        let answer = call(
            &daemon,
            daemon
                .client
                .post(format!("{}/v1/tags", daemon.base))
                .json(&json!({ "urls": urls })),
        )
        .await?;
        if args.json {
            crate::outln!("{answer}");
        }
        tagged += answer["tagged"].as_u64().unwrap_or(0);
        forgotten += answer["forgotten"].as_u64().unwrap_or(0);
        dropped += answer["dropped"].as_u64().unwrap_or(0);
    }
    if !args.json {
        let mut line = format!(
            "{} tagged, {forgotten} forgotten",
            super::follow::urls(tagged)
        );
        if dropped > 0 {
            line.push_str(&format!(
                "; {dropped} least recently seen dropped (tags.max_urls)"
            ));
        }
        crate::outln!("{line}");
    }
    Ok(0)
}

/// The URLs a tag names now (`GET /v1/tags/{tag}`); whether there were
/// more than one request holds.
pub async fn urls_of_tag(daemon: &Daemon, tag: &str) -> Result<(Vec<String>, bool), (u8, String)> {
    let mut address = url::Url::parse(&format!("{}/v1/tags/", daemon.base))
        .map_err(|e| (EXIT_USAGE, format!("the daemon's address: {e}")))?;
    address
        .path_segments_mut()
        .map_err(|_| (EXIT_USAGE, "the daemon's address has no path".to_owned()))?
        .pop_if_empty()
        .push(tag);
    let answer = call(daemon, daemon.client.get(address.as_str())).await?;
    let urls = answer["urls"]
        .as_array()
        .map(|urls| {
            urls.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok((urls, answer["truncated"].as_bool().unwrap_or(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_a_url_and_its_tags() {
        let parsed =
            parse_lines("https://a/x t1 t2\n\n  # note\nhttps://a/y\n\thttps://a/z  t3 \n");
        assert_eq!(
            parsed,
            [
                (
                    "https://a/x".to_owned(),
                    vec!["t1".to_owned(), "t2".to_owned()]
                ),
                ("https://a/y".to_owned(), vec![]),
                ("https://a/z".to_owned(), vec!["t3".to_owned()]),
            ]
        );
    }
}
