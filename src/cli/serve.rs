//! `purgeq serve`.

use clap::Args;

use super::ConfigArgs;
use crate::daemon::{self, RunOptions};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Send purges to the built-in CDN emulator, even if credentials are
    /// configured (a dry run of the whole pipeline).
    #[arg(long)]
    pub emulator: bool,
}

/// Exit code: 0 after a clean stop, 78 for a bad configuration, 1 otherwise.
pub async fn run(args: ServeArgs) -> u8 {
    let settings = match args
        .config
        .load()
        .and_then(|s| s.check_directories().map(|()| s))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("purgeq: {error}");
            return crate::config::EXIT_CONFIG;
        }
    };
    let process = crate::config::Process::from_env(&crate::config::process_env());
    let log = crate::logging::init(&settings, &process);
    let options = RunOptions {
        config_path: args.config.path(),
        force_emulator: args.emulator,
        log: Some(log),
        process,
        ..RunOptions::default()
    };
    match daemon::run(settings, options).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("purgeq: {error}");
            1
        }
    }
}
