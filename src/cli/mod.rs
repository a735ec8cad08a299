//! The command line: one module per subcommand, each a thin shell around
//! the library. Exit codes follow sysexits(3) where one applies.

pub mod act;
pub mod client;
pub mod deploy;
pub mod emulate;
pub mod endpoints;
pub mod enqueue;
pub mod follow;
pub mod git;
pub mod history;
mod man;
pub mod manifest;
pub mod out;
pub mod paths;
pub mod plan;
pub mod serve;
pub mod status;
pub mod tag;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, Settings};

/// sysexits: the command was used incorrectly.
pub const EXIT_USAGE: u8 = 64;
/// sysexits: the input data was incorrect (the daemon refused it).
pub const EXIT_DATAERR: u8 = 65;
/// sysexits: an input file does not exist or cannot be read.
pub const EXIT_NOINPUT: u8 = 66;
/// sysexits: a service is unavailable (the daemon cannot be reached).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// sysexits: an internal software error.
pub const EXIT_SOFTWARE: u8 = 70;
/// sysexits: permission denied (the daemon refused our token).
pub const EXIT_NOPERM: u8 = 77;
/// sysexits: a temporary failure; try again later.
pub const EXIT_TEMPFAIL: u8 = 75;

/// Durable, rate-limited cache purges for Azure China CDN.
#[derive(Debug, Parser)]
#[command(name = "purgeq", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(serve::ServeArgs),
    /// Validate the configuration without starting.
    CheckConfig(ConfigArgs),
    /// Post purge intents to the daemon.
    Enqueue(enqueue::EnqueueArgs),
    /// Preload files (fetch them into the CDN's edge) without purging.
    Preload(enqueue::PreloadArgs),
    /// Set the tags of URLs in the tag registry, so that `enqueue --tag`
    /// purges them.
    Tag(tag::TagArgs),
    /// One screen: sending state, backlog by endpoint, quota, last error.
    Status(status::StatusArgs),
    /// One request: each URL's state, TaskTrackId, attempts and error.
    Show(status::ShowArgs),
    /// What today's quota will be spent on, per endpoint: calls, files,
    /// directories promoted in place of files, what waits for tomorrow.
    Plan(plan::PlanArgs),
    /// List the subscription's endpoints (from the API) as configuration.
    Endpoints(endpoints::EndpointsArgs),
    /// Send failed URLs again: those of one request, or all (--failed).
    Retry(act::RetryArgs),
    /// Cancel a request's pending URLs.
    Cancel(act::CancelArgs),
    /// The purge history, read from the database (works while the daemon
    /// is down).
    History(history::HistoryArgs),
    /// Serve a local emulator of the Azure China CDN API.
    Emulate(Box<emulate::EmulateArgs>),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), generated from these definitions: the
    /// main page, or with a sub-command's name, that sub-command's own page
    /// (the main page refers to each).
    Man {
        /// The sub-command whose page to print.
        command: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file (default: /etc/purgeq/purgeq.toml if it exists,
    /// else built-in defaults). PURGEQ__SECTION__KEY variables override it.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn path(&self) -> Option<PathBuf> {
        config::config_path(self.config.as_deref())
    }

    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.path().as_deref(), &config::process_env())
    }

    /// For a command that only talks to the daemon or reads the store:
    /// the daemon's secret files are left unread (see
    /// [`Settings::load_for_client`]).
    pub fn load_for_client(&self) -> Result<Settings, ConfigError> {
        Settings::load_for_client(self.path().as_deref(), &config::process_env())
    }
}

/// `purgeq completions SHELL`.
pub fn completions(shell: clap_complete::Shell) {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut command, "purgeq", &mut text);
    out::write(&text);
}

/// The sub-commands that have a page of their own, `purgeq-NAME(1)`.
pub fn man_page_names() -> Vec<String> {
    let mut command = <Cli as clap::CommandFactory>::command();
    // Built, so that clap's own `help` sub-command is there too.
    command.build();
    command
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// `purgeq man [SUBCOMMAND]`.
pub fn man_page(subcommand: Option<&str>) -> std::io::Result<()> {
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let mut text = Vec::new();
    match subcommand {
        None => {
            clap_mangen::Man::new(command).render(&mut text)?;
            text.extend_from_slice(man::extra_sections(None).as_bytes());
        }
        Some(name) => {
            let Some(sub) = command.find_subcommand(name) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no sub-command {name:?}; pages: {}",
                        man_page_names().join(", ")
                    ),
                ));
            };
            let page = sub
                .clone()
                .name(format!("purgeq-{name}"))
                .bin_name(format!("purgeq {name}"));
            clap_mangen::Man::new(page).render(&mut text)?;
            text.extend_from_slice(man::extra_sections(Some(name)).as_bytes());
        }
    }
    out::write(&text);
    Ok(())
}

/// `purgeq check-config`: prints what would be used, or every problem.
pub fn check_config(args: &ConfigArgs) -> Result<(), ConfigError> {
    let settings = args.load()?;
    settings.check_directories()?;
    let source = settings.derived.source.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    crate::outln!("configuration OK ({source})");
    // What will be used: a fleet's PostgreSQL (without its password), or
    // the SQLite file (issue 29, item 2: a fleet printed `purgeq.db`).
    match &settings.derived.store_url {
        Some(url) => crate::outln!(
            "  store:     {url} (fleet mode, node {})",
            settings.node_name()
        ),
        None => crate::outln!("  store:     {}", settings.store.path.display()),
    }
    if let Some(socket) = &settings.derived.socket_path {
        crate::outln!(
            "  socket:    {} (mode {:o})",
            socket.display(),
            settings.derived.socket_mode
        );
    }
    if let Some(addr) = settings.derived.http_addr {
        crate::outln!("  http:      {addr}");
    }
    if settings.has_credentials() {
        crate::outln!(
            "  cdn:       subscription {} with key {}",
            settings.cdn.subscription_id,
            settings.cdn.key_id
        );
    } else {
        crate::outln!("  cdn:       no credentials: `serve` will use the built-in emulator");
    }
    for id in settings.derived.router.endpoint_ids() {
        crate::outln!(
            "  endpoint:  {id} <- {}",
            settings.derived.router.hosts_of(&id).join(", ")
        );
    }
    for layer in &settings.origin_cache {
        let hosts = match layer.hosts.is_empty() {
            true => "every host".to_owned(),
            false => layer.hosts.join(", "),
        };
        crate::outln!(
            "  origin:    {} ({}) at {} for {hosts}, purged before the CDN",
            layer.name,
            layer.kind,
            layer.url
        );
    }
    for note in settings.origin_cache_notes() {
        crate::outln!("  {note}");
    }
    Ok(())
}
