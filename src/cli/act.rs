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
    let result = async { Daemon::locate(&args.daemon)?.post(&path).await }.await;
    finish(result, |answer| {
        format!("{} failed URLs sent again", answer["retried"])
    })
}

pub async fn cancel(args: CancelArgs) -> u8 {
    let path = format!("/v1/purges/{}/cancel", args.id);
    let result = async { Daemon::locate(&args.daemon)?.post(&path).await }.await;
    finish(result, |answer| {
        format!(
            "{} pending URLs cancelled, {} kept (another request also wants them)",
            answer["cancelled"], answer["kept"]
        )
    })
}
