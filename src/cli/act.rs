//! `purgeq retry` and `purgeq cancel`: acting on items, through the daemon.

use clap::Args;

use super::EXIT_USAGE;
use super::client::{Daemon, DaemonArgs};

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Send the failed URLs of this request again.
    #[arg(required_unless_present = "failed", conflicts_with = "failed")]
    pub id: Option<String>,
    /// Send every failed URL again.
    #[arg(long)]
    pub failed: bool,
    /// Follow the request until every URL has a final state (as
    /// `enqueue --wait`); with a request id only.
    #[arg(long, requires = "id")]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 75).
    #[arg(long, value_name = "SECS", default_value_t = 600.0, requires = "wait")]
    pub timeout: f64,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Cancel the pending URLs of this request (those no other request
    /// also asked for).
    pub id: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

fn finish(
    result: Result<serde_json::Value, (u8, String)>,
    say: impl Fn(&serde_json::Value) -> String,
) -> u8 {
    match result {
        Ok(answer) => {
            crate::outln!("{}", say(&answer));
            0
        }
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            code
        }
    }
}

pub async fn retry(args: RetryArgs) -> u8 {
    let path = match (&args.id, args.failed) {
        (Some(id), false) => format!("/v1/purges/{id}/retry"),
        (None, true) => "/v1/retry-failed".to_owned(),
        _ => {
            eprintln!("purgeq: give a request id or --failed");
            return EXIT_USAGE;
        }
    };
    let daemon = match Daemon::locate(&args.daemon) {
        Ok(daemon) => daemon,
        Err((code, message)) => {
            eprintln!("purgeq: {message}");
            return code;
        }
    };
    let result = daemon.post(&path).await;
    let retried = result
        .as_ref()
        .ok()
        .and_then(|a| a["retried"].as_u64())
        .unwrap_or(0);
    // As `cancel`: an action on one request that found nothing to do says
    // so and exits 65, so a script does not believe it re-sent something
    // (issue 29, item 16). The sweep (`--failed`) finding nothing is fine.
    if let (Some(id), Ok(_)) = (&args.id, &result)
        && retried == 0
    {
        eprintln!("purgeq: nothing to retry: request {id} has no failed URL");
        return super::EXIT_DATAERR;
    }
    let code = finish(result, |answer| {
        let n = answer["retried"].as_u64().unwrap_or(0);
        if n == 1 {
            "1 failed URL sent again".to_owned()
        } else {
            format!("{n} failed URLs sent again")
        }
    });
    match (&args.id, args.wait) {
        (Some(id), true) if code == 0 && retried > 0 => {
            let timeout = std::time::Duration::from_secs_f64(args.timeout.clamp(0.0, 1e9));
            match super::follow::follow(
                &daemon,
                id,
                std::time::Instant::now() + timeout,
                timeout,
                false,
                false,
            )
            .await
            {
                Ok(code) => code,
                Err((code, message)) => {
                    eprintln!("purgeq: {message}");
                    code
                }
            }
        }
        _ => code,
    }
}

pub async fn cancel(args: CancelArgs) -> u8 {
    let path = format!("/v1/purges/{}/cancel", args.id);
    let result = async { Daemon::locate(&args.daemon)?.post(&path).await }.await;
    // Nothing was pending: say so, and exit non-zero, so a script does not
    // believe it stopped something.
    if let Ok(answer) = &result
        && answer["cancelled"] == 0
        && answer["kept"] == 0
    {
        eprintln!(
            "purgeq: nothing to cancel: request {} has no pending URL (each is sent or final)",
            args.id
        );
        return super::EXIT_DATAERR;
    }
    finish(result, |answer| {
        let kept = answer["kept"].as_u64().unwrap_or(0);
        let mut text = format!(
            "{} cancelled",
            super::follow::urls(answer["cancelled"].as_u64().unwrap_or(0))
        );
        if kept > 0 {
            text.push_str(&format!(
                ", {} kept (another request also wants them)",
                super::follow::urls(kept)
            ));
        }
        text
    })
}
