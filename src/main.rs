use std::process::ExitCode;

use clap::Parser;

use purgeq::cli::{self, Cli, Command};

fn main() -> ExitCode {
    few_malloc_arenas();
    // Started here rather than by `#[tokio::main]`, so that the line
    // above runs before any thread does.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
        .block_on(run())
}

/// glibc gives each thread that allocates while another does its own
/// arena (up to eight per core), and an arena keeps what was freed in it.
/// Each SQLite connection runs on its own thread, so after a burst of
/// intake the daemon kept several arenas' high-water marks for good: 46-63
/// MB resident with a million pending, 41 MB with two arenas (issue 31,
/// BENCHMARKS.md). Two arenas are enough for a daemon whose threads mostly
/// wait on the store.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a tunable of the allocator; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => cli::serve::run(args).await,
        Command::CheckConfig(args) => match cli::check_config(&args) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("purgeq: {error}");
                purgeq::config::EXIT_CONFIG
            }
        },
        Command::Enqueue(args) => cli::enqueue::run(args).await,
        Command::Preload(args) => cli::enqueue::preload(args).await,
        Command::Tag(args) => cli::tag::run(args).await,
        Command::Status(args) => cli::status::status(args).await,
        Command::Show(args) => cli::status::show(args).await,
        Command::Plan(args) => cli::plan::run(args).await,
        Command::History(args) => cli::history::run(args).await,
        Command::Retry(args) => cli::act::retry(args).await,
        Command::Endpoints(args) => cli::endpoints::run(args).await,
        Command::Cancel(args) => cli::act::cancel(args).await,
        Command::Completions { shell } => {
            cli::completions(shell);
            0
        }
        Command::Man { command } => match cli::man_page(command.as_deref()) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("purgeq: {error}");
                cli::EXIT_SOFTWARE
            }
        },
        Command::Emulate(args) => {
            init_plain_logging();
            match cli::emulate::run(*args).await {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("purgeq: {error:#}");
                    1
                }
            }
        }
    };
    ExitCode::from(code)
}

/// Logging for commands other than `serve` (which follows its config).
/// Colours only on a terminal: `purgeq emulate > log` wrote escape codes
/// into the file (issue 29, item 16).
fn init_plain_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
