//! The command line: one module per subcommand, each a thin shell around
//! the library.

pub mod emulate;

use clap::{Parser, Subcommand};

/// Durable, rate-limited cache purges for Azure China CDN.
#[derive(Debug, Parser)]
#[command(name = "purgeq", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a local emulator of the Azure China CDN API.
    Emulate(emulate::EmulateArgs),
}
