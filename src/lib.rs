//! purgeq: durable, rate-limited cache purges for Azure China CDN.
//!
//! See `DESIGN.md`-style overview in the README. Modules, leaves first:
//! - [`clock`]: injectable wall-clock time;
//! - [`cdn`]: the API client and the emulator.

pub mod cdn;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod http_server;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod quota;
pub mod rate;
pub mod retention;
pub mod signals;
pub mod store;
pub mod target;
